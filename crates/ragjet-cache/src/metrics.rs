//! Metric names and label values, kept in one place.
//!
//! Everything goes through the [`metrics`](https://docs.rs/metrics) facade;
//! this crate never installs a recorder, so with none installed the calls
//! cost an atomic load.
//!
//! # Examples
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ragjet_cache::{metrics, MemoryConfig, Scope, TieredCache};
//!
//! let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
//! let handle = recorder.handle();
//! let cache = TieredCache::builder().memory(MemoryConfig::default()).build()?;
//! ::metrics::with_local_recorder(&recorder, || {
//!     let _ = cache.get::<String>(&Scope::tenant("t").key("k").finish());
//! });
//! let text = handle.render();
//! assert!(text.contains(metrics::CACHE_REQUESTS_TOTAL));
//! assert!(text.contains(&format!("{}=\"{}\"", metrics::LABEL_RESULT, metrics::RESULT_MISS)));
//! # Ok(()) }
//! ```

/// Counter: cache lookups, labels `cache`, `tier` and `result` (hit|miss|error).
pub const CACHE_REQUESTS_TOTAL: &str = "ragjet_cache_requests_total";
/// Counter: entries evicted for space or expiry, labels `cache` and `tier`.
pub const CACHE_EVICTIONS_TOTAL: &str = "ragjet_cache_evictions_total";
/// Gauge: bytes held per tier, labels `cache` and `tier`.
pub const CACHE_BYTES: &str = "ragjet_cache_bytes";
/// Counter: stored entries refused on read (each also a miss), labels
/// `cache`, `tier` and `reason` (auth|oversize|corrupt).
pub const CACHE_REJECTED_TOTAL: &str = "ragjet_cache_rejected_total";
/// Counter: cache files found damaged when opened, moved aside to
/// `<file>.damaged` and replaced by an empty one, labels `cache` and `tier`.
pub const CACHE_DAMAGED_FILES_TOTAL: &str = "ragjet_cache_damaged_files_total";

/// Label key for the cache type.
pub const LABEL_CACHE: &str = "cache";
/// Label key for the tier.
pub const LABEL_TIER: &str = "tier";
/// Label key for the lookup result.
pub const LABEL_RESULT: &str = "result";
/// Label key for why a stored entry was refused.
pub const LABEL_REASON: &str = "reason";

/// Value of the `result` label for a hit.
pub const RESULT_HIT: &str = "hit";
/// Value of the `result` label for a miss.
pub const RESULT_MISS: &str = "miss";
/// Value of the `result` label for a failed tier call.
pub const RESULT_ERROR: &str = "error";

/// Value of the `reason` label for an entry whose MAC does not verify
/// (written without this deployment's key, or moved from another key).
pub const REASON_AUTH: &str = "auth";
/// Value of the `reason` label for an entry above the tier's size cap,
/// refused before it is read whole or decompressed.
pub const REASON_OVERSIZE: &str = "oversize";
/// Value of the `reason` label for a damaged or misfiled entry.
pub const REASON_CORRUPT: &str = "corrupt";

/// Name of the span around every tiered lookup.
pub const SPAN_GET: &str = "cache.get";
/// Name of the span around a computation run on a miss.
pub const SPAN_COMPUTE: &str = "cache.compute";

pub(crate) fn request(cache: &'static str, tier: &'static str, result: &'static str) {
    metrics::counter!(CACHE_REQUESTS_TOTAL, LABEL_CACHE => cache, LABEL_TIER => tier, LABEL_RESULT => result)
        .increment(1);
}

pub(crate) fn evictions(cache: &'static str, tier: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(CACHE_EVICTIONS_TOTAL, LABEL_CACHE => cache, LABEL_TIER => tier)
            .increment(n);
    }
}

pub(crate) fn rejected(cache: &'static str, tier: &'static str, reason: &'static str) {
    metrics::counter!(CACHE_REJECTED_TOTAL, LABEL_CACHE => cache, LABEL_TIER => tier, LABEL_REASON => reason)
        .increment(1);
}

pub(crate) fn damaged_file(cache: &'static str, tier: &'static str) {
    metrics::counter!(CACHE_DAMAGED_FILES_TOTAL, LABEL_CACHE => cache, LABEL_TIER => tier)
        .increment(1);
}

pub(crate) fn bytes(cache: &'static str, tier: &'static str, bytes: u64) {
    metrics::gauge!(CACHE_BYTES, LABEL_CACHE => cache, LABEL_TIER => tier).set(bytes as f64);
}
