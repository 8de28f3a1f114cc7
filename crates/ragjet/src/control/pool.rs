//! A pool of models (embedding, reranking) loaded by name on demand and
//! shared by every caller.
//!
//! The pool holds at most `max_models` models and `max_bytes` of their
//! declared memory; loading one more unloads the least recently used model
//! no caller is holding. A model idle for `idle_ttl` is unloaded by
//! [`ModelPool::cleanup`], which a background thread
//! ([`ModelPool::spawn_cleanup`]) can run periodically. Callers asking for
//! a model that is loading wait for that one load (the queue-size gauge);
//! a model in use is never unloaded (the active-request gauge).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use metrics::{counter, gauge};
use ragjet_telemetry::metrics::{
    labels, POOL_ACTIVE_REQUESTS, POOL_EVICTIONS_TOTAL, POOL_LOADED_BYTES, POOL_QUEUE_SIZE,
};

use super::{since, system_clock, Clock, ControlError, Result};

/// Bounds of a [`ModelPool`].
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Most models loaded at once (default 4).
    pub max_models: usize,
    /// Most declared bytes loaded at once (default 8 GiB).
    pub max_bytes: u64,
    /// Unused this long, a model is unloaded by cleanup (default 10 min).
    pub idle_ttl: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_models: 4,
            max_bytes: 8 << 30,
            idle_ttl: Duration::from_secs(600),
        }
    }
}

/// Loads a model by name: the model and the bytes it holds.
pub type Loader<M> = dyn Fn(&str) -> std::result::Result<(M, u64), String> + Send + Sync;

enum Slot<M> {
    Loading,
    Ready {
        model: Arc<M>,
        bytes: u64,
        active: usize,
        last_used: Duration,
    },
}

struct Inner<M> {
    slots: HashMap<String, Slot<M>>,
    waiting: HashMap<String, usize>,
}

/// A shared, bounded pool of models of type `M`.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ragjet::control::{ControlError, ManualClock, ModelPool, PoolConfig};
///
/// # fn main() -> Result<(), ControlError> {
/// let clock = ManualClock::new(Duration::ZERO);
/// let config = PoolConfig { max_models: 2, idle_ttl: Duration::from_secs(60), ..PoolConfig::default() };
/// // Any model type; the loader says how many bytes it holds.
/// let pool = ModelPool::with_clock(
///     "models",
///     config,
///     |name: &str| Ok((format!("weights of {name}"), 1 << 20)),
///     Arc::new(clock.clone()),
/// )?;
/// {
///     let model = pool.get("minilm")?; // loaded on first use, then shared
///     assert_eq!(*model, "weights of minilm");
///     assert_eq!(pool.active("minilm"), 1);
/// }
/// clock.advance(Duration::from_secs(1));
/// pool.get("e5-base")?;
/// clock.advance(Duration::from_secs(1));
/// pool.get("bge-small")?; // a third model: the least recently used goes
/// assert_eq!(pool.loaded_models(), ["bge-small", "e5-base"]);
/// clock.advance(Duration::from_secs(61));
/// assert_eq!(pool.cleanup().len(), 2, "idle past the TTL");
/// # Ok(()) }
/// ```
pub struct ModelPool<M> {
    name: String,
    config: PoolConfig,
    loader: Box<Loader<M>>,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner<M>>,
    loaded: Condvar,
}

impl<M> std::fmt::Debug for ModelPool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelPool")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("loaded", &self.loaded_models())
            .finish()
    }
}

/// A model borrowed from the pool; the model cannot be unloaded while a
/// guard for it lives.
pub struct PoolGuard<M> {
    pool: Arc<ModelPool<M>>,
    name: String,
    model: Arc<M>,
}

impl<M> std::ops::Deref for PoolGuard<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.model
    }
}

impl<M> std::fmt::Debug for PoolGuard<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolGuard")
            .field("model", &self.name)
            .finish()
    }
}

impl<M> Drop for PoolGuard<M> {
    fn drop(&mut self) {
        let now = self.pool.clock.now();
        let mut inner = self.pool.lock();
        if let Some(Slot::Ready {
            active, last_used, ..
        }) = inner.slots.get_mut(&self.name)
        {
            *active = active.saturating_sub(1);
            *last_used = now;
            let a = *active;
            self.pool.gauge_active(&self.name, a);
        }
    }
}

impl<M: Send + Sync + 'static> ModelPool<M> {
    /// A pool named `name` (its metrics label) loading models with `loader`.
    pub fn new(
        name: impl Into<String>,
        config: PoolConfig,
        loader: impl Fn(&str) -> std::result::Result<(M, u64), String> + Send + Sync + 'static,
    ) -> Result<Arc<Self>> {
        Self::with_clock(name, config, loader, system_clock())
    }

    /// As [`ModelPool::new`], reading time from `clock`.
    pub fn with_clock(
        name: impl Into<String>,
        config: PoolConfig,
        loader: impl Fn(&str) -> std::result::Result<(M, u64), String> + Send + Sync + 'static,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>> {
        if config.max_models == 0 || config.max_bytes == 0 {
            return Err(ControlError::InvalidConfig(
                "model pool max_models and max_bytes must be at least 1".into(),
            ));
        }
        Ok(Arc::new(Self {
            name: name.into(),
            config,
            loader: Box::new(loader),
            clock,
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                waiting: HashMap::new(),
            }),
            loaded: Condvar::new(),
        }))
    }

    /// The model `name`, loading it first when needed.
    pub fn get(self: &Arc<Self>, name: &str) -> Result<PoolGuard<M>> {
        let mut inner = self.lock();
        loop {
            match inner.slots.get_mut(name) {
                Some(Slot::Ready {
                    model,
                    active,
                    last_used,
                    ..
                }) => {
                    *active += 1;
                    *last_used = self.clock.now();
                    let (model, a) = (model.clone(), *active);
                    self.gauge_active(name, a);
                    return Ok(PoolGuard {
                        pool: self.clone(),
                        name: name.to_owned(),
                        model,
                    });
                }
                Some(Slot::Loading) => {
                    let w = inner.waiting.entry(name.to_owned()).or_default();
                    *w += 1;
                    self.gauge_queue(name, *w);
                    inner = self
                        .loaded
                        .wait(inner)
                        .unwrap_or_else(PoisonError::into_inner);
                    let w = inner.waiting.entry(name.to_owned()).or_default();
                    *w -= 1;
                    self.gauge_queue(name, *w);
                    // A failed load removes the slot: this caller loads.
                }
                None => {
                    // Make room by count first (the new model's size is
                    // unknown until it is loaded).
                    self.evict_for(&mut inner, 1, 0)?;
                    inner.slots.insert(name.to_owned(), Slot::Loading);
                    drop(inner);
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        (self.loader)(name)
                    }))
                    .unwrap_or_else(|_| Err("the loader panicked".into()));
                    inner = self.lock();
                    match result {
                        Ok((model, bytes)) => {
                            inner.slots.remove(name);
                            if let Err(e) = self.evict_for(&mut inner, 1, bytes) {
                                self.loaded.notify_all();
                                return Err(e);
                            }
                            inner.slots.insert(
                                name.to_owned(),
                                Slot::Ready {
                                    model: Arc::new(model),
                                    bytes,
                                    active: 0,
                                    last_used: self.clock.now(),
                                },
                            );
                            self.gauge_bytes(&inner);
                            self.loaded.notify_all();
                            tracing::info!(pool = %self.name, model = name, bytes, "model loaded");
                        }
                        Err(message) => {
                            inner.slots.remove(name);
                            self.loaded.notify_all();
                            return Err(ControlError::Load {
                                model: name.to_owned(),
                                message,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Unloads idle models until `extra_models` more models and
    /// `extra_bytes` more bytes fit; refuses when models in use are in the
    /// way.
    fn evict_for(&self, inner: &mut Inner<M>, extra_models: usize, extra_bytes: u64) -> Result<()> {
        if extra_bytes > self.config.max_bytes {
            return Err(ControlError::PoolFull {
                pool: self.name.clone(),
                message: format!(
                    "a model of {extra_bytes} bytes exceeds max_bytes {}",
                    self.config.max_bytes
                ),
            });
        }
        loop {
            let count = inner.slots.len();
            let bytes: u64 = inner
                .slots
                .values()
                .map(|s| match s {
                    Slot::Ready { bytes, .. } => *bytes,
                    Slot::Loading => 0,
                })
                .sum();
            let over_count = count + extra_models > self.config.max_models;
            let over_bytes = bytes + extra_bytes > self.config.max_bytes;
            if !over_count && !over_bytes {
                return Ok(());
            }
            let victim = inner
                .slots
                .iter()
                .filter_map(|(n, s)| match s {
                    Slot::Ready {
                        active: 0,
                        last_used,
                        ..
                    } => Some((n.clone(), *last_used)),
                    _ => None,
                })
                .min_by_key(|(_, t)| *t);
            let Some((victim, _)) = victim else {
                return Err(ControlError::PoolFull {
                    pool: self.name.clone(),
                    message: format!(
                        "{} reached and every loaded model is in use",
                        if over_count {
                            "max_models"
                        } else {
                            "max_bytes"
                        }
                    ),
                });
            };
            inner.slots.remove(&victim);
            let reason = if over_count { "count" } else { "memory" };
            self.evicted(&victim, reason, inner);
        }
    }

    fn evicted(&self, model: &str, reason: &'static str, inner: &Inner<M>) {
        counter!(POOL_EVICTIONS_TOTAL, labels::POOL => self.name.clone(), labels::REASON => reason)
            .increment(1);
        self.gauge_active(model, 0);
        self.gauge_bytes(inner);
        tracing::info!(pool = %self.name, model, reason, "model unloaded");
    }

    /// Unloads every model unused for `idle_ttl`; returns their names.
    pub fn cleanup(&self) -> Vec<String> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let idle: Vec<String> = inner
            .slots
            .iter()
            .filter_map(|(n, s)| match s {
                Slot::Ready {
                    active: 0,
                    last_used,
                    ..
                } if since(now, *last_used) >= self.config.idle_ttl => Some(n.clone()),
                _ => None,
            })
            .collect();
        for name in &idle {
            inner.slots.remove(name);
            self.evicted(name, "idle", &inner);
        }
        idle
    }

    /// Runs [`ModelPool::cleanup`] every `every` on a background thread
    /// until the returned handle is dropped (or the pool is).
    pub fn spawn_cleanup(self: &Arc<Self>, every: Duration) -> CleanupHandle {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let weak: Weak<Self> = Arc::downgrade(self);
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ragjet-pool-{}", self.name))
            .spawn(move || loop {
                let (lock, cv) = &*stop2;
                let stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
                let (stopped, _) = cv
                    .wait_timeout_while(stopped, every, |s| !*s)
                    .unwrap_or_else(PoisonError::into_inner);
                if *stopped {
                    return;
                }
                drop(stopped);
                match weak.upgrade() {
                    Some(pool) => {
                        pool.cleanup();
                    }
                    None => return,
                }
            })
            .ok();
        CleanupHandle { stop, thread }
    }

    /// Declared bytes of the loaded models.
    pub fn loaded_bytes(&self) -> u64 {
        Self::bytes_of(&self.lock())
    }

    /// Callers holding `model` now.
    pub fn active(&self, model: &str) -> usize {
        match self.lock().slots.get(model) {
            Some(Slot::Ready { active, .. }) => *active,
            _ => 0,
        }
    }
}

impl<M> ModelPool<M> {
    /// Names of the loaded models.
    pub fn loaded_models(&self) -> Vec<String> {
        let inner = self.lock();
        let mut names: Vec<String> = inner
            .slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Ready { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    fn lock(&self) -> MutexGuard<'_, Inner<M>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bytes_of(inner: &Inner<M>) -> u64 {
        inner
            .slots
            .values()
            .map(|s| match s {
                Slot::Ready { bytes, .. } => *bytes,
                Slot::Loading => 0,
            })
            .sum()
    }

    fn gauge_active(&self, model: &str, n: usize) {
        gauge!(POOL_ACTIVE_REQUESTS, labels::POOL => self.name.clone(), labels::MODEL => model.to_owned())
            .set(n as f64);
    }

    fn gauge_queue(&self, model: &str, n: usize) {
        gauge!(POOL_QUEUE_SIZE, labels::POOL => self.name.clone(), labels::MODEL => model.to_owned())
            .set(n as f64);
    }

    fn gauge_bytes(&self, inner: &Inner<M>) {
        gauge!(POOL_LOADED_BYTES, labels::POOL => self.name.clone())
            .set(Self::bytes_of(inner) as f64);
    }
}

/// Stops a pool's cleanup thread when dropped.
#[derive(Debug)]
pub struct CleanupHandle {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for CleanupHandle {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Loads = Arc<AtomicUsize>;

    fn pool(clock: &ManualClock, config: PoolConfig) -> (Arc<ModelPool<String>>, Loads) {
        let loads = Loads::default();
        let l = loads.clone();
        let p = ModelPool::with_clock(
            "test",
            config,
            move |name: &str| {
                l.fetch_add(1, Ordering::SeqCst);
                match name.strip_prefix("bad") {
                    Some(_) => Err(format!("no model {name}")),
                    None => {
                        let bytes = name.rsplit(':').next().and_then(|b| b.parse().ok());
                        Ok((format!("model {name}"), bytes.unwrap_or(100)))
                    }
                }
            },
            Arc::new(clock.clone()),
        )
        .unwrap();
        (p, loads)
    }

    #[test]
    fn loads_once_shares_and_evicts_least_recently_used() {
        let clock = ManualClock::new(Duration::from_secs(1000));
        let config = PoolConfig {
            max_models: 2,
            ..PoolConfig::default()
        };
        let (p, loads) = pool(&clock, config);
        let a = p.get("a").unwrap();
        assert_eq!(&*a, "model a");
        let a2 = p.get("a").unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(p.active("a"), 2);
        drop((a, a2));
        clock.advance(Duration::from_secs(1));
        drop(p.get("b").unwrap());
        clock.advance(Duration::from_secs(1));
        drop(p.get("a").unwrap()); // a is now more recent than b
        clock.advance(Duration::from_secs(1));
        drop(p.get("c").unwrap());
        assert_eq!(p.loaded_models(), vec!["a", "c"]);
        assert_eq!(loads.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn models_in_use_are_never_evicted() {
        let clock = ManualClock::new(Duration::from_secs(1000));
        let config = PoolConfig {
            max_models: 1,
            max_bytes: 1000,
            ..PoolConfig::default()
        };
        let (p, _) = pool(&clock, config);
        let held = p.get("a").unwrap();
        let err = p.get("b").unwrap_err();
        assert!(matches!(err, ControlError::PoolFull { .. }), "{err}");
        drop(held);
        p.get("b").unwrap();
        // Memory bound: a too-big model is refused, one that fits evicts.
        assert!(matches!(
            p.get("big:5000"),
            Err(ControlError::PoolFull { .. })
        ));
        let config = PoolConfig {
            max_models: 10,
            max_bytes: 1000,
            ..PoolConfig::default()
        };
        let (p, _) = pool(&clock, config);
        drop(p.get("x:600").unwrap());
        drop(p.get("y:600").unwrap());
        assert_eq!(p.loaded_models(), vec!["y:600"]);
        assert_eq!(p.loaded_bytes(), 600);
    }

    #[test]
    fn idle_models_are_cleaned_up_and_failures_reported() {
        let clock = ManualClock::new(Duration::from_secs(1000));
        let (p, loads) = pool(&clock, PoolConfig::default());
        let held = p.get("busy").unwrap();
        drop(p.get("idle").unwrap());
        clock.advance(Duration::from_secs(599));
        assert!(p.cleanup().is_empty());
        clock.advance(Duration::from_secs(1));
        assert_eq!(p.cleanup(), vec!["idle".to_string()]);
        assert_eq!(p.loaded_models(), vec!["busy"]);
        drop(held);
        let err = p.get("bad-model").unwrap_err();
        assert!(matches!(err, ControlError::Load { .. }), "{err}");
        assert!(
            p.get("bad-model").is_err(),
            "a failed load is retried, not cached"
        );
        assert_eq!(loads.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn concurrent_callers_wait_for_one_load() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Mutex::new(rx);
        let loads = Arc::new(AtomicUsize::new(0));
        let l = loads.clone();
        let p = ModelPool::new("c", PoolConfig::default(), move |_name: &str| {
            l.fetch_add(1, Ordering::SeqCst);
            // Block until the test lets the load finish.
            rx.lock().unwrap().recv().map_err(|e| e.to_string())?;
            Ok((1u8, 1))
        })
        .unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || *p.get("m").unwrap())
            })
            .collect();
        // Wait (event-driven) until three callers queue behind the load.
        while p.lock().waiting.get("m").copied().unwrap_or(0) < 3 {
            std::thread::yield_now();
        }
        tx.send(()).unwrap();
        for h in handles {
            assert_eq!(h.join().unwrap(), 1);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn cleanup_thread_stops_with_its_handle() {
        let (p, _) = pool(&ManualClock::new(Duration::ZERO), PoolConfig::default());
        let h = p.spawn_cleanup(Duration::from_secs(3600));
        drop(h); // joins at once: the wait is interrupted, not slept out
    }
}
