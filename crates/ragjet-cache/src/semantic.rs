//! The semantic cache: answers for queries that mean the same thing.
//!
//! Entries are (query embedding, value). A lookup embeds nothing itself: it
//! takes the caller's query embedding and returns the most similar live
//! entry of the same [`Scope`] whose cosine similarity reaches the
//! threshold. Entries of other scopes live in separate partitions and are
//! never searched.
//!
//! Search goes through the internal [`VectorIndex`] trait with two
//! implementations. Up to [`SemanticConfig::exact_max_entries`] entries a
//! partition is an exact scan (vectors normalised at insert, one dot product
//! per entry): no recall loss, and at 384 dimensions a few hundred
//! microseconds for 10k entries. When a partition grows past that size it
//! moves, once, to an [`HnswIndex`] from `ragjet-retrieval` (cosine metric),
//! whose lookup cost grows roughly logarithmically with the entries. The move
//! is one-way: `HnswIndex` does not hand vectors back, so a partition that
//! shrinks again stays on HNSW until it empties (cleanup, `clear_scope`).
//! Deleted and expired entries are tombstones in the graph; it is compacted
//! when tombstones outnumber half the live entries, so capacity eviction
//! costs a bounded, amortised rebuild.
//!
//! HNSW is approximate: a lookup can miss an entry that an exact scan would
//! find (a lost hit, never a wrong value — every hit still has its true
//! cosine similarity checked against the threshold).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ragjet_retrieval::{
    Entry as IndexEntry, HnswConfig, HnswIndex, Metric, VectorIndex as RetrievalIndex,
};

use crate::clock::{expiry, is_expired, Clock, SystemClock};
use crate::error::{CacheError, Result};
use crate::key::Scope;
use crate::metrics as m;

/// How many candidates a lookup inspects, so an expired best match does not
/// hide a live one just below it.
const CANDIDATES: usize = 8;
/// The `namespace` label the HNSW partitions put on `ragjet_index_*` metrics.
///
/// # Examples
///
/// ```
/// // The namespace label its HNSW partitions report index metrics under.
/// assert_eq!(ragjet_cache::SEMANTIC_INDEX_NAMESPACE, "semantic_cache");
/// ```
pub const SEMANTIC_INDEX_NAMESPACE: &str = "semantic_cache";
/// Tombstones below this count never trigger a compaction.
const MIN_TOMBSTONES_TO_COMPACT: usize = 64;

/// Nearest-neighbour search over unit vectors by inner product.
pub(crate) trait VectorIndex: Send + Sync {
    /// Adds vectors (already unit length) under fresh ids.
    fn add_many(&mut self, items: Vec<(u64, Vec<f32>)>) -> Result<()>;
    fn remove(&mut self, id: u64) -> bool;
    /// Up to `k` (id, similarity) pairs, most similar first.
    fn search(&self, q: &[f32], k: usize) -> Result<Vec<(u64, f32)>>;
    fn len(&self) -> usize;
}

/// Approximate search on `ragjet-retrieval`'s HNSW graph. Ids are the
/// decimal strings of the cache's u64 entry ids.
struct HnswBackend {
    index: HnswIndex,
}

impl HnswBackend {
    fn new(cfg: &SemanticConfig, capacity_hint: usize) -> Result<Self> {
        let mut hc = HnswConfig::new(cfg.dim, Metric::Cosine);
        hc.m = cfg.hnsw_m;
        hc.ef_construction = cfg.hnsw_ef_construction;
        hc.ef_search = cfg.hnsw_ef_search;
        hc.capacity_hint = capacity_hint.max(1);
        let mut index = HnswIndex::new(hc)?;
        index.set_namespace(SEMANTIC_INDEX_NAMESPACE);
        Ok(Self { index })
    }
}

impl VectorIndex for HnswBackend {
    fn add_many(&mut self, items: Vec<(u64, Vec<f32>)>) -> Result<()> {
        let entries = items
            .into_iter()
            .map(|(id, v)| IndexEntry::new(id.to_string(), v))
            .collect();
        self.index.upsert(entries)?;
        Ok(())
    }

    fn remove(&mut self, id: u64) -> bool {
        let removed = self.index.delete(&[id.to_string().as_str()]) == 1;
        let dead = self.index.tombstones();
        if dead >= MIN_TOMBSTONES_TO_COMPACT && dead > self.index.len() / 2 {
            self.index.compact();
        }
        removed
    }

    fn search(&self, q: &[f32], k: usize) -> Result<Vec<(u64, f32)>> {
        Ok(self
            .index
            .search(q, k, None)?
            .into_iter()
            .filter_map(|h| h.id.parse().ok().map(|id| (id, h.score)))
            .collect())
    }

    fn len(&self) -> usize {
        self.index.len()
    }
}

/// Exact search: a contiguous row-major matrix scanned in full.
struct ExactIndex {
    dim: usize,
    data: Vec<f32>,
    ids: Vec<u64>,
    pos: HashMap<u64, usize>,
}

impl ExactIndex {
    fn new(dim: usize) -> Self {
        Self {
            dim,
            data: Vec::new(),
            ids: Vec::new(),
            pos: HashMap::new(),
        }
    }
}

/// Dot product with 8 independent accumulators so the compiler vectorises it.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

impl ExactIndex {
    fn add(&mut self, id: u64, v: &[f32]) {
        if let Some(&p) = self.pos.get(&id) {
            self.data[p * self.dim..(p + 1) * self.dim].copy_from_slice(v);
            return;
        }
        self.pos.insert(id, self.ids.len());
        self.ids.push(id);
        self.data.extend_from_slice(v);
    }

    /// Every (id, vector) pair, emptying the index.
    fn drain(&mut self) -> Vec<(u64, Vec<f32>)> {
        let out = self
            .ids
            .iter()
            .zip(self.data.chunks_exact(self.dim))
            .map(|(&id, v)| (id, v.to_vec()))
            .collect();
        self.ids.clear();
        self.data.clear();
        self.pos.clear();
        out
    }

    fn search_exact(&self, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        let mut top: Vec<(u64, f32)> = Vec::with_capacity(k + 1);
        for (row, &id) in self.data.chunks_exact(self.dim).zip(&self.ids) {
            let s = dot(row, q);
            if top.len() < k || s > top[top.len() - 1].1 {
                let at = top.partition_point(|&(_, t)| t >= s);
                top.insert(at, (id, s));
                top.truncate(k);
            }
        }
        top
    }
}

impl VectorIndex for ExactIndex {
    fn add_many(&mut self, items: Vec<(u64, Vec<f32>)>) -> Result<()> {
        for (id, v) in items {
            self.add(id, &v);
        }
        Ok(())
    }

    fn remove(&mut self, id: u64) -> bool {
        let Some(p) = self.pos.remove(&id) else {
            return false;
        };
        let last = self.ids.len() - 1;
        if p != last {
            let (head, tail) = self.data.split_at_mut(last * self.dim);
            head[p * self.dim..(p + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
            self.ids[p] = self.ids[last];
            self.pos.insert(self.ids[p], p);
        }
        self.ids.pop();
        self.data.truncate(last * self.dim);
        true
    }

    fn search(&self, q: &[f32], k: usize) -> Result<Vec<(u64, f32)>> {
        Ok(self.search_exact(q, k))
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Settings of a [`SemanticCache`].
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::{ManualClock, Scope, SemanticCache, SemanticConfig};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let config = SemanticConfig { ttl: Some(Duration::from_secs(60)), max_entries_per_scope: 2, ..SemanticConfig::new(2) };
/// assert_eq!(config.threshold, 0.95);
/// let clock = ManualClock::new(0);
/// let cache = SemanticCache::with_clock(config, Arc::new(clock.clone()))?;
/// let scope = Scope::tenant("t");
/// cache.insert_many(&scope, vec![(vec![1.0, 0.0], 1u32), (vec![0.0, 1.0], 2), (vec![-1.0, 0.0], 3)])?;
/// // Only the last two fit in the scope.
/// assert!(cache.lookup(&scope, &[1.0, 0.0])?.is_none());
/// assert_eq!(cache.lookup(&scope, &[-1.0, 0.0])?.map(|h| h.value), Some(3));
/// clock.advance(Duration::from_secs(61));
/// assert_eq!(cache.cleanup(), 2); // both expired
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SemanticConfig {
    /// Embedding dimension.
    pub dim: usize,
    /// Minimum cosine similarity of a hit (default 0.95).
    pub threshold: f32,
    /// Lifetime of an entry (default 1 h; `None`: never expires).
    pub ttl: Option<Duration>,
    /// Most entries kept per scope; the oldest go first (default 10,000).
    pub max_entries_per_scope: usize,
    /// Largest partition searched exactly (default 10,000); a scope that
    /// grows past it moves to an HNSW index.
    pub exact_max_entries: usize,
    /// HNSW links per node `M` (default 16).
    pub hnsw_m: usize,
    /// HNSW candidate list while building (default 100: cache entries are
    /// added on the request path, so inserts stay cheap).
    pub hnsw_ef_construction: usize,
    /// HNSW candidate list while searching (default 64).
    pub hnsw_ef_search: usize,
}

impl SemanticConfig {
    /// Defaults for embeddings of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            threshold: 0.95,
            ttl: Some(Duration::from_secs(3600)),
            max_entries_per_scope: 10_000,
            exact_max_entries: 10_000,
            hnsw_m: 16,
            hnsw_ef_construction: 100,
            hnsw_ef_search: 64,
        }
    }
}

/// A semantic-cache hit.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticHit<V> {
    /// The stored value.
    pub value: V,
    /// Cosine similarity between the query and the stored query.
    pub similarity: f32,
}

/// Counters of a [`SemanticCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SemanticStats {
    /// Lookups that found an entry.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Mean similarity of the hits (0 without hits).
    pub mean_hit_similarity: f64,
    /// Live and not-yet-cleaned entries, all scopes.
    pub entries: u64,
    /// Entries removed for capacity or expiry.
    pub evictions: u64,
    /// Scopes whose entries are searched through HNSW rather than exactly.
    pub hnsw_partitions: u64,
}

struct Entry<V> {
    value: V,
    expires_at_ms: u64,
}

/// The search structure of one partition.
enum Backend {
    Exact(ExactIndex),
    Hnsw(Box<HnswBackend>),
}

impl Backend {
    fn get(&self) -> &dyn VectorIndex {
        match self {
            Backend::Exact(x) => x,
            Backend::Hnsw(h) => h.as_ref(),
        }
    }

    fn get_mut(&mut self) -> &mut dyn VectorIndex {
        match self {
            Backend::Exact(x) => x,
            Backend::Hnsw(h) => h.as_mut(),
        }
    }

    /// Adds unit vectors, moving an exact partition to HNSW first when it
    /// would outgrow `cfg.exact_max_entries`.
    fn add_many(&mut self, cfg: &SemanticConfig, items: Vec<(u64, Vec<f32>)>) -> Result<()> {
        if let Backend::Exact(x) = self {
            let total = x.len() + items.len();
            if total > cfg.exact_max_entries {
                let _span =
                    tracing::debug_span!("cache.semantic.to_hnsw", entries = total).entered();
                let mut hnsw = HnswBackend::new(cfg, cfg.max_entries_per_scope.max(total))?;
                let mut all = x.drain();
                let old = all.len();
                all.extend(items);
                if let Err(e) = hnsw.add_many(all.clone()) {
                    // Leave the partition exactly as it was.
                    for (id, v) in &all[..old] {
                        x.add(*id, v);
                    }
                    return Err(e);
                }
                *self = Backend::Hnsw(Box::new(hnsw));
                return Ok(());
            }
        }
        self.get_mut().add_many(items)
    }
}

struct Partition<V> {
    index: Backend,
    entries: HashMap<u64, Entry<V>>,
    order: VecDeque<u64>,
}

impl<V> Partition<V> {
    fn remove(&mut self, id: u64) -> bool {
        self.index.get_mut().remove(id);
        self.entries.remove(&id).is_some()
    }
}

/// A cache of values keyed by query embeddings, searched by cosine
/// similarity, partitioned by [`Scope`]. In memory only.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::{Scope, SemanticCache, SemanticConfig};
///
/// let mut config = SemanticConfig::new(3);
/// config.threshold = 0.9;
/// let cache: SemanticCache<String> = SemanticCache::new(config)?;
/// let acme = Scope::tenant("acme");
/// // In real use these are the embeddings of the query texts.
/// cache.insert(&acme, &[1.0, 0.0, 0.0], "Paris".to_string())?;
///
/// // A paraphrase lands close to the stored query: a hit, with its similarity.
/// let hit = cache.lookup(&acme, &[0.98, 0.1, 0.0])?.expect("similar enough");
/// assert_eq!(hit.value, "Paris");
/// assert!(hit.similarity > 0.99);
/// // An unrelated query, or the same one from another tenant, misses.
/// assert!(cache.lookup(&acme, &[0.0, 1.0, 0.0])?.is_none());
/// assert!(cache.lookup(&Scope::tenant("globex"), &[1.0, 0.0, 0.0])?.is_none());
/// // Wrong dimensions are an error, not a silent miss.
/// assert!(cache.lookup(&acme, &[1.0, 0.0]).is_err());
///
/// let stats = cache.stats();
/// assert_eq!((stats.hits, stats.misses, stats.entries), (1, 2, 1));
/// cache.clear_scope(&acme);
/// assert!(cache.lookup(&acme, &[1.0, 0.0, 0.0])?.is_none());
/// # Ok(()) }
/// ```
pub struct SemanticCache<V = String> {
    cfg: SemanticConfig,
    clock: Arc<dyn Clock>,
    parts: RwLock<HashMap<[u8; 32], Partition<V>>>,
    next_id: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    /// Sum of hit similarities × 1e6, kept as an integer to stay atomic.
    sim_micros: AtomicU64,
}

impl<V> std::fmt::Debug for SemanticCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticCache")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn normalise(v: &[f32], dim: usize) -> Result<Vec<f32>> {
    if v.len() != dim {
        return Err(CacheError::InvalidVector(format!(
            "dimension {} instead of {dim}",
            v.len()
        )));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(CacheError::InvalidVector("non-finite component".into()));
    }
    let n = dot(v, v).sqrt();
    if n == 0.0 || !n.is_finite() {
        return Err(CacheError::InvalidVector("zero vector".into()));
    }
    Ok(v.iter().map(|x| x / n).collect())
}

impl<V: Clone + Send + Sync> SemanticCache<V> {
    /// A cache on the wall clock.
    pub fn new(cfg: SemanticConfig) -> Result<Self> {
        Self::with_clock(cfg, Arc::new(SystemClock))
    }

    /// A cache on a given clock (tests inject a [`crate::ManualClock`]).
    pub fn with_clock(cfg: SemanticConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        if cfg.dim == 0 {
            return Err(CacheError::InvalidOption("dim must be > 0".into()));
        }
        if !(cfg.threshold > -1.0 && cfg.threshold <= 1.0) {
            return Err(CacheError::InvalidOption(format!(
                "threshold {} outside (-1, 1]",
                cfg.threshold
            )));
        }
        if cfg.exact_max_entries == 0 {
            return Err(CacheError::InvalidOption(
                "exact_max_entries must be > 0".into(),
            ));
        }
        if !(2..=256).contains(&cfg.hnsw_m)
            || cfg.hnsw_ef_construction == 0
            || cfg.hnsw_ef_search == 0
        {
            return Err(CacheError::InvalidOption(format!(
                "HNSW options out of range: m {} (2..=256), ef_construction {}, ef_search {} (>= 1)",
                cfg.hnsw_m, cfg.hnsw_ef_construction, cfg.hnsw_ef_search
            )));
        }
        if cfg.max_entries_per_scope == 0 {
            return Err(CacheError::InvalidOption(
                "max_entries_per_scope must be > 0".into(),
            ));
        }
        Ok(Self {
            cfg,
            clock,
            parts: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            sim_micros: AtomicU64::new(0),
        })
    }

    /// Stores `value` for the query embedding `embedding` in `scope`.
    pub fn insert(&self, scope: &Scope, embedding: &[f32], value: V) -> Result<()> {
        let v = normalise(embedding, self.cfg.dim)?;
        self.insert_normalised(scope, vec![(v, value)])
    }

    /// Stores many (embedding, value) pairs in `scope` at once: all are
    /// checked before any is stored, and an HNSW partition inserts them in
    /// parallel, which makes warming a large cache much faster than
    /// repeated [`SemanticCache::insert`]. When there are more pairs than
    /// `max_entries_per_scope`, only the last ones are kept.
    pub fn insert_many(&self, scope: &Scope, items: Vec<(Vec<f32>, V)>) -> Result<()> {
        let skip = items.len().saturating_sub(self.cfg.max_entries_per_scope);
        let mut prepared = Vec::with_capacity(items.len() - skip);
        for (e, value) in items.into_iter().skip(skip) {
            prepared.push((normalise(&e, self.cfg.dim)?, value));
        }
        if prepared.is_empty() {
            return Ok(());
        }
        self.insert_normalised(scope, prepared)
    }

    fn insert_normalised(&self, scope: &Scope, items: Vec<(Vec<f32>, V)>) -> Result<()> {
        let first = self.next_id.fetch_add(items.len() as u64, Relaxed);
        let exp = expiry(self.clock.now_ms(), self.cfg.ttl);
        let mut parts = self.parts.write().unwrap_or_else(|p| p.into_inner());
        let part = parts.entry(scope.digest()).or_insert_with(|| Partition {
            index: Backend::Exact(ExactIndex::new(self.cfg.dim)),
            entries: HashMap::new(),
            order: VecDeque::new(),
        });
        let mut vectors = Vec::with_capacity(items.len());
        let mut values = Vec::with_capacity(items.len());
        for (i, (v, value)) in items.into_iter().enumerate() {
            vectors.push((first + i as u64, v));
            values.push(value);
        }
        part.index.add_many(&self.cfg, vectors)?;
        for (i, value) in values.into_iter().enumerate() {
            let id = first + i as u64;
            part.entries.insert(
                id,
                Entry {
                    value,
                    expires_at_ms: exp,
                },
            );
            part.order.push_back(id);
        }
        let mut evicted = 0;
        while part.entries.len() > self.cfg.max_entries_per_scope {
            let Some(old) = part.order.pop_front() else {
                break;
            };
            if part.remove(old) {
                evicted += 1;
            }
        }
        self.evictions.fetch_add(evicted, Relaxed);
        m::evictions("semantic", "semantic", evicted);
        Ok(())
    }

    /// The most similar live entry of `scope` whose similarity reaches the
    /// threshold, with that similarity.
    pub fn lookup(&self, scope: &Scope, embedding: &[f32]) -> Result<Option<SemanticHit<V>>> {
        let _span = tracing::trace_span!("cache.get", cache = "semantic").entered();
        let q = normalise(embedding, self.cfg.dim)?;
        let now = self.clock.now_ms();
        let digest = scope.digest();
        let mut expired = Vec::new();
        let found = {
            let parts = self.parts.read().unwrap_or_else(|p| p.into_inner());
            let mut found = None;
            if let Some(part) = parts.get(&digest) {
                for (id, sim) in part.index.get().search(&q, CANDIDATES)? {
                    if sim < self.cfg.threshold {
                        break;
                    }
                    match part.entries.get(&id) {
                        Some(e) if !is_expired(e.expires_at_ms, now) => {
                            found = Some(SemanticHit {
                                value: e.value.clone(),
                                similarity: sim.min(1.0),
                            });
                            break;
                        }
                        _ => expired.push(id),
                    }
                }
            }
            found
        };
        if !expired.is_empty() {
            let mut parts = self.parts.write().unwrap_or_else(|p| p.into_inner());
            if let Some(part) = parts.get_mut(&digest) {
                let n = expired.iter().filter(|&&id| part.remove(id)).count() as u64;
                self.evictions.fetch_add(n, Relaxed);
                m::evictions("semantic", "semantic", n);
            }
        }
        match &found {
            Some(h) => {
                self.hits.fetch_add(1, Relaxed);
                self.sim_micros
                    .fetch_add((h.similarity.max(0.0) as f64 * 1e6).round() as u64, Relaxed);
                m::request("semantic", "semantic", m::RESULT_HIT);
            }
            None => {
                self.misses.fetch_add(1, Relaxed);
                m::request("semantic", "semantic", m::RESULT_MISS);
            }
        }
        Ok(found)
    }

    /// Removes every expired entry; returns how many.
    pub fn cleanup(&self) -> usize {
        let now = self.clock.now_ms();
        let mut parts = self.parts.write().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for part in parts.values_mut() {
            let dead: Vec<u64> = part
                .entries
                .iter()
                .filter(|(_, e)| is_expired(e.expires_at_ms, now))
                .map(|(&id, _)| id)
                .collect();
            for id in dead {
                part.remove(id);
                n += 1;
            }
            let live = &part.entries;
            part.order.retain(|id| live.contains_key(id));
        }
        parts.retain(|_, p| !p.entries.is_empty());
        self.evictions.fetch_add(n as u64, Relaxed);
        m::evictions("semantic", "semantic", n as u64);
        n
    }

    /// Removes every entry of one scope.
    pub fn clear_scope(&self, scope: &Scope) {
        self.parts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&scope.digest());
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.parts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Counters and size.
    pub fn stats(&self) -> SemanticStats {
        let hits = self.hits.load(Relaxed);
        let entries = self
            .parts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|p| p.index.get().len() as u64)
            .sum();
        let hnsw_partitions = self
            .parts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|p| matches!(p.index, Backend::Hnsw(_)))
            .count() as u64;
        SemanticStats {
            hnsw_partitions,
            hits,
            misses: self.misses.load(Relaxed),
            mean_hit_similarity: if hits == 0 {
                0.0
            } else {
                self.sim_micros.load(Relaxed) as f64 / 1e6 / hits as f64
            },
            entries,
            evictions: self.evictions.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_index_add_remove_search() {
        let mut ix = ExactIndex::new(2);
        ix.add(1, &[1.0, 0.0]);
        ix.add(2, &[0.0, 1.0]);
        ix.add(3, &[0.6, 0.8]);
        let r = ix.search_exact(&[1.0, 0.0], 2);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!(ix.remove(1));
        assert!(!ix.remove(1));
        assert_eq!(ix.len(), 2);
        let r = ix.search_exact(&[1.0, 0.0], 5);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 2]);
        ix.add(2, &[1.0, 0.0]);
        assert_eq!(ix.search_exact(&[1.0, 0.0], 1)[0].0, 2);
    }

    #[test]
    fn dot_matches_naive_on_odd_lengths() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
    }
}
