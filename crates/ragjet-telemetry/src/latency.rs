//! Sliding-window latency percentiles and throughput on an HDR histogram.
//!
//! The window is cut into slots; each slot holds its own histogram and is
//! cleared when time comes back round to it, so old samples leave the
//! window without a per-sample queue. Percentiles are exact to 3
//! significant digits (0.1 % relative error) at 1 µs resolution, up to one
//! hour; slower samples count as one hour.

use crate::clock::{Clock, SystemClock};
use crate::error::{Result, TelemetryError};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Outcome of one request, for error rate and availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered successfully.
    Ok,
    /// Answered with an error (bad input, no result); counts against the
    /// error rate only.
    Error,
    /// Not served at all (overload, backend down, timeout); counts against
    /// the error rate and availability.
    Unavailable,
}

const HIGHEST_US: u64 = 3_600_000_000;
const SLOTS: u64 = 10;

#[derive(Debug)]
struct Slot {
    index: u64,
    hist: Histogram<u64>,
    errors: u64,
    unavailable: u64,
    sum_us: u128,
    max_us: u64,
}

impl Slot {
    fn reset(&mut self, index: u64) {
        self.index = index;
        self.hist.reset();
        self.errors = 0;
        self.unavailable = 0;
        self.sum_us = 0;
        self.max_us = 0;
    }
}

#[derive(Debug)]
struct Inner {
    slots: Vec<Option<Slot>>,
    created: Duration,
}

/// Records request latencies and reports percentiles and throughput over
/// the last `window` of time. Shareable between threads (`&self` methods).
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_telemetry::{LatencyRecorder, Outcome};
/// use std::time::Duration;
///
/// let recorder = LatencyRecorder::new(Duration::from_secs(60))?;
/// for ms in 1..=100 {
///     recorder.record(Duration::from_millis(ms), Outcome::Ok);
/// }
/// recorder.record(Duration::from_millis(5), Outcome::Unavailable);
/// let snap = recorder.snapshot();
/// assert_eq!(snap.count, 101);
/// assert_eq!(snap.unavailable, 1);
/// assert_eq!(snap.errors, 1); // unavailable requests are errors too
/// assert!((snap.p50_ms - 50.0).abs() < 1.0);
/// assert!((snap.max_ms - 100.0).abs() < 0.1);
/// assert!(snap.to_string().contains("p99"));
/// // A window too short to cut into slots is refused.
/// assert!(LatencyRecorder::new(Duration::from_nanos(1)).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LatencyRecorder {
    clock: Arc<dyn Clock>,
    window: Duration,
    slot_nanos: u64,
    inner: Mutex<Inner>,
}

/// Figures over a window, as a plain struct (and JSON via serde).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySnapshot {
    /// Length of time the figures cover, in seconds.
    pub window_seconds: f64,
    /// Requests recorded.
    pub count: u64,
    /// Requests that failed (including unavailable ones).
    pub errors: u64,
    /// Requests not served at all.
    pub unavailable: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest request, ms (exact).
    pub max_ms: f64,
    /// Mean latency, ms (exact).
    pub mean_ms: f64,
    /// Requests per second over the window.
    pub throughput_per_second: f64,
}

impl LatencyRecorder {
    /// A recorder over the last `window` on the system clock.
    pub fn new(window: Duration) -> Result<Self> {
        Self::with_clock(window, Arc::new(SystemClock))
    }

    /// A recorder reading time from `clock` (use
    /// [`ManualClock`](crate::ManualClock) in tests).
    pub fn with_clock(window: Duration, clock: Arc<dyn Clock>) -> Result<Self> {
        let slot_nanos = u64::try_from(window.as_nanos() / u128::from(SLOTS)).unwrap_or(u64::MAX);
        if slot_nanos == 0 {
            return Err(TelemetryError::InvalidConfig(format!(
                "latency window {window:?} is too short"
            )));
        }
        let created = clock.now();
        Ok(Self {
            clock,
            window,
            slot_nanos,
            inner: Mutex::new(Inner {
                slots: (0..SLOTS).map(|_| None).collect(),
                created,
            }),
        })
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn slot_index(&self, now: Duration) -> u64 {
        u64::try_from(now.as_nanos() / u128::from(self.slot_nanos)).unwrap_or(u64::MAX)
    }

    /// Records one request that took `latency`.
    pub fn record(&self, latency: Duration, outcome: Outcome) {
        let index = self.slot_index(self.clock.now());
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .min(HIGHEST_US);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let cell = &mut inner.slots[(index % SLOTS) as usize];
        let slot = match cell {
            Some(slot) => {
                if slot.index != index {
                    slot.reset(index);
                }
                slot
            }
            None => cell.insert(Slot {
                index,
                // The bounds are constants that hdrhistogram accepts.
                hist: Histogram::new_with_bounds(1, HIGHEST_US, 3)
                    .expect("constant histogram bounds are valid"),
                errors: 0,
                unavailable: 0,
                sum_us: 0,
                max_us: 0,
            }),
        };
        slot.hist.saturating_record(us);
        slot.sum_us += u128::from(us);
        slot.max_us = slot.max_us.max(us);
        match outcome {
            Outcome::Ok => {}
            Outcome::Error => slot.errors += 1,
            Outcome::Unavailable => {
                slot.errors += 1;
                slot.unavailable += 1;
            }
        }
    }

    /// Figures over the current window.
    pub fn snapshot(&self) -> LatencySnapshot {
        let now = self.clock.now();
        let current = self.slot_index(now);
        let oldest = current.saturating_sub(SLOTS - 1);
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut merged: Option<Histogram<u64>> = None;
        let (mut errors, mut unavailable, mut sum_us, mut max_us) = (0, 0, 0u128, 0u64);
        for slot in inner.slots.iter().flatten() {
            if slot.index < oldest || slot.index > current {
                continue;
            }
            match &mut merged {
                Some(m) => {
                    // Same bounds on every slot, so adding cannot fail.
                    let _ = m.add(&slot.hist);
                }
                None => merged = Some(slot.hist.clone()),
            }
            errors += slot.errors;
            unavailable += slot.unavailable;
            sum_us += slot.sum_us;
            max_us = max_us.max(slot.max_us);
        }
        let window_start =
            Duration::from_nanos(oldest.saturating_mul(self.slot_nanos)).max(inner.created);
        let covered = now.saturating_sub(window_start);
        let count = merged.as_ref().map_or(0, |h| h.len());
        let q = |quantile: f64| {
            merged
                .as_ref()
                .filter(|h| !h.is_empty())
                .map_or(0.0, |h| h.value_at_quantile(quantile) as f64 / 1e3)
        };
        LatencySnapshot {
            window_seconds: covered.as_secs_f64(),
            count,
            errors,
            unavailable,
            p50_ms: q(0.50),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            max_ms: max_us as f64 / 1e3,
            mean_ms: if count == 0 {
                0.0
            } else {
                sum_us as f64 / count as f64 / 1e3
            },
            throughput_per_second: if covered.is_zero() {
                0.0
            } else {
                count as f64 / covered.as_secs_f64()
            },
        }
    }
}

impl std::fmt::Display for LatencySnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests in {:.1} s ({:.1}/s), {} errors; p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.count,
            self.window_seconds,
            self.throughput_per_second,
            self.errors,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.max_ms
        )
    }
}
