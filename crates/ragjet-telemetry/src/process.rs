//! Process resource figures, read from the OS when `/metrics` is rendered
//! so they are always current without a background thread.
//!
//! The reading itself is `metrics-process`'s collector (Linux, macOS,
//! Windows, FreeBSD, OpenBSD), used without its `metrics` integration: that
//! integration records CPU seconds into an integer counter, truncating to
//! whole seconds, and records through whichever recorder is current, which
//! a test's local recorder is not at scrape time. We render the figures
//! ourselves, under the standard Prometheus client names.

use crate::metrics::{
    PROCESS_CPU_SECONDS_TOTAL, PROCESS_MAX_FDS, PROCESS_OPEN_FDS, PROCESS_RESIDENT_MEMORY_BYTES,
    PROCESS_START_TIME_SECONDS, PROCESS_THREADS, PROCESS_VIRTUAL_MEMORY_BYTES,
};

/// A reading of this process's resources; `None` where the OS does not say.
///
/// # Examples
///
/// ```
/// use ragjet_telemetry::ProcessStats;
///
/// let stats = ProcessStats::read();
/// let text = stats.render();
/// if stats.resident_memory_bytes.is_some() {
///     assert!(text.contains("process_resident_memory_bytes"));
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct ProcessStats {
    /// Resident set size in bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory size in bytes.
    pub virtual_memory_bytes: Option<u64>,
    /// User plus system CPU time in seconds.
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors (`None` when unlimited).
    pub max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<u64>,
    /// OS threads.
    pub threads: Option<u64>,
}

impl ProcessStats {
    /// Reads the current figures; missing sources give `None`, never an
    /// error, since a scrape must not fail over them.
    pub fn read() -> Self {
        let m = metrics_process::collector::collect();
        Self {
            resident_memory_bytes: m.resident_memory_bytes,
            virtual_memory_bytes: m.virtual_memory_bytes,
            cpu_seconds: m.cpu_seconds_total,
            open_fds: m.open_fds,
            // The collector reports "unlimited" as 0, which would read as
            // "no descriptor may be opened" on a dashboard.
            max_fds: m.max_fds.filter(|&n| n > 0),
            start_time_seconds: m.start_time_seconds,
            threads: m.threads,
        }
    }

    /// The figures in Prometheus text format, with HELP and TYPE lines
    /// taken from the catalogue.
    pub fn render(&self) -> String {
        let int = |v: Option<u64>| v.map(|n| n as f64);
        let mut out = String::new();
        for (name, value) in [
            (
                PROCESS_RESIDENT_MEMORY_BYTES,
                int(self.resident_memory_bytes),
            ),
            (PROCESS_VIRTUAL_MEMORY_BYTES, int(self.virtual_memory_bytes)),
            (PROCESS_CPU_SECONDS_TOTAL, self.cpu_seconds),
            (PROCESS_OPEN_FDS, int(self.open_fds)),
            (PROCESS_MAX_FDS, int(self.max_fds)),
            (PROCESS_START_TIME_SECONDS, int(self.start_time_seconds)),
            (PROCESS_THREADS, int(self.threads)),
        ] {
            let (Some(v), Some(def)) = (value, crate::metrics::find(name)) else {
                continue;
            };
            out.push_str(&format!(
                "# HELP {name} {}\n# TYPE {name} {}\n{name} {v}\n\n",
                def.help,
                def.kind.as_str()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_only_what_was_read() {
        let s = ProcessStats {
            resident_memory_bytes: Some(4096),
            cpu_seconds: Some(1.5),
            ..Default::default()
        };
        assert_eq!(
            s.render(),
            "# HELP process_resident_memory_bytes Resident memory size of this process.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes 4096\n\n\
             # HELP process_cpu_seconds_total User and system CPU time spent by this process.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total 1.5\n\n"
        );
        assert_eq!(ProcessStats::default().render(), "");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_own_process() {
        // Burn CPU until the clock-tick resolution (10 ms) shows some.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while ProcessStats::read().cpu_seconds.unwrap() == 0.0 {
            assert!(start.elapsed().as_secs() < 30, "CPU time never advanced");
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
            }
        }
        std::hint::black_box(x);
        let s = ProcessStats::read();
        assert!(s.resident_memory_bytes.unwrap() > 1 << 20);
        assert!(s.virtual_memory_bytes.unwrap() >= s.resident_memory_bytes.unwrap());
        assert!(s.cpu_seconds.unwrap() > 0.0);
        assert!(
            s.open_fds.unwrap() >= 3,
            "stdin, stdout and stderr at least"
        );
        assert!(s.threads.unwrap() >= 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let started = s.start_time_seconds.unwrap();
        assert!(
            started <= now + 1 && now.saturating_sub(started) < 86_400,
            "{started} vs {now}"
        );
        let text = s.render();
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
        assert!(text.contains("\nprocess_open_fds "));
    }
}
