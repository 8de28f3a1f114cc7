//! Production controls in front of the models and the user's LLM: rate
//! limits, a circuit breaker, retries, a dead-letter store, model routing,
//! A/B tests, a model pool and autoscaling advice.
//!
//! Each control is usable on its own (none needs an [`Engine`](crate::Engine));
//! the engine wires each in when `[control]` ([`crate::config::ControlConfig`])
//! or its builder asks: the rate limiter, the breaker and the retry policy
//! in front of its query and ingest paths, the router and the A/B
//! experiment on every query, a model pool for its reranker, and its own
//! signals behind the advice endpoint. A refusal converted into the
//! facade's error is [`Error::Overloaded`](crate::Error::Overloaded) with a
//! typed [`Refusal`](crate::Refusal). Every time-dependent control takes a
//! [`Clock`], so tests move time by hand instead of sleeping. Metrics go
//! through the catalogue of `ragjet_telemetry::metrics` like the engine's
//! own (`docs/metrics.md`). `docs/controls.md` gives each control's
//! defaults.

use std::path::PathBuf;
use std::time::Duration;

pub mod abtest;
pub mod autoscale;
pub mod breaker;
pub mod deadletter;
pub mod pool;
pub mod ratelimit;
pub mod retry;
pub mod routing;
pub mod server;

pub use abtest::{AbSummary, Experiment, VariantComparison, VariantSummary};
pub use autoscale::{advise, ScaleAction, ScaleDecision, ScalePolicy, ScaleSignals};
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, OwnedPermit, Permit};
pub use deadletter::{DeadLetter, DeadLetterStore, RedriveReport};
pub use pool::{CleanupHandle, ModelPool, PoolConfig, PoolGuard};
pub use ratelimit::{RateLimit, RateLimiter};
pub use retry::{is_transient_status, RetryError, RetryPolicy};
pub use routing::{Complexity, ModelRoute, RouteDecision, RouteReason, RouteRequest, Router};
pub use server::{AdviceServer, DEFAULT_ADVICE_ADDR};

pub use ragjet_telemetry::{ManualClock, SystemClock};

/// A source of time that can also wait: the controls read "now" from it and
/// wait through it, so a test's [`ManualClock`] makes waiting instant and
/// deterministic (waiting advances it).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since the Unix epoch. Controls only take differences, and a
    /// clock stepping backwards counts as no time passing.
    fn now(&self) -> Duration;
    /// Blocks the caller for `d` (a manual clock advances by `d` instead).
    fn sleep(&self, d: Duration);
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        ragjet_telemetry::Clock::now(self)
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        ragjet_telemetry::Clock::now(self)
    }
    fn sleep(&self, d: Duration) {
        self.advance(d);
    }
}

/// The clock every control uses unless given another.
pub(crate) fn system_clock() -> std::sync::Arc<dyn Clock> {
    std::sync::Arc::new(SystemClock)
}

/// What a control refuses with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The key's token bucket is empty (or would not refill before the
    /// caller's deadline). Retry after `retry_after`.
    #[error("rate limited: {limiter} key {key:?} has no tokens left; retry after {retry_after:?}")]
    RateLimited {
        /// The limiter's name.
        limiter: String,
        /// The key (tenant, user, API key, model) that ran out.
        key: String,
        /// When a token of the requested cost is back.
        retry_after: Duration,
    },
    /// The circuit breaker is open (or half-open with its probes taken):
    /// the guarded service failed too often and is not called.
    #[error("circuit {breaker} is open after repeated failures; not calling it for another {retry_after:?}")]
    CircuitOpen {
        /// The breaker's name.
        breaker: String,
        /// Time until the breaker lets a probe through.
        retry_after: Duration,
    },
    /// A setting is out of range.
    #[error("invalid control setting: {0}")]
    InvalidConfig(String),
    /// An argument is wrong (an empty key, a cost above the bucket's size).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Reading or writing a dead-letter store or assignment log failed.
    #[error("control storage at {path}: {message}")]
    Storage {
        /// The file involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A model pool's loader failed for `model`.
    #[error("loading model {model:?} failed: {message}")]
    Load {
        /// The model's name.
        model: String,
        /// The loader's error.
        message: String,
    },
    /// A model pool cannot fit another model: every loaded model is in use.
    #[error("model pool {pool} is full: {message}")]
    PoolFull {
        /// The pool's name.
        pool: String,
        /// Which bound is reached.
        message: String,
    },
}

impl ControlError {
    /// True when waiting and trying again may succeed (rate limited, open
    /// circuit, full pool).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ControlError::RateLimited { .. }
                | ControlError::CircuitOpen { .. }
                | ControlError::PoolFull { .. }
        )
    }

    pub(crate) fn storage(path: impl Into<PathBuf>, message: impl ToString) -> Self {
        ControlError::Storage {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// Result alias of the controls.
pub type Result<T, E = ControlError> = std::result::Result<T, E>;

/// `now - earlier`, zero when the clock went backwards.
pub(crate) fn since(now: Duration, earlier: Duration) -> Duration {
    now.saturating_sub(earlier)
}

/// A small, fast, seedable generator (SplitMix64) for jitter: retries need
/// uniform spreading, not cryptographic quality, and a seed makes tests
/// exact.
#[derive(Debug)]
pub(crate) struct SplitMix(std::sync::atomic::AtomicU64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        Self(std::sync::atomic::AtomicU64::new(seed))
    }

    pub(crate) fn from_time() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded per process from the OS.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(SystemClock.now().as_nanos());
        Self::new(h.finish())
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}
