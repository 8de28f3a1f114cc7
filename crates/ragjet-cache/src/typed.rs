//! Typed caches for the three costly steps of a RAG request: embedding,
//! retrieval and answer generation. Each wraps a [`TieredCache`] and owns
//! its key layout, so callers cannot forget a field that changes the result.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ragjet_retrieval::MetadataFilters;
use serde::{Deserialize, Serialize};

use crate::codec::CacheValue;
use crate::disk::DiskConfig;
use crate::error::{CacheError, Result};
use crate::key::{CacheKey, Scope};
use crate::memory::MemoryConfig;
use crate::stats::{CacheKind, CacheStats};
use crate::tiered::{TieredCache, TieredCacheBuilder};

const HOUR: Duration = Duration::from_secs(3600);

/// Caches embedding vectors per (model id, model revision, text).
///
/// Default policy ([`EmbeddingCache::open`]): disk tier only, lz4
/// compressed, TTL 24 h. Embeddings are expensive to recompute and
/// valid for as long as the model is unchanged, so they belong on disk.
/// The revision should name everything that changes the vectors, the
/// embedder's precision included (bf16 and f32 vectors of one model differ
/// in the fifth decimal), so that replicas on different CPUs do not mix them.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::{EmbeddingCache, Scope};
///
/// let dir = std::env::temp_dir().join(format!("ragjet-doc-embcache-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let cache = EmbeddingCache::open(dir.join("embeddings.redb"), "all-MiniLM-L6-v2", "rev-1")?;
/// let scope = Scope::tenant("acme");
/// let fake_embed = |texts: &[&str]| -> Result<Vec<Vec<f32>>, ragjet_cache::CacheError> {
///     Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
/// };
/// let first = cache.get_or_compute_many(&scope, &["a", "bb", "a"], fake_embed)?;
/// assert_eq!(first, vec![vec![1.0, 1.0], vec![2.0, 1.0], vec![1.0, 1.0]]);
/// // Everything is cached now: the compute function must not run again.
/// let again = cache.get_or_compute_many(&scope, &["bb"], |_: &[&str]| -> Result<Vec<Vec<f32>>, ragjet_cache::CacheError> {
///     unreachable!("served from the cache")
/// })?;
/// assert_eq!(again, vec![vec![2.0, 1.0]]);
/// cache.put(&scope, "ccc", &[3.0, 1.0])?;
/// assert_eq!(cache.get(&scope, "ccc"), Some(vec![3.0, 1.0]));
/// // Another model revision keys the same text differently, so never reads these vectors.
/// let memory = ragjet_cache::TieredCache::builder().memory(Default::default()).build()?;
/// let other = EmbeddingCache::with_cache(memory, "all-MiniLM-L6-v2", "rev-2");
/// assert_ne!(other.key(&scope, "ccc"), cache.key(&scope, "ccc"));
/// drop(cache);
/// std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct EmbeddingCache {
    cache: TieredCache,
    model_id: String,
    model_revision: String,
}

impl EmbeddingCache {
    /// Default policy: a disk store at `path`, TTL 24 h, compressed.
    pub fn open(
        path: impl Into<PathBuf>,
        model_id: impl Into<String>,
        model_revision: impl Into<String>,
    ) -> Result<Self> {
        let cache = TieredCacheBuilder::new(CacheKind::Embedding)
            .disk(DiskConfig::new(path))
            .default_ttl(Some(24 * HOUR))
            .build()?;
        Ok(Self::with_cache(cache, model_id, model_revision))
    }

    /// Uses a cache configured by the caller (tiers, TTL, clock); build it
    /// with [`CacheKind::Embedding`] so metrics are labelled right.
    pub fn with_cache(
        cache: TieredCache,
        model_id: impl Into<String>,
        model_revision: impl Into<String>,
    ) -> Self {
        Self {
            cache,
            model_id: model_id.into(),
            model_revision: model_revision.into(),
        }
    }

    /// The key of `text` for this model in `scope`.
    pub fn key(&self, scope: &Scope, text: &str) -> CacheKey {
        scope
            .key("embedding")
            .str(&self.model_id)
            .str(&self.model_revision)
            .bytes(blake3::hash(text.as_bytes()).as_bytes())
            .finish()
    }

    /// The cached vector of `text`.
    pub fn get(&self, scope: &Scope, text: &str) -> Option<Vec<f32>> {
        self.cache.get(&self.key(scope, text))
    }

    /// Stores the vector of `text`.
    pub fn put(&self, scope: &Scope, text: &str, vector: &[f32]) -> Result<()> {
        self.cache.put(&self.key(scope, text), &vector.to_vec())
    }

    /// Returns one vector per text, in input order. Cached vectors are read;
    /// the misses (each distinct text once) are computed in a single call of
    /// `compute`, stored, and merged in. `compute` must return one vector
    /// per text it is given, else [`CacheError::BatchSize`].
    pub fn get_or_compute_many<S, E, F>(
        &self,
        scope: &Scope,
        texts: &[S],
        compute: F,
    ) -> std::result::Result<Vec<Vec<f32>>, E>
    where
        S: AsRef<str>,
        E: From<CacheError>,
        F: FnOnce(&[&str]) -> std::result::Result<Vec<Vec<f32>>, E>,
    {
        let keys: Vec<CacheKey> = texts.iter().map(|t| self.key(scope, t.as_ref())).collect();
        let mut out: Vec<Option<Vec<f32>>> = keys.iter().map(|k| self.cache.get(k)).collect();
        // Distinct missing texts, in first-seen order, with every position.
        let mut missing: Vec<&str> = Vec::new();
        let mut positions: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, t) in texts.iter().enumerate() {
            if out[i].is_none() {
                let t = t.as_ref();
                let slots = positions.entry(t).or_default();
                if slots.is_empty() {
                    missing.push(t);
                }
                slots.push(i);
            }
        }
        if !missing.is_empty() {
            let computed = {
                let _span =
                    tracing::debug_span!("cache.compute", cache = "embedding", n = missing.len())
                        .entered();
                compute(&missing)?
            };
            if computed.len() != missing.len() {
                return Err(CacheError::BatchSize {
                    expected: missing.len(),
                    got: computed.len(),
                }
                .into());
            }
            let mut to_store = Vec::with_capacity(missing.len());
            for (t, v) in missing.iter().zip(computed) {
                let slots = &positions[t];
                to_store.push((keys[slots[0]], v));
            }
            if let Err(e) = self.cache.put_many(&to_store) {
                tracing::warn!(error = %e, "embeddings not cached");
            }
            for (t, (_, v)) in missing.iter().zip(to_store) {
                for &i in &positions[t] {
                    out[i] = Some(v.clone());
                }
            }
        }
        Ok(out.into_iter().map(|v| v.unwrap_or_default()).collect())
    }

    /// The underlying tiered cache (stats, clear, warm-up).
    pub fn cache(&self) -> &TieredCache {
        &self.cache
    }

    /// Per-tier statistics.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

/// What a retrieval result depends on: every field is part of the key.
#[derive(Debug, Clone, Copy)]
pub struct RetrievalQuery<'a> {
    /// The query text.
    pub query: &'a str,
    /// The namespace (collection) searched: the same query in two
    /// namespaces has two results.
    pub namespace: &'a str,
    /// The metadata filter, keyed by its canonical encoding
    /// ([`MetadataFilters::canonical_key`]): operators, values (NaN and
    /// ±inf included) and nesting are all part of the key, while the order
    /// of a group's members is not. `None` and an empty filter (both match
    /// everything) share a key.
    pub filters: Option<&'a MetadataFilters>,
    /// Number of results asked for.
    pub top_k: usize,
    /// Search mode (e.g. `dense`, `hybrid`).
    pub mode: &'a str,
    /// Version of the searched index. Its owner bumps it on every mutation
    /// (upsert, delete) of that index, so a result computed before the
    /// change is never served after it; other namespaces' entries stay.
    /// [`RetrievalCache::bump_index_version`] is the cache-wide switch on
    /// top of it.
    pub index_version: u64,
}

/// TTL policy of the retrieval cache.
///
/// # Examples
///
/// ```
/// use ragjet_cache::AdaptiveTtl;
/// use std::time::Duration;
///
/// let ttl = AdaptiveTtl::default();
/// assert_eq!(ttl.ttl_after(0), Duration::from_secs(3600));
/// assert_eq!(ttl.ttl_after(2), Duration::from_secs(3 * 3600));
/// assert_eq!(ttl.ttl_after(100), Duration::from_secs(6 * 3600)); // capped at `max`
/// ```
#[derive(Debug, Clone, Copy)]
pub struct AdaptiveTtl {
    /// TTL of a fresh entry.
    pub base: Duration,
    /// Longest TTL a popular entry can reach.
    pub max: Duration,
}

impl Default for AdaptiveTtl {
    /// 1 h, growing to at most 6 h.
    fn default() -> Self {
        Self {
            base: HOUR,
            max: 6 * HOUR,
        }
    }
}

impl AdaptiveTtl {
    /// TTL granted after `hits` hits: `base × (1 + hits)`, capped at `max`.
    pub fn ttl_after(&self, hits: u32) -> Duration {
        self.base
            .saturating_mul(hits.saturating_add(1))
            .min(self.max.max(self.base))
    }
}

/// Caches search results per (query, namespace, filters, top-k, mode,
/// index version).
///
/// Default policy ([`RetrievalCache::new`]): memory tier, TTL 1 h, adaptive:
/// each hit extends the entry to `base × (1 + hits)` from now, capped at
/// 6 h, so popular queries stay while one-off ones leave. A query's
/// [`RetrievalQuery::index_version`], bumped by the index's owner on every
/// mutation, makes that index's older results unreachable;
/// [`RetrievalCache::bump_index_version`] does so for every index at once.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::{RetrievalCache, RetrievalQuery, Scope};
///
/// let cache = RetrievalCache::new()?;
/// let scope = Scope::tenant("acme");
/// let q = RetrievalQuery { query: "rust", namespace: "docs", filters: None, top_k: 5, mode: "dense", index_version: 7 };
/// let mut searches = 0;
/// for _ in 0..2 {
///     let hits: Result<Vec<String>, ragjet_cache::CacheError> =
///         cache.get_or_compute(&scope, &q, || { searches += 1; Ok(vec!["chunk-1".into()]) });
///     assert_eq!(hits?, vec!["chunk-1".to_string()]);
/// }
/// assert_eq!(searches, 1);
/// // The index changed (its owner bumps its version): the old result is unreachable.
/// let after_upsert = RetrievalQuery { index_version: 8, ..q };
/// assert_eq!(cache.get::<Vec<String>>(&scope, &after_upsert), None);
/// // Or drop every cached result at once.
/// cache.bump_index_version();
/// assert_eq!(cache.get::<Vec<String>>(&scope, &q), None);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RetrievalCache {
    cache: TieredCache,
    index_version: AtomicU64,
    ttl: AdaptiveTtl,
}

impl RetrievalCache {
    /// Default policy with a 256 MiB memory tier.
    pub fn new() -> Result<Self> {
        let cache = TieredCacheBuilder::new(CacheKind::Retrieval)
            .memory(MemoryConfig::default())
            .build()?;
        Ok(Self::with_cache(cache, AdaptiveTtl::default()))
    }

    /// Uses a cache configured by the caller; its default TTL is ignored in
    /// favour of `ttl`.
    pub fn with_cache(cache: TieredCache, ttl: AdaptiveTtl) -> Self {
        Self {
            cache,
            index_version: AtomicU64::new(0),
            ttl,
        }
    }

    /// The cache-wide version, part of every key next to the query's own
    /// [`RetrievalQuery::index_version`].
    pub fn index_version(&self) -> u64 {
        self.index_version.load(Ordering::SeqCst)
    }

    /// Invalidates every cached result; returns the new version.
    pub fn bump_index_version(&self) -> u64 {
        self.index_version.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Sets the index version (e.g. to the version stored with an index).
    pub fn set_index_version(&self, v: u64) {
        self.index_version.store(v, Ordering::SeqCst);
    }

    /// The key of `q` in `scope` at the current cache-wide version.
    pub fn key(&self, scope: &Scope, q: &RetrievalQuery<'_>) -> CacheKey {
        // An empty filter matches everything, as no filter does.
        let filter = q
            .filters
            .filter(|f| !f.filters.is_empty())
            .map(MetadataFilters::canonical_key)
            .unwrap_or_default();
        scope
            .key("retrieval")
            .str(q.query)
            .str(q.namespace)
            .bytes(&filter)
            .u64(q.top_k as u64)
            .str(q.mode)
            .u64(q.index_version)
            .u64(self.index_version())
            .finish()
    }

    /// The cached result of `q`; a hit extends the entry's life.
    pub fn get<V: CacheValue>(&self, scope: &Scope, q: &RetrievalQuery<'_>) -> Option<V> {
        let key = self.key(scope, q);
        let (v, h) = self.cache.get_with_header::<V>(&key)?;
        let hits = h.hits.saturating_add(1);
        let now = self.cache.clock().now_ms();
        let exp = crate::clock::expiry(now, Some(self.ttl.ttl_after(hits)));
        if h.expires_at_ms != 0 && exp > h.expires_at_ms {
            if let Err(e) = self.cache.restamp(&key, &v, exp, hits) {
                tracing::warn!(error = %e, "retrieval TTL not extended");
            }
        }
        Some(v)
    }

    /// Stores the result of `q` with the base TTL.
    pub fn put<V: CacheValue>(
        &self,
        scope: &Scope,
        q: &RetrievalQuery<'_>,
        value: &V,
    ) -> Result<()> {
        self.cache
            .put_with_ttl(&self.key(scope, q), value, Some(self.ttl.base))
    }

    /// Returns the cached result or computes and stores it; concurrent
    /// callers on the same missing query compute it once.
    pub fn get_or_compute<V, E, F>(
        &self,
        scope: &Scope,
        q: &RetrievalQuery<'_>,
        compute: F,
    ) -> std::result::Result<V, E>
    where
        V: CacheValue,
        F: FnOnce() -> std::result::Result<V, E>,
    {
        if let Some(v) = self.get(scope, q) {
            return Ok(v);
        }
        self.cache
            .get_or_compute_with_ttl(&self.key(scope, q), Some(self.ttl.base), compute)
    }

    /// The underlying tiered cache.
    pub fn cache(&self) -> &TieredCache {
        &self.cache
    }
}

/// Generation settings that change an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus sampling mass.
    pub top_p: f32,
    /// Token limit of the answer.
    pub max_tokens: u32,
    /// Random seed, when fixed.
    pub seed: Option<u64>,
    /// Stop sequences.
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            max_tokens: 512,
            seed: None,
            stop: Vec::new(),
        }
    }
}

/// Caches generated answers per (prompt, model, sampling parameters), per
/// user: the scope must name a user, since answers may draw on what that
/// user is allowed to see.
///
/// Default policy ([`ResponseCache::new`]): memory tier, TTL 30 min.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::{ResponseCache, SamplingParams, Scope};
///
/// let cache = ResponseCache::new()?;
/// let alice = Scope::tenant("acme").with_user("alice");
/// let greedy = SamplingParams::default();
/// cache.put(&alice, "Summarise doc 1", "llm-7b", &greedy, "Doc 1 is about caches.")?;
/// assert_eq!(cache.get(&alice, "Summarise doc 1", "llm-7b", &greedy)?.as_deref(), Some("Doc 1 is about caches."));
/// // Different sampling, different model or a different user: a different answer.
/// let creative = SamplingParams { temperature: 0.9, ..SamplingParams::default() };
/// assert_eq!(cache.get(&alice, "Summarise doc 1", "llm-7b", &creative)?, None);
/// let bob = Scope::tenant("acme").with_user("bob");
/// assert_eq!(cache.get(&bob, "Summarise doc 1", "llm-7b", &greedy)?, None);
/// let answer: Result<String, ragjet_cache::CacheError> =
///     cache.get_or_compute(&bob, "Summarise doc 1", "llm-7b", &greedy, || Ok("generated".into()));
/// assert_eq!(answer?, "generated");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ResponseCache {
    cache: TieredCache,
}

impl ResponseCache {
    /// Default policy with a 256 MiB memory tier.
    pub fn new() -> Result<Self> {
        let cache = TieredCacheBuilder::new(CacheKind::Response)
            .memory(MemoryConfig::default())
            .default_ttl(Some(HOUR / 2))
            .build()?;
        Ok(Self::with_cache(cache))
    }

    /// Uses a cache configured by the caller.
    pub fn with_cache(cache: TieredCache) -> Self {
        Self { cache }
    }

    /// The key of a request; [`CacheError::UserRequired`] when the scope
    /// names no user.
    pub fn key(
        &self,
        scope: &Scope,
        prompt: &str,
        model: &str,
        p: &SamplingParams,
    ) -> Result<CacheKey> {
        if scope.user.is_none() {
            return Err(CacheError::UserRequired);
        }
        let mut b = scope
            .key("response")
            .str(prompt)
            .str(model)
            .f32(p.temperature)
            .f32(p.top_p)
            .u64(p.max_tokens as u64)
            .bool(p.seed.is_some())
            .u64(p.seed.unwrap_or(0))
            .u64(p.stop.len() as u64);
        for s in &p.stop {
            b = b.str(s);
        }
        Ok(b.finish())
    }

    /// The cached answer.
    pub fn get(
        &self,
        scope: &Scope,
        prompt: &str,
        model: &str,
        p: &SamplingParams,
    ) -> Result<Option<String>> {
        Ok(self.cache.get(&self.key(scope, prompt, model, p)?))
    }

    /// Stores an answer.
    pub fn put(
        &self,
        scope: &Scope,
        prompt: &str,
        model: &str,
        p: &SamplingParams,
        answer: &str,
    ) -> Result<()> {
        self.cache
            .put(&self.key(scope, prompt, model, p)?, &answer.to_string())
    }

    /// Returns the cached answer or generates it once (single flight).
    pub fn get_or_compute<E, F>(
        &self,
        scope: &Scope,
        prompt: &str,
        model: &str,
        p: &SamplingParams,
        compute: F,
    ) -> std::result::Result<String, E>
    where
        E: From<CacheError>,
        F: FnOnce() -> std::result::Result<String, E>,
    {
        let key = self.key(scope, prompt, model, p)?;
        self.cache.get_or_compute(&key, compute)
    }

    /// The underlying tiered cache.
    pub fn cache(&self) -> &TieredCache {
        &self.cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ragjet_retrieval::{FilterCondition, FilterNode, FilterOperator, MetadataFilter};

    fn cache() -> RetrievalCache {
        RetrievalCache::new().unwrap()
    }

    fn leaf(
        key: &str,
        op: FilterOperator,
        v: impl Into<ragjet_retrieval::MetadataValue>,
    ) -> FilterNode {
        FilterNode::Filter(MetadataFilter::new(key, op, v))
    }

    fn group(condition: FilterCondition, filters: Vec<FilterNode>) -> MetadataFilters {
        MetadataFilters { filters, condition }
    }

    fn query<'a>(filters: Option<&'a MetadataFilters>) -> RetrievalQuery<'a> {
        RetrievalQuery {
            query: "rust caches",
            namespace: "docs",
            filters,
            top_k: 10,
            mode: "dense",
            index_version: 3,
        }
    }

    /// The key used to hold filters as (field, value) string pairs, which
    /// lost operators and nesting: `year == 2024` and `year != 2024`
    /// shared a key. Now the filter's canonical encoding is keyed.
    #[test]
    fn filters_differing_in_operator_nesting_or_nan_get_different_keys() {
        use FilterCondition::{And, Or};
        let rc = cache();
        let s = Scope::tenant("a");
        let lang = || leaf("lang", FilterOperator::Eq, "en");
        let year = |op| leaf("year", op, 2024i64);
        let x_lt = |v: f64| group(And, vec![leaf("x", FilterOperator::Lt, v)]);
        let filters = [
            group(And, vec![lang(), year(FilterOperator::Eq)]),
            group(And, vec![lang(), year(FilterOperator::Ne)]),
            group(Or, vec![lang(), year(FilterOperator::Eq)]),
            group(
                And,
                vec![
                    lang(),
                    FilterNode::Group(group(Or, vec![year(FilterOperator::Eq)])),
                ],
            ),
            x_lt(f64::INFINITY),
            x_lt(f64::NAN),
            x_lt(f64::NEG_INFINITY),
        ];
        let mut keys: Vec<CacheKey> = filters
            .iter()
            .map(|f| rc.key(&s, &query(Some(f))))
            .collect();
        keys.push(rc.key(&s, &query(None)));
        for i in 0..keys.len() {
            for j in 0..i {
                assert_ne!(keys[i], keys[j], "filters {i} and {j} share a key");
            }
        }
        // Reordered members of a group: the same filter, the same key.
        let reordered = group(And, vec![year(FilterOperator::Eq), lang()]);
        assert_eq!(rc.key(&s, &query(Some(&reordered))), keys[0]);
        // An empty filter matches everything, like no filter.
        let empty = group(Or, vec![]);
        assert_eq!(rc.key(&s, &query(Some(&empty))), rc.key(&s, &query(None)));
    }

    #[test]
    fn namespace_version_and_every_other_field_change_the_key() {
        let rc = cache();
        let s = Scope::tenant("a");
        let q = query(None);
        let base = rc.key(&s, &q);
        for other in [
            RetrievalQuery {
                query: "rust cache",
                ..q
            },
            RetrievalQuery {
                namespace: "other",
                ..q
            },
            RetrievalQuery { top_k: 11, ..q },
            RetrievalQuery {
                mode: "hybrid",
                ..q
            },
            RetrievalQuery {
                index_version: 4,
                ..q
            },
        ] {
            assert_ne!(rc.key(&s, &other), base, "{other:?}");
        }
        assert_ne!(rc.key(&Scope::tenant("b"), &q), base);
        rc.bump_index_version();
        assert_ne!(rc.key(&s, &q), base);
    }

    /// A result stored for one index version is not served once the
    /// index's owner has bumped its version.
    #[test]
    fn a_bumped_index_version_is_a_miss() {
        let rc = cache();
        let s = Scope::tenant("a");
        let q = query(None);
        rc.put(&s, &q, &vec![(1u64, 0.5f32)]).unwrap();
        assert_eq!(rc.get::<Vec<(u64, f32)>>(&s, &q), Some(vec![(1, 0.5)]));
        let after = RetrievalQuery {
            index_version: q.index_version + 1,
            ..q
        };
        assert_eq!(rc.get::<Vec<(u64, f32)>>(&s, &after), None);
        let other_ns = RetrievalQuery {
            namespace: "other",
            ..q
        };
        assert_eq!(rc.get::<Vec<(u64, f32)>>(&s, &other_ns), None);
    }
}
