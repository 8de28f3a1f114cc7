//! The production controls (`ragjet::control`) for Python: `RateLimiter`,
//! `CircuitBreaker` (and its `BreakerPermit`), `RetryPolicy`,
//! `DeadLetterStore`, `Router`, `Experiment` and `advise_scale`.
//!
//! Waiting (`RateLimiter.acquire`) releases the GIL. A refused call raises
//! `RateLimitedError` or `CircuitOpenError` (both `Overloaded`, with a
//! `retry_after` attribute in seconds), so code that already backs off on
//! `Overloaded` handles them.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use ragjet::control::{
    self as c, BreakerConfig, ControlError, ModelRoute, OwnedPermit, RateLimit, RouteRequest,
    ScalePolicy, ScaleSignals,
};

use crate::convert::errors::{InvalidInputError, ModelLoadError, StorageError};
use crate::convert::{engine_err, guard, invalid};

/// A control's error: a refusal (rate limited, circuit open, pool full)
/// through the facade's mapping, so a standalone control and an engine
/// raise the same `OverloadedError` subclass with `retry_after`.
fn control_err(_py: Python<'_>, err: ControlError) -> PyErr {
    let msg = err.to_string();
    match err {
        ControlError::Storage { .. } => StorageError::new_err(msg),
        ControlError::Load { .. } => ModelLoadError::new_err(msg),
        ControlError::RateLimited { .. }
        | ControlError::CircuitOpen { .. }
        | ControlError::PoolFull { .. } => engine_err(err.into()),
        _ => InvalidInputError::new_err(msg),
    }
}

fn duration_arg(name: &str, s: f64) -> PyResult<Duration> {
    if !(s.is_finite() && s >= 0.0) {
        return Err(invalid(format!(
            "{name} must be a finite number of seconds >= 0, not {s}"
        )));
    }
    Duration::try_from_secs_f64(s).map_err(|e| invalid(format!("{name}={s}: {e}")))
}

fn to_py(py: Python<'_>, value: &impl serde::Serialize) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| invalid(e.to_string()))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

fn from_py<T: serde::de::DeserializeOwned>(
    py: Python<'_>,
    what: &str,
    obj: &Bound<'_, PyAny>,
) -> PyResult<T> {
    let text: String = py
        .import("json")?
        .call_method1("dumps", (obj,))
        .map_err(|e| invalid(format!("{what} is not JSON-serialisable: {e}")))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| invalid(format!("{what}: {e}")))
}

/// A clock that moves only when told (`advance`), for tests of code using
/// `RateLimiter` and `CircuitBreaker`: pass it as their `clock`.
#[pyclass(frozen, module = "ragjet")]
pub struct ManualClock {
    inner: c::ManualClock,
}

#[pymethods]
impl ManualClock {
    #[new]
    #[pyo3(signature = (start=0.0))]
    fn new(start: f64) -> PyResult<Self> {
        guard(|| {
            Ok(Self {
                inner: c::ManualClock::new(duration_arg("start", start)?),
            })
        })
    }

    /// Moves the clock forward by `seconds`.
    fn advance(&self, seconds: f64) -> PyResult<()> {
        guard(|| {
            self.inner.advance(duration_arg("seconds", seconds)?);
            Ok(())
        })
    }

    /// Seconds since the epoch the clock stands at.
    fn now(&self) -> f64 {
        c::Clock::now(&self.inner).as_secs_f64()
    }
}

fn clock_of(clock: Option<&Bound<'_, ManualClock>>) -> Option<Arc<dyn c::Clock>> {
    clock.map(|c| Arc::new(c.get().inner.clone()) as Arc<dyn c::Clock>)
}

/// Token buckets per key (tenant, user, API key, model): `per_second`
/// tokens a second, at most `burst` at once. Refusals are counted in
/// `ragjet_rate_limited_total{limiter=name}`.
#[pyclass(frozen, module = "ragjet")]
pub struct RateLimiter {
    inner: Arc<c::RateLimiter>,
}

#[pymethods]
impl RateLimiter {
    #[new]
    #[pyo3(signature = (per_second, burst, name="default", clock=None))]
    fn new(
        py: Python<'_>,
        per_second: f64,
        burst: f64,
        name: &str,
        clock: Option<&Bound<'_, ManualClock>>,
    ) -> PyResult<Self> {
        guard(|| {
            let mut inner = c::RateLimiter::new(name, RateLimit::new(per_second, burst))
                .map_err(|e| control_err(py, e))?;
            if let Some(clock) = clock_of(clock) {
                inner = inner.with_clock(clock);
            }
            Ok(Self {
                inner: Arc::new(inner),
            })
        })
    }

    /// Takes `cost` tokens from `key` now; False (and counted) when they
    /// are not there. Never blocks.
    #[pyo3(signature = (key, cost=1.0))]
    fn try_acquire(&self, py: Python<'_>, key: &str, cost: f64) -> PyResult<bool> {
        guard(|| match self.inner.try_acquire(key, cost) {
            Ok(()) => Ok(true),
            Err(ControlError::RateLimited { .. }) => Ok(false),
            Err(e) => Err(control_err(py, e)),
        })
    }

    /// Takes `cost` tokens, waiting (GIL released) up to `timeout` seconds
    /// for them; raises `RateLimitedError` at once when they cannot come
    /// in time.
    #[pyo3(signature = (key, cost=1.0, timeout=0.0))]
    fn acquire(&self, py: Python<'_>, key: &str, cost: f64, timeout: f64) -> PyResult<()> {
        guard(|| {
            let wait = duration_arg("timeout", timeout)?;
            let inner = self.inner.clone();
            let key = key.to_owned();
            py.detach(move || inner.acquire(&key, cost, wait))
                .map_err(|e| control_err(py, e))
        })
    }

    /// Tokens `key` has now.
    fn available(&self, key: &str) -> PyResult<f64> {
        guard(|| Ok(self.inner.available(key)))
    }
}

/// Leave to make one call through a `CircuitBreaker`: report with
/// `success()`, `failure()` or `ignore()`; one never reported counts as a
/// failure when it is garbage-collected.
#[pyclass(module = "ragjet")]
pub struct BreakerPermit {
    permit: Option<OwnedPermit>,
}

#[pymethods]
impl BreakerPermit {
    /// The call succeeded.
    fn success(&mut self) -> PyResult<()> {
        guard(|| {
            if let Some(p) = self.permit.take() {
                p.success();
            }
            Ok(())
        })
    }

    /// The call failed for the service's sake (timeout, overload, 5xx).
    fn failure(&mut self) -> PyResult<()> {
        guard(|| {
            if let Some(p) = self.permit.take() {
                p.failure();
            }
            Ok(())
        })
    }

    /// The call failed for a reason that says nothing of the service.
    fn ignore(&mut self) -> PyResult<()> {
        guard(|| {
            if let Some(p) = self.permit.take() {
                p.ignore();
            }
            Ok(())
        })
    }
}

/// Closed → open after `consecutive_failures` failures in a row or a
/// `failure_rate` over `window` seconds (at least `min_requests` calls) →
/// half-open after `open_for` seconds (`half_open_probes` probes) → closed.
/// State in `ragjet_circuit_state{breaker=name}` (0 closed, 1 half-open,
/// 2 open).
#[pyclass(frozen, module = "ragjet")]
pub struct CircuitBreaker {
    inner: Arc<c::CircuitBreaker>,
}

#[pymethods]
impl CircuitBreaker {
    #[new]
    #[pyo3(signature = (name="default", consecutive_failures=5, failure_rate=0.5, window=60.0, min_requests=20, open_for=30.0, half_open_probes=1, clock=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        consecutive_failures: u32,
        failure_rate: f64,
        window: f64,
        min_requests: u32,
        open_for: f64,
        half_open_probes: u32,
        clock: Option<&Bound<'_, ManualClock>>,
    ) -> PyResult<Self> {
        guard(|| {
            let config = BreakerConfig {
                consecutive_failures,
                failure_rate,
                window: duration_arg("window", window)?,
                min_requests,
                open_for: duration_arg("open_for", open_for)?,
                half_open_probes,
            };
            let mut inner = c::CircuitBreaker::new(name, config).map_err(|e| control_err(py, e))?;
            if let Some(clock) = clock_of(clock) {
                inner = inner.with_clock(clock);
            }
            Ok(Self {
                inner: Arc::new(inner),
            })
        })
    }

    /// A permit for one call, or `CircuitOpenError` at once.
    fn acquire(&self, py: Python<'_>) -> PyResult<BreakerPermit> {
        guard(|| {
            let permit = self.inner.acquire_owned().map_err(|e| control_err(py, e))?;
            Ok(BreakerPermit {
                permit: Some(permit),
            })
        })
    }

    /// `"closed"`, `"half_open"` or `"open"`.
    #[getter]
    fn state(&self) -> PyResult<&'static str> {
        guard(|| Ok(self.inner.state().as_str()))
    }

    /// The breaker's name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_owned()
    }
}

/// Exponential back-off with full jitter: after failed attempt `n`
/// (0-based) wait uniformly in `[0, min(max_delay, base_delay ×
/// multiplier^n))`. The loop is the caller's (`ragjet.llama_index.CachedLLM`
/// runs one); `record_retry` counts a retry in `ragjet_retries_total`.
#[pyclass(frozen, module = "ragjet")]
pub struct RetryPolicy {
    inner: c::RetryPolicy,
}

#[pymethods]
impl RetryPolicy {
    #[new]
    #[pyo3(signature = (max_attempts=3, base_delay=0.1, max_delay=10.0, multiplier=2.0, operation="default", seed=None))]
    fn new(
        py: Python<'_>,
        max_attempts: u32,
        base_delay: f64,
        max_delay: f64,
        multiplier: f64,
        operation: &str,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        guard(|| {
            let build = || -> Result<c::RetryPolicy, ControlError> {
                c::RetryPolicy::new(max_attempts)?
                    .delays(
                        Duration::from_secs_f64(base_delay),
                        Duration::from_secs_f64(max_delay),
                    )?
                    .multiplier(multiplier)
            };
            duration_arg("base_delay", base_delay)?;
            duration_arg("max_delay", max_delay)?;
            let mut inner = build()
                .map_err(|e| control_err(py, e))?
                .operation(operation);
            if let Some(seed) = seed {
                inner = inner.with_seed(seed);
            }
            Ok(Self { inner })
        })
    }

    /// Attempts in all, the first included.
    #[getter]
    fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// Seconds to wait after failed attempt `attempt` (0-based), jittered.
    fn delay(&self, attempt: u32) -> PyResult<f64> {
        guard(|| Ok(self.inner.delay(attempt).as_secs_f64()))
    }

    /// The back-off cap after failed attempt `attempt`, in seconds.
    fn cap(&self, attempt: u32) -> PyResult<f64> {
        guard(|| Ok(self.inner.cap(attempt).as_secs_f64()))
    }

    /// Counts one retry of this policy's operation.
    fn record_retry(&self) -> PyResult<()> {
        guard(|| {
            self.inner.record_retry();
            Ok(())
        })
    }
}

/// Whether an HTTP status is worth retrying: 408, 429 and every 5xx.
#[pyfunction]
fn is_transient_status(status: u16) -> bool {
    c::is_transient_status(status)
}

/// Requests that failed every retry, kept crash-safe on disk (an
/// append-only, checksummed log) until re-driven or discarded. Counted in
/// `ragjet_dead_letters_total` / `_pending` / `_redriven_total`.
#[pyclass(frozen, module = "ragjet")]
pub struct DeadLetterStore {
    inner: Arc<c::DeadLetterStore>,
}

#[pymethods]
impl DeadLetterStore {
    #[new]
    #[pyo3(signature = (path, name="dead_letters"))]
    fn new(py: Python<'_>, path: std::path::PathBuf, name: &str) -> PyResult<Self> {
        guard(|| {
            let inner = py
                .detach(|| c::DeadLetterStore::open(name, &path))
                .map_err(|e| control_err(py, e))?;
            Ok(Self {
                inner: Arc::new(inner),
            })
        })
    }

    /// Stores a failed request (on disk before this returns); the letter
    /// as a dict with its `id`.
    #[pyo3(signature = (operation, payload, error, attempts=1))]
    fn push(
        &self,
        py: Python<'_>,
        operation: String,
        payload: String,
        error: String,
        attempts: u32,
    ) -> PyResult<Py<PyAny>> {
        guard(|| {
            let inner = self.inner.clone();
            let letter = py
                .detach(move || inner.push(operation, payload, error, attempts))
                .map_err(|e| control_err(py, e))?;
            to_py(py, &letter)
        })
    }

    /// Every stored letter, oldest first, as dicts (`id`, `operation`,
    /// `payload`, `error`, `attempts`, `at_ms`).
    fn list(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| to_py(py, &self.inner.list()))
    }

    /// The letter `id`, or None.
    fn get(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        guard(|| to_py(py, &self.inner.get(id)))
    }

    /// Removes `id` for good; False when it is not stored.
    fn discard(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        guard(|| self.inner.discard(id).map_err(|e| control_err(py, e)))
    }

    /// Replays every letter through `fn(letter_dict)`, oldest first; those
    /// it returns from without raising are removed. Returns
    /// `{"redriven": [ids], "failed": [[id, error], ...]}`.
    fn redrive(&self, py: Python<'_>, func: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let report = self
                .inner
                .redrive(|letter| {
                    let arg = to_py(py, letter).map_err(|e| e.to_string())?;
                    func.call1((arg,)).map(|_| ()).map_err(|e| e.to_string())
                })
                .map_err(|e| control_err(py, e))?;
            to_py(py, &report)
        })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}

/// Chooses a model per request from its complexity (tokens, question form)
/// and each route's cost and latency. `routes` is a list of dicts with
/// `name`, `model`, `max_complexity` (0..1), `cost_per_1k_tokens`,
/// `p95_latency_ms`.
#[pyclass(frozen, module = "ragjet")]
pub struct Router {
    pub(crate) inner: c::Router,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    name: String,
    model: String,
    max_complexity: f64,
    #[serde(default)]
    cost_per_1k_tokens: f64,
    #[serde(default)]
    p95_latency_ms: f64,
}

#[pymethods]
impl Router {
    #[new]
    #[pyo3(signature = (routes, name="default", long_tokens=512))]
    fn new(
        py: Python<'_>,
        routes: Bound<'_, PyAny>,
        name: &str,
        long_tokens: usize,
    ) -> PyResult<Self> {
        guard(|| {
            let specs: Vec<RouteSpec> = from_py(py, "routes", &routes)?;
            let routes = specs
                .into_iter()
                .map(|r| {
                    ModelRoute::new(
                        r.name,
                        r.model,
                        r.max_complexity,
                        r.cost_per_1k_tokens,
                        r.p95_latency_ms,
                    )
                })
                .collect();
            let inner = c::Router::new(name, routes)
                .map_err(|e| control_err(py, e))?
                .long_tokens(long_tokens);
            Ok(Self { inner })
        })
    }

    /// The decision for `text` as a dict (`route`, `model`, `reason`,
    /// `complexity`); counted in `ragjet_route_decisions_total`.
    #[pyo3(signature = (text, tokens=None, latency_budget_ms=None, user=None))]
    fn route(
        &self,
        py: Python<'_>,
        text: &str,
        tokens: Option<usize>,
        latency_budget_ms: Option<f64>,
        user: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        guard(|| {
            let req = RouteRequest {
                text,
                tokens,
                latency_budget_ms,
                user,
            };
            let d = self.inner.route(&req).map_err(|e| control_err(py, e))?;
            to_py(py, &d)
        })
    }
}

/// An A/B experiment: deterministic assignment by hash of (experiment,
/// user), an append-only assignment log (`log_path`), per-variant latency,
/// cache hit and feedback figures, and a summary with 95 % intervals.
#[pyclass(frozen, module = "ragjet")]
pub struct Experiment {
    pub(crate) inner: Arc<c::Experiment>,
}

#[pymethods]
impl Experiment {
    #[new]
    #[pyo3(signature = (name, variants, log_path=None))]
    fn new(
        py: Python<'_>,
        name: &str,
        variants: Bound<'_, PyAny>,
        log_path: Option<std::path::PathBuf>,
    ) -> PyResult<Self> {
        guard(|| {
            // A list of names (equal weights) or a {name: weight} dict.
            let variants: Vec<(String, u32)> = if let Ok(d) = variants.cast::<PyDict>() {
                d.iter()
                    .map(|(k, v)| Ok((k.extract::<String>()?, v.extract::<u32>()?)))
                    .collect::<PyResult<_>>()?
            } else {
                let names: Vec<String> = variants.extract()?;
                names.into_iter().map(|n| (n, 1)).collect()
            };
            let mut inner = c::Experiment::new(name, variants).map_err(|e| control_err(py, e))?;
            if let Some(p) = log_path {
                inner = inner.with_log(p).map_err(|e| control_err(py, e))?;
            }
            Ok(Self {
                inner: Arc::new(inner),
            })
        })
    }

    /// The variant of `user` (logged and counted the first time).
    fn assign(&self, py: Python<'_>, user: &str) -> PyResult<String> {
        guard(|| self.inner.assign(user).map_err(|e| control_err(py, e)))
    }

    /// Records one request's latency in seconds.
    fn record_latency(&self, py: Python<'_>, variant: &str, seconds: f64) -> PyResult<()> {
        guard(|| {
            let d = duration_arg("seconds", seconds)?;
            self.inner
                .record_latency(variant, d)
                .map_err(|e| control_err(py, e))
        })
    }

    /// Records one cache look-up.
    fn record_cache(&self, py: Python<'_>, variant: &str, hit: bool) -> PyResult<()> {
        guard(|| {
            self.inner
                .record_cache(variant, hit)
                .map_err(|e| control_err(py, e))
        })
    }

    /// Records one feedback score in 0..1.
    fn record_feedback(&self, py: Python<'_>, variant: &str, score: f64) -> PyResult<()> {
        guard(|| {
            self.inner
                .record_feedback(variant, score)
                .map_err(|e| control_err(py, e))
        })
    }

    /// Figures per variant and each variant against the first, with the
    /// difference and its 95 % interval, as a dict.
    fn summary(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| to_py(py, &self.inner.summary()))
    }
}

/// Models (embedders, rerankers, any Python object) loaded by name on
/// demand through `loader(name) -> (model, bytes)` and shared, bounded by
/// `max_models` and `max_bytes` with least-recently-used eviction of models
/// nobody holds, and unloaded after `idle_ttl` seconds unused by `cleanup()`
/// (or every `cleanup_every` seconds on a background thread when given).
/// `get(name)` returns a `PooledModel`; use it as a context manager (or
/// call `release()`) so the model can be evicted again.
#[pyclass(frozen, module = "ragjet")]
pub struct ModelPool {
    inner: Arc<c::ModelPool<Py<PyAny>>>,
    _cleanup: Option<c::pool::CleanupHandle>,
}

#[pymethods]
impl ModelPool {
    #[new]
    #[pyo3(signature = (loader, name="default", max_models=4, max_bytes=8 << 30, idle_ttl=600.0, cleanup_every=None))]
    fn new(
        py: Python<'_>,
        loader: Py<PyAny>,
        name: &str,
        max_models: usize,
        max_bytes: u64,
        idle_ttl: f64,
        cleanup_every: Option<f64>,
    ) -> PyResult<Self> {
        guard(|| {
            let config = c::PoolConfig {
                max_models,
                max_bytes,
                idle_ttl: duration_arg("idle_ttl", idle_ttl)?,
            };
            let every = cleanup_every
                .map(|s| duration_arg("cleanup_every", s))
                .transpose()?;
            if every.is_some_and(|d| d.is_zero()) {
                return Err(invalid("cleanup_every must be > 0 seconds"));
            }
            let pool = c::ModelPool::new(name, config, move |model: &str| {
                // Called without the GIL (see `get`); take it to run Python.
                Python::attach(|py| {
                    let out = loader.call1(py, (model,)).map_err(|e| e.to_string())?;
                    let (obj, bytes): (Py<PyAny>, u64) = out
                        .extract(py)
                        .map_err(|e| format!("the loader must return (model, bytes): {e}"))?;
                    Ok((obj, bytes))
                })
            })
            .map_err(|e| control_err(py, e))?;
            let cleanup = every.map(|d| pool.spawn_cleanup(d));
            Ok(Self {
                inner: pool,
                _cleanup: cleanup,
            })
        })
    }

    /// The model `name`, loaded first when needed (the GIL is released
    /// while waiting for another caller's load of it).
    fn get(&self, py: Python<'_>, name: &str) -> PyResult<PooledModel> {
        guard(|| {
            let pool = self.inner.clone();
            let name = name.to_owned();
            let g = py
                .detach(move || pool.get(&name))
                .map_err(|e| control_err(py, e))?;
            Ok(PooledModel {
                guard: std::sync::Mutex::new(Some(g)),
            })
        })
    }

    /// Unloads models idle for `idle_ttl`; returns their names.
    fn cleanup(&self) -> PyResult<Vec<String>> {
        guard(|| Ok(self.inner.cleanup()))
    }

    /// Names of the loaded models, sorted.
    fn loaded(&self) -> Vec<String> {
        self.inner.loaded_models()
    }

    /// Callers holding `name` now.
    fn active(&self, name: &str) -> usize {
        self.inner.active(name)
    }
}

/// A model borrowed from a `ModelPool`; it is not evicted until released
/// (`release()`, the end of a `with` block, or garbage collection).
#[pyclass(frozen, module = "ragjet")]
pub struct PooledModel {
    guard: std::sync::Mutex<Option<c::PoolGuard<Py<PyAny>>>>,
}

#[pymethods]
impl PooledModel {
    /// The model object the loader returned.
    #[getter]
    fn model(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let g = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_ref() {
            Some(g) => Ok((**g).clone_ref(py)),
            None => Err(invalid("this pooled model was released")),
        }
    }

    /// Gives the model back to the pool.
    fn release(&self) {
        let g = self.guard.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(g);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.release();
        false
    }
}

/// Autoscaling advice for `signals` (dict: `replicas`, `queue_depth`,
/// `p95_ms`, `utilisation`, `error_rate`, optional
/// `seconds_since_last_scale`) under `policy` (dict of overrides of the
/// defaults: up above 85 % utilisation, down below 30 %, 5-minute cooldown,
/// target 70–80 %): `{"action", "desired_replicas", "reason"}`.
#[pyfunction]
#[pyo3(signature = (signals, policy=None))]
fn advise_scale(
    py: Python<'_>,
    signals: Bound<'_, PyAny>,
    policy: Option<Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    guard(|| {
        let s: ScaleSignals = from_py(py, "signals", &signals)?;
        let p: ScalePolicy = match policy {
            Some(p) => from_py(py, "policy", &p)?,
            None => ScalePolicy::default(),
        };
        let d = c::advise(&s, &p).map_err(|e| control_err(py, e))?;
        to_py(py, &d)
    })
}

/// The autoscaling advice over HTTP/JSON, beside `/metrics`, for an
/// autoscaler (KEDA's metrics-api scaler, an HPA through an adapter) or an
/// operator: `GET /scale` answers the advice for `source`'s signals under
/// `policy`; `POST /scale` with `{"signals": {...}, "policy": {...}}`
/// answers for those; `GET /healthz` says `ok`. `source` is an `Engine`
/// (its own signals: `Engine.scale_signals()`) or a callable returning a
/// signals dict, or None while there are none (503). `address` defaults to
/// loopback; port 0 picks a free one (see `address`). Stops on `close()`,
/// at the end of a `with` block, or when collected.
#[pyclass(module = "ragjet")]
pub struct AdviceServer {
    inner: Option<c::AdviceServer>,
    address: (String, u16),
}

#[pymethods]
impl AdviceServer {
    #[new]
    #[pyo3(signature = (source, address="127.0.0.1:9465", policy=None))]
    fn new(
        py: Python<'_>,
        source: Bound<'_, PyAny>,
        address: &str,
        policy: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        guard(|| {
            let addr: std::net::SocketAddr = address.parse().map_err(|_| {
                invalid(format!(
                    "address must be host:port such as 127.0.0.1:9465, not {address:?}"
                ))
            })?;
            let policy: ScalePolicy = match &policy {
                Some(p) => from_py(py, "policy", p)?,
                None => ScalePolicy::default(),
            };
            let server = if let Ok(engine) = source.cast::<crate::engine::Engine>() {
                let engine = Arc::downgrade(&engine.get().inner);
                c::AdviceServer::start(addr, policy, move || {
                    engine.upgrade().map(|e| e.scale_signals())
                })
            } else {
                if !source.is_callable() {
                    return Err(invalid(
                        "source must be an Engine or a callable returning a signals dict or None",
                    ));
                }
                let source = source.unbind();
                c::AdviceServer::start(addr, policy, move || {
                    Python::attach(|py| {
                        let value = match source.call0(py) {
                            Ok(v) => v,
                            Err(e) => {
                                // Reported as Python reports errors in
                                // callbacks; the request gets a 503.
                                e.write_unraisable(py, Some(source.bind(py)));
                                return None;
                            }
                        };
                        let value = value.bind(py);
                        if value.is_none() {
                            return None;
                        }
                        match from_py::<ScaleSignals>(py, "signals", value) {
                            Ok(s) => Some(s),
                            Err(e) => {
                                e.write_unraisable(py, Some(source.bind(py)));
                                None
                            }
                        }
                    })
                })
            }
            .map_err(|e| control_err(py, e))?;
            let bound = server.local_addr();
            Ok(Self {
                inner: Some(server),
                address: (bound.ip().to_string(), bound.port()),
            })
        })
    }

    /// `(host, port)` bound.
    #[getter]
    fn address(&self) -> (String, u16) {
        self.address.clone()
    }

    /// `http://host:port/scale`.
    #[getter]
    fn url(&self) -> String {
        format!("http://{}:{}/scale", self.address.0, self.address.1)
    }

    /// Stops serving (waits for the server thread; the GIL is released).
    fn close(&mut self, py: Python<'_>) {
        if let Some(server) = self.inner.take() {
            py.detach(move || drop(server));
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&mut self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }
}

impl Drop for AdviceServer {
    fn drop(&mut self) {
        // The server thread may be waiting for the GIL in a Python source:
        // let it finish before joining.
        if let Some(server) = self.inner.take() {
            Python::attach(|py| py.detach(move || drop(server)));
        }
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AdviceServer>()?;
    m.add_class::<ManualClock>()?;
    m.add_class::<RateLimiter>()?;
    m.add_class::<CircuitBreaker>()?;
    m.add_class::<BreakerPermit>()?;
    m.add_class::<RetryPolicy>()?;
    m.add_class::<DeadLetterStore>()?;
    m.add_class::<Router>()?;
    m.add_class::<Experiment>()?;
    m.add_class::<ModelPool>()?;
    m.add_class::<PooledModel>()?;
    m.add_function(wrap_pyfunction!(is_transient_status, m)?)?;
    m.add_function(wrap_pyfunction!(advise_scale, m)?)?;
    Ok(())
}
