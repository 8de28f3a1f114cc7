//! Observability for ragjet: `tracing` spans with OpenTelemetry naming,
//! Prometheus metrics served on `/metrics`, latency percentiles, SLO and
//! cost reports.
//!
//! An application calls [`Telemetry::init`] once and keeps the guard:
//!
//! ```
//! use ragjet_telemetry::{Telemetry, TelemetryConfig, LogFormat};
//!
//! # fn main() -> Result<(), ragjet_telemetry::TelemetryError> {
//! let telemetry = Telemetry::init(
//!     TelemetryConfig::default().with_metrics_port(0).with_log_format(LogFormat::Json),
//! )?;
//! let addr = telemetry.metrics_addr().expect("port 0 still serves /metrics");
//! assert_ne!(addr.port(), 0);
//! # Ok(()) }
//! ```
//!
//! Library crates never install anything: they open spans with
//! [`spans`] and record figures with the helpers and names of [`metrics`]
//! (the metric catalogue; `docs/metrics.md` is generated from it). Tests
//! build a private recorder with [`build_recorder`] and
//! `metrics::with_local_recorder`, so they stay independent.
//!
//! [`LatencyRecorder`], [`SloReport`] and [`CostTracker`] answer "how fast,
//! how reliable, how expensive" in-process, as structs, JSON and text, on an
//! injectable [`Clock`].
#![warn(missing_docs)]

mod clock;
mod cost;
mod error;
mod exporter;
pub mod http;
mod latency;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
mod process;
mod slo;
pub mod spans;
mod telemetry;

pub use clock::{Clock, ManualClock, SystemClock};
pub use cost::{
    BudgetAlert, BudgetPeriod, BudgetStatus, Budgets, CostReport, CostTracker, ModelCost,
    ModelPrice, ALERT_THRESHOLDS,
};
pub use error::{Result, TelemetryError};
pub use exporter::{build_recorder, MetricsHandle, MetricsServer};
pub use latency::{LatencyRecorder, LatencySnapshot, Outcome};
pub use process::ProcessStats;
pub use slo::{SloCheck, SloReport, SloTargets};
pub use telemetry::{LogFormat, Telemetry, TelemetryConfig, TelemetryGuard, DEFAULT_METRICS_PORT};
