//! A/B tests: users split between variants, figures per variant, and a
//! summary saying whether a difference is real.
//!
//! Assignment is a pure function of (experiment, user): the first 8 bytes
//! of BLAKE3 over both pick a point in the variants' weights, so a user
//! sees the same variant on every replica and after restarts with no shared
//! state. Each user's first assignment in a process is appended to the
//! experiment's log (JSON lines, each `fsync`ed before `assign` returns; a
//! line torn by a crash is skipped when read). Latency, cache hits and
//! feedback are kept per variant (count, mean, variance by Welford's
//! method) and exported as metrics. The summary compares each variant with
//! the first (the control): difference of means and its 95 % confidence
//! interval by the normal approximation (Welch's standard error; for cache
//! hit rates the difference of two proportions).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::{counter, histogram};
use ragjet_telemetry::metrics::{
    labels, AB_ASSIGNMENTS_TOTAL, AB_CACHE_REQUESTS_TOTAL, AB_FEEDBACK_SCORE, AB_LATENCY_SECONDS,
};
use serde::{Deserialize, Serialize};

use super::{system_clock, Clock, ControlError, Result};

/// z for a two-sided 95 % interval.
const Z95: f64 = 1.959_964;

#[derive(Debug, Clone, Copy, Default)]
struct Welford {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    fn variance(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            self.m2 / (self.n - 1) as f64
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Stats {
    assigned: u64,
    latency: Welford,
    feedback: Welford,
    hits: u64,
    lookups: u64,
}

/// One variant's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantSummary {
    /// The variant.
    pub variant: String,
    /// Users assigned in this process.
    pub assigned: u64,
    /// Latencies recorded.
    pub requests: u64,
    /// Mean latency in milliseconds.
    pub mean_latency_ms: f64,
    /// Cache look-ups recorded.
    pub cache_lookups: u64,
    /// Share of them that hit.
    pub cache_hit_rate: f64,
    /// Feedback scores recorded.
    pub feedback_count: u64,
    /// Mean feedback (0..1).
    pub mean_feedback: f64,
}

/// A difference (variant minus control) with its 95 % interval; `None`
/// when either side has too few samples (fewer than 2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Difference {
    /// Variant minus control.
    pub difference: f64,
    /// Lower end of the 95 % interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

impl Difference {
    /// True when the interval excludes zero.
    pub fn significant(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// One variant against the control.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantComparison {
    /// The variant.
    pub variant: String,
    /// Latency difference in milliseconds.
    pub latency_ms: Option<Difference>,
    /// Cache hit rate difference.
    pub cache_hit_rate: Option<Difference>,
    /// Feedback difference.
    pub feedback: Option<Difference>,
}

/// An experiment's summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbSummary {
    /// The experiment.
    pub experiment: String,
    /// The control (first) variant.
    pub control: String,
    /// Figures per variant.
    pub variants: Vec<VariantSummary>,
    /// Every other variant against the control.
    pub comparisons: Vec<VariantComparison>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LogLine {
    at_ms: u64,
    experiment: String,
    user: String,
    variant: String,
}

#[derive(Debug)]
struct Inner {
    stats: HashMap<String, Stats>,
    seen: HashSet<String>,
    log: Option<File>,
}

/// An A/B experiment; `Send + Sync`.
///
/// ```
/// use std::time::Duration;
/// use ragjet::control::{ControlError, Experiment};
///
/// # fn main() -> Result<(), ControlError> {
/// let x = Experiment::new("rerank", vec![("off".into(), 1), ("on".into(), 1)])?;
/// let variant = x.assign("user-42")?;
/// assert_eq!(variant, x.variant_of("user-42"), "the same user, the same variant");
/// for (v, ms) in [("off", 120), ("off", 130), ("on", 90), ("on", 95)] {
///     x.record_latency(v, Duration::from_millis(ms))?;
/// }
/// let summary = x.summary();
/// let on = &summary.comparisons[0];
/// let latency = on.latency_ms.as_ref().expect("two samples a side");
/// assert_eq!(latency.difference, -32.5);
/// assert!(latency.significant());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Experiment {
    name: String,
    variants: Vec<(String, u32)>,
    total: u64,
    log_path: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

fn welch(a: &Welford, b: &Welford) -> Option<Difference> {
    if a.n < 2 || b.n < 2 {
        return None;
    }
    let d = b.mean - a.mean;
    let se = (a.variance() / a.n as f64 + b.variance() / b.n as f64).sqrt();
    Some(Difference {
        difference: d,
        low: d - Z95 * se,
        high: d + Z95 * se,
    })
}

fn proportions(a: &Stats, b: &Stats) -> Option<Difference> {
    if a.lookups < 2 || b.lookups < 2 {
        return None;
    }
    let (pa, pb) = (
        a.hits as f64 / a.lookups as f64,
        b.hits as f64 / b.lookups as f64,
    );
    let se = (pa * (1.0 - pa) / a.lookups as f64 + pb * (1.0 - pb) / b.lookups as f64).sqrt();
    let d = pb - pa;
    Some(Difference {
        difference: d,
        low: d - Z95 * se,
        high: d + Z95 * se,
    })
}

impl Experiment {
    /// An experiment named `name` over `(variant, weight)` pairs; the first
    /// variant is the control.
    pub fn new(name: impl Into<String>, variants: Vec<(String, u32)>) -> Result<Self> {
        let name = name.into();
        if name.is_empty() {
            return Err(ControlError::InvalidConfig(
                "experiment name is empty".into(),
            ));
        }
        if variants.len() < 2 {
            return Err(ControlError::InvalidConfig(format!(
                "experiment {name:?} needs at least two variants"
            )));
        }
        for (i, (v, w)) in variants.iter().enumerate() {
            if v.is_empty() || *w == 0 || variants[..i].iter().any(|(o, _)| o == v) {
                return Err(ControlError::InvalidConfig(format!(
                    "experiment {name:?}: variant names must be unique and non-empty, weights >= 1 ({v:?}, {w})"
                )));
            }
        }
        let total = variants.iter().map(|(_, w)| *w as u64).sum();
        let stats = variants
            .iter()
            .map(|(v, _)| (v.clone(), Stats::default()))
            .collect();
        Ok(Self {
            name,
            variants,
            total,
            log_path: None,
            clock: system_clock(),
            inner: Mutex::new(Inner {
                stats,
                seen: HashSet::new(),
                log: None,
            }),
        })
    }

    /// Appends assignments to the log at `path`; users already in it are
    /// not logged again.
    pub fn with_log(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let err = |e: std::io::Error| ControlError::storage(&path, e);
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut seen = HashSet::new();
        if path.exists() {
            for line in Self::read_log(&path)? {
                if line.experiment == self.name {
                    seen.insert(line.user);
                }
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        // A line torn by a crash must not glue onto the next one.
        let len = file.metadata().map_err(err)?.len();
        if len > 0 {
            let bytes = std::fs::read(&path).map_err(err)?;
            if bytes.last() != Some(&b'\n') {
                file.write_all(b"\n").map_err(err)?;
            }
        }
        {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.seen = seen;
            inner.log = Some(file);
        }
        Ok(Self {
            log_path: Some(path),
            ..self
        })
    }

    /// Stamps log lines with `clock`'s time.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reads an assignment log, skipping lines that do not parse (torn).
    pub fn read_log(path: impl AsRef<Path>) -> Result<Vec<LogEntry>> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ControlError::storage(path, e))?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<LogLine>(l).ok())
            .map(|l| LogEntry {
                at_ms: l.at_ms,
                experiment: l.experiment,
                user: l.user,
                variant: l.variant,
            })
            .collect())
    }

    /// The experiment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The variant of `user`: always the same for the same experiment and
    /// user.
    pub fn variant_of(&self, user: &str) -> &str {
        let mut h = blake3::Hasher::new();
        h.update(self.name.as_bytes());
        h.update(&[0]);
        h.update(user.as_bytes());
        let bytes: [u8; 8] = h.finalize().as_bytes()[..8].try_into().expect("8 bytes");
        let mut point = u64::from_le_bytes(bytes) % self.total;
        for (v, w) in &self.variants {
            if point < *w as u64 {
                return v;
            }
            point -= *w as u64;
        }
        unreachable!("point is below the total weight")
    }

    /// Assigns `user` (counted and logged the first time in this process).
    pub fn assign(&self, user: &str) -> Result<String> {
        let variant = self.variant_of(user).to_owned();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.seen.contains(user) {
            return Ok(variant);
        }
        if let Some(file) = inner.log.as_mut() {
            let line = LogLine {
                at_ms: self.clock.now().as_millis() as u64,
                experiment: self.name.clone(),
                user: user.to_owned(),
                variant: variant.clone(),
            };
            let mut text = serde_json::to_string(&line).expect("strings serialise");
            text.push('\n');
            let path = self.log_path.as_deref().unwrap_or(Path::new(""));
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(|e| ControlError::storage(path, e))?;
        }
        inner.seen.insert(user.to_owned());
        inner
            .stats
            .get_mut(&variant)
            .expect("known variant")
            .assigned += 1;
        counter!(AB_ASSIGNMENTS_TOTAL, labels::EXPERIMENT => self.name.clone(),
            labels::VARIANT => variant.clone())
        .increment(1);
        Ok(variant)
    }

    fn with_stats(&self, variant: &str, f: impl FnOnce(&mut Stats)) -> Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let stats = inner.stats.get_mut(variant).ok_or_else(|| {
            ControlError::InvalidInput(format!(
                "experiment {:?} has no variant {variant:?}",
                self.name
            ))
        })?;
        f(stats);
        Ok(())
    }

    /// Records one request's latency for `variant`.
    pub fn record_latency(&self, variant: &str, latency: Duration) -> Result<()> {
        self.with_stats(variant, |s| s.latency.add(latency.as_secs_f64() * 1000.0))?;
        histogram!(AB_LATENCY_SECONDS, labels::EXPERIMENT => self.name.clone(),
            labels::VARIANT => variant.to_owned())
        .record(latency.as_secs_f64());
        Ok(())
    }

    /// Records one cache look-up for `variant`.
    pub fn record_cache(&self, variant: &str, hit: bool) -> Result<()> {
        self.with_stats(variant, |s| {
            s.lookups += 1;
            s.hits += hit as u64;
        })?;
        counter!(AB_CACHE_REQUESTS_TOTAL, labels::EXPERIMENT => self.name.clone(),
            labels::VARIANT => variant.to_owned(), labels::RESULT => if hit { "hit" } else { "miss" })
        .increment(1);
        Ok(())
    }

    /// Records one feedback score (0..=1) for `variant`.
    pub fn record_feedback(&self, variant: &str, score: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&score) {
            return Err(ControlError::InvalidInput(format!(
                "feedback must be within 0..=1, not {score}"
            )));
        }
        self.with_stats(variant, |s| s.feedback.add(score))?;
        histogram!(AB_FEEDBACK_SCORE, labels::EXPERIMENT => self.name.clone(),
            labels::VARIANT => variant.to_owned())
        .record(score);
        Ok(())
    }

    /// Figures per variant and every variant against the control.
    pub fn summary(&self) -> AbSummary {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let control = &inner.stats[&self.variants[0].0];
        let variants = self
            .variants
            .iter()
            .map(|(v, _)| {
                let s = &inner.stats[v];
                VariantSummary {
                    variant: v.clone(),
                    assigned: s.assigned,
                    requests: s.latency.n,
                    mean_latency_ms: s.latency.mean,
                    cache_lookups: s.lookups,
                    cache_hit_rate: if s.lookups == 0 {
                        0.0
                    } else {
                        s.hits as f64 / s.lookups as f64
                    },
                    feedback_count: s.feedback.n,
                    mean_feedback: s.feedback.mean,
                }
            })
            .collect();
        let comparisons = self.variants[1..]
            .iter()
            .map(|(v, _)| {
                let s = &inner.stats[v];
                VariantComparison {
                    variant: v.clone(),
                    latency_ms: welch(&control.latency, &s.latency),
                    cache_hit_rate: proportions(control, s),
                    feedback: welch(&control.feedback, &s.feedback),
                }
            })
            .collect();
        AbSummary {
            experiment: self.name.clone(),
            control: self.variants[0].0.clone(),
            variants,
            comparisons,
        }
    }
}

/// One line of an assignment log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// When, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The experiment.
    pub experiment: String,
    /// The user.
    pub user: String,
    /// The variant assigned.
    pub variant: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp() -> Experiment {
        Experiment::new(
            "prompt-v2",
            vec![("control".into(), 1), ("treatment".into(), 1)],
        )
        .unwrap()
    }

    #[test]
    fn assignment_is_deterministic_and_follows_weights() {
        let a = exp();
        let b = exp();
        let mut treated = 0;
        for i in 0..10_000 {
            let user = format!("user-{i}");
            assert_eq!(a.variant_of(&user), b.variant_of(&user));
            treated += (a.variant_of(&user) == "treatment") as usize;
        }
        assert!((4700..5300).contains(&treated), "{treated}");
        let skewed = Experiment::new("s", vec![("a".into(), 9), ("b".into(), 1)]).unwrap();
        let b_count = (0..10_000)
            .filter(|i| skewed.variant_of(&format!("u{i}")) == "b")
            .count();
        assert!((800..1200).contains(&b_count), "{b_count}");
        // Another experiment splits the same users independently.
        let other = Experiment::new(
            "other",
            vec![("control".into(), 1), ("treatment".into(), 1)],
        )
        .unwrap();
        let same = (0..1000)
            .filter(|i| {
                let u = format!("user-{i}");
                a.variant_of(&u) == other.variant_of(&u)
            })
            .count();
        assert!((400..600).contains(&same), "{same}");
    }

    #[test]
    fn the_log_is_append_only_and_skips_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ab.jsonl");
        let e = exp().with_log(&path).unwrap();
        let v1 = e.assign("alice").unwrap();
        e.assign("alice").unwrap();
        e.assign("bob").unwrap();
        drop(e);
        // A torn line from a crash, then a reopened experiment.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"at_ms\":1,\"exper").unwrap();
        drop(f);
        let e = exp().with_log(&path).unwrap();
        assert_eq!(e.assign("alice").unwrap(), v1, "stable across restarts");
        e.assign("carol").unwrap();
        let log = Experiment::read_log(&path).unwrap();
        let users: Vec<&str> = log.iter().map(|l| l.user.as_str()).collect();
        assert_eq!(users, vec!["alice", "bob", "carol"]);
        assert_eq!(log[0].variant, v1);
    }

    #[test]
    fn summary_finds_a_real_difference_and_not_a_fake_one() {
        let e = exp();
        for i in 0..200 {
            let jitter = (i % 10) as u64;
            e.record_latency("control", Duration::from_millis(100 + jitter))
                .unwrap();
            e.record_latency("treatment", Duration::from_millis(80 + jitter))
                .unwrap();
            e.record_cache("control", i % 2 == 0).unwrap();
            e.record_cache("treatment", i % 2 == 1).unwrap();
            e.record_feedback("control", if i % 4 == 0 { 1.0 } else { 0.0 })
                .unwrap();
            e.record_feedback("treatment", if i % 4 == 0 { 0.0 } else { 1.0 })
                .unwrap();
        }
        let s = e.summary();
        assert_eq!(s.control, "control");
        let c = &s.comparisons[0];
        let lat = c.latency_ms.unwrap();
        assert!((lat.difference + 20.0).abs() < 1e-9, "{lat:?}");
        assert!(lat.significant() && lat.high < 0.0);
        let hit = c.cache_hit_rate.unwrap();
        assert!(
            hit.difference.abs() < 1e-12 && !hit.significant(),
            "{hit:?}"
        );
        let fb = c.feedback.unwrap();
        assert!(
            (fb.difference - 0.5).abs() < 1e-9 && fb.significant(),
            "{fb:?}"
        );
        assert_eq!(s.variants[1].requests, 200);
        assert!(e.record_latency("nope", Duration::ZERO).is_err());
        assert!(e.record_feedback("control", 1.5).is_err());
        // Too few samples: no interval.
        assert!(exp().summary().comparisons[0].latency_ms.is_none());
    }

    #[test]
    fn bad_experiments_are_refused() {
        assert!(Experiment::new("x", vec![("a".into(), 1)]).is_err());
        assert!(Experiment::new("x", vec![("a".into(), 1), ("a".into(), 1)]).is_err());
        assert!(Experiment::new("x", vec![("a".into(), 1), ("b".into(), 0)]).is_err());
        assert!(Experiment::new("", vec![("a".into(), 1), ("b".into(), 1)]).is_err());
    }
}
