//! Peak memory under a burst of ten times the queue's capacity.
//!
//! One test in its own binary, because it reads the process's peak
//! resident set (`VmHWM` in `/proc/self/status`, reset through
//! `/proc/self/clear_refs`): other tests running beside it would move it.
//!
//! 1. The queue alone, async callers (who hold no thread, so nothing but
//!    the queue's bound keeps them from piling up): 10 × capacity items of
//!    64 KiB each while the model is busy. The queue keeps `capacity` of
//!    them and refuses the rest, so the peak grows by about capacity × 64
//!    KiB (16 MiB), not by the burst (160 MiB); the bound asserted sits
//!    between the two.
//! 2. The `Engine`, 10 × capacity threads querying at once: every call is
//!    served or refused as overloaded, and the peak growth is reported
//!    (threads' stacks and the model's activations, not the queue,
//!    dominate it) against a loose ceiling.
#![cfg(target_os = "linux")]

mod common;

use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use ragjet::{BatchQueue, Error, Priority, QueryOptions, QueueError, QueueOptions};

const MIB: f64 = (1 << 20) as f64;

/// A `/proc/self/status` field in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// Resets the peak resident set to the current one; returns the current.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM (Linux ≥ 4.0)");
    let (rss, hwm) = (status_bytes("VmRSS:"), status_bytes("VmHWM:"));
    // The reset worked: the peak is back near the current figure.
    assert!(
        hwm <= rss + (8 << 20),
        "VmHWM {hwm} not reset (VmRSS {rss})"
    );
    rss
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut f = std::pin::pin!(f);
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.changed.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }
}

fn queue_burst() -> f64 {
    const CAPACITY: usize = 256;
    const ITEM: usize = 64 << 10;
    let gate = Arc::new(Gate::default());
    let worker_gate = Arc::clone(&gate);
    let queue = BatchQueue::new(
        QueueOptions {
            name: "burst".into(),
            max_batch_items: 1,
            max_wait: Duration::ZERO,
            capacity: CAPACITY,
            timeout: None,
            ..QueueOptions::default()
        },
        move |items: Vec<String>| {
            worker_gate.wait();
            items
                .into_iter()
                .map(|s| Ok::<usize, String>(s.len()))
                .collect()
        },
        |_: &String| 1,
    )
    .unwrap();
    let payload = |i: usize| format!("{i:08}").repeat(ITEM / 8);

    let base = reset_peak();
    // The worker takes the first item and blocks on it: the model is busy.
    let first = queue.submit_async(payload(0), Priority::Bulk);
    let t0 = Instant::now();
    while queue.depth(Priority::Bulk) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "worker never started"
        );
        std::thread::yield_now();
    }
    let burst = 10 * CAPACITY;
    let tickets: Vec<_> = (1..=burst)
        .map(|i| queue.submit_async(payload(i), Priority::Bulk))
        .collect();
    assert_eq!(queue.depth(Priority::Bulk), CAPACITY);
    let growth = status_bytes("VmHWM:").saturating_sub(base) as f64;

    gate.open();
    assert_eq!(block_on(first).unwrap(), ITEM);
    let (mut served, mut full) = (0, 0);
    for t in tickets {
        match block_on(t) {
            Ok(n) => {
                assert_eq!(n, ITEM);
                served += 1;
            }
            Err(QueueError::Overloaded {
                reason: ragjet::Overload::Full { capacity },
                ..
            }) => {
                assert_eq!(capacity, CAPACITY);
                full += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((served, full), (CAPACITY, burst - CAPACITY));

    let held = (CAPACITY * ITEM) as f64;
    let everything = (burst * ITEM) as f64;
    eprintln!(
        "queue burst: {burst} × 64 KiB against capacity {CAPACITY}: peak RSS +{:.1} MiB \
         (queue's share {:.0} MiB; the whole burst would be {:.0} MiB)",
        growth / MIB,
        held / MIB,
        everything / MIB
    );
    // Twice what the queue may hold, plus slack for the allocator: far
    // below what keeping the whole burst would take.
    assert!(
        growth < 2.0 * held + 8.0 * MIB,
        "peak grew {:.1} MiB",
        growth / MIB
    );
    growth
}

fn engine_burst() -> f64 {
    const CAPACITY: usize = 16;
    let e = Arc::new(
        common::builder()
            .configure(|c| {
                c.queue.capacity = CAPACITY;
                c.queue.max_batch_items = 8;
                c.queue.timeout_ms = None;
            })
            .build()
            .unwrap(),
    );
    e.ingest(common::corpus()[..20].to_vec()).unwrap();
    let options = QueryOptions::new().top_k(3).no_cache(true);
    e.query("warm the model up", &options).unwrap();

    let callers = 10 * CAPACITY;
    let barrier = Arc::new(Barrier::new(callers));
    let base = reset_peak();
    let handles: Vec<_> = (0..callers)
        .map(|i| {
            let (e, barrier, options) = (Arc::clone(&e), Arc::clone(&barrier), options.clone());
            std::thread::spawn(move || {
                let q: String = (0..120).map(|w| format!("t{i}w{w} ")).collect();
                barrier.wait();
                e.query(&q, &options)
            })
        })
        .collect();
    let (mut served, mut refused) = (0, 0);
    for h in handles {
        match h.join().unwrap() {
            Ok(_) => served += 1,
            Err(Error::Overloaded(ragjet::Refusal::QueueFull { .. })) => refused += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    let growth = status_bytes("VmHWM:").saturating_sub(base) as f64;
    eprintln!(
        "engine burst: {callers} concurrent queries against capacity {CAPACITY}: \
         {served} served, {refused} refused, peak RSS +{:.1} MiB",
        growth / MIB
    );
    assert_eq!(served + refused, callers);
    assert!(served >= 1);
    assert!(growth < 256.0 * MIB, "peak grew {:.1} MiB", growth / MIB);
    growth
}

#[test]
fn a_burst_of_ten_times_the_queue_keeps_memory_bounded() {
    queue_burst();
    engine_burst();
}
