//! Estimated spend per model from token counts, with daily and monthly
//! budgets that raise alerts at 80 % and 100 %.

use crate::clock::{civil_from_days, Clock, SystemClock};
use crate::error::{Result, TelemetryError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

/// Price of a model in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    /// USD per 1M input (prompt / embedded) tokens.
    pub input_per_million: f64,
    /// USD per 1M output tokens.
    pub output_per_million: f64,
}

/// Budgets in USD; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Budgets {
    /// Per calendar day (UTC).
    pub daily_usd: Option<f64>,
    /// Per calendar month (UTC).
    pub monthly_usd: Option<f64>,
}

/// The budget period an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// The current UTC day.
    Daily,
    /// The current UTC month.
    Monthly,
}

/// Raised once per period and threshold when spend crosses it.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_telemetry::{BudgetPeriod, Budgets, CostTracker, ModelPrice};
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
///
/// let prices = HashMap::from([("m".to_string(), ModelPrice { input_per_million: 10.0, output_per_million: 0.0 })]);
/// let tracker = CostTracker::new(prices, Budgets { daily_usd: None, monthly_usd: Some(1.0) })?;
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// tracker.on_alert(move |alert| sink.lock().unwrap().push((alert.period, alert.threshold)));
/// tracker.record("m", 85_000, 0)?; // $0.85 of $1.00 this month
/// assert_eq!(*seen.lock().unwrap(), vec![(BudgetPeriod::Monthly, 0.8)]);
/// tracker.record("m", 1_000, 0)?; // still under 100 %: no second alert
/// assert_eq!(seen.lock().unwrap().len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetAlert {
    /// Which budget.
    pub period: BudgetPeriod,
    /// The threshold crossed: 0.8 or 1.0.
    pub threshold: f64,
    /// Spend in the period so far, USD.
    pub spent_usd: f64,
    /// The budget, USD.
    pub budget_usd: f64,
    /// The period, `YYYY-MM-DD` or `YYYY-MM`.
    pub period_label: String,
}

/// Alert thresholds, as fractions of a budget.
///
/// # Examples
///
/// ```
/// assert_eq!(ragjet_telemetry::ALERT_THRESHOLDS, [0.8, 1.0]);
/// ```
pub const ALERT_THRESHOLDS: [f64; 2] = [0.8, 1.0];

type AlertSink = Box<dyn Fn(&BudgetAlert) + Send + Sync>;

#[derive(Debug, Default, Clone, Serialize)]
struct ModelTotals {
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    usd: f64,
}

#[derive(Default)]
struct State {
    by_model: BTreeMap<String, ModelTotals>,
    day: i64,
    month: (i64, u32),
    day_usd: f64,
    month_usd: f64,
    /// (period, threshold index) already alerted in the current period.
    alerted: Vec<(BudgetPeriod, usize)>,
}

/// Tracks estimated spend from token counts.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_telemetry::{BudgetPeriod, Budgets, CostTracker, ManualClock, ModelPrice};
/// use std::collections::HashMap;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let prices = HashMap::from([(
///     "gpt-small".to_string(),
///     ModelPrice { input_per_million: 1.0, output_per_million: 2.0 },
/// )]);
/// let budgets = Budgets { daily_usd: Some(1.0), monthly_usd: None };
/// // 2024-03-15T12:00:00Z, so the daily budget has a known label.
/// let clock = ManualClock::new(Duration::from_secs(1_710_504_000));
/// let tracker = CostTracker::with_clock(prices, budgets, Arc::new(clock))?;
/// let alerts = tracker.alert_channel();
///
/// // 300k input + 100k output tokens: $0.30 + $0.20.
/// assert!((tracker.price("gpt-small", 300_000, 100_000)? - 0.5).abs() < 1e-9);
/// tracker.record("gpt-small", 300_000, 100_000)?;
/// tracker.record("gpt-small", 300_000, 100_000)?; // $1.00 today: 80 % and 100 % alerts
/// let crossed: Vec<f64> = alerts.try_iter().map(|a| a.threshold).collect();
/// assert_eq!(crossed, vec![0.8, 1.0]);
///
/// let report = tracker.report();
/// assert_eq!(report.requests, 2);
/// assert!((report.total_usd - 1.0).abs() < 1e-9);
/// assert_eq!(report.daily.period, "2024-03-15");
/// assert_eq!(report.by_model[0].input_tokens, 600_000);
/// assert!(report.to_json()?.contains("\"total_usd\""));
/// // A model without a price is an error, never a silent zero.
/// assert!(tracker.record("unpriced", 1, 1).is_err());
/// # let _ = BudgetPeriod::Daily;
/// # Ok(()) }
/// ```
pub struct CostTracker {
    prices: HashMap<String, ModelPrice>,
    budgets: Budgets,
    clock: Arc<dyn Clock>,
    sinks: Mutex<Vec<AlertSink>>,
    state: Mutex<State>,
}

impl std::fmt::Debug for CostTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostTracker")
            .field("prices", &self.prices)
            .field("budgets", &self.budgets)
            .finish_non_exhaustive()
    }
}

/// Spend against one budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetStatus {
    /// `YYYY-MM-DD` or `YYYY-MM`.
    pub period: String,
    /// Spent in the period, USD.
    pub spent_usd: f64,
    /// The budget, USD, if any.
    pub budget_usd: Option<f64>,
    /// `spent / budget`, if there is a budget.
    pub used_fraction: Option<f64>,
}

/// Spend of one model since the tracker was created.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCost {
    /// Model name.
    pub model: String,
    /// Requests recorded.
    pub requests: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Estimated spend, USD.
    pub usd: f64,
}

/// A cost report as a struct (JSON via [`CostReport::to_json`], text via
/// `Display`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostReport {
    /// Estimated spend since the tracker was created, USD.
    pub total_usd: f64,
    /// Requests recorded.
    pub requests: u64,
    /// `total_usd / requests × 1000` (0 without requests).
    pub cost_per_1k_requests_usd: f64,
    /// Per model, by name.
    pub by_model: Vec<ModelCost>,
    /// Today's spend (UTC).
    pub daily: BudgetStatus,
    /// This month's spend (UTC).
    pub monthly: BudgetStatus,
}

impl CostTracker {
    /// A tracker with `prices` per model name and `budgets`, on the system
    /// clock.
    pub fn new(prices: HashMap<String, ModelPrice>, budgets: Budgets) -> Result<Self> {
        Self::with_clock(prices, budgets, Arc::new(SystemClock))
    }

    /// As [`CostTracker::new`], reading time from `clock`.
    pub fn with_clock(
        prices: HashMap<String, ModelPrice>,
        budgets: Budgets,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        for (model, p) in &prices {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !ok(p.input_per_million) || !ok(p.output_per_million) {
                return Err(TelemetryError::InvalidConfig(format!(
                    "price of {model:?} must be finite and non-negative"
                )));
            }
        }
        for b in [budgets.daily_usd, budgets.monthly_usd]
            .into_iter()
            .flatten()
        {
            if !(b.is_finite() && b > 0.0) {
                return Err(TelemetryError::InvalidConfig(format!(
                    "budget {b} must be finite and positive"
                )));
            }
        }
        let tracker = Self {
            prices,
            budgets,
            clock,
            sinks: Mutex::new(Vec::new()),
            state: Mutex::new(State::default()),
        };
        {
            let mut st = tracker.lock_state();
            let (day, month) = tracker.periods();
            st.day = day;
            st.month = month;
        }
        Ok(tracker)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn periods(&self) -> (i64, (i64, u32)) {
        let day = (self.clock.now().as_secs() / 86_400) as i64;
        let (y, m, _) = civil_from_days(day);
        (day, (y, m))
    }

    /// Calls `callback` for every future alert (on the recording thread).
    pub fn on_alert(&self, callback: impl Fn(&BudgetAlert) + Send + Sync + 'static) {
        self.sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(callback));
    }

    /// A channel receiving every future alert.
    pub fn alert_channel(&self) -> mpsc::Receiver<BudgetAlert> {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        self.on_alert(move |a| {
            // A dropped receiver just stops listening.
            let _ = tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .send(a.clone());
        });
        rx
    }

    /// The cost of `input` and `output` tokens on `model`, USD.
    pub fn price(&self, model: &str, input: u64, output: u64) -> Result<f64> {
        let p = self
            .prices
            .get(model)
            .ok_or_else(|| TelemetryError::UnknownModel(model.to_string()))?;
        Ok((input as f64 * p.input_per_million + output as f64 * p.output_per_million) / 1e6)
    }

    /// Records one request on `model` that used `input` and `output` tokens;
    /// returns its cost. Also updates `ragjet_cost_microdollars_total` and
    /// `ragjet_tokens_total` through the metrics facade, and raises any
    /// budget alert it causes (after its own locks are released).
    ///
    /// The counter is whole micro-dollars: each request adds the whole
    /// micro-dollars its model's running total crossed, so fractions carry
    /// over and the counter never drifts from the total by a micro-dollar
    /// or more (a request costing $0.0000003 adds 0 until enough add up).
    pub fn record(&self, model: &str, input: u64, output: u64) -> Result<f64> {
        let usd = self.price(model, input, output)?;
        let (day, month) = self.periods();
        let mut alerts = Vec::new();
        let microdollars = {
            let mut st = self.lock_state();
            if st.day != day {
                st.day = day;
                st.day_usd = 0.0;
                st.alerted.retain(|(p, _)| *p != BudgetPeriod::Daily);
            }
            if st.month != month {
                st.month = month;
                st.month_usd = 0.0;
                st.alerted.retain(|(p, _)| *p != BudgetPeriod::Monthly);
            }
            let t = st.by_model.entry(model.to_string()).or_default();
            t.requests += 1;
            t.input_tokens += input;
            t.output_tokens += output;
            let before = whole_microdollars(t.usd);
            t.usd += usd;
            let microdollars = whole_microdollars(t.usd).saturating_sub(before);
            st.day_usd += usd;
            st.month_usd += usd;
            let checks = [
                (
                    BudgetPeriod::Daily,
                    self.budgets.daily_usd,
                    st.day_usd,
                    day_label(day),
                ),
                (
                    BudgetPeriod::Monthly,
                    self.budgets.monthly_usd,
                    st.month_usd,
                    month_label(month),
                ),
            ];
            for (period, budget, spent, label) in checks {
                let Some(budget) = budget else { continue };
                for (i, threshold) in ALERT_THRESHOLDS.iter().enumerate() {
                    if spent >= budget * threshold && !st.alerted.contains(&(period, i)) {
                        st.alerted.push((period, i));
                        alerts.push(BudgetAlert {
                            period,
                            threshold: *threshold,
                            spent_usd: spent,
                            budget_usd: budget,
                            period_label: label.clone(),
                        });
                    }
                }
            }
            microdollars
        };
        crate::metrics::record_cost_microdollars(model, microdollars);
        crate::metrics::record_tokens(model, input, output);
        if !alerts.is_empty() {
            let sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
            for a in &alerts {
                tracing::warn!(period = ?a.period, threshold = a.threshold, spent_usd = a.spent_usd, budget_usd = a.budget_usd, "cost budget alert");
                for sink in sinks.iter() {
                    sink(a);
                }
            }
        }
        Ok(usd)
    }

    /// The current figures.
    pub fn report(&self) -> CostReport {
        let (day, month) = self.periods();
        let st = self.lock_state();
        let by_model: Vec<ModelCost> = st
            .by_model
            .iter()
            .map(|(m, t)| ModelCost {
                model: m.clone(),
                requests: t.requests,
                input_tokens: t.input_tokens,
                output_tokens: t.output_tokens,
                usd: t.usd,
            })
            .collect();
        let total_usd: f64 = by_model.iter().map(|m| m.usd).sum();
        let requests: u64 = by_model.iter().map(|m| m.requests).sum();
        // A period that has rolled over with no request since has spent 0.
        let day_usd = if st.day == day { st.day_usd } else { 0.0 };
        let month_usd = if st.month == month { st.month_usd } else { 0.0 };
        let status = |period: String, spent: f64, budget: Option<f64>| BudgetStatus {
            period,
            spent_usd: spent,
            budget_usd: budget,
            used_fraction: budget.map(|b| spent / b),
        };
        CostReport {
            total_usd,
            requests,
            cost_per_1k_requests_usd: if requests == 0 {
                0.0
            } else {
                total_usd / requests as f64 * 1000.0
            },
            by_model,
            daily: status(day_label(day), day_usd, self.budgets.daily_usd),
            monthly: status(month_label(month), month_usd, self.budgets.monthly_usd),
        }
    }
}

/// Whole micro-dollars in `usd`. The nudge of a millionth of a micro-dollar
/// keeps sums such as 0.1 + 0.2 (0.30000000000000004, but also
/// 0.29999999999999998 for other orders) from losing one to binary
/// rounding; the `as` cast saturates.
fn whole_microdollars(usd: f64) -> u64 {
    (usd * 1e6 + 1e-6).floor() as u64
}

fn day_label(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

fn month_label((y, m): (i64, u32)) -> String {
    format!("{y:04}-{m:02}")
}

impl CostReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}

impl std::fmt::Display for CostReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "cost: ${:.4} over {} requests (${:.4} per 1k requests)",
            self.total_usd, self.requests, self.cost_per_1k_requests_usd
        )?;
        for m in &self.by_model {
            writeln!(
                f,
                "  {:<24} ${:.4}  {} req, {} in / {} out tokens",
                m.model, m.usd, m.requests, m.input_tokens, m.output_tokens
            )?;
        }
        for (name, b) in [("today", &self.daily), ("this month", &self.monthly)] {
            match (b.budget_usd, b.used_fraction) {
                (Some(budget), Some(used)) => writeln!(
                    f,
                    "  {name} ({}): ${:.4} of ${budget:.2} ({:.1} %)",
                    b.period,
                    b.spent_usd,
                    used * 100.0
                )?,
                _ => writeln!(f, "  {name} ({}): ${:.4}, no budget", b.period, b.spent_usd)?,
            }
        }
        Ok(())
    }
}
