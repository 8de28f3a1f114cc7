use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Source of the current time for expiry decisions.
///
/// Expiry times are stored with the values as milliseconds since the Unix
/// epoch, so they stay meaningful after a restart (L2) and across replicas
/// (L3). Injecting a [`ManualClock`] lets tests move time forward instead of
/// sleeping.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::{Clock, ManualClock, MemoryConfig, Scope, TieredCache};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = ManualClock::new(1_000_000);
/// let cache = TieredCache::builder()
///     .memory(MemoryConfig::default())
///     .clock(Arc::new(clock.clone()))
///     .default_ttl(Some(Duration::from_secs(60)))
///     .build()?;
/// let key = Scope::tenant("t").key("k").str("q").finish();
/// cache.put(&key, &"v".to_string())?;
/// clock.advance(Duration::from_secs(59));
/// assert_eq!(cache.get::<String>(&key).as_deref(), Some("v"));
/// clock.advance(Duration::from_secs(2)); // past the TTL: no sleeping in tests
/// assert_eq!(cache.get::<String>(&key), None);
/// assert_eq!(clock.now_ms(), 1_061_000);
/// # Ok(()) }
/// ```
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The wall clock.
///
/// # Examples
///
/// ```
/// use ragjet_cache::{Clock, SystemClock};
/// // After 2020-01-01 on any machine whose clock is set.
/// assert!(SystemClock.now_ms() > 1_577_836_800_000);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// # Examples
///
/// ```
/// use ragjet_cache::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(0);
/// let shared = clock.clone();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(shared.now_ms(), 1500);
/// shared.set_ms(42);
/// assert_eq!(clock.now_ms(), 42);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `start_ms` milliseconds since the epoch.
    pub fn new(start_ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(start_ms)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock to an absolute time.
    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Expiry time for an entry written now with `ttl`; `None` means never.
pub(crate) fn expiry(now_ms: u64, ttl: Option<Duration>) -> u64 {
    match ttl {
        None => 0,
        Some(ttl) => now_ms
            .saturating_add(ttl.as_millis().min(u64::MAX as u128) as u64)
            .max(1),
    }
}

/// Whether an entry with this expiry (0 = never) is dead at `now_ms`.
#[inline]
pub(crate) fn is_expired(expires_at_ms: u64, now_ms: u64) -> bool {
    expires_at_ms != 0 && now_ms >= expires_at_ms
}
