//! A micro-batching queue: one model instance serves every caller.
//!
//! A forward pass over 16 short texts costs little more than over one (the
//! weights are read once, the matrix products are wider), so callers that
//! each embed or rerank one query at a time waste most of the model's
//! throughput, and running them concurrently on one model only makes them
//! contend for its threads. [`BatchQueue`] puts their items in a queue that
//! one worker thread drains in batches: a batch closes when it reaches
//! [`QueueOptions::max_batch_cost`] (tokens) or
//! [`QueueOptions::max_batch_items`], or when its oldest item has waited
//! [`QueueOptions::max_wait`] (0 by default); while the worker runs a
//! batch, the next one fills up by itself. Waiting is off by default
//! because that is where batches come from under load: with 16 callers on
//! the 2-core Xeon here (AMX), no wait gave 1.37× the queries/s of direct
//! calls, 1 ms 1.29–1.42×, 2 ms 1.13× and 5 ms 0.89×, and a lone query
//! paid the whole window (`examples/queue_throughput.rs`,
//! docs/performance.md).
//!
//! - **Priorities**: [`Priority::Interactive`] items go before
//!   [`Priority::Bulk`] ones (queries before ingest); each priority has its
//!   own bounded queue, so a bulk backlog never turns a query away.
//! - **Back-pressure**: a full queue answers [`QueueError::Overloaded`] at
//!   once, and so does a request whose deadline passes before its result
//!   is in ([`QueueOptions::timeout`], or per call): callers never wait
//!   forever and the queue never grows without bound.
//! - **Threads and async**: [`BatchQueue::submit`] blocks the calling
//!   thread; [`BatchQueue::submit_async`] returns a [`Ticket`], a future
//!   woken by the worker, which never blocks an executor's thread.
//! - **Failures**: a panic in the worker becomes
//!   [`QueueError::WorkerPanicked`] for the items of that batch, and the
//!   queue goes on serving; dropping the queue finishes the batch in
//!   flight, answers [`QueueError::Closed`] to everything still queued and
//!   joins its threads.
//!
//! [`embedding_queue`] and [`rerank_queue`] build queues in front of an
//! [`Embedder`] and a [`CrossEncoder`].
//!
//! Metrics (catalogue in `docs/metrics.md`): `ragjet_queue_depth` (items
//! waiting, per priority), `ragjet_queue_wait_seconds` (from submission to
//! the start of the item's batch), `ragjet_queue_batch_size` and
//! `ragjet_queue_rejected_total{reason=full|expired}`, all labelled with
//! [`QueueOptions::name`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ragjet_inference::{CrossEncoder, Embedder, InferenceError};
use ragjet_telemetry::metrics as m;

/// Which queue an item waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Someone is waiting for the answer (a query): served first.
    Interactive,
    /// Throughput work (ingest): served when no interactive item waits.
    Bulk,
}

impl Priority {
    /// The `priority` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Bulk => "bulk",
        }
    }

    fn index(self) -> usize {
        match self {
            Priority::Interactive => 0,
            Priority::Bulk => 1,
        }
    }
}

const PRIORITIES: [Priority; 2] = [Priority::Interactive, Priority::Bulk];

/// How a [`BatchQueue`] batches and when it refuses work.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// The `queue` label of its metrics and the name of its threads.
    pub name: String,
    /// Most cost (tokens, as the cost function counts them) in one batch;
    /// an item costing more still runs, alone. Default 16384, the
    /// embedder's own batch budget.
    pub max_batch_cost: usize,
    /// Most items in one batch (default 64).
    pub max_batch_items: usize,
    /// How long the oldest item of a batch may wait for others to join it
    /// (default 0: a batch is whatever queued while the worker was busy).
    /// Items that waited while the worker was busy go at once.
    pub max_wait: Duration,
    /// Most items waiting in each priority's queue (default 4096); beyond
    /// it a submission is [`Overload::Full`] at once.
    pub capacity: usize,
    /// Longest a caller waits for its result, queueing and computing
    /// included, before [`Overload::Expired`] (default 30 s; `None` waits
    /// as long as it takes). Each call can set its own.
    pub timeout: Option<Duration>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            name: "default".into(),
            max_batch_cost: 16384,
            max_batch_items: 64,
            max_wait: Duration::ZERO,
            capacity: 4096,
            timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Why a [`BatchQueue`] refused or gave up on an item.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::{BatchQueue, Overload, Priority, QueueError, QueueOptions};
/// use std::time::Duration;
///
/// // A slow worker and a short deadline: the caller is told at once instead of waiting on.
/// let queue = BatchQueue::new(
///     QueueOptions { name: "slow".into(), timeout: Some(Duration::from_millis(5)), ..QueueOptions::default() },
///     |batch: Vec<u32>| {
///         std::thread::sleep(Duration::from_millis(200));
///         batch.into_iter().map(Ok::<u32, std::io::Error>).collect()
///     },
///     |_: &u32| 1,
/// )?;
/// let err = queue.submit(1, Priority::Interactive).unwrap_err();
/// assert!(err.is_overloaded());
/// assert!(matches!(err, QueueError::Overloaded { reason: Overload::Expired { .. }, .. }));
/// // A caller that can wait says so for its own call.
/// assert_eq!(queue.submit_with(2, Priority::Bulk, Some(Duration::from_secs(30)))?, 2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// The item's priority queue already held `capacity` items.
    Full {
        /// [`QueueOptions::capacity`].
        capacity: usize,
    },
    /// The item's deadline passed before its result was in.
    Expired {
        /// How long the caller had waited.
        waited: Duration,
    },
}

impl std::fmt::Display for Overload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overload::Full { capacity } => write!(f, "queue full ({capacity} items waiting)"),
            Overload::Expired { waited } => {
                write!(
                    f,
                    "deadline expired after {:.1} ms",
                    waited.as_secs_f64() * 1e3
                )
            }
        }
    }
}

/// What a [`BatchQueue`] call can fail with; `E` is the worker's own error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError<E> {
    /// The queue is full or the deadline passed: retry later, or shed load.
    #[error("queue {queue:?} overloaded: {reason}")]
    Overloaded {
        /// [`QueueOptions::name`].
        queue: String,
        /// Full queue or expired deadline.
        reason: Overload,
    },
    /// The worker ran the item and returned this error for it.
    #[error("{0}")]
    Failed(#[source] E),
    /// The worker panicked on the batch holding this item.
    #[error("the batch worker panicked: {0}")]
    WorkerPanicked(String),
    /// The worker returned a different number of results than items.
    #[error("the batch worker returned {got} results for {expected} items")]
    WorkerMismatch {
        /// Items in the batch.
        expected: usize,
        /// Results returned.
        got: usize,
    },
    /// The queue was dropped (or its worker thread died) before the item ran.
    #[error("the queue is shut down")]
    Closed,
    /// A [`QueueOptions`] value is out of range, or a thread could not start.
    #[error("invalid queue option: {0}")]
    InvalidOption(String),
}

impl<E> QueueError<E> {
    /// Whether this is [`QueueError::Overloaded`]: the request was shed,
    /// not run.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, QueueError::Overloaded { .. })
    }
}

type Outcome<O, E> = Result<O, QueueError<E>>;
/// Where one item's outcome is delivered.
type OutcomeSlot<O, E> = Arc<Slot<Outcome<O, E>>>;

/// Where one item's result is delivered: first writer wins (the worker,
/// the deadline, a shutdown); a caller that gave up marks it `done` so
/// the worker skips the item.
struct Slot<T> {
    inner: Mutex<SlotInner<T>>,
    ready: Condvar,
}

struct SlotInner<T> {
    value: Option<T>,
    done: bool,
    waker: Option<Waker>,
}

impl<T> Slot<T> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(SlotInner {
                value: None,
                done: false,
                waker: None,
            }),
            ready: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotInner<T>> {
        // Plain data: valid whatever a panicking holder did.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers `value` unless the slot is already done; says whether it did.
    fn complete(&self, value: T) -> bool {
        let waker = {
            let mut s = self.lock();
            if s.done {
                return false;
            }
            s.done = true;
            s.value = Some(value);
            s.waker.take()
        };
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    fn is_done(&self) -> bool {
        self.lock().done
    }

    /// The caller is gone: the worker need not run the item.
    fn abandon(&self) {
        let mut s = self.lock();
        s.done = true;
        s.value = None;
    }
}

struct Request<I, O, E> {
    item: I,
    cost: usize,
    priority: Priority,
    enqueued: Instant,
    slot: OutcomeSlot<O, E>,
}

struct State<I, O, E> {
    queues: [VecDeque<Request<I, O, E>>; 2],
    closed: bool,
}

impl<I, O, E> State<I, O, E> {
    /// The next live request in priority order, skipping (and dropping)
    /// those whose caller gave up.
    fn front(&mut self) -> Option<&Request<I, O, E>> {
        for q in &mut self.queues {
            while q.front().is_some_and(|r| r.slot.is_done()) {
                q.pop_front();
            }
            if let Some(r) = q.front() {
                return Some(r);
            }
        }
        None
    }

    fn pop(&mut self) -> Option<Request<I, O, E>> {
        self.front()?;
        self.queues.iter_mut().find_map(VecDeque::pop_front)
    }
}

/// A deadline the timer thread watches for an async caller.
struct Deadline<T> {
    at: Instant,
    enqueued: Instant,
    slot: Weak<Slot<T>>,
}

impl<T> PartialEq for Deadline<T> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl<T> Eq for Deadline<T> {}
impl<T> PartialOrd for Deadline<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Deadline<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

struct Timer<T> {
    heap: BinaryHeap<Reverse<Deadline<T>>>,
    closed: bool,
}

type CostFn<I> = dyn Fn(&I) -> usize + Send + Sync;

struct Shared<I, O, E> {
    state: Mutex<State<I, O, E>>,
    /// Wakes the worker: an item arrived, or the queue closed.
    arrived: Condvar,
    timer: Mutex<Timer<Outcome<O, E>>>,
    timer_changed: Condvar,
    options: QueueOptions,
    cost: Box<CostFn<I>>,
}

impl<I, O, E> Shared<I, O, E> {
    fn state(&self) -> MutexGuard<'_, State<I, O, E>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn timer(&self) -> MutexGuard<'_, Timer<Outcome<O, E>>> {
        self.timer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn overloaded(&self, reason: Overload) -> QueueError<E> {
        let label = match reason {
            Overload::Full { .. } => "full",
            Overload::Expired { .. } => "expired",
        };
        m::record_queue_rejected(&self.options.name, label);
        QueueError::Overloaded {
            queue: self.options.name.clone(),
            reason,
        }
    }

    fn publish_depth(&self, state: &State<I, O, E>) {
        for p in PRIORITIES {
            m::set_queue_depth(
                &self.options.name,
                p.as_str(),
                state.queues[p.index()].len(),
            );
        }
    }

    /// Ends `slot` with [`Overload::Expired`] unless it already has a result.
    fn expire(&self, slot: &Slot<Outcome<O, E>>, enqueued: Instant) {
        let waited = enqueued.elapsed();
        let mut s = slot.lock();
        if s.done {
            return;
        }
        s.done = true;
        s.value = Some(Err(self.overloaded(Overload::Expired { waited })));
        let waker = s.waker.take();
        drop(s);
        slot.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A micro-batching queue in front of one worker (a model): see the
/// [module documentation](self).
///
/// `I` is an item (a text, a query–passage pair), `O` its result, `E` the
/// worker's error. `BatchQueue` is `Send + Sync`; share it behind an `Arc`.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::{BatchQueue, Priority, QueueError, QueueOptions};
/// use std::sync::Arc;
///
/// // A stand-in "model" that upper-cases a whole batch in one call.
/// let options = QueueOptions { name: "upper".into(), max_batch_items: 8, ..QueueOptions::default() };
/// let queue: Arc<BatchQueue<String, String, std::convert::Infallible>> = Arc::new(BatchQueue::new(
///     options,
///     |batch: Vec<String>| batch.into_iter().map(|s| Ok(s.to_uppercase())).collect(),
///     |item: &String| item.len(), // what an item counts against max_batch_cost
/// )?);
///
/// // Many callers, one worker: concurrent submissions share batches.
/// let callers: Vec<_> = (0..4)
///     .map(|i| {
///         let queue = Arc::clone(&queue);
///         std::thread::spawn(move || queue.submit(format!("query {i}"), Priority::Interactive))
///     })
///     .collect();
/// for (i, caller) in callers.into_iter().enumerate() {
///     assert_eq!(caller.join().unwrap()?, format!("QUERY {i}"));
/// }
/// // Bulk work goes in one admission; results come back in input order.
/// let results = queue.submit_many(vec!["a".into(), "b".into()], Priority::Bulk);
/// assert_eq!(results.into_iter().collect::<Result<Vec<_>, _>>()?, ["A", "B"]);
/// assert_eq!(queue.depth(Priority::Bulk), 0);
/// # let _: Option<QueueError<std::convert::Infallible>> = None;
/// # Ok(()) }
/// ```
pub struct BatchQueue<I, O, E> {
    shared: Arc<Shared<I, O, E>>,
    worker: Option<JoinHandle<()>>,
    timer: Option<JoinHandle<()>>,
}

impl<I, O, E> std::fmt::Debug for BatchQueue<I, O, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.shared.state();
        f.debug_struct("BatchQueue")
            .field("options", &self.shared.options)
            .field("interactive", &s.queues[0].len())
            .field("bulk", &s.queues[1].len())
            .field("closed", &s.closed)
            .finish()
    }
}

impl<I, O, E> BatchQueue<I, O, E>
where
    I: Send + 'static,
    O: Send + 'static,
    E: Send + 'static,
{
    /// Starts a queue whose worker thread calls `worker` on every batch.
    ///
    /// `worker` gets the batch's items and must return one result per
    /// item, in the same order. `cost` says what an item counts against
    /// [`QueueOptions::max_batch_cost`] (tokens for a model); it runs on
    /// the submitting thread.
    pub fn new<W, C>(options: QueueOptions, worker: W, cost: C) -> Result<Self, QueueError<E>>
    where
        W: FnMut(Vec<I>) -> Vec<Result<O, E>> + Send + 'static,
        C: Fn(&I) -> usize + Send + Sync + 'static,
    {
        if options.max_batch_items == 0 || options.max_batch_cost == 0 || options.capacity == 0 {
            return Err(QueueError::InvalidOption(
                "max_batch_items, max_batch_cost and capacity must be at least 1".into(),
            ));
        }
        let name = options.name.clone();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queues: [VecDeque::new(), VecDeque::new()],
                closed: false,
            }),
            arrived: Condvar::new(),
            timer: Mutex::new(Timer {
                heap: BinaryHeap::new(),
                closed: false,
            }),
            timer_changed: Condvar::new(),
            options,
            cost: Box::new(cost),
        });
        let spawn_error = |e: std::io::Error| QueueError::InvalidOption(format!("thread: {e}"));
        let worker = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("ragjet-queue-{name}"))
                .spawn(move || run_worker(&shared, worker))
                .map_err(spawn_error)?
        };
        let timer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("ragjet-queue-{name}-timer"))
                .spawn(move || run_timer(&shared))
        };
        let mut queue = Self {
            shared,
            worker: Some(worker),
            timer: None,
        };
        // On failure, dropping `queue` stops the worker it already started.
        queue.timer = Some(timer.map_err(spawn_error)?);
        Ok(queue)
    }

    /// The options the queue was built with.
    pub fn options(&self) -> &QueueOptions {
        &self.shared.options
    }

    /// Items waiting (not yet in a batch) at `priority`.
    pub fn depth(&self, priority: Priority) -> usize {
        self.shared.state().queues[priority.index()].len()
    }

    /// Runs `item` in a batch and waits for its result, at most
    /// [`QueueOptions::timeout`].
    pub fn submit(&self, item: I, priority: Priority) -> Outcome<O, E> {
        self.submit_with(item, priority, self.shared.options.timeout)
    }

    /// [`submit`](Self::submit) with this call's own timeout (`None`: no
    /// deadline).
    pub fn submit_with(
        &self,
        item: I,
        priority: Priority,
        timeout: Option<Duration>,
    ) -> Outcome<O, E> {
        let enqueued = Instant::now();
        let deadline = timeout.map(|t| enqueued + t);
        let slot = Slot::new();
        self.enqueue(vec![(item, Arc::clone(&slot))], priority, enqueued)?;
        self.wait(&slot, deadline, enqueued)
    }

    /// Submits every item at once (one admission check: all or none are
    /// queued, so `items` must fit in [`QueueOptions::capacity`]) and waits
    /// for all of them; results in input order. For bulk work, where one
    /// caller has many items.
    pub fn submit_many(&self, items: Vec<I>, priority: Priority) -> Vec<Outcome<O, E>> {
        let enqueued = Instant::now();
        let deadline = self.shared.options.timeout.map(|t| enqueued + t);
        let n = items.len();
        let slots: Vec<_> = (0..n).map(|_| Slot::new()).collect();
        let batch = items.into_iter().zip(slots.iter().cloned()).collect();
        if let Err(e) = self.enqueue(batch, priority, enqueued) {
            let reason = match e {
                QueueError::Overloaded { reason, .. } => Some(reason),
                _ => None,
            };
            return (0..n)
                .map(|_| match reason {
                    Some(reason) => Err(QueueError::Overloaded {
                        queue: self.shared.options.name.clone(),
                        reason,
                    }),
                    None => Err(QueueError::Closed),
                })
                .collect();
        }
        slots
            .iter()
            .map(|slot| self.wait(slot, deadline, enqueued))
            .collect()
    }

    /// Queues `item` and returns at once: the [`Ticket`] resolves to its
    /// result, or to [`Overload::Expired`] at [`QueueOptions::timeout`].
    /// Dropping the ticket withdraws the item if it has not run yet.
    pub fn submit_async(&self, item: I, priority: Priority) -> Ticket<O, E> {
        self.submit_async_with(item, priority, self.shared.options.timeout)
    }

    /// [`submit_async`](Self::submit_async) with this call's own timeout.
    pub fn submit_async_with(
        &self,
        item: I,
        priority: Priority,
        timeout: Option<Duration>,
    ) -> Ticket<O, E> {
        let enqueued = Instant::now();
        let slot = Slot::new();
        let ticket = Ticket {
            slot: Arc::clone(&slot),
        };
        if let Err(e) = self.enqueue(vec![(item, Arc::clone(&slot))], priority, enqueued) {
            slot.complete(Err(e));
            return ticket;
        }
        if let Some(t) = timeout {
            let at = enqueued + t;
            let mut timer = self.shared.timer();
            let earliest = timer.heap.peek().is_none_or(|Reverse(d)| at < d.at);
            timer.heap.push(Reverse(Deadline {
                at,
                enqueued,
                slot: Arc::downgrade(&slot),
            }));
            // Finished requests' deadlines stay until they fall due; prune
            // them before they outnumber the live ones.
            let live_bound = 2 * self.shared.options.capacity + 1024;
            if timer.heap.len() > live_bound {
                let heap = std::mem::take(&mut timer.heap);
                timer.heap = heap
                    .into_iter()
                    .filter(|Reverse(d)| d.slot.upgrade().is_some_and(|s| !s.is_done()))
                    .collect();
            }
            drop(timer);
            if earliest {
                self.shared.timer_changed.notify_one();
            }
        }
        ticket
    }

    /// Admits `items` (all or none) at `priority`.
    fn enqueue(
        &self,
        items: Vec<(I, OutcomeSlot<O, E>)>,
        priority: Priority,
        enqueued: Instant,
    ) -> Result<(), QueueError<E>> {
        let shared = &self.shared;
        let costs: Vec<usize> = items.iter().map(|(item, _)| (shared.cost)(item)).collect();
        let mut state = shared.state();
        if state.closed {
            return Err(QueueError::Closed);
        }
        let capacity = shared.options.capacity;
        let queue = &mut state.queues[priority.index()];
        if queue.len() + items.len() > capacity {
            // Requests whose callers gave up still hold places: drop them
            // before refusing anyone.
            queue.retain(|r| !r.slot.is_done());
            if queue.len() + items.len() > capacity {
                drop(state);
                return Err(shared.overloaded(Overload::Full { capacity }));
            }
        }
        for ((item, slot), cost) in items.into_iter().zip(costs) {
            queue.push_back(Request {
                item,
                cost,
                priority,
                enqueued,
                slot,
            });
        }
        shared.publish_depth(&state);
        drop(state);
        shared.arrived.notify_one();
        Ok(())
    }

    fn wait(
        &self,
        slot: &Slot<Outcome<O, E>>,
        deadline: Option<Instant>,
        enqueued: Instant,
    ) -> Outcome<O, E> {
        let mut s = slot.lock();
        loop {
            if let Some(v) = s.value.take() {
                return v;
            }
            if s.done {
                // Taken already: cannot happen for the one waiter a slot has.
                return Err(QueueError::Closed);
            }
            match deadline {
                None => s = slot.ready.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        drop(s);
                        self.shared.expire(slot, enqueued);
                        s = slot.lock();
                        continue;
                    }
                    s = slot
                        .ready
                        .wait_timeout(s, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

impl<I, O, E> Drop for BatchQueue<I, O, E> {
    fn drop(&mut self) {
        self.shared.state().closed = true;
        self.shared.arrived.notify_all();
        self.shared.timer().closed = true;
        self.shared.timer_changed.notify_all();
        // The worker finishes its batch in flight, answers `Closed` to the
        // rest and ends; the timer ends at once.
        for handle in [self.worker.take(), self.timer.take()]
            .into_iter()
            .flatten()
        {
            let _ = handle.join();
        }
    }
}

/// The future of one [`BatchQueue::submit_async`] call.
///
/// It is woken by the worker (or the deadline timer) and never blocks the
/// thread that polls it. Dropping it withdraws the item if it has not run.
///
/// # Examples
///
/// Any executor can poll it; here a minimal one that parks the thread until
/// the worker wakes it.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::{BatchQueue, Priority, QueueOptions};
/// use std::future::Future;
/// use std::sync::Arc;
/// use std::task::{Context, Poll, Wake, Waker};
///
/// struct Unpark(std::thread::Thread);
/// impl Wake for Unpark {
///     fn wake(self: Arc<Self>) {
///         self.0.unpark();
///     }
/// }
/// fn block_on<F: Future>(future: F) -> F::Output {
///     let mut future = std::pin::pin!(future);
///     let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
///     let mut cx = Context::from_waker(&waker);
///     loop {
///         if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
///             return out;
///         }
///         std::thread::park();
///     }
/// }
///
/// let queue = BatchQueue::new(
///     QueueOptions::default(),
///     |batch: Vec<u64>| batch.into_iter().map(|n| Ok::<u64, std::io::Error>(n * n)).collect(),
///     |_: &u64| 1,
/// )?;
/// let tickets: Vec<_> = (1..=3).map(|n| queue.submit_async(n, Priority::Interactive)).collect();
/// let squares: Vec<u64> = tickets.into_iter().map(|t| block_on(t)).collect::<Result<_, _>>()?;
/// assert_eq!(squares, [1, 4, 9]);
/// # Ok(()) }
/// ```
#[must_use = "a ticket does nothing unless awaited; dropping it withdraws the item"]
pub struct Ticket<O, E> {
    slot: OutcomeSlot<O, E>,
}

impl<O, E> std::fmt::Debug for Ticket<O, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("done", &self.slot.is_done())
            .finish()
    }
}

impl<O, E> Future for Ticket<O, E> {
    type Output = Outcome<O, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.slot.lock();
        if let Some(v) = s.value.take() {
            return Poll::Ready(v);
        }
        if s.done {
            // Polled again after it resolved.
            return Poll::Ready(Err(QueueError::Closed));
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<O, E> Drop for Ticket<O, E> {
    fn drop(&mut self) {
        self.slot.abandon();
    }
}

/// Answers every queued request when the worker thread ends: `Closed` on
/// shutdown, `WorkerPanicked` if the thread itself unwinds (a bug outside
/// the worker closure, which is caught per batch).
struct FailQueuedOnExit<'a, I, O, E>(&'a Shared<I, O, E>);

impl<I, O, E> Drop for FailQueuedOnExit<'_, I, O, E> {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let mut state = self.0.state();
        state.closed = true;
        let queued: Vec<_> = state.queues.iter_mut().flat_map(|q| q.drain(..)).collect();
        self.0.publish_depth(&state);
        drop(state);
        for r in queued {
            r.slot.complete(Err(if panicking {
                QueueError::WorkerPanicked("the queue's worker thread died".into())
            } else {
                QueueError::Closed
            }));
        }
    }
}

fn run_worker<I, O, E, W>(shared: &Shared<I, O, E>, mut worker: W)
where
    W: FnMut(Vec<I>) -> Vec<Result<O, E>>,
{
    let _guard = FailQueuedOnExit(shared);
    while let Some(batch) = next_batch(shared) {
        let (items, slots): (Vec<I>, Vec<_>) = batch.into_iter().map(|r| (r.item, r.slot)).unzip();
        let expected = items.len();
        m::record_queue_batch(&shared.options.name, expected);
        match catch_unwind(AssertUnwindSafe(|| worker(items))) {
            Ok(results) if results.len() == expected => {
                for (slot, r) in slots.iter().zip(results) {
                    slot.complete(r.map_err(QueueError::Failed));
                }
            }
            Ok(results) => {
                let got = results.len();
                tracing::error!(
                    queue = %shared.options.name,
                    expected,
                    got,
                    "batch worker returned the wrong number of results"
                );
                for slot in &slots {
                    slot.complete(Err(QueueError::WorkerMismatch { expected, got }));
                }
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                tracing::error!(queue = %shared.options.name, %message, "batch worker panicked");
                for slot in &slots {
                    slot.complete(Err(QueueError::WorkerPanicked(message.clone())));
                }
            }
        }
    }
}

/// Waits for work and gathers the next batch; `None` once the queue closed.
fn next_batch<I, O, E>(shared: &Shared<I, O, E>) -> Option<Vec<Request<I, O, E>>> {
    let options = &shared.options;
    let mut state = shared.state();
    let first = loop {
        if state.closed {
            return None;
        }
        if let Some(r) = state.pop() {
            break r;
        }
        state = shared
            .arrived
            .wait(state)
            .unwrap_or_else(|e| e.into_inner());
    };
    let window_end = first.enqueued + options.max_wait;
    let mut cost = first.cost;
    let mut batch = vec![first];
    loop {
        let mut full = batch.len() >= options.max_batch_items;
        while !full {
            match state.front() {
                Some(r) if cost + r.cost <= options.max_batch_cost => {
                    cost += r.cost;
                    batch.extend(state.pop());
                    full = batch.len() >= options.max_batch_items;
                }
                Some(_) => full = true,
                None => break,
            }
        }
        let now = Instant::now();
        if full || state.closed || now >= window_end {
            break;
        }
        state = shared
            .arrived
            .wait_timeout(state, window_end - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    shared.publish_depth(&state);
    drop(state);
    let now = Instant::now();
    for r in &batch {
        m::record_queue_wait(
            &options.name,
            r.priority.as_str(),
            now.duration_since(r.enqueued),
        );
    }
    Some(batch)
}

fn run_timer<I, O, E>(shared: &Shared<I, O, E>) {
    let mut timer = shared.timer();
    loop {
        if timer.closed {
            return;
        }
        let now = Instant::now();
        match timer.heap.peek() {
            None => {
                timer = shared
                    .timer_changed
                    .wait(timer)
                    .unwrap_or_else(|e| e.into_inner());
            }
            Some(Reverse(d)) if d.at <= now => {
                let Some(Reverse(d)) = timer.heap.pop() else {
                    continue;
                };
                drop(timer);
                if let Some(slot) = d.slot.upgrade() {
                    shared.expire(&slot, d.enqueued);
                }
                timer = shared.timer();
            }
            Some(Reverse(d)) => {
                let wait = d.at - now;
                timer = shared
                    .timer_changed
                    .wait_timeout(timer, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
}

/// What a text of `bytes` bytes costs in an embedding or reranking queue:
/// a token estimate plus the special tokens, capped at what the model reads.
fn estimated_tokens(bytes: usize, specials: usize, max: usize) -> usize {
    (bytes.div_ceil(3) + specials).min(max).max(1)
}

/// Runs a batch through `run`; when the batch as a whole fails, runs each
/// item alone, so that one bad item fails only itself.
fn isolate_failures<I, O>(
    items: Vec<I>,
    run: impl Fn(&[I]) -> Result<Vec<O>, InferenceError>,
) -> Vec<Result<O, InferenceError>> {
    match run(&items) {
        Ok(out) => out.into_iter().map(Ok).collect(),
        Err(e) if items.len() == 1 => vec![Err(e)],
        Err(_) => items
            .chunks(1)
            .map(|one| run(one).and_then(|mut v| v.pop().ok_or(InferenceError::EmptyInput)))
            .collect(),
    }
}

/// A queue in front of `embedder`: texts in, vectors out (as
/// [`Embedder::embed`]). Items cost their length in bytes over three plus
/// `[CLS]` and `[SEP]`, capped at the model's `max_seq_length`: an
/// over-estimate of WordPiece tokens for English (about 4.5 bytes each) and
/// close for CJK text, which spares tokenising every text twice (the
/// embedder plans its own forward passes by exact counts).
///
/// # Examples
///
/// Here with the tiny test model of ragjet-inference, so it runs in
/// milliseconds.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::inference::{Device, Embedder, EmbedderOptions};
/// use ragjet::queue::embedding_queue;
/// use ragjet::{Priority, QueueOptions};
/// use std::sync::Arc;
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ragjet-inference/tests/fixtures/tiny-cross-encoder");
/// let embedder = Arc::new(Embedder::load_with(dir, EmbedderOptions { device: Device::Cpu, ..Default::default() })?);
/// let queue = embedding_queue(Arc::clone(&embedder), QueueOptions::default())?;
/// let vector = queue.submit("what is a queue?".to_string(), Priority::Interactive)?;
/// assert_eq!(vector.len(), embedder.dim());
/// // A batch through the queue gives the vectors a direct call gives.
/// let direct = embedder.embed_one("what is a queue?")?;
/// assert!(vector.iter().zip(&direct).all(|(a, b)| (a - b).abs() < 1e-4));
/// # Ok(()) }
/// ```
pub fn embedding_queue(
    embedder: Arc<Embedder>,
    options: QueueOptions,
) -> Result<BatchQueue<String, Vec<f32>, InferenceError>, QueueError<InferenceError>> {
    let max = embedder.max_seq_length();
    BatchQueue::new(
        options,
        move |texts: Vec<String>| {
            isolate_failures(texts, |texts| {
                Ok(embedder.embed(texts)?.iter().map(<[f32]>::to_vec).collect())
            })
        },
        move |text: &String| estimated_tokens(text.len(), 2, max),
    )
}

/// A queue in front of `reranker`: (query, passage) pairs in, scores out
/// (as [`CrossEncoder::predict`]). Items cost as in [`embedding_queue`],
/// capped at the model's `max_length`.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::inference::{CrossEncoder, CrossEncoderOptions, Device};
/// use ragjet::queue::rerank_queue;
/// use ragjet::{Priority, QueueOptions};
/// use std::sync::Arc;
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ragjet-inference/tests/fixtures/tiny-cross-encoder");
/// let reranker = Arc::new(CrossEncoder::load_with(dir, CrossEncoderOptions { device: Device::Cpu, ..Default::default() })?);
/// let queue = rerank_queue(Arc::clone(&reranker), QueueOptions::default())?;
/// let pair = ("capital of france".to_string(), "paris is the capital of france".to_string());
/// let score = queue.submit(pair.clone(), Priority::Interactive)?;
/// assert_eq!(score, reranker.predict(&[pair])?[0]);
/// # Ok(()) }
/// ```
pub fn rerank_queue(
    reranker: Arc<CrossEncoder>,
    options: QueueOptions,
) -> Result<BatchQueue<(String, String), f32, InferenceError>, QueueError<InferenceError>> {
    let max = reranker.max_length();
    BatchQueue::new(
        options,
        move |pairs: Vec<(String, String)>| {
            isolate_failures(pairs, |pairs| reranker.predict(pairs))
        },
        move |(q, p): &(String, String)| estimated_tokens(q.len() + p.len(), 3, max),
    )
}
