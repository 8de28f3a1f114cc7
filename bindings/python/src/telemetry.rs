//! `Telemetry`: the process's Prometheus recorder and `/metrics` endpoint,
//! the SLO window, and a cost tracker that Python code records into.
//!
//! The recorder, the endpoint and the SLO window are process-wide, because
//! the `metrics` recorder is: every `Telemetry()` is a handle on them, so a
//! LlamaIndex handler and the application see the same figures. Prices and
//! budgets belong to the `Telemetry` object they were given to (a cost
//! tracker each), so two parts of a program can price models differently
//! without one's settings being refused for the other's.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;
use ragjet::telemetry::metrics::{self as m, QueryStatus};
use ragjet::telemetry::{
    Budgets, CostTracker, LatencyRecorder, LogFormat, MetricsHandle, MetricsServer, ModelPrice,
    Outcome, SloReport, SloTargets, Telemetry as RTelemetry, TelemetryConfig, TelemetryError,
    TelemetryGuard,
};

use crate::convert::{errors::RagjetError, guard, invalid};

/// The SLO window when the first `Telemetry()` names none: five minutes.
const DEFAULT_SLO_WINDOW_SECONDS: f64 = 300.0;

struct Shared {
    _guard: TelemetryGuard,
    handle: MetricsHandle,
    window_seconds: f64,
    latency: LatencyRecorder,
    targets: SloTargets,
    server: Mutex<Option<MetricsServer>>,
}

static SHARED: Mutex<Option<Arc<Shared>>> = Mutex::new(None);

fn telemetry_err(err: TelemetryError) -> PyErr {
    match err {
        TelemetryError::InvalidConfig(_) | TelemetryError::InvalidFilter { .. } => {
            invalid(err.to_string())
        }
        _ => RagjetError::new_err(err.to_string()),
    }
}

fn seconds(name: &str, s: f64) -> PyResult<Duration> {
    if !(s.is_finite() && s >= 0.0) {
        return Err(invalid(format!(
            "{name} must be a finite number of seconds >= 0, not {s}"
        )));
    }
    Duration::try_from_secs_f64(s).map_err(|e| invalid(format!("{name}={s}: {e}")))
}

fn json_to_py(py: Python<'_>, json: &str) -> PyResult<Py<PyAny>> {
    Ok(py.import("json")?.call_method1("loads", (json,))?.unbind())
}

/// The process-wide state, set up by the first call.
fn shared(
    py: Python<'_>,
    service_name: &str,
    slo_window_seconds: Option<f64>,
    log_format: Option<&str>,
    log_filter: Option<String>,
) -> PyResult<Arc<Shared>> {
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = slot.as_ref() {
        if let Some(w) = slo_window_seconds.filter(|w| *w != shared.window_seconds) {
            return Err(invalid(format!(
                "the SLO window is process-wide and already {} s; it cannot become {w} s",
                shared.window_seconds
            )));
        }
        return Ok(shared.clone());
    }
    let log_format = match log_format.map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("human") => Some(LogFormat::Human),
        Some("json") => Some(LogFormat::Json),
        Some(other) => {
            return Err(invalid(format!(
                "log_format must be None, \"human\" or \"json\", not {other:?}"
            )))
        }
    };
    let window_seconds = slo_window_seconds.unwrap_or(DEFAULT_SLO_WINDOW_SECONDS);
    let latency = LatencyRecorder::new(seconds("slo_window_seconds", window_seconds)?)
        .map_err(telemetry_err)?;
    // With feature `otlp` the struct has one more field, which the update
    // fills; without it the update is empty.
    #[allow(clippy::needless_update)]
    let config = TelemetryConfig {
        service_name: service_name.to_owned(),
        log_format: log_format.unwrap_or(LogFormat::Off),
        log_filter,
        install_subscriber: log_format.is_some(),
        install_metrics: true,
        // `serve_metrics` starts the endpoint when asked.
        metrics_addr: None,
        ..TelemetryConfig::default()
    };
    let telemetry = py
        .detach(|| RTelemetry::init(config))
        .map_err(telemetry_err)?;
    let handle = telemetry.metrics().cloned().ok_or_else(|| {
        RagjetError::new_err("telemetry was set up in this process without a metrics recorder")
    })?;
    let shared = Arc::new(Shared {
        _guard: telemetry,
        handle,
        window_seconds,
        latency,
        targets: SloTargets::default(),
        server: Mutex::new(None),
    });
    *slot = Some(shared.clone());
    Ok(shared)
}

/// Telemetry: `Telemetry(service_name="ragjet", *, prices=None,
/// daily_budget_usd=None, monthly_budget_usd=None, slo_window_seconds=None,
/// log_format=None, log_filter=None)`.
///
/// The first `Telemetry(...)` of the process installs ragjet's Prometheus
/// recorder (and, with `log_format` "human" or "json", a tracing
/// subscriber logging to stderr) and fixes the SLO window (default 300 s);
/// every later one shares the recorder, the `/metrics` endpoint and the
/// SLO window. `prices` (model name to `(usd_per_million_input_tokens,
/// usd_per_million_output_tokens)`) and the budgets belong to this object:
/// its `cost_report()` covers the LLM calls recorded through it. Calls of
/// unpriced models count tokens only.
#[pyclass(frozen, module = "ragjet")]
pub(crate) struct Telemetry {
    shared: Arc<Shared>,
    cost: CostTracker,
}

#[pymethods]
impl Telemetry {
    #[new]
    #[pyo3(signature = (service_name="ragjet", *, prices=None, daily_budget_usd=None, monthly_budget_usd=None, slo_window_seconds=None, log_format=None, log_filter=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        service_name: &str,
        prices: Option<BTreeMap<String, (f64, f64)>>,
        daily_budget_usd: Option<f64>,
        monthly_budget_usd: Option<f64>,
        slo_window_seconds: Option<f64>,
        log_format: Option<&str>,
        log_filter: Option<String>,
    ) -> PyResult<Self> {
        guard(|| {
            let prices: HashMap<String, ModelPrice> = prices
                .unwrap_or_default()
                .into_iter()
                .map(|(model, (input, output))| {
                    (
                        model,
                        ModelPrice {
                            input_per_million: input,
                            output_per_million: output,
                        },
                    )
                })
                .collect();
            let budgets = Budgets {
                daily_usd: daily_budget_usd,
                monthly_usd: monthly_budget_usd,
            };
            let cost = CostTracker::new(prices, budgets).map_err(telemetry_err)?;
            let shared = shared(py, service_name, slo_window_seconds, log_format, log_filter)?;
            Ok(Self { shared, cost })
        })
    }

    /// Serves `GET /metrics` (Prometheus text) on `host:port` from a
    /// background thread; port 0 picks a free one. Returns the bound port.
    /// Calling it again returns the running endpoint's port (if it matches
    /// the request).
    #[pyo3(signature = (port=9464, host="127.0.0.1"))]
    fn serve_metrics(&self, py: Python<'_>, port: u16, host: &str) -> PyResult<u16> {
        guard(|| {
            let ip: IpAddr = host
                .parse()
                .map_err(|e| invalid(format!("host {host:?} is not an IP address: {e}")))?;
            let addr = SocketAddr::new(ip, port);
            let mut server = self
                .shared
                .server
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(running) = server.as_ref() {
                let bound = running.local_addr();
                if (port == 0 || port == bound.port()) && ip == bound.ip() {
                    return Ok(bound.port());
                }
                return Err(invalid(format!(
                    "the metrics endpoint already runs on {bound}; call stop_metrics() first"
                )));
            }
            let handle = self.shared.handle.clone();
            let started = py
                .detach(|| MetricsServer::start(addr, handle))
                .map_err(telemetry_err)?;
            let port = started.local_addr().port();
            *server = Some(started);
            Ok(port)
        })
    }

    /// Stops the `/metrics` endpoint, if one runs.
    fn stop_metrics(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            let server = self
                .shared
                .server
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            // Joins the server thread: not with the GIL held.
            py.detach(|| drop(server));
            Ok(())
        })
    }

    /// The Prometheus text exposition `/metrics` serves.
    fn render(&self, py: Python<'_>) -> PyResult<String> {
        guard(|| {
            Ok(py.detach(|| {
                self.shared.handle.run_upkeep();
                self.shared.handle.render()
            }))
        })
    }

    /// Records one LLM call: its tokens (`ragjet_tokens_total`), its cost
    /// when the model has a price, and its latency as the span "llm". A
    /// call answered from a cache (`cached=True`) spent nothing and is
    /// only counted as the span "llm.cached".
    #[pyo3(signature = (model, prompt_tokens, completion_tokens, seconds, cached=false))]
    fn record_llm_call(
        &self,
        model: &str,
        prompt_tokens: u64,
        completion_tokens: u64,
        seconds: f64,
        cached: bool,
    ) -> PyResult<()> {
        guard(|| {
            let took = self::seconds("seconds", seconds)?;
            if cached {
                m::record_span("llm.cached", QueryStatus::Ok, took);
                return Ok(());
            }
            match self.cost.record(model, prompt_tokens, completion_tokens) {
                Ok(_) => {}
                // Unpriced: tokens are still worth counting.
                Err(TelemetryError::UnknownModel(_)) => {
                    m::record_tokens(model, prompt_tokens, completion_tokens)
                }
                Err(e) => return Err(telemetry_err(e)),
            }
            m::record_span("llm", QueryStatus::Ok, took);
            Ok(())
        })
    }

    /// Records the duration of one named pipeline step
    /// (`ragjet_span_duration_seconds{span, status}`).
    #[pyo3(signature = (name, seconds, ok=true))]
    fn record_span(&self, name: &str, seconds: f64, ok: bool) -> PyResult<()> {
        guard(|| {
            let took = self::seconds("seconds", seconds)?;
            if name.is_empty() {
                return Err(invalid("name must not be empty"));
            }
            let status = if ok {
                QueryStatus::Ok
            } else {
                QueryStatus::Error
            };
            m::record_span(name, status, took);
            Ok(())
        })
    }

    /// Records one end-to-end query: `ragjet_queries_total`,
    /// `ragjet_query_duration_seconds` and the SLO window.
    /// `available=False` marks a query that was not served at all
    /// (overload, timeout), which also counts against availability.
    #[pyo3(signature = (seconds, ok=true, available=true))]
    fn record_query(&self, seconds: f64, ok: bool, available: bool) -> PyResult<()> {
        guard(|| {
            let took = self::seconds("seconds", seconds)?;
            let outcome = match (ok, available) {
                (_, false) => Outcome::Unavailable,
                (false, true) => Outcome::Error,
                (true, true) => Outcome::Ok,
            };
            let status = if outcome == Outcome::Ok {
                QueryStatus::Ok
            } else {
                QueryStatus::Error
            };
            m::record_query(status, took);
            self.shared.latency.record(took, outcome);
            Ok(())
        })
    }

    /// The queries of the SLO window judged against ragjet's targets
    /// (p50 < 200 ms, p95 < 500 ms, p99 < 1 s, error rate < 0.1 %,
    /// availability ≥ 99.95 %), as a dict: `window` (count, errors,
    /// p50_ms, ...), `checks` (name, target, actual, met), `all_met`,
    /// `error_budget_remaining`.
    fn slo_report(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let report = SloReport::evaluate(&self.shared.latency.snapshot(), &self.shared.targets);
            json_to_py(py, &report.to_json().map_err(telemetry_err)?)
        })
    }

    /// Estimated spend as a dict: `total_usd`, `requests`,
    /// `cost_per_1k_requests_usd`, `by_model` (model, requests,
    /// input_tokens, output_tokens, usd), `daily` and `monthly` budget
    /// status.
    fn cost_report(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| json_to_py(py, &self.cost.report().to_json().map_err(telemetry_err)?))
    }

    /// The port `/metrics` is served on, or None.
    #[getter]
    fn metrics_port(&self) -> Option<u16> {
        self.shared
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|s| s.local_addr().port())
    }

    fn __repr__(&self) -> String {
        format!("Telemetry(metrics_port={:?})", self.metrics_port())
    }
}

/// The metric catalogue: one dict per metric ragjet exports (`name`,
/// `type`, `labels`, `unit`, `help`).
#[pyfunction]
fn metric_catalogue(py: Python<'_>) -> PyResult<Vec<Py<pyo3::types::PyDict>>> {
    guard(|| {
        m::catalogue()
            .map(|def| {
                let d = pyo3::types::PyDict::new(py);
                d.set_item("name", def.name)?;
                d.set_item("type", def.kind.as_str())?;
                d.set_item("labels", def.labels.to_vec())?;
                d.set_item("unit", def.unit)?;
                d.set_item("help", def.help)?;
                Ok(d.unbind())
            })
            .collect()
    })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Telemetry>()?;
    m.add_function(wrap_pyfunction!(metric_catalogue, m)?)?;
    Ok(())
}
