//! Circuit breaker: stop calling a failing service, probe it, resume.
//!
//! Closed: calls pass; the breaker opens after `consecutive_failures`
//! failures in a row, or when at least `min_requests` calls in the last
//! `window` failed at `failure_rate` or more. Open: calls fail fast with
//! [`ControlError::CircuitOpen`] for `open_for`. Half-open: up to
//! `half_open_probes` calls at once go through; `half_open_probes`
//! successes close the circuit, one failure opens it again.
//!
//! A caller asks [`CircuitBreaker::acquire`] and reports the outcome on the
//! returned [`Permit`]; a permit dropped without a report counts as a
//! failure, so a panicking or abandoned call cannot leave a half-open
//! breaker waiting for a probe that never answers.

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::{counter, gauge};
use ragjet_telemetry::metrics::{labels, CIRCUIT_REJECTED_TOTAL, CIRCUIT_STATE};

use super::{since, system_clock, Clock, ControlError, Result};

/// Settings of a [`CircuitBreaker`].
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that open the circuit (default 5).
    pub consecutive_failures: u32,
    /// Share of failed calls in the window that opens it (default 0.5).
    pub failure_rate: f64,
    /// Sliding window of the failure rate (default 60 s).
    pub window: Duration,
    /// Calls in the window before the rate is judged (default 20).
    pub min_requests: u32,
    /// How long the circuit stays open before probing (default 30 s).
    pub open_for: Duration,
    /// Probes at once in half-open, and successes that close it (default 1).
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(60),
            min_requests: 20,
            open_for: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

impl BreakerConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ControlError::InvalidConfig(format!("circuit breaker {m}")));
        if self.consecutive_failures == 0 {
            return bad("consecutive_failures must be at least 1");
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return bad("failure_rate must be within (0, 1]");
        }
        if self.window.is_zero() {
            return bad("window must be positive");
        }
        if self.min_requests == 0 {
            return bad("min_requests must be at least 1");
        }
        if self.half_open_probes == 0 {
            return bad("half_open_probes must be at least 1");
        }
        Ok(())
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// A few probe calls pass.
    HalfOpen,
    /// Calls fail fast.
    Open,
}

impl BreakerState {
    /// `closed`, `half_open` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// Outcomes in the window are capped so a burst cannot grow memory; the
/// rate over the most recent ones is still right.
const MAX_WINDOW_OUTCOMES: usize = 10_000;

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive: u32,
    window: VecDeque<(Duration, bool)>,
    opened_at: Duration,
    probes_in_flight: u32,
    probe_successes: u32,
}

/// A circuit breaker; `Send + Sync`, share it behind an `Arc`.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ragjet::control::{BreakerConfig, BreakerState, CircuitBreaker, ControlError, ManualClock};
///
/// # fn main() -> Result<(), ControlError> {
/// let clock = ManualClock::new(Duration::ZERO);
/// let config = BreakerConfig {
///     consecutive_failures: 2,
///     open_for: Duration::from_secs(30),
///     ..BreakerConfig::default()
/// };
/// let breaker = CircuitBreaker::new("llm", config)?.with_clock(Arc::new(clock.clone()));
/// for _ in 0..2 {
///     let permit = breaker.acquire()?;
///     // ... the call failed (a 503 from the LLM):
///     permit.failure();
/// }
/// assert_eq!(breaker.state(), BreakerState::Open);
/// assert!(matches!(breaker.acquire(), Err(ControlError::CircuitOpen { .. })));
/// // After `open_for`, one probe goes through; its success closes the circuit.
/// clock.advance(Duration::from_secs(30));
/// breaker.acquire()?.success();
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

/// Leave to make one call through a [`CircuitBreaker`]; report how it went
/// with [`Permit::success`] or [`Permit::failure`] (dropping it unreported
/// is a failure). `B` is how the permit holds its breaker: borrowed
/// ([`CircuitBreaker::acquire`]) or shared ([`OwnedPermit`]).
#[derive(Debug)]
#[must_use = "report the call's outcome on the permit"]
pub struct Permit<B: Borrow<CircuitBreaker>> {
    breaker: B,
    probe: bool,
    done: bool,
}

/// A [`Permit`] holding its breaker by `Arc` ([`CircuitBreaker::acquire_owned`]).
pub type OwnedPermit = Permit<Arc<CircuitBreaker>>;

impl<B: Borrow<CircuitBreaker>> Permit<B> {
    /// The call succeeded.
    pub fn success(mut self) {
        self.done = true;
        self.breaker.borrow().record(true, self.probe);
    }

    /// The call failed in a way that says the service is unhealthy.
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.borrow().record(false, self.probe);
    }

    /// The call failed for a reason that says nothing of the service's
    /// health (bad input): neither a success nor a failure.
    pub fn ignore(mut self) {
        self.done = true;
        if self.probe {
            self.breaker.borrow().release_probe();
        }
    }
}

impl<B: Borrow<CircuitBreaker>> Drop for Permit<B> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.borrow().record(false, self.probe);
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker named `name` (the `breaker` label of its metrics).
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Result<Self> {
        config.validate()?;
        let b = Self {
            name: name.into(),
            config,
            clock: system_clock(),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive: 0,
                window: VecDeque::new(),
                opened_at: Duration::ZERO,
                probes_in_flight: 0,
                probe_successes: 0,
            }),
        };
        b.publish(BreakerState::Closed);
        Ok(b)
    }

    /// Reads time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The breaker's settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, state: BreakerState) {
        gauge!(CIRCUIT_STATE, labels::BREAKER => self.name.clone()).set(state.gauge());
    }

    /// Moves an open breaker whose time is up to half-open.
    fn tick(&self, inner: &mut Inner, now: Duration) {
        if inner.state == BreakerState::Open && since(now, inner.opened_at) >= self.config.open_for
        {
            inner.state = BreakerState::HalfOpen;
            inner.probes_in_flight = 0;
            inner.probe_successes = 0;
            self.publish(BreakerState::HalfOpen);
            tracing::info!(breaker = %self.name, "circuit half-open: probing");
        }
    }

    /// The state now (an open breaker past `open_for` reads half-open).
    pub fn state(&self) -> BreakerState {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.tick(&mut inner, now);
        inner.state
    }

    /// Leave to call the service, or [`ControlError::CircuitOpen`] at once.
    pub fn acquire(&self) -> Result<Permit<&CircuitBreaker>> {
        let probe = self.admit()?;
        Ok(Permit {
            breaker: self,
            probe,
            done: false,
        })
    }

    /// As [`CircuitBreaker::acquire`], for a breaker shared behind an
    /// `Arc`: the permit owns a handle on it, so it can outlive the borrow
    /// (kept by another thread, or by a binding's object).
    pub fn acquire_owned(self: &Arc<Self>) -> Result<OwnedPermit> {
        let probe = self.admit()?;
        Ok(Permit {
            breaker: Arc::clone(self),
            probe,
            done: false,
        })
    }

    /// Admits one call: `Ok(true)` for a half-open probe (counted in
    /// flight until its permit reports), `Ok(false)` while closed.
    fn admit(&self) -> Result<bool> {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.tick(&mut inner, now);
        match inner.state {
            BreakerState::Closed => Ok(false),
            BreakerState::HalfOpen if inner.probes_in_flight < self.config.half_open_probes => {
                inner.probes_in_flight += 1;
                Ok(true)
            }
            state => {
                let retry_after = if state == BreakerState::Open {
                    self.config
                        .open_for
                        .saturating_sub(since(now, inner.opened_at))
                } else {
                    Duration::ZERO
                };
                drop(inner);
                counter!(CIRCUIT_REJECTED_TOTAL, labels::BREAKER => self.name.clone()).increment(1);
                Err(ControlError::CircuitOpen {
                    breaker: self.name.clone(),
                    retry_after,
                })
            }
        }
    }

    fn release_probe(&self) {
        let mut inner = self.lock();
        inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
    }

    /// Runs `f` through the breaker; every `Err` of `f` counts as a failure.
    pub fn call<T, E>(
        &self,
        f: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, CallError<E>> {
        let permit = self.acquire().map_err(CallError::Open)?;
        match f() {
            Ok(v) => {
                permit.success();
                Ok(v)
            }
            Err(e) => {
                permit.failure();
                Err(CallError::Failed(e))
            }
        }
    }

    fn open(&self, inner: &mut Inner, now: Duration, why: &str) {
        inner.state = BreakerState::Open;
        inner.opened_at = now;
        inner.consecutive = 0;
        inner.window.clear();
        inner.probes_in_flight = 0;
        inner.probe_successes = 0;
        self.publish(BreakerState::Open);
        tracing::warn!(breaker = %self.name, reason = why, "circuit opened");
    }

    fn record(&self, ok: bool, probe: bool) {
        let now = self.clock.now();
        let mut inner = self.lock();
        if probe {
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
            if inner.state != BreakerState::HalfOpen {
                // The breaker moved on (another probe reopened it).
                return;
            }
            if ok {
                inner.probe_successes += 1;
                if inner.probe_successes >= self.config.half_open_probes {
                    inner.state = BreakerState::Closed;
                    inner.consecutive = 0;
                    inner.window.clear();
                    self.publish(BreakerState::Closed);
                    tracing::info!(breaker = %self.name, "circuit closed");
                }
            } else {
                self.open(&mut inner, now, "a half-open probe failed");
            }
            return;
        }
        if inner.state != BreakerState::Closed {
            // A call admitted while closed that ended after the circuit
            // opened says nothing new.
            return;
        }
        inner.consecutive = if ok { 0 } else { inner.consecutive + 1 };
        inner.window.push_back((now, ok));
        let horizon = now.saturating_sub(self.config.window);
        while inner.window.front().is_some_and(|(t, _)| *t < horizon)
            || inner.window.len() > MAX_WINDOW_OUTCOMES
        {
            inner.window.pop_front();
        }
        if inner.consecutive >= self.config.consecutive_failures {
            self.open(&mut inner, now, "consecutive failures");
            return;
        }
        let n = inner.window.len();
        if n >= self.config.min_requests as usize {
            let failed = inner.window.iter().filter(|(_, ok)| !ok).count();
            if failed as f64 / n as f64 >= self.config.failure_rate {
                self.open(&mut inner, now, "failure rate over the window");
            }
        }
    }
}

/// How [`CircuitBreaker::call`] fails.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker refused the call; `f` did not run.
    #[error(transparent)]
    Open(ControlError),
    /// `f` ran and failed.
    #[error("{0}")]
    Failed(E),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ManualClock;

    fn breaker(clock: &ManualClock, config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker::new("llm", config)
            .unwrap()
            .with_clock(Arc::new(clock.clone()))
    }

    #[test]
    fn opens_after_consecutive_failures_probes_and_closes() {
        let clock = ManualClock::new(Duration::from_secs(100));
        let b = breaker(&clock, BreakerConfig::default());
        for _ in 0..4 {
            b.acquire().unwrap().failure();
        }
        b.acquire().unwrap().success(); // resets the run
        for _ in 0..4 {
            b.acquire().unwrap().failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        match b.acquire().unwrap_err() {
            ControlError::CircuitOpen { retry_after, .. } => {
                assert_eq!(retry_after, Duration::from_secs(30))
            }
            other => panic!("{other:?}"),
        }
        clock.advance(Duration::from_secs(29));
        assert!(b.acquire().is_err());
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.acquire().unwrap();
        // One probe at a time by default.
        assert!(matches!(b.acquire(), Err(ControlError::CircuitOpen { .. })));
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn failed_probe_reopens_and_dropped_permit_is_a_failure() {
        let clock = ManualClock::new(Duration::from_secs(100));
        let config = BreakerConfig {
            consecutive_failures: 1,
            half_open_probes: 2,
            ..BreakerConfig::default()
        };
        let b = breaker(&clock, config);
        drop(b.acquire().unwrap());
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(30));
        let p1 = b.acquire().unwrap();
        let p2 = b.acquire().unwrap();
        assert!(b.acquire().is_err(), "only two probes");
        p1.success();
        assert_eq!(b.state(), BreakerState::HalfOpen, "needs two successes");
        p2.failure();
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(30));
        let p = b.acquire().unwrap();
        p.ignore();
        assert_eq!(b.state(), BreakerState::HalfOpen, "ignored: neither way");
        b.acquire().unwrap().success();
        b.acquire().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn opens_on_failure_rate_over_the_window_only() {
        let clock = ManualClock::new(Duration::from_secs(100));
        let config = BreakerConfig {
            consecutive_failures: 100,
            min_requests: 10,
            failure_rate: 0.5,
            window: Duration::from_secs(10),
            ..BreakerConfig::default()
        };
        let b = breaker(&clock, config);
        // Alternating failures: never 100 in a row, but 50 %.
        for i in 0..9 {
            let p = b.acquire().unwrap();
            if i % 2 == 0 {
                p.failure()
            } else {
                p.success()
            }
        }
        assert_eq!(b.state(), BreakerState::Closed, "under min_requests");
        // Old outcomes leave the window: the 10th call alone is judged
        // with nothing else, under min_requests again.
        clock.advance(Duration::from_secs(11));
        b.acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Closed);
        for i in 0..9 {
            let p = b.acquire().unwrap();
            if i % 2 == 0 {
                p.success()
            } else {
                p.failure()
            }
        }
        assert_eq!(b.state(), BreakerState::Open, "5 of 10 failed");
    }

    #[test]
    fn call_wraps_and_state_gauge_follows() {
        let (recorder, handle) = ragjet_telemetry::build_recorder().unwrap();
        let clock = ManualClock::new(Duration::from_secs(100));
        metrics::with_local_recorder(&recorder, || {
            let b = breaker(
                &clock,
                BreakerConfig {
                    consecutive_failures: 2,
                    ..BreakerConfig::default()
                },
            );
            assert_eq!(b.call(|| Ok::<_, String>(1)).unwrap(), 1);
            assert!(matches!(
                b.call(|| Err::<(), _>("x")),
                Err(CallError::Failed("x"))
            ));
            assert!(b.call(|| Err::<(), _>("x")).is_err());
            let text = handle.render();
            assert!(
                text.contains("ragjet_circuit_state{breaker=\"llm\"} 2"),
                "{text}"
            );
            let mut ran = false;
            let r = b.call(|| {
                ran = true;
                Ok::<_, String>(())
            });
            assert!(matches!(
                r,
                Err(CallError::Open(ControlError::CircuitOpen { .. }))
            ));
            assert!(!ran, "open fails fast without calling");
            clock.advance(Duration::from_secs(30));
            assert_eq!(b.state(), BreakerState::HalfOpen);
        });
        let text = handle.render();
        assert!(
            text.contains("ragjet_circuit_state{breaker=\"llm\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ragjet_circuit_rejected_total{breaker=\"llm\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn owned_permits_behave_like_borrowed_ones() {
        let clock = ManualClock::new(Duration::from_secs(100));
        let b = Arc::new(breaker(
            &clock,
            BreakerConfig {
                consecutive_failures: 1,
                ..BreakerConfig::default()
            },
        ));
        drop(b.acquire_owned().unwrap());
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "dropped unreported: a failure"
        );
        clock.advance(Duration::from_secs(30));
        let probe = b.acquire_owned().unwrap();
        assert!(b.acquire_owned().is_err());
        probe.ignore();
        b.acquire_owned().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn bad_settings_are_refused() {
        for c in [
            BreakerConfig {
                consecutive_failures: 0,
                ..Default::default()
            },
            BreakerConfig {
                failure_rate: 0.0,
                ..Default::default()
            },
            BreakerConfig {
                half_open_probes: 0,
                ..Default::default()
            },
        ] {
            assert!(CircuitBreaker::new("x", c).is_err());
        }
    }
}
