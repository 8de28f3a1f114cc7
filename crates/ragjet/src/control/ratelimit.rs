//! Token-bucket rate limiting per key (tenant, user, API key, model).
//!
//! Each key has a bucket of `burst` tokens refilled at `per_second`; a call
//! takes `cost` tokens. Buckets are created full on a key's first call, and
//! full buckets are dropped when the map grows past `max_keys`, so a stream
//! of one-off keys cannot grow memory without bound (a full bucket is
//! exactly what a new key gets, so dropping one changes nothing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::counter;
use ragjet_telemetry::metrics::{labels, RATE_LIMITED_TOTAL};

use super::{since, system_clock, Clock, ControlError, Result};

/// The rate of a [`RateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size: the most tokens a key can spend at once after idling.
    pub burst: f64,
}

impl RateLimit {
    /// `per_second` tokens per second, bursts of `burst`.
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self { per_second, burst }
    }

    fn validate(&self) -> Result<()> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err(ControlError::InvalidConfig(format!(
                "rate limit per_second must be finite and > 0, not {}",
                self.per_second
            )));
        }
        if !(self.burst.is_finite() && self.burst >= 1.0) {
            return Err(ControlError::InvalidConfig(format!(
                "rate limit burst must be finite and >= 1, not {}",
                self.burst
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Duration,
}

/// Keys kept before full buckets are dropped.
const DEFAULT_MAX_KEYS: usize = 100_000;

/// Per-key token buckets; `Send + Sync`, share it behind an `Arc`.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ragjet::control::{ControlError, ManualClock, RateLimit, RateLimiter};
///
/// # fn main() -> Result<(), ControlError> {
/// let clock = ManualClock::new(Duration::ZERO);
/// // 2 calls a second per tenant, at most 2 at once.
/// let limiter = RateLimiter::new("api", RateLimit::new(2.0, 2.0))?
///     .with_clock(Arc::new(clock.clone()));
/// limiter.try_acquire("tenant-a", 1.0)?;
/// limiter.try_acquire("tenant-a", 1.0)?;
/// let Err(ControlError::RateLimited { retry_after, .. }) = limiter.try_acquire("tenant-a", 1.0)
/// else {
///     panic!("the bucket is empty")
/// };
/// assert_eq!(retry_after, Duration::from_millis(500));
/// limiter.try_acquire("tenant-b", 1.0)?; // its own bucket
/// // Waiting up to a deadline: the manual clock advances instead of sleeping.
/// limiter.acquire("tenant-a", 1.0, Duration::from_secs(1))?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    name: String,
    default: RateLimit,
    overrides: HashMap<String, RateLimit>,
    clock: Arc<dyn Clock>,
    max_keys: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter named `name` (the `limiter` label of
    /// `ragjet_rate_limited_total`) giving every key `limit`.
    pub fn new(name: impl Into<String>, limit: RateLimit) -> Result<Self> {
        limit.validate()?;
        Ok(Self {
            name: name.into(),
            default: limit,
            overrides: HashMap::new(),
            clock: system_clock(),
            max_keys: DEFAULT_MAX_KEYS,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Gives `key` its own rate (a paying tenant, a model with its own quota).
    pub fn with_key_limit(mut self, key: impl Into<String>, limit: RateLimit) -> Result<Self> {
        limit.validate()?;
        self.overrides.insert(key.into(), limit);
        Ok(self)
    }

    /// Reads time from `clock` (tests: a [`super::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Keys tracked before full buckets are dropped (default 100 000).
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn limit(&self, key: &str) -> RateLimit {
        self.overrides.get(key).copied().unwrap_or(self.default)
    }

    /// Takes `cost` tokens from `key`'s bucket now, or refuses with
    /// [`ControlError::RateLimited`] saying when they will be there.
    /// Never blocks.
    pub fn try_acquire(&self, key: &str, cost: f64) -> Result<()> {
        match self.take(key, cost)? {
            None => Ok(()),
            Some(retry_after) => Err(self.refuse(key, retry_after)),
        }
    }

    /// Takes `cost` tokens from `key`, waiting for the bucket to refill when
    /// it can within `max_wait`; refuses at once when it cannot (waiting
    /// would only hold the caller to fail later).
    pub fn acquire(&self, key: &str, cost: f64, max_wait: Duration) -> Result<()> {
        let deadline = self.clock.now() + max_wait;
        loop {
            let Some(retry_after) = self.take(key, cost)? else {
                return Ok(());
            };
            let now = self.clock.now();
            if now + retry_after > deadline {
                return Err(self.refuse(key, retry_after));
            }
            // Another caller may take the refilled tokens first; then loop.
            self.clock.sleep(retry_after);
        }
    }

    /// Tokens `key` has now (a fresh key: its burst).
    pub fn available(&self, key: &str) -> f64 {
        let limit = self.limit(key);
        let now = self.clock.now();
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        match buckets.get(key) {
            Some(b) => refill(*b, limit, now).tokens,
            None => limit.burst,
        }
    }

    fn refuse(&self, key: &str, retry_after: Duration) -> ControlError {
        counter!(RATE_LIMITED_TOTAL, labels::LIMITER => self.name.clone()).increment(1);
        ControlError::RateLimited {
            limiter: self.name.clone(),
            key: key.to_owned(),
            retry_after,
        }
    }

    /// `None` when the tokens were taken, else the wait until they are there.
    fn take(&self, key: &str, cost: f64) -> Result<Option<Duration>> {
        let limit = self.limit(key);
        if !(cost.is_finite() && cost > 0.0) {
            return Err(ControlError::InvalidInput(format!(
                "cost must be finite and > 0, not {cost}"
            )));
        }
        if cost > limit.burst {
            return Err(ControlError::InvalidInput(format!(
                "cost {cost} exceeds the bucket size {} of key {key:?}: it could never be served",
                limit.burst
            )));
        }
        let now = self.clock.now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            buckets.retain(|k, b| refill(*b, self.limit(k), now).tokens < self.limit(k).burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: limit.burst,
            at: now,
        });
        *bucket = refill(*bucket, limit, now);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(None)
        } else {
            let missing = cost - bucket.tokens;
            Ok(Some(Duration::from_secs_f64(missing / limit.per_second)))
        }
    }
}

fn refill(b: Bucket, limit: RateLimit, now: Duration) -> Bucket {
    let elapsed = since(now, b.at).as_secs_f64();
    Bucket {
        tokens: (b.tokens + elapsed * limit.per_second).min(limit.burst),
        // A clock that went backwards keeps the later time as the base.
        at: now.max(b.at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ManualClock;

    fn limiter(clock: &ManualClock) -> RateLimiter {
        RateLimiter::new("test", RateLimit::new(2.0, 4.0))
            .unwrap()
            .with_clock(Arc::new(clock.clone()))
    }

    #[test]
    fn burst_then_refill_per_key() {
        let clock = ManualClock::new(Duration::from_secs(1000));
        let l = limiter(&clock);
        for _ in 0..4 {
            l.try_acquire("a", 1.0).unwrap();
        }
        let err = l.try_acquire("a", 1.0).unwrap_err();
        match err {
            ControlError::RateLimited {
                retry_after,
                ref key,
                ..
            } => {
                assert_eq!(key, "a");
                assert_eq!(retry_after, Duration::from_millis(500));
            }
            other => panic!("{other:?}"),
        }
        // Another key has its own bucket.
        l.try_acquire("b", 4.0).unwrap();
        clock.advance(Duration::from_millis(500));
        l.try_acquire("a", 1.0).unwrap();
        l.try_acquire("a", 1.0).unwrap_err();
        // Refill stops at the burst.
        clock.advance(Duration::from_secs(60));
        assert_eq!(l.available("a"), 4.0);
    }

    #[test]
    fn acquire_waits_within_its_deadline_and_refuses_past_it() {
        let clock = ManualClock::new(Duration::from_secs(1000));
        let l = limiter(&clock);
        l.try_acquire("a", 4.0).unwrap();
        let t0 = clock.now();
        l.acquire("a", 2.0, Duration::from_secs(2)).unwrap();
        assert_eq!(
            clock.now() - t0,
            Duration::from_secs(1),
            "waited for 2 tokens"
        );
        let t1 = clock.now();
        let err = l.acquire("a", 4.0, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, ControlError::RateLimited { .. }), "{err}");
        assert_eq!(clock.now(), t1, "refused at once, no pointless wait");
    }

    #[test]
    fn bad_costs_and_limits_are_errors() {
        let clock = ManualClock::new(Duration::from_secs(1));
        let l = limiter(&clock);
        for cost in [0.0, -1.0, f64::NAN, 5.0] {
            assert!(matches!(
                l.try_acquire("a", cost),
                Err(ControlError::InvalidInput(_))
            ));
        }
        assert!(RateLimiter::new("x", RateLimit::new(0.0, 1.0)).is_err());
        assert!(RateLimiter::new("x", RateLimit::new(1.0, 0.5)).is_err());
    }

    #[test]
    fn per_key_overrides_and_bounded_keys() {
        let clock = ManualClock::new(Duration::from_secs(1));
        let l = limiter(&clock)
            .with_key_limit("vip", RateLimit::new(100.0, 100.0))
            .unwrap()
            .with_max_keys(2);
        l.try_acquire("vip", 50.0).unwrap();
        l.try_acquire("k1", 1.0).unwrap();
        clock.advance(Duration::from_secs(10));
        // k1 and vip are full again and get dropped for k2.
        l.try_acquire("k2", 4.0).unwrap();
        assert_eq!(l.buckets.lock().unwrap().len(), 1);
        l.try_acquire("k2", 1.0).unwrap_err();
    }

    #[test]
    fn rejections_are_counted() {
        let (recorder, handle) = ragjet_telemetry::build_recorder().unwrap();
        metrics::with_local_recorder(&recorder, || {
            let clock = ManualClock::new(Duration::from_secs(1));
            let l = limiter(&clock);
            l.try_acquire("a", 4.0).unwrap();
            l.try_acquire("a", 1.0).unwrap_err();
            l.acquire("a", 4.0, Duration::ZERO).unwrap_err();
        });
        assert!(handle
            .render()
            .contains("ragjet_rate_limited_total{limiter=\"test\"} 2"));
    }
}
