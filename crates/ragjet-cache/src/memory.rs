//! L1: an in-memory tier on `quick_cache`, bounded by bytes.

use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

use crate::clock::is_expired;
use crate::key::CacheKey;
use crate::stats::{Counters, TierStats};

/// Fixed per-entry overhead counted on top of the value bytes (key, Arc and
/// table slot), so many tiny entries cannot exceed the byte bound unseen.
const ENTRY_OVERHEAD: u64 = 96;

#[derive(Clone)]
pub(crate) struct L1Entry {
    pub expires_at_ms: u64,
    pub data: Arc<[u8]>,
}

#[derive(Clone)]
struct ByteWeighter;

impl Weighter<CacheKey, L1Entry> for ByteWeighter {
    fn weight(&self, _key: &CacheKey, val: &L1Entry) -> u64 {
        val.data.len() as u64 + ENTRY_OVERHEAD
    }
}

#[derive(Clone)]
struct CountEvictions(Arc<Counters>, &'static str);

impl Lifecycle<CacheKey, L1Entry> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: CacheKey, _val: L1Entry) {
        Counters::add(&self.0.evictions, 1);
        crate::metrics::evictions(self.1, "l1", 1);
    }
}

/// Settings of the in-memory tier.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::{MemoryConfig, Scope, TieredCache};
///
/// // A small hot set: 16 MiB, and no single value over 64 KiB may take it over.
/// let cache = TieredCache::builder()
///     .memory(MemoryConfig { max_bytes: 16 << 20, estimated_entries: 10_000, max_value_bytes: 64 << 10 })
///     .build()?;
/// let key = Scope::tenant("t").key("big").finish();
/// cache.put(&key, &"x".repeat(100_000))?; // larger than max_value_bytes: L1 skips it
/// assert_eq!(cache.get::<String>(&key), None);
/// assert_eq!(MemoryConfig::default().max_bytes, 256 << 20);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Upper bound on bytes held (values plus a fixed per-entry overhead).
    pub max_bytes: u64,
    /// Expected number of entries, to size the table up front.
    pub estimated_entries: usize,
    /// Values larger than this (encoded) skip L1 and go to the lower tiers
    /// only, so one huge value cannot flush the hot set.
    pub max_value_bytes: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            estimated_entries: 100_000,
            max_value_bytes: 1 << 20,
        }
    }
}

pub(crate) struct MemoryTier {
    cache: Cache<CacheKey, L1Entry, ByteWeighter, DefaultHashBuilder, CountEvictions>,
    pub counters: Arc<Counters>,
    pub max_value_bytes: usize,
    label: &'static str,
}

impl MemoryTier {
    pub fn new(cfg: &MemoryConfig, label: &'static str) -> Self {
        let counters = Arc::new(Counters::default());
        let cache = Cache::with(
            cfg.estimated_entries.max(16),
            cfg.max_bytes.max(1),
            ByteWeighter,
            DefaultHashBuilder::default(),
            CountEvictions(counters.clone(), label),
        );
        Self {
            cache,
            counters,
            max_value_bytes: cfg.max_value_bytes,
            label,
        }
    }

    /// Returns the live entry; an expired one is dropped and is a miss.
    pub fn get(&self, key: &CacheKey, now_ms: u64) -> Option<Arc<[u8]>> {
        let e = self.cache.get(key)?;
        if is_expired(e.expires_at_ms, now_ms) {
            if self
                .cache
                .remove_if(key, |v| Arc::ptr_eq(&v.data, &e.data))
                .is_some()
            {
                Counters::add(&self.counters.evictions, 1);
                crate::metrics::evictions(self.label, "l1", 1);
            }
            return None;
        }
        Some(e.data)
    }

    /// Stores an entry unless it is larger than `max_value_bytes`; returns
    /// whether it was stored.
    pub fn put(&self, key: CacheKey, data: Arc<[u8]>, expires_at_ms: u64) -> bool {
        if data.len() > self.max_value_bytes {
            return false;
        }
        self.cache.insert(
            key,
            L1Entry {
                expires_at_ms,
                data,
            },
        );
        Counters::add(&self.counters.writes, 1);
        true
    }

    pub fn remove(&self, key: &CacheKey) {
        self.cache.remove(key);
    }

    pub fn clear(&self) {
        self.cache.clear();
    }

    /// Drops every expired entry; returns how many.
    pub fn purge_expired(&self, now_ms: u64) -> u64 {
        let before = self.cache.len();
        self.cache
            .retain(|_, v| !is_expired(v.expires_at_ms, now_ms));
        let n = before.saturating_sub(self.cache.len()) as u64;
        Counters::add(&self.counters.evictions, n);
        crate::metrics::evictions(self.label, "l1", n);
        n
    }

    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }

    pub fn stats(&self) -> TierStats {
        self.counters
            .snapshot(self.cache.weight(), self.cache.len() as u64)
    }
}
