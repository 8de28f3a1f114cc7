//! Retries with exponential back-off and full jitter.
//!
//! Attempt `n` (0-based) that fails transiently waits a uniform random time
//! in `[0, min(max_delay, base_delay × multiplier^n))` before the next one
//! ("full jitter": clients that failed together do not retry together).
//! Only errors the caller's predicate calls transient are retried: a
//! timeout, an overload, HTTP 429 or 5xx; a bad request fails at once.

use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use ragjet_telemetry::metrics::{labels, RETRIES_TOTAL};

use super::{system_clock, Clock, ControlError, Result, SplitMix};

/// A retry policy; cheap to share.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ragjet::control::{is_transient_status, ControlError, ManualClock, RetryError, RetryPolicy};
///
/// # fn main() -> Result<(), ControlError> {
/// let clock = ManualClock::new(Duration::ZERO);
/// let policy = RetryPolicy::new(3)?
///     .delays(Duration::from_millis(100), Duration::from_secs(2))?
///     .with_clock(Arc::new(clock.clone()))
///     .with_seed(7);
/// // An LLM answering 503, then 200: one back-off, then success.
/// let statuses = [503u16, 200];
/// let body = policy.run(
///     |status: &u16| is_transient_status(*status),
///     |attempt| match statuses[attempt as usize] {
///         200 => Ok("answer"),
///         s => Err(s),
///     },
/// );
/// assert_eq!(body.ok(), Some("answer"));
/// let waited = ragjet::control::Clock::now(&clock);
/// assert!(waited < Duration::from_millis(100), "waited under the first cap");
/// // A 400 is not retried.
/// let r: Result<(), _> = policy.run(|s: &u16| is_transient_status(*s), |_| Err(400u16));
/// assert!(matches!(r, Err(RetryError::Permanent(400))));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 3).
    pub max_attempts: u32,
    /// Back-off cap of the first retry (default 100 ms).
    pub base_delay: Duration,
    /// Longest back-off cap (default 10 s).
    pub max_delay: Duration,
    /// Growth of the cap per attempt (default 2).
    pub multiplier: f64,
    /// The `operation` label of `ragjet_retries_total`.
    pub operation: String,
    clock: Arc<dyn Clock>,
    rng: Arc<SplitMix>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            operation: "default".into(),
            clock: system_clock(),
            rng: Arc::new(SplitMix::from_time()),
        }
    }
}

/// How a retried operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetryError<E> {
    /// A non-transient error: not retried.
    #[error("{0}")]
    Permanent(E),
    /// Every attempt failed transiently; `last` is the last error.
    #[error("failed after {attempts} attempts: {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: E,
    },
}

impl<E> RetryError<E> {
    /// The underlying error.
    pub fn into_inner(self) -> E {
        match self {
            RetryError::Permanent(e) | RetryError::Exhausted { last: e, .. } => e,
        }
    }
}

/// HTTP statuses worth retrying: 408 (timeout), 429 (too many requests)
/// and every 5xx.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

impl RetryPolicy {
    /// A policy of `max_attempts` attempts with the default delays.
    pub fn new(max_attempts: u32) -> Result<Self> {
        Self::default().attempts(max_attempts)
    }

    /// Sets the attempts (at least 1).
    pub fn attempts(mut self, max_attempts: u32) -> Result<Self> {
        if max_attempts == 0 {
            return Err(ControlError::InvalidConfig(
                "retry max_attempts must be at least 1".into(),
            ));
        }
        self.max_attempts = max_attempts;
        Ok(self)
    }

    /// Sets the first back-off cap and the largest one.
    pub fn delays(mut self, base: Duration, max: Duration) -> Result<Self> {
        if base > max {
            return Err(ControlError::InvalidConfig(format!(
                "retry base delay {base:?} exceeds the max delay {max:?}"
            )));
        }
        self.base_delay = base;
        self.max_delay = max;
        Ok(self)
    }

    /// Sets the growth of the cap per attempt (at least 1).
    pub fn multiplier(mut self, multiplier: f64) -> Result<Self> {
        if !(multiplier.is_finite() && multiplier >= 1.0) {
            return Err(ControlError::InvalidConfig(format!(
                "retry multiplier must be finite and >= 1, not {multiplier}"
            )));
        }
        self.multiplier = multiplier;
        Ok(self)
    }

    /// Names the operation on `ragjet_retries_total`.
    pub fn operation(mut self, name: impl Into<String>) -> Self {
        self.operation = name.into();
        self
    }

    /// Waits through `clock` (tests: a [`super::ManualClock`], which the
    /// waits advance).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Draws jitter from a generator seeded with `seed`, for reproducible
    /// delays.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = Arc::new(SplitMix::new(seed));
        self
    }

    /// The back-off cap after failed attempt `attempt` (0-based).
    pub fn cap(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.powi(attempt.min(1000) as i32);
        let cap = self.base_delay.as_secs_f64() * factor;
        if !cap.is_finite() || cap >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(cap)
        }
    }

    /// A jittered wait after failed attempt `attempt`: uniform in
    /// `[0, cap(attempt))`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.cap(attempt).mul_f64(self.rng.next_f64())
    }

    /// Counts one retry of this policy's operation in
    /// `ragjet_retries_total`, for callers running their own loop.
    pub fn record_retry(&self) {
        counter!(RETRIES_TOTAL, labels::OPERATION => self.operation.clone()).increment(1);
    }

    /// Runs `f` (given the 0-based attempt) until it succeeds, fails with an
    /// error `is_transient` refuses, or `max_attempts` are spent.
    pub fn run<T, E>(
        &self,
        is_transient: impl Fn(&E) -> bool,
        mut f: impl FnMut(u32) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, RetryError<E>> {
        let mut attempt = 0;
        loop {
            match f(attempt) {
                Ok(v) => return Ok(v),
                Err(e) if !is_transient(&e) => return Err(RetryError::Permanent(e)),
                Err(e) if attempt + 1 >= self.max_attempts => {
                    return Err(RetryError::Exhausted {
                        attempts: attempt + 1,
                        last: e,
                    })
                }
                Err(_) => {
                    self.clock.sleep(self.delay(attempt));
                    attempt += 1;
                    self.record_retry();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ManualClock;

    fn policy(clock: &ManualClock) -> RetryPolicy {
        RetryPolicy::new(4)
            .unwrap()
            .delays(Duration::from_millis(100), Duration::from_millis(300))
            .unwrap()
            .with_clock(Arc::new(clock.clone()))
            .with_seed(7)
    }

    #[test]
    fn caps_grow_exponentially_up_to_the_max() {
        let clock = ManualClock::new(Duration::ZERO);
        let p = policy(&clock);
        assert_eq!(p.cap(0), Duration::from_millis(100));
        assert_eq!(p.cap(1), Duration::from_millis(200));
        assert_eq!(p.cap(2), Duration::from_millis(300));
        assert_eq!(p.cap(u32::MAX), Duration::from_millis(300));
        // Full jitter: spread over the whole [0, cap) range.
        let delays: Vec<Duration> = (0..2000).map(|_| p.delay(1)).collect();
        assert!(delays.iter().all(|d| *d < Duration::from_millis(200)));
        let low = delays
            .iter()
            .filter(|d| **d < Duration::from_millis(50))
            .count();
        let high = delays
            .iter()
            .filter(|d| **d >= Duration::from_millis(150))
            .count();
        assert!((400..600).contains(&low), "{low}");
        assert!((400..600).contains(&high), "{high}");
    }

    #[test]
    fn retries_transient_errors_until_success() {
        let clock = ManualClock::new(Duration::ZERO);
        let p = policy(&clock);
        let mut calls = 0;
        let r = p.run(
            |e: &u16| is_transient_status(*e),
            |attempt| {
                calls += 1;
                if attempt < 2 {
                    Err(503)
                } else {
                    Ok("ok")
                }
            },
        );
        assert_eq!(r, Ok("ok"));
        assert_eq!(calls, 3);
        assert!(
            clock.now() < Duration::from_millis(300),
            "two waits under their caps"
        );
    }

    #[test]
    fn permanent_errors_are_not_retried_and_attempts_are_bounded() {
        let clock = ManualClock::new(Duration::ZERO);
        let p = policy(&clock);
        let mut calls = 0;
        let r: std::result::Result<(), _> = p.run(
            |e: &u16| is_transient_status(*e),
            |_| {
                calls += 1;
                Err(400)
            },
        );
        assert_eq!(r, Err(RetryError::Permanent(400)));
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r: std::result::Result<(), _> = p.run(
            |e: &u16| is_transient_status(*e),
            |_| {
                calls += 1;
                Err(429)
            },
        );
        assert_eq!(
            r,
            Err(RetryError::Exhausted {
                attempts: 4,
                last: 429
            })
        );
        assert_eq!(calls, 4);
    }

    #[test]
    fn statuses_and_settings() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 422] {
            assert!(!is_transient_status(s), "{s}");
        }
        assert!(RetryPolicy::new(0).is_err());
        assert!(RetryPolicy::default()
            .delays(Duration::from_secs(2), Duration::from_secs(1))
            .is_err());
        assert!(RetryPolicy::default().multiplier(0.5).is_err());
    }

    #[test]
    fn retries_are_counted() {
        let (recorder, handle) = ragjet_telemetry::build_recorder().unwrap();
        metrics::with_local_recorder(&recorder, || {
            let clock = ManualClock::new(Duration::ZERO);
            let p = policy(&clock).operation("embed");
            let _ = p.run(|_: &()| true, |_| Err::<(), ()>(()));
        });
        assert!(handle
            .render()
            .contains("ragjet_retries_total{operation=\"embed\"} 3"));
    }
}
