//! Service-level objectives checked against a latency window.

use crate::error::Result;
use crate::latency::LatencySnapshot;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Targets a window is judged against. The defaults are ragjet's:
/// p50 < 200 ms, p95 < 500 ms, p99 < 1 s, error rate < 0.1 %,
/// availability ≥ 99.95 %.
///
/// # Examples
///
/// ```
/// use ragjet_telemetry::{LatencySnapshot, SloReport, SloTargets};
/// use std::time::Duration;
///
/// // A batch service with looser latency targets.
/// let targets = SloTargets { p95: Duration::from_secs(2), p99: Duration::from_secs(5), ..SloTargets::default() };
/// let window = LatencySnapshot {
///     window_seconds: 60.0, count: 100, errors: 0, unavailable: 0,
///     p50_ms: 150.0, p95_ms: 1_500.0, p99_ms: 3_000.0, max_ms: 3_100.0,
///     mean_ms: 300.0, throughput_per_second: 1.7,
/// };
/// assert!(SloReport::evaluate(&window, &targets).all_met);
/// assert!(!SloReport::evaluate(&window, &SloTargets::default()).all_met);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloTargets {
    /// Median latency must stay below this.
    pub p50: Duration,
    /// 95th percentile must stay below this.
    pub p95: Duration,
    /// 99th percentile must stay below this.
    pub p99: Duration,
    /// Failed requests / all requests must stay below this.
    pub max_error_rate: f64,
    /// Served requests / all requests must reach this.
    pub availability: f64,
}

impl Default for SloTargets {
    fn default() -> Self {
        Self {
            p50: Duration::from_millis(200),
            p95: Duration::from_millis(500),
            p99: Duration::from_secs(1),
            max_error_rate: 0.001,
            availability: 0.9995,
        }
    }
}

/// One objective's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloCheck {
    /// `p50`, `p95`, `p99`, `error_rate` or `availability`.
    pub name: &'static str,
    /// The target (ms for latencies, a fraction otherwise).
    pub target: f64,
    /// The measured value in the same unit.
    pub actual: f64,
    /// Whether the objective is met.
    pub met: bool,
}

/// A window judged against [`SloTargets`].
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_telemetry::{LatencyRecorder, Outcome, SloReport, SloTargets};
/// use std::time::Duration;
///
/// let recorder = LatencyRecorder::new(Duration::from_secs(300))?;
/// for _ in 0..999 {
///     recorder.record(Duration::from_millis(40), Outcome::Ok);
/// }
/// recorder.record(Duration::from_millis(40), Outcome::Unavailable);
/// let report = SloReport::evaluate(&recorder.snapshot(), &SloTargets::default());
/// let p95 = report.checks.iter().find(|c| c.name == "p95").unwrap();
/// assert!(p95.met);
/// // One unserved request in 1000 breaks the 99.95 % availability target.
/// let availability = report.checks.iter().find(|c| c.name == "availability").unwrap();
/// assert!(!availability.met);
/// assert!(!report.all_met);
/// assert!(report.error_budget_remaining < 0.0);
/// assert!(report.to_json()?.contains("error_budget_remaining"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloReport {
    /// The figures judged.
    pub window: LatencySnapshot,
    /// One verdict per objective.
    pub checks: Vec<SloCheck>,
    /// Every objective met (an empty window meets them all).
    pub all_met: bool,
    /// Share of the availability error budget left in this window: 1.0 when
    /// nothing was unavailable, 0.0 when exactly the allowed share was,
    /// negative when overspent.
    pub error_budget_remaining: f64,
}

impl SloReport {
    /// Judges `window` against `targets`.
    pub fn evaluate(window: &LatencySnapshot, targets: &SloTargets) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let n = window.count as f64;
        let (error_rate, availability) = if window.count == 0 {
            (0.0, 1.0)
        } else {
            (
                window.errors as f64 / n,
                1.0 - window.unavailable as f64 / n,
            )
        };
        // Latency targets are "below", so a value equal to the target fails.
        let checks = vec![
            SloCheck {
                name: "p50",
                target: ms(targets.p50),
                actual: window.p50_ms,
                met: window.p50_ms < ms(targets.p50),
            },
            SloCheck {
                name: "p95",
                target: ms(targets.p95),
                actual: window.p95_ms,
                met: window.p95_ms < ms(targets.p95),
            },
            SloCheck {
                name: "p99",
                target: ms(targets.p99),
                actual: window.p99_ms,
                met: window.p99_ms < ms(targets.p99),
            },
            SloCheck {
                name: "error_rate",
                target: targets.max_error_rate,
                actual: error_rate,
                met: error_rate < targets.max_error_rate || window.count == 0,
            },
            SloCheck {
                name: "availability",
                target: targets.availability,
                actual: availability,
                met: availability >= targets.availability,
            },
        ];
        let allowed = (1.0 - targets.availability) * n;
        let error_budget_remaining = if window.unavailable == 0 {
            1.0
        } else if allowed <= 0.0 {
            // A 100 % target has no budget: any outage overspends it.
            -1.0
        } else {
            1.0 - window.unavailable as f64 / allowed
        };
        Self {
            window: window.clone(),
            all_met: checks.iter().all(|c| c.met),
            checks,
            error_budget_remaining,
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}

impl std::fmt::Display for SloReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "SLO {}: {}",
            if self.all_met { "met" } else { "MISSED" },
            self.window
        )?;
        for c in &self.checks {
            let mark = if c.met { "ok  " } else { "MISS" };
            if c.name.starts_with('p') {
                writeln!(
                    f,
                    "  {mark} {:<12} {:>10.2} ms (target < {} ms)",
                    c.name, c.actual, c.target
                )?;
            } else {
                writeln!(
                    f,
                    "  {mark} {:<12} {:>10.4} % (target {} %)",
                    c.name,
                    c.actual * 100.0,
                    c.target * 100.0
                )?;
            }
        }
        write!(
            f,
            "  error budget remaining: {:.1} %",
            self.error_budget_remaining * 100.0
        )
    }
}
