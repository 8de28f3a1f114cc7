//! Process resource figures, read from the OS when `/metrics` is rendered
//! so they are always current without a background thread.

/// A reading of this process's resources.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct ProcessStats {
    /// Resident set size in bytes (`None` where the OS does not say).
    pub resident_memory_bytes: Option<u64>,
    /// User plus system CPU time in seconds.
    pub cpu_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads the current figures; missing sources give `None`, never an
    /// error, since a scrape must not fail over them.
    pub fn read() -> Self {
        Self {
            resident_memory_bytes: resident_memory_bytes(),
            cpu_seconds: cpu_seconds(),
        }
    }

    /// The figures in Prometheus text format, with HELP and TYPE lines.
    pub fn render(&self) -> String {
        use crate::metrics::{
            PROCESS_CPU_SECONDS_TOTAL as CPU, PROCESS_RESIDENT_MEMORY_BYTES as RSS,
        };
        let mut out = String::new();
        for (name, value) in [
            (RSS, self.resident_memory_bytes.map(|b| b as f64)),
            (CPU, self.cpu_seconds),
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

/// `VmRSS` from `/proc/self/status` (Linux).
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        _ => None,
    }
}

#[cfg(unix)]
fn cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes into the struct we hand it, which is
    // properly sized and aligned; RUSAGE_SELF is always a valid target.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0 means the kernel filled the struct.
    let usage = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(usage.ru_utime) + secs(usage.ru_stime))
}

#[cfg(not(unix))]
fn cpu_seconds() -> Option<f64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t  1234 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_own_process() {
        // Burn a little CPU so the figure is positive even on a coarse clock.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        let s = ProcessStats::read();
        assert!(s.resident_memory_bytes.unwrap() > 1 << 20);
        assert!(s.cpu_seconds.unwrap() >= 0.0);
        let text = s.render();
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
        assert!(text.contains("process_resident_memory_bytes "));
    }
}
