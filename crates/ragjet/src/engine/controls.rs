//! The production controls `[control]` puts in front of the engine: a rate
//! limiter per namespace for queries and for ingests, one circuit breaker
//! in front of the model, and the retry policy of an ingest's embedding.

use std::time::Duration;

use crate::config::ControlConfig;
use crate::control::{breaker::Permit, CircuitBreaker, RateLimit, RateLimiter, RetryPolicy};
use crate::error::{Error, ErrorKind, Result};

/// Which engine call is being admitted.
#[derive(Debug, Clone, Copy)]
pub(super) enum Call {
    Query,
    Ingest,
}

#[derive(Debug)]
pub(super) struct EngineControls {
    query_limiter: Option<RateLimiter>,
    ingest_limiter: Option<RateLimiter>,
    max_wait: Duration,
    pub(super) breaker: Option<CircuitBreaker>,
    pub(super) retry: RetryPolicy,
}

/// Whether an error says the model is unhealthy (counts against the
/// breaker) rather than that the request was wrong.
pub(super) fn is_service_failure(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Internal | ErrorKind::Device | ErrorKind::Overloaded | ErrorKind::Storage
    ) && !matches!(e, Error::Control(_))
}

impl EngineControls {
    pub(super) fn new(cfg: &ControlConfig) -> Result<Self> {
        let rl = &cfg.rate_limit;
        let (query_limiter, ingest_limiter) = if rl.enabled {
            (
                Some(RateLimiter::new(
                    "engine.query",
                    RateLimit::new(rl.queries_per_second, rl.query_burst),
                )?),
                Some(RateLimiter::new(
                    "engine.ingest",
                    RateLimit::new(rl.ingests_per_second, rl.ingest_burst),
                )?),
            )
        } else {
            (None, None)
        };
        let breaker = if cfg.breaker.enabled {
            Some(CircuitBreaker::new(
                "engine.model",
                cfg.breaker.breaker_config(),
            )?)
        } else {
            None
        };
        let r = &cfg.retry;
        let retry = RetryPolicy::new(r.max_attempts)?
            .delays(
                Duration::from_millis(r.base_delay_ms),
                Duration::from_millis(r.max_delay_ms),
            )?
            .operation("ingest.embed");
        Ok(Self {
            query_limiter,
            ingest_limiter,
            max_wait: Duration::from_millis(rl.max_wait_ms),
            breaker,
            retry,
        })
    }

    pub(super) fn limiter(&self, call: Call) -> Option<&RateLimiter> {
        match call {
            Call::Query => self.query_limiter.as_ref(),
            Call::Ingest => self.ingest_limiter.as_ref(),
        }
    }

    /// Admits one call for `namespace`: its rate limit, then the breaker.
    /// The permit (when a breaker is on) must get the call's outcome.
    pub(super) fn admit(
        &self,
        call: Call,
        namespace: &str,
    ) -> Result<Option<Permit<&CircuitBreaker>>> {
        if let Some(l) = self.limiter(call) {
            if self.max_wait.is_zero() {
                l.try_acquire(namespace, 1.0)?;
            } else {
                l.acquire(namespace, 1.0, self.max_wait)?;
            }
        }
        Ok(match &self.breaker {
            Some(b) => Some(b.acquire()?),
            None => None,
        })
    }
}

/// Reports a call's outcome on its permit.
pub(super) fn settle(permit: Option<Permit<&CircuitBreaker>>, failed: Option<&Error>) {
    let Some(p) = permit else { return };
    match failed {
        None => p.success(),
        Some(e) if is_service_failure(e) => p.failure(),
        Some(_) => p.ignore(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_service_failures_count_against_the_breaker() {
        assert!(is_service_failure(&Error::Overloaded("full".into())));
        assert!(is_service_failure(&Error::Queue("worker gone".into())));
        assert!(!is_service_failure(&Error::InvalidInput("empty".into())));
        assert!(!is_service_failure(&Error::config("k", "bad")));
        // The breaker's own refusal must not keep it open.
        let open = Error::Control(crate::control::ControlError::CircuitOpen {
            breaker: "b".into(),
            retry_after: Duration::ZERO,
        });
        assert!(!is_service_failure(&open));
    }
}
