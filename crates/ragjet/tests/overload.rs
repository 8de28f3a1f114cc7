//! Overload through the `Engine`: a full model queue, a query deadline that
//! passes, and an open circuit breaker each refuse the call at once with a
//! typed error of kind `Overloaded`, without waiting for (or running) the
//! model. The queue's own state machine is tested in `tests/queue.rs`; peak
//! memory under a burst is measured in `tests/overload_memory.rs`.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ragjet::{Document, Engine, Error, ErrorKind, QueryOptions, Refusal};

/// A query of `n` distinct words: long enough (~n tokens) that the model
/// takes a while on it, distinct so no cache answers it.
fn long_query(seed: usize, n: usize) -> String {
    (0..n)
        .map(|i| format!("w{}x{}", seed, i % 97))
        .collect::<Vec<_>>()
        .join(" ")
}

fn small_engine(configure: impl FnOnce(&mut ragjet::EngineConfig)) -> Engine {
    let e = common::builder().configure(configure).build().unwrap();
    let r = e.ingest(common::corpus()[..4].to_vec()).unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    e
}

/// Many callers at once on a queue with room for one: the surplus is
/// refused as `Error::Overloaded` ("queue full") immediately, the rest is
/// served, and nothing else goes wrong.
#[test]
fn a_full_model_queue_refuses_at_once() {
    let e = Arc::new(small_engine(|c| {
        c.queue.capacity = 1;
        c.queue.max_batch_items = 1;
        c.queue.max_wait_ms = 0;
        // No deadline: every refusal here is the full queue.
        c.queue.timeout_ms = None;
    }));
    const CALLERS: usize = 24;
    let options = QueryOptions::new().top_k(2).no_cache(true);
    let (mut served, mut refused, mut slowest_refusal) = (0, 0, Duration::ZERO);
    // One burst nearly always overflows a one-place queue; a few more
    // rounds make the test independent of how the scheduler starts threads.
    for round in 0..5 {
        let barrier = Arc::new(Barrier::new(CALLERS));
        let handles: Vec<_> = (0..CALLERS)
            .map(|i| {
                let (e, barrier, options) = (Arc::clone(&e), Arc::clone(&barrier), options.clone());
                std::thread::spawn(move || {
                    let q = long_query(round * CALLERS + i, 200);
                    barrier.wait();
                    let t0 = Instant::now();
                    let r = e.query(&q, &options);
                    (r, t0.elapsed())
                })
            })
            .collect();
        for h in handles {
            match h.join().unwrap() {
                (Ok(a), _) => {
                    assert!(!a.hits.is_empty());
                    served += 1;
                }
                (Err(err), took) => {
                    assert!(
                        matches!(
                            err,
                            Error::Overloaded(Refusal::QueueFull { capacity: 1, .. })
                        ),
                        "{err}"
                    );
                    assert_eq!(err.retry_after(), None);
                    assert_eq!(err.kind(), ErrorKind::Overloaded);
                    assert!(err.to_string().contains("queue full"), "{err}");
                    refused += 1;
                    slowest_refusal = slowest_refusal.max(took);
                }
            }
        }
        if refused > 0 && served > 0 {
            break;
        }
    }
    assert!(refused > 0, "no caller was refused by a one-place queue");
    assert!(served > 0, "every caller was refused");
    // A refusal never waits for the model (one 200-token query at a time).
    assert!(
        slowest_refusal < Duration::from_secs(1),
        "{slowest_refusal:?}"
    );
    eprintln!(
        "full queue: {served} served, {refused} refused, slowest refusal {slowest_refusal:?}"
    );
}

/// A query whose deadline passes while the model has not started on it is
/// refused when the deadline passes, not when the model gets to it.
#[test]
fn an_expired_deadline_refuses_at_the_deadline() {
    let e = small_engine(|c| {
        c.queue.timeout_ms = Some(30);
        // A lone request waits this long for company before the model runs.
        c.queue.max_wait_ms = 3_000;
    });
    let t0 = Instant::now();
    let err = e
        .query(
            "when does the deadline pass",
            &QueryOptions::new().no_cache(true),
        )
        .unwrap_err();
    let took = t0.elapsed();
    match &err {
        Error::Overloaded(Refusal::DeadlineExceeded { waited, .. }) => {
            assert!(*waited >= Duration::from_millis(30), "{waited:?}")
        }
        other => panic!("expected DeadlineExceeded, got {other}"),
    }
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert!(err.to_string().contains("deadline expired"), "{err}");
    assert!(took >= Duration::from_millis(30), "{took:?}");
    assert!(
        took < Duration::from_millis(1_500),
        "waited for the batch: {took:?}"
    );
    assert_eq!(e.slo_report().window.unavailable, 1);
}

/// With the breaker open, queries and ingests fail fast with
/// `Refusal::CircuitOpen` and the model is not run for them.
#[test]
fn an_open_breaker_refuses_without_running_the_model() {
    let e = small_engine(|c| {
        // Embeddings on the calling thread, so a local recorder sees them.
        c.queue.enabled = false;
        c.control.breaker.enabled = true;
        c.control.breaker.consecutive_failures = 1;
        c.control.breaker.open_seconds = 3600;
    });
    let (recorder, handle) = ragjet::telemetry::build_recorder().unwrap();
    let options = QueryOptions::new().top_k(2).no_cache(true);
    // Closed: a query embeds (the counter this test watches moves).
    metrics::with_local_recorder(&recorder, || e.query("parents class", &options)).unwrap();
    let embedded = |h: &ragjet::telemetry::MetricsHandle| {
        h.render()
            .lines()
            .filter(|l| l.starts_with("ragjet_embedding_batches_total"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    let before = embedded(&handle);
    assert!(before >= 1.0, "{}", handle.render());

    e.circuit_breaker().unwrap().acquire().unwrap().failure();
    let t0 = Instant::now();
    let err = metrics::with_local_recorder(&recorder, || {
        e.query("a query never embedded before", &options)
    })
    .unwrap_err();
    let took = t0.elapsed();
    match &err {
        Error::Overloaded(Refusal::CircuitOpen { retry_after, .. }) => {
            assert!(*retry_after > Duration::from_secs(3000), "{retry_after:?}");
            assert_eq!(err.retry_after(), Some(*retry_after));
        }
        other => panic!("expected CircuitOpen, got {other}"),
    }
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert!(took < Duration::from_millis(500), "{took:?}");
    let err = metrics::with_local_recorder(&recorder, || {
        e.ingest(vec![Document::new("new", "a document never embedded")])
    })
    .unwrap_err();
    assert!(
        matches!(err, Error::Overloaded(Refusal::CircuitOpen { .. })),
        "{err}"
    );
    assert_eq!(
        embedded(&handle),
        before,
        "the model ran behind an open breaker"
    );
}
