use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Which tier of a [`crate::TieredCache`].
///
/// # Examples
///
/// ```
/// use ragjet_cache::{CacheKind, TierKind};
/// assert_eq!(TierKind::L2.label(), "l2");
/// assert_eq!(CacheKind::Embedding.label(), "embedding");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TierKind {
    /// In-memory tier.
    L1,
    /// On-disk tier.
    L2,
    /// Redis tier.
    L3,
}

impl TierKind {
    /// The `tier` metric label.
    pub fn label(self) -> &'static str {
        match self {
            TierKind::L1 => "l1",
            TierKind::L2 => "l2",
            TierKind::L3 => "l3",
        }
    }
}

/// Which kind of cache, the `cache` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKind {
    /// [`crate::EmbeddingCache`].
    Embedding,
    /// [`crate::RetrievalCache`].
    Retrieval,
    /// [`crate::ResponseCache`].
    Response,
    /// [`crate::SemanticCache`].
    Semantic,
    /// A [`crate::TieredCache`] used directly.
    Generic,
}

impl CacheKind {
    /// The `cache` metric label.
    pub fn label(self) -> &'static str {
        match self {
            CacheKind::Embedding => "embedding",
            CacheKind::Retrieval => "retrieval",
            CacheKind::Response => "response",
            CacheKind::Semantic => "semantic",
            CacheKind::Generic => "generic",
        }
    }
}

/// Counters of one tier, kept as atomics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub errors: AtomicU64,
    pub rejected: AtomicU64,
    pub evictions: AtomicU64,
    pub writes: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self, bytes: u64, entries: u64) -> TierStats {
        TierStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            errors: self.errors.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            writes: self.writes.load(Relaxed),
            bytes,
            entries,
        }
    }
}

/// A snapshot of one tier's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Lookups answered by this tier.
    pub hits: u64,
    /// Lookups this tier could not answer (absent, expired, damaged, wrong type).
    pub misses: u64,
    /// Failed calls (I/O error, Redis down or slow); each degraded to a miss.
    pub errors: u64,
    /// Stored entries refused on read (failed authentication, above the
    /// tier's size cap, damaged or filed under another key); each is also
    /// a miss, and is deleted.
    pub rejected: u64,
    /// Entries removed for space or because they expired or were damaged.
    pub evictions: u64,
    /// Entries written (puts and promotions).
    pub writes: u64,
    /// Bytes held (for L3: unknown, 0).
    pub bytes: u64,
    /// Entries held (for L3: unknown, 0).
    pub entries: u64,
}

/// Statistics of every configured tier.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::{MemoryConfig, Scope, TieredCache};
///
/// let cache = TieredCache::builder().memory(MemoryConfig::default()).build()?;
/// let key = Scope::tenant("t").key("k").finish();
/// assert_eq!(cache.get::<u64>(&key), None);
/// cache.put(&key, &7u64)?;
/// assert_eq!(cache.get::<u64>(&key), Some(7));
/// let l1 = cache.stats().l1.unwrap();
/// assert_eq!((l1.hits, l1.misses, l1.writes, l1.entries), (1, 1, 1, 1));
/// assert!(cache.stats().l2.is_none()); // not configured
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// In-memory tier, when configured.
    pub l1: Option<TierStats>,
    /// Disk tier, when configured.
    pub l2: Option<TierStats>,
    /// Redis tier, when configured.
    pub l3: Option<TierStats>,
}
