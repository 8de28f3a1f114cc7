//! `BatchQueue`: coalescing, budgets, priorities, back-pressure, deadlines,
//! worker failures and shutdown, with plain-Rust workers (no model).

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use ragjet::{BatchQueue, Overload, Priority, QueueError, QueueOptions};

type Queue = BatchQueue<u32, u32, String>;

/// Runs a future to completion on this thread, parked between polls.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park_timeout(Duration::from_secs(1));
    }
}

/// A door the worker waits at, so tests can fill the queue behind it.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn wait(&self) {
        let (open, cv) = &*self.0;
        let mut g = open.lock().unwrap();
        while !*g {
            g = cv.wait(g).unwrap();
        }
    }
    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
}

/// A worker that doubles its items and logs every batch; item 0 holds
/// the worker at `gate` (after saying so on `started`) until it opens.
struct Harness {
    batches: Arc<Mutex<Vec<Vec<u32>>>>,
    gate: Gate,
    started: mpsc::Receiver<()>,
}

fn gated(options: QueueOptions) -> (Queue, Harness) {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate::default();
    let (tx, started) = mpsc::channel();
    let log = Arc::clone(&batches);
    let door = gate.clone();
    let queue = BatchQueue::new(
        options,
        move |items: Vec<u32>| {
            log.lock().unwrap().push(items.clone());
            if items.contains(&0) {
                let _ = tx.send(());
                door.wait();
            }
            items.iter().map(|&i| Ok(i * 2)).collect()
        },
        |_: &u32| 1,
    )
    .unwrap();
    (
        queue,
        Harness {
            batches,
            gate,
            started,
        },
    )
}

impl Harness {
    /// Submits item 0 and returns once the worker is holding it.
    fn hold(&self, queue: &Queue) -> ragjet::Ticket<u32, String> {
        let t = queue.submit_async(0, Priority::Bulk);
        self.started
            .recv_timeout(Duration::from_secs(10))
            .expect("worker took item 0");
        t
    }
    fn seen(&self) -> Vec<u32> {
        self.batches.lock().unwrap().concat()
    }
}

fn options(name: &str) -> QueueOptions {
    QueueOptions {
        name: name.into(),
        ..Default::default()
    }
}

fn is_full<O: std::fmt::Debug>(r: &Result<O, QueueError<String>>) -> bool {
    matches!(
        r,
        Err(QueueError::Overloaded {
            reason: Overload::Full { .. },
            ..
        })
    )
}

fn is_expired<O: std::fmt::Debug>(r: &Result<O, QueueError<String>>) -> bool {
    matches!(
        r,
        Err(QueueError::Overloaded {
            reason: Overload::Expired { .. },
            ..
        })
    )
}

#[test]
fn concurrent_submits_are_coalesced_into_few_batches() {
    let calls = Arc::new(AtomicUsize::new(0));
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let (c, s) = (Arc::clone(&calls), Arc::clone(&sizes));
    let queue = Arc::new(
        BatchQueue::new(
            QueueOptions {
                max_wait: Duration::from_millis(20),
                ..options("coalesce")
            },
            move |items: Vec<u32>| {
                c.fetch_add(1, Ordering::SeqCst);
                s.lock().unwrap().push(items.len());
                thread::sleep(Duration::from_millis(20));
                items.iter().map(|&i| Ok::<_, String>(i + 1000)).collect()
            },
            |_: &u32| 1,
        )
        .unwrap(),
    );
    let n = 32;
    let start = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n as u32)
        .map(|i| {
            let (q, start) = (Arc::clone(&queue), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                q.submit(i, Priority::Interactive)
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap().unwrap(), i as u32 + 1000);
    }
    let calls = calls.load(Ordering::SeqCst);
    assert!(calls < n / 2, "{calls} worker calls for {n} submits");
    assert_eq!(sizes.lock().unwrap().iter().sum::<usize>(), n);
}

#[test]
fn batches_respect_the_item_limit_and_the_token_budget() {
    let sizes = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
    let log = Arc::clone(&sizes);
    let gate = Gate::default();
    let door = gate.clone();
    let queue = BatchQueue::new(
        QueueOptions {
            max_batch_items: 4,
            max_batch_cost: 100,
            ..options("budget")
        },
        move |items: Vec<u32>| {
            door.wait();
            log.lock().unwrap().push(items.clone());
            items.iter().map(|&i| Ok::<_, String>(i)).collect()
        },
        // Item i costs i tokens.
        |&i: &u32| i as usize,
    )
    .unwrap();
    let first = queue.submit_async(1, Priority::Bulk);
    thread::sleep(Duration::from_millis(50));
    // Behind the held first batch: ten cheap items, then 40 + 40 + 40
    // (only two fit 100), then one over the whole budget.
    let mut tickets: Vec<_> = (2..12)
        .map(|i| queue.submit_async(i, Priority::Bulk))
        .collect();
    for i in [40, 41, 42, 500] {
        tickets.push(queue.submit_async(i, Priority::Bulk));
    }
    gate.open();
    assert!(block_on(first).is_ok());
    for t in tickets {
        assert!(block_on(t).is_ok());
    }
    let batches = sizes.lock().unwrap().clone();
    for b in &batches {
        assert!(b.len() <= 4, "{b:?}");
        let cost: u32 = b.iter().sum();
        assert!(cost <= 100 || b.len() == 1, "{b:?} costs {cost}");
    }
    assert!(batches.contains(&vec![500]), "{batches:?}");
    assert!(batches.iter().any(|b| b.len() == 4), "{batches:?}");
}

#[test]
fn interactive_items_go_before_bulk_ones() {
    let (queue, h) = gated(QueueOptions {
        max_batch_items: 1,
        ..options("priorities")
    });
    let held = h.hold(&queue);
    let bulk: Vec<_> = (1..=3)
        .map(|i| queue.submit_async(i, Priority::Bulk))
        .collect();
    let interactive: Vec<_> = (11..=13)
        .map(|i| queue.submit_async(i, Priority::Interactive))
        .collect();
    assert_eq!(queue.depth(Priority::Bulk), 3);
    assert_eq!(queue.depth(Priority::Interactive), 3);
    h.gate.open();
    for t in bulk.into_iter().chain(interactive).chain([held]) {
        block_on(t).unwrap();
    }
    assert_eq!(h.seen(), vec![0, 11, 12, 13, 1, 2, 3]);
}

#[test]
fn a_full_queue_answers_overloaded_at_once() {
    let (queue, h) = gated(QueueOptions {
        capacity: 2,
        timeout: None,
        ..options("full")
    });
    let held = h.hold(&queue);
    let waiting: Vec<_> = (1..=2)
        .map(|i| queue.submit_async(i, Priority::Bulk))
        .collect();
    let t0 = Instant::now();
    let refused = queue.submit(3, Priority::Bulk);
    assert!(is_full(&refused), "{refused:?}");
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(refused.unwrap_err().is_overloaded());
    assert!(is_full(&block_on(queue.submit_async(4, Priority::Bulk))));
    // Each priority has its own room: a bulk backlog does not refuse queries.
    let query = queue.submit_async(5, Priority::Interactive);
    // All or nothing: three items do not fit in two places.
    let many = queue.submit_many(vec![6, 7, 8], Priority::Interactive);
    assert!(many.iter().all(is_full), "{many:?}");
    h.gate.open();
    assert_eq!(block_on(query).unwrap(), 10);
    for t in waiting.into_iter().chain([held]) {
        block_on(t).unwrap();
    }
    assert!(!h.seen().contains(&3) && !h.seen().contains(&4));
    assert_eq!(
        queue
            .submit_many(vec![6, 7], Priority::Bulk)
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>(),
        vec![12, 14]
    );
}

#[test]
fn withdrawn_items_free_their_place() {
    let (queue, h) = gated(QueueOptions {
        capacity: 1,
        ..options("withdrawn")
    });
    let held = h.hold(&queue);
    let gone = queue.submit_async(1, Priority::Bulk);
    drop(gone);
    // The dropped ticket's place is reclaimed rather than refusing this one.
    let kept = queue.submit_async(2, Priority::Bulk);
    h.gate.open();
    assert_eq!(block_on(kept).unwrap(), 4);
    block_on(held).unwrap();
    assert_eq!(h.seen(), vec![0, 2]);
}

#[test]
fn expired_deadlines_answer_overloaded_and_skip_the_work() {
    let (queue, h) = gated(options("deadline"));
    let held = h.hold(&queue);
    let t0 = Instant::now();
    let r = queue.submit_with(1, Priority::Interactive, Some(Duration::from_millis(50)));
    let waited = t0.elapsed();
    assert!(is_expired(&r), "{r:?}");
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // Async: the timer thread resolves the ticket while the worker is busy.
    let t0 = Instant::now();
    let r = block_on(queue.submit_async_with(
        2,
        Priority::Interactive,
        Some(Duration::from_millis(50)),
    ));
    assert!(is_expired(&r), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A later deadline queued before an earlier one still fires first.
    let late = queue.submit_async_with(3, Priority::Bulk, Some(Duration::from_secs(600)));
    let early = queue.submit_async_with(4, Priority::Bulk, Some(Duration::from_millis(30)));
    assert!(is_expired(&block_on(early)));

    h.gate.open();
    block_on(held).unwrap();
    assert_eq!(block_on(late).unwrap(), 6);
    // Expired items never reached the worker.
    assert_eq!(h.seen(), vec![0, 3]);
}

#[test]
fn a_worker_panic_fails_its_batch_and_the_queue_goes_on() {
    let queue = BatchQueue::new(
        options("panic"),
        |items: Vec<u32>| {
            if items.contains(&13) {
                panic!("unlucky item");
            }
            items.iter().map(|&i| Ok::<_, String>(i)).collect()
        },
        |_: &u32| 1,
    )
    .unwrap();
    match queue.submit(13, Priority::Interactive) {
        Err(QueueError::WorkerPanicked(m)) => assert!(m.contains("unlucky"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(queue.submit(7, Priority::Interactive).unwrap(), 7);
}

#[test]
fn worker_errors_and_bad_result_counts_reach_the_right_callers() {
    let queue = BatchQueue::new(
        QueueOptions {
            max_wait: Duration::from_millis(30),
            ..options("errors")
        },
        |items: Vec<u32>| {
            items
                .iter()
                .map(|&i| {
                    if i % 2 == 1 {
                        Err(format!("odd {i}"))
                    } else {
                        Ok(i)
                    }
                })
                .collect()
        },
        |_: &u32| 1,
    )
    .unwrap();
    let results = queue.submit_many(vec![1, 2, 3, 4], Priority::Bulk);
    assert_eq!(results[1].as_ref().unwrap(), &2);
    match &results[2] {
        Err(QueueError::Failed(e)) => assert_eq!(e, "odd 3"),
        other => panic!("{other:?}"),
    }

    let short = BatchQueue::new(
        options("short"),
        |_: Vec<u32>| Vec::<Result<u32, String>>::new(),
        |_: &u32| 1,
    )
    .unwrap();
    assert!(matches!(
        short.submit(1, Priority::Bulk),
        Err(QueueError::WorkerMismatch {
            expected: 1,
            got: 0
        })
    ));
}

#[test]
fn dropping_the_queue_finishes_the_batch_in_flight_and_closes_the_rest() {
    let (queue, h) = gated(QueueOptions {
        timeout: None,
        ..options("drop")
    });
    let held = h.hold(&queue);
    let queued: Vec<_> = (1..=3)
        .map(|i| queue.submit_async(i, Priority::Bulk))
        .collect();
    let (done_tx, done_rx) = mpsc::channel();
    let dropper = thread::spawn(move || {
        drop(queue);
        done_tx.send(()).unwrap();
    });
    // Drop waits for the batch in flight...
    assert!(done_rx.recv_timeout(Duration::from_millis(100)).is_err());
    h.gate.open();
    // ...then returns: no hang.
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("drop joined");
    dropper.join().unwrap();
    assert_eq!(block_on(held).unwrap(), 0);
    for t in queued {
        assert!(matches!(block_on(t), Err(QueueError::Closed)));
    }
    assert_eq!(h.seen(), vec![0]);
}

#[test]
fn an_async_submit_does_not_block_its_poller() {
    let (queue, h) = gated(options("async"));
    let held = h.hold(&queue);
    let mut ticket = queue.submit_async(21, Priority::Interactive);
    let mut cx = Context::from_waker(Waker::noop());
    let t0 = Instant::now();
    assert!(pin!(&mut ticket).poll(&mut cx).is_pending());
    assert!(t0.elapsed() < Duration::from_millis(100));
    h.gate.open();
    assert_eq!(block_on(ticket).unwrap(), 42);
    block_on(held).unwrap();
}

#[test]
fn max_wait_bounds_how_long_a_batch_waits_for_company() {
    let queue = Arc::new(
        BatchQueue::new(
            QueueOptions {
                max_wait: Duration::from_millis(60),
                max_batch_items: 2,
                ..options("window")
            },
            |items: Vec<u32>| items.iter().map(|&i| Ok::<_, String>(i)).collect(),
            |_: &u32| 1,
        )
        .unwrap(),
    );
    // Alone: the batch waits the window out for company, then runs.
    let t0 = Instant::now();
    assert_eq!(queue.submit(1, Priority::Interactive).unwrap(), 1);
    let alone = t0.elapsed();
    assert!(alone >= Duration::from_millis(60), "{alone:?}");
    // A full batch goes at once, long before a 10 s window would end.
    let slow = Arc::new(
        BatchQueue::new(
            QueueOptions {
                max_wait: Duration::from_secs(10),
                max_batch_items: 2,
                ..options("window-full")
            },
            |items: Vec<u32>| items.iter().map(|&i| Ok::<_, String>(i)).collect(),
            |_: &u32| 1,
        )
        .unwrap(),
    );
    let t0 = Instant::now();
    assert_eq!(
        slow.submit_many(vec![1, 2], Priority::Bulk)
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn options_are_checked() {
    for bad in [
        QueueOptions {
            capacity: 0,
            ..Default::default()
        },
        QueueOptions {
            max_batch_items: 0,
            ..Default::default()
        },
        QueueOptions {
            max_batch_cost: 0,
            ..Default::default()
        },
    ] {
        let r = BatchQueue::new(
            bad,
            |items: Vec<u32>| items.into_iter().map(Ok::<_, String>).collect(),
            |_: &u32| 1,
        );
        assert!(matches!(r, Err(QueueError::InvalidOption(_))));
    }
    let d = QueueOptions::default();
    assert_eq!(d.max_wait, Duration::ZERO);
}

#[test]
fn depth_wait_batch_and_rejections_are_exported() {
    let (recorder, handle) = ragjet::telemetry::build_recorder().unwrap();
    metrics::set_global_recorder(recorder).unwrap();
    let (queue, h) = gated(QueueOptions {
        capacity: 2,
        ..options("metrics-test")
    });
    let held = h.hold(&queue);
    let waiting: Vec<_> = (1..=2)
        .map(|i| queue.submit_async(i, Priority::Bulk))
        .collect();
    assert!(is_full(&queue.submit(3, Priority::Bulk)));
    let text = handle.render();
    assert!(
        text.contains(r#"ragjet_queue_depth{queue="metrics-test",priority="bulk"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"ragjet_queue_rejected_total{queue="metrics-test",reason="full"} 1"#));
    h.gate.open();
    for t in waiting.into_iter().chain([held]) {
        block_on(t).unwrap();
    }
    let text = handle.render();
    assert!(text.contains(r#"ragjet_queue_depth{queue="metrics-test",priority="bulk"} 0"#));
    assert!(
        text.contains(r#"ragjet_queue_wait_seconds_count{queue="metrics-test",priority="bulk"} 3"#),
        "{text}"
    );
    assert!(text.contains(r#"ragjet_queue_batch_size_count{queue="metrics-test"}"#));
}

/// The tiny random BERT cross-encoder that ragjet-inference's tests carry;
/// as a plain BERT folder it also loads as a (mean-pooling) embedder.
fn tiny_model() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ragjet-inference/tests/fixtures/tiny-cross-encoder")
}

#[test]
fn model_queues_give_what_direct_calls_give() {
    use ragjet::inference::{
        CrossEncoder, CrossEncoderOptions, Device, Embedder, EmbedderOptions, Precision,
    };
    use ragjet::queue::{embedding_queue, rerank_queue};

    let embedder = Arc::new(
        Embedder::load_with(
            tiny_model(),
            EmbedderOptions {
                device: Device::Cpu,
                precision: Some(Precision::F32),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let queue = Arc::new(embedding_queue(Arc::clone(&embedder), options("tiny-embed")).unwrap());
    let texts: Vec<String> = (0..24)
        .map(|i| "the cat sat on the mat ".repeat(1 + i % 5) + &i.to_string())
        .collect();
    let handles: Vec<_> = texts
        .iter()
        .cloned()
        .map(|t| {
            let q = Arc::clone(&queue);
            thread::spawn(move || q.submit(t, Priority::Interactive).unwrap())
        })
        .collect();
    for (text, h) in texts.iter().zip(handles) {
        let queued = h.join().unwrap();
        let direct = embedder.embed_one(text).unwrap();
        let d = queued
            .iter()
            .zip(&direct)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d <= 1e-5, "{text}: {d}");
    }

    let reranker = Arc::new(
        CrossEncoder::load_with(
            tiny_model(),
            CrossEncoderOptions {
                device: Device::Cpu,
                precision: Some(Precision::F32),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let rq = rerank_queue(Arc::clone(&reranker), options("tiny-rerank")).unwrap();
    let pairs: Vec<(String, String)> = texts
        .iter()
        .map(|t| ("where did the cat sit".to_owned(), t.clone()))
        .collect();
    let direct = reranker.predict(&pairs).unwrap();
    let queued: Vec<f32> = rq
        .submit_many(pairs, Priority::Interactive)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for (a, b) in queued.iter().zip(&direct) {
        assert!((a - b).abs() <= 1e-5, "{a} {b}");
    }
}

#[test]
fn one_failing_text_fails_alone_in_an_embedding_queue() {
    use ragjet::inference::{Device, Embedder, EmbedderOptions, InferenceError, Precision};
    use ragjet::queue::embedding_queue;

    // Any text over 20 tokens "runs out of memory" even alone: the embedder
    // fails the whole call, and the queue must then run the others alone.
    let embedder = Arc::new(
        Embedder::load_with(
            tiny_model(),
            EmbedderOptions {
                device: Device::Cpu,
                precision: Some(Precision::F32),
                simulate_oom_above_tokens: Some(20),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let queue = embedding_queue(Arc::clone(&embedder), options("isolate")).unwrap();
    let texts = vec![
        "the cat sat".to_owned(),
        "the dog ran fast on the long road by the river ".repeat(4),
        "red green blue".to_owned(),
    ];
    let out = queue.submit_many(texts.clone(), Priority::Bulk);
    assert_eq!(
        out[0].as_ref().unwrap(),
        &embedder.embed_one(&texts[0]).unwrap()
    );
    assert!(
        matches!(
            out[1],
            Err(QueueError::Failed(InferenceError::OutOfMemory { .. }))
        ),
        "{:?}",
        out[1]
    );
    assert_eq!(
        out[2].as_ref().unwrap(),
        &embedder.embed_one(&texts[2]).unwrap()
    );
}
