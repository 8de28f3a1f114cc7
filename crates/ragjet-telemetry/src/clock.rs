//! Injectable wall clock, so windows and daily/monthly budgets can be
//! tested by moving time by hand instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of "now", as time since the Unix epoch (UTC).
///
/// Wall time rather than a monotonic instant because budgets are per
/// calendar day and month; a clock stepping backwards only makes a window
/// look shorter, it never breaks a report.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_telemetry::{Clock, LatencyRecorder, ManualClock, Outcome};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// // A test moves a shared manual clock instead of sleeping through a window.
/// let clock = ManualClock::new(Duration::from_secs(1_700_000_000));
/// let recorder = LatencyRecorder::with_clock(Duration::from_secs(60), Arc::new(clock.clone()))?;
/// recorder.record(Duration::from_millis(12), Outcome::Ok);
/// assert_eq!(recorder.snapshot().count, 1);
/// clock.advance(Duration::from_secs(120));
/// assert_eq!(clock.now(), Duration::from_secs(1_700_000_120));
/// // Two minutes later the sample has left the one-minute window.
/// assert_eq!(recorder.snapshot().count, 0);
/// # Ok(()) }
/// ```
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time elapsed since 1970-01-01T00:00:00Z.
    fn now(&self) -> Duration;
}

/// The real clock ([`SystemTime::now`]).
///
/// # Examples
///
/// ```
/// use ragjet_telemetry::{Clock, SystemClock};
/// use std::time::Duration;
///
/// // Past 2020-01-01, on any machine whose clock is set.
/// assert!(SystemClock.now() > Duration::from_secs(1_577_836_800));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        // A system clock set before 1970 is treated as the epoch itself.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// # Examples
///
/// ```
/// use ragjet_telemetry::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(Duration::from_secs(100));
/// let shared = clock.clone();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(shared.now(), Duration::from_secs(105));
/// shared.set(Duration::ZERO);
/// assert_eq!(clock.now(), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `since_epoch`.
    pub fn new(since_epoch: Duration) -> Self {
        let clock = Self::default();
        clock.set(since_epoch);
        clock
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }

    /// Puts the clock at `since_epoch`.
    pub fn set(&self, since_epoch: Duration) {
        let n = u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.store(n, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// Days since the epoch → (year, month 1..=12, day 1..=31), proleptic
/// Gregorian, UTC (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2000-02-29 is day 11_016; 2026-11-25 is day 20_782.
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_782), (2026, 11, 25));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new(Duration::from_secs(10));
        let b = a.clone();
        a.advance(Duration::from_millis(1500));
        assert_eq!(b.now(), Duration::from_millis(11_500));
    }
}
