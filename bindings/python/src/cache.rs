//! The four caches: embeddings, retrieval results, LLM responses (exact
//! prompt) and the semantic cache (similar query embedding).
//!
//! Every cache call releases the GIL: the memory tier is fast, but the disk
//! tier waits on I/O.

use std::path::PathBuf;
use std::time::Duration;

use numpy::{PyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use ragjet::cache::{
    self as rc, AdaptiveTtl, CacheKey, CacheKind, CacheStats, CacheValue, DiskConfig, MemoryConfig,
    RetrievalQuery, SamplingParams, Scope, SemanticConfig, TierStats, TieredCache,
    TieredCacheBuilder,
};
use ragjet::retrieval::{Metadata, MetadataValue};
use serde::{Deserialize, Serialize};

use crate::convert::{
    cache_err, check_rows, count, describe, guard, invalid, parse_filters, read_matrix,
    read_vector, str_list,
};
use crate::index::Hit;

const DAY_SECONDS: f64 = 86_400.0;

/// `None` (never expire) or a positive number of seconds.
fn ttl_arg(name: &str, seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => Duration::try_from_secs_f64(s)
            .map(Some)
            .map_err(|e| invalid(format!("{name}={s}: {e}"))),
        Some(s) => Err(invalid(format!(
            "{name} must be a positive number of seconds or None, not {s}"
        ))),
    }
}

/// A tiered cache with a memory tier of `memory_mb` (none with 0) and a
/// disk tier at `path` (none with `None`).
fn tiered(
    kind: CacheKind,
    path: Option<PathBuf>,
    memory_mb: i64,
    ttl: Option<Duration>,
) -> PyResult<TieredCache> {
    if memory_mb < 0 {
        return Err(invalid(format!(
            "memory_mb must be 0 or more, not {memory_mb}"
        )));
    }
    if memory_mb == 0 && path.is_none() {
        return Err(invalid(
            "memory_mb=0 and path=None leave the cache with no tier: give one of them",
        ));
    }
    let mut builder = TieredCacheBuilder::new(kind).default_ttl(ttl);
    if memory_mb > 0 {
        let max_bytes = u64::try_from(memory_mb)
            .ok()
            .and_then(|mb| mb.checked_mul(1 << 20))
            .ok_or_else(|| invalid(format!("memory_mb={memory_mb} is too large")))?;
        builder = builder.memory(MemoryConfig {
            max_bytes,
            ..MemoryConfig::default()
        });
    }
    if let Some(path) = path {
        builder = builder.disk(DiskConfig::new(path));
    }
    builder.build().map_err(cache_err)
}

fn tier_dict<'py>(py: Python<'py>, t: &TierStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("hits", t.hits)?;
    d.set_item("misses", t.misses)?;
    d.set_item("errors", t.errors)?;
    d.set_item("rejected", t.rejected)?;
    d.set_item("evictions", t.evictions)?;
    d.set_item("writes", t.writes)?;
    d.set_item("bytes", t.bytes)?;
    d.set_item("entries", t.entries)?;
    Ok(d)
}

/// `{"hits", "misses", "memory": {...} | None, "disk": {...} | None}`: a
/// lookup is a hit when some tier answered it and a miss when the last
/// tier did not.
fn stats_dict(py: Python<'_>, s: &CacheStats) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    let tiers = [s.l1, s.l2, s.l3];
    let hits: u64 = tiers.iter().flatten().map(|t| t.hits).sum();
    let misses = tiers.iter().flatten().last().map_or(0, |t| t.misses);
    d.set_item("hits", hits)?;
    d.set_item("misses", misses)?;
    for (name, t) in [("memory", s.l1), ("disk", s.l2), ("redis", s.l3)] {
        match t {
            Some(t) => d.set_item(name, tier_dict(py, &t)?)?,
            None => d.set_item(name, py.None())?,
        }
    }
    Ok(d.unbind())
}

/// `tenant` and `user` as a cache scope; an empty name is refused, since
/// it would read like "no user" but be a real, shared one.
fn scope(tenant: &str, user: Option<&str>) -> PyResult<Scope> {
    if tenant.is_empty() {
        return Err(invalid("tenant must not be empty"));
    }
    let scope = Scope::tenant(tenant);
    match user {
        Some("") => Err(invalid(
            "user must not be empty; pass None for answers shared by the tenant",
        )),
        Some(u) => Ok(scope.with_user(u)),
        None => Ok(scope),
    }
}

/// Caches embedding vectors per (model, revision, text), like the Rust
/// `EmbeddingCache`: `EmbeddingCache(path=None, memory_mb=256,
/// ttl_seconds=86400)`.
///
/// `path` adds a disk tier (a single file, crash-safe, lz4 compressed) so
/// vectors survive restarts; `memory_mb=0` keeps only the disk tier. Name
/// in `revision` whatever changes the vectors besides the model name
/// (precision, normalisation). A damaged entry is a miss, never an error.
#[pyclass(frozen, module = "ragjet")]
pub(crate) struct EmbeddingCache {
    cache: TieredCache,
}

impl EmbeddingCache {
    /// The key layout of `ragjet_cache::EmbeddingCache::key`, with the
    /// model named per call rather than per cache.
    fn key(scope: &Scope, model: &str, revision: &str, text: &str) -> CacheKey {
        scope
            .key("embedding")
            .str(model)
            .str(revision)
            .bytes(blake3::hash(text.as_bytes()).as_bytes())
            .finish()
    }
}

#[pymethods]
impl EmbeddingCache {
    /// `ttl_seconds=None`: entries never expire.
    #[new]
    #[pyo3(signature = (path=None, memory_mb=256, ttl_seconds=Some(DAY_SECONDS)))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        memory_mb: i64,
        ttl_seconds: Option<f64>,
    ) -> PyResult<Self> {
        guard(|| {
            let ttl = ttl_arg("ttl_seconds", ttl_seconds)?;
            let cache = py.detach(|| tiered(CacheKind::Embedding, path, memory_mb, ttl))?;
            Ok(Self { cache })
        })
    }

    /// One entry per text: its cached float32 vector, or None.
    #[pyo3(signature = (model, texts, revision="", tenant="default"))]
    fn get_many(
        &self,
        py: Python<'_>,
        model: &str,
        texts: &Bound<'_, PyAny>,
        revision: &str,
        tenant: &str,
    ) -> PyResult<Py<PyList>> {
        guard(|| {
            let texts = str_list("texts", texts)?;
            let scope = scope(tenant, None)?;
            let found: Vec<Option<Vec<f32>>> = py.detach(|| {
                texts
                    .iter()
                    .map(|t| {
                        self.cache
                            .get::<Vec<f32>>(&Self::key(&scope, model, revision, t))
                    })
                    .collect()
            });
            let list = PyList::empty(py);
            for v in found {
                match v {
                    Some(v) => list.append(PyArray1::from_vec(py, v))?,
                    None => list.append(py.None())?,
                }
            }
            Ok(list.unbind())
        })
    }

    /// Stores one vector per text: `vectors` is a float32 array of shape
    /// (len(texts), dim).
    #[pyo3(signature = (model, texts, vectors, revision="", tenant="default"))]
    fn put_many(
        &self,
        py: Python<'_>,
        model: &str,
        texts: &Bound<'_, PyAny>,
        vectors: &Bound<'_, PyAny>,
        revision: &str,
        tenant: &str,
    ) -> PyResult<()> {
        guard(|| {
            let texts = str_list("texts", texts)?;
            let matrix = read_matrix(vectors, "vectors")?;
            let (rows, dim) = (matrix.shape()[0], matrix.shape()[1]);
            if rows != texts.len() {
                return Err(invalid(format!(
                    "{} texts but {rows} vectors: give one row per text",
                    texts.len()
                )));
            }
            let data = matrix.as_slice()?;
            check_rows(data, dim, dim, "vectors")?;
            let scope = scope(tenant, None)?;
            py.detach(|| {
                let items: Vec<(CacheKey, Vec<f32>)> = texts
                    .iter()
                    .zip(data.chunks_exact(dim))
                    .map(|(t, v)| (Self::key(&scope, model, revision, t), v.to_vec()))
                    .collect();
                self.cache.put_many(&items)
            })
            .map_err(cache_err)
        })
    }

    /// Hit, miss and size figures per tier (see `ResponseCache.stats`).
    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        guard(|| stats_dict(py, &py.detach(|| self.cache.stats())))
    }

    /// Removes every entry of every tier.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| py.detach(|| self.cache.clear_all()).map_err(cache_err))
    }
}

/// One metadata value as stored: tagged, since the cache's encoding
/// (postcard) cannot read back `MetadataValue`'s untagged form.
#[derive(Serialize, Deserialize)]
enum StoredValue {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    List(Vec<StoredValue>),
}

impl From<&MetadataValue> for StoredValue {
    fn from(v: &MetadataValue) -> Self {
        match v {
            MetadataValue::Null => StoredValue::Null,
            MetadataValue::Bool(b) => StoredValue::Bool(*b),
            MetadataValue::Number(x) => StoredValue::Number(*x),
            MetadataValue::String(s) => StoredValue::String(s.clone()),
            MetadataValue::List(l) => StoredValue::List(l.iter().map(Into::into).collect()),
        }
    }
}

impl From<StoredValue> for MetadataValue {
    fn from(v: StoredValue) -> Self {
        match v {
            StoredValue::Null => MetadataValue::Null,
            StoredValue::Bool(b) => MetadataValue::Bool(b),
            StoredValue::Number(x) => MetadataValue::Number(x),
            StoredValue::String(s) => MetadataValue::String(s),
            StoredValue::List(l) => MetadataValue::List(l.into_iter().map(Into::into).collect()),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredHit {
    id: String,
    score: f32,
    text: Option<String>,
    metadata: Vec<(String, StoredValue)>,
    ref_doc_id: Option<String>,
}

/// A search result list as the retrieval cache keeps it.
#[derive(Serialize, Deserialize)]
struct StoredHits(Vec<StoredHit>);

impl CacheValue for StoredHits {
    const KIND: &'static str = "ragjet-python.hits";
}

/// What a retrieval result depends on, as given from Python.
struct QueryArgs {
    query: String,
    top_k: usize,
    filters: Option<ragjet::retrieval::MetadataFilters>,
    namespace: String,
    mode: String,
    index_version: u64,
    scope: Scope,
}

impl QueryArgs {
    fn as_query(&self) -> RetrievalQuery<'_> {
        RetrievalQuery {
            query: &self.query,
            namespace: &self.namespace,
            filters: self.filters.as_ref(),
            top_k: self.top_k,
            mode: &self.mode,
            index_version: self.index_version,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn query_args(
    query: String,
    top_k: i64,
    filters: Option<&Bound<'_, PyAny>>,
    namespace: String,
    mode: String,
    index_version: i64,
    tenant: &str,
) -> PyResult<QueryArgs> {
    Ok(QueryArgs {
        query,
        top_k: count("top_k", top_k)?,
        filters: parse_filters(filters)?,
        namespace,
        mode,
        index_version: u64::try_from(index_version).map_err(|_| {
            invalid(format!(
                "index_version must be 0 or more, not {index_version}"
            ))
        })?,
        scope: scope(tenant, None)?,
    })
}

/// Caches search results per (query, namespace, filters, top_k, mode,
/// index version, tenant): `RetrievalCache(memory_mb=256, ttl_seconds=3600,
/// max_ttl_seconds=21600)`.
///
/// The TTL adapts: each hit extends an entry to `ttl × (1 + hits)`, at
/// most `max_ttl_seconds`, so popular queries stay. Bump `index_version`
/// (yours, per index) whenever the index changes, or call
/// `bump_index_version()` to drop every cached result at once. Filters are
/// keyed by meaning: reordering a group's members gives the same key.
#[pyclass(frozen, module = "ragjet")]
pub(crate) struct RetrievalCache {
    inner: rc::RetrievalCache,
}

#[pymethods]
impl RetrievalCache {
    #[new]
    #[pyo3(signature = (memory_mb=256, ttl_seconds=3600.0, max_ttl_seconds=21600.0, path=None))]
    fn new(
        py: Python<'_>,
        memory_mb: i64,
        ttl_seconds: f64,
        max_ttl_seconds: f64,
        path: Option<PathBuf>,
    ) -> PyResult<Self> {
        guard(|| {
            let base = ttl_arg("ttl_seconds", Some(ttl_seconds))?.unwrap_or_default();
            let max = ttl_arg("max_ttl_seconds", Some(max_ttl_seconds))?.unwrap_or_default();
            if max < base {
                return Err(invalid(format!(
                    "max_ttl_seconds={max_ttl_seconds} is below ttl_seconds={ttl_seconds}"
                )));
            }
            let cache = py.detach(|| tiered(CacheKind::Retrieval, path, memory_mb, Some(base)))?;
            Ok(Self {
                inner: rc::RetrievalCache::with_cache(cache, AdaptiveTtl { base, max }),
            })
        })
    }

    /// The cached hits of this query, or None.
    #[pyo3(signature = (query, top_k, filters=None, namespace=String::new(), mode=String::from("vector"), index_version=0, tenant="default"))]
    #[allow(clippy::too_many_arguments)]
    fn get(
        &self,
        py: Python<'_>,
        query: String,
        top_k: i64,
        filters: Option<&Bound<'_, PyAny>>,
        namespace: String,
        mode: String,
        index_version: i64,
        tenant: &str,
    ) -> PyResult<Option<Vec<Hit>>> {
        guard(|| {
            let args = query_args(
                query,
                top_k,
                filters,
                namespace,
                mode,
                index_version,
                tenant,
            )?;
            let found = py.detach(|| self.inner.get::<StoredHits>(&args.scope, &args.as_query()));
            let Some(StoredHits(hits)) = found else {
                return Ok(None);
            };
            hits.into_iter()
                .map(|h| {
                    let metadata: Metadata =
                        h.metadata.into_iter().map(|(k, v)| (k, v.into())).collect();
                    Hit::build(py, h.id, h.score, h.text, &metadata, h.ref_doc_id)
                })
                .collect::<PyResult<Vec<_>>>()
                .map(Some)
        })
    }

    /// Stores `hits` (a list of `Hit`) as the result of this query.
    #[pyo3(signature = (query, top_k, hits, filters=None, namespace=String::new(), mode=String::from("vector"), index_version=0, tenant="default"))]
    #[allow(clippy::too_many_arguments)]
    fn put(
        &self,
        py: Python<'_>,
        query: String,
        top_k: i64,
        hits: &Bound<'_, PyAny>,
        filters: Option<&Bound<'_, PyAny>>,
        namespace: String,
        mode: String,
        index_version: i64,
        tenant: &str,
    ) -> PyResult<()> {
        guard(|| {
            let args = query_args(
                query,
                top_k,
                filters,
                namespace,
                mode,
                index_version,
                tenant,
            )?;
            let iter = hits.try_iter().map_err(|_| {
                invalid(format!(
                    "hits must be a list of Hit, not {}",
                    describe(hits)
                ))
            })?;
            let mut stored = Vec::new();
            for (i, h) in iter.enumerate() {
                let h = h?;
                let h = h
                    .cast::<Hit>()
                    .map_err(|_| invalid(format!("hits[{i}] is {}, not a Hit", describe(&h))))?;
                let (id, score, text, metadata, ref_doc_id) = h.get().parts(py)?;
                stored.push(StoredHit {
                    id,
                    score,
                    text,
                    metadata: metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), v.into()))
                        .collect(),
                    ref_doc_id,
                });
            }
            py.detach(|| {
                self.inner
                    .put(&args.scope, &args.as_query(), &StoredHits(stored))
            })
            .map_err(cache_err)
        })
    }

    /// Makes every cached result unreachable; returns the new cache-wide
    /// version.
    fn bump_index_version(&self) -> u64 {
        self.inner.bump_index_version()
    }

    /// Hit, miss and size figures per tier.
    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        guard(|| stats_dict(py, &py.detach(|| self.inner.cache().stats())))
    }

    /// Removes every entry.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            py.detach(|| self.inner.cache().clear_all())
                .map_err(cache_err)
        })
    }
}

/// Generation settings that change an answer, from keyword arguments.
fn sampling(
    temperature: f32,
    top_p: f32,
    max_tokens: i64,
    seed: Option<u64>,
    stop: Option<&Bound<'_, PyAny>>,
) -> PyResult<SamplingParams> {
    let stop = match stop.filter(|s| !s.is_none()) {
        Some(s) => str_list("stop", s)?,
        None => Vec::new(),
    };
    Ok(SamplingParams {
        temperature,
        top_p,
        max_tokens: u32::try_from(max_tokens).map_err(|_| {
            invalid(format!(
                "max_tokens must be 0..=4294967295, not {max_tokens}"
            ))
        })?,
        seed,
        stop,
    })
}

/// Caches LLM answers per (prompt, model, sampling settings), per tenant
/// and user: `ResponseCache(path=None, memory_mb=64, ttl_seconds=3600)`.
///
/// Answers may draw on what one user may see, so pass `user` to keep
/// users apart; `user=None` shares an answer across the tenant. The
/// sampling settings (`temperature`, `top_p`, `max_tokens`, `seed`,
/// `stop`) are part of the key.
#[pyclass(frozen, module = "ragjet")]
pub(crate) struct ResponseCache {
    inner: rc::ResponseCache,
}

/// The user a tenant-wide answer is filed under. The Rust cache insists
/// on a user (an answer may depend on what its user may see); a name no
/// caller can pass (empty names are refused) keeps tenant-wide answers
/// apart from every real user's.
const TENANT_WIDE: &str = "";

fn response_scope(tenant: &str, user: Option<&str>) -> PyResult<Scope> {
    Ok(scope(tenant, user)?.with_user(user.unwrap_or(TENANT_WIDE)))
}

#[pymethods]
impl ResponseCache {
    #[new]
    #[pyo3(signature = (path=None, memory_mb=64, ttl_seconds=Some(3600.0)))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        memory_mb: i64,
        ttl_seconds: Option<f64>,
    ) -> PyResult<Self> {
        guard(|| {
            let ttl = ttl_arg("ttl_seconds", ttl_seconds)?;
            let cache = py.detach(|| tiered(CacheKind::Response, path, memory_mb, ttl))?;
            Ok(Self {
                inner: rc::ResponseCache::with_cache(cache),
            })
        })
    }

    /// The cached answer, or None.
    #[pyo3(signature = (prompt, model, tenant="default", user=None, *, temperature=0.0, top_p=1.0, max_tokens=512, seed=None, stop=None))]
    #[allow(clippy::too_many_arguments)]
    fn get(
        &self,
        py: Python<'_>,
        prompt: &str,
        model: &str,
        tenant: &str,
        user: Option<&str>,
        temperature: f32,
        top_p: f32,
        max_tokens: i64,
        seed: Option<u64>,
        stop: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<String>> {
        guard(|| {
            let scope = response_scope(tenant, user)?;
            let p = sampling(temperature, top_p, max_tokens, seed, stop)?;
            py.detach(|| self.inner.get(&scope, prompt, model, &p))
                .map_err(cache_err)
        })
    }

    /// Stores an answer.
    #[pyo3(signature = (prompt, model, response, tenant="default", user=None, *, temperature=0.0, top_p=1.0, max_tokens=512, seed=None, stop=None))]
    #[allow(clippy::too_many_arguments)]
    fn put(
        &self,
        py: Python<'_>,
        prompt: &str,
        model: &str,
        response: &str,
        tenant: &str,
        user: Option<&str>,
        temperature: f32,
        top_p: f32,
        max_tokens: i64,
        seed: Option<u64>,
        stop: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        guard(|| {
            let scope = response_scope(tenant, user)?;
            let p = sampling(temperature, top_p, max_tokens, seed, stop)?;
            py.detach(|| self.inner.put(&scope, prompt, model, &p, response))
                .map_err(cache_err)
        })
    }

    /// `{"hits", "misses", "memory": {...} | None, "disk": {...} | None,
    /// "redis": None}`; each tier dict holds hits, misses, errors,
    /// rejected, evictions, writes, bytes and entries.
    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        guard(|| stats_dict(py, &py.detach(|| self.inner.cache().stats())))
    }

    /// Removes every entry.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            py.detach(|| self.inner.cache().clear_all())
                .map_err(cache_err)
        })
    }
}

/// Answers for queries that mean the same thing: `SemanticCache(dim,
/// threshold=0.92, ttl_seconds=3600, max_entries_per_scope=10000)`.
///
/// A lookup takes the query's embedding and returns the stored answer of
/// the most similar earlier query of the same tenant and user, when their
/// cosine similarity reaches `threshold`. Other tenants' and users'
/// entries are never searched.
#[pyclass(frozen, module = "ragjet")]
pub(crate) struct SemanticCache {
    inner: rc::SemanticCache<String>,
    dim: usize,
}

impl SemanticCache {
    fn vector<'py>(&self, obj: &Bound<'py, PyAny>) -> PyResult<numpy::PyReadonlyArray1<'py, f32>> {
        let v = read_vector(obj, "vector")?;
        let data = v.as_slice()?;
        check_rows(data, data.len(), self.dim, "vector")?;
        Ok(v)
    }
}

#[pymethods]
impl SemanticCache {
    #[new]
    #[pyo3(signature = (dim, threshold=0.92, ttl_seconds=Some(3600.0), max_entries_per_scope=10_000))]
    fn new(
        dim: i64,
        threshold: f32,
        ttl_seconds: Option<f64>,
        max_entries_per_scope: i64,
    ) -> PyResult<Self> {
        guard(|| {
            let dim = count("dim", dim)?;
            if !(threshold > -1.0 && threshold <= 1.0) {
                return Err(invalid(format!(
                    "threshold must be in (-1, 1], not {threshold}"
                )));
            }
            let mut cfg = SemanticConfig::new(dim);
            cfg.threshold = threshold;
            cfg.ttl = ttl_arg("ttl_seconds", ttl_seconds)?;
            cfg.max_entries_per_scope = count("max_entries_per_scope", max_entries_per_scope)?;
            Ok(Self {
                inner: rc::SemanticCache::new(cfg).map_err(cache_err)?,
                dim,
            })
        })
    }

    /// `(answer, similarity)` of the closest stored query reaching the
    /// threshold, or None. `vector` is a float32 array of shape (dim,).
    #[pyo3(signature = (vector, tenant="default", user=None))]
    fn get(
        &self,
        py: Python<'_>,
        vector: &Bound<'_, PyAny>,
        tenant: &str,
        user: Option<&str>,
    ) -> PyResult<Option<(String, f32)>> {
        guard(|| {
            let v = self.vector(vector)?;
            let data = v.as_slice()?;
            let scope = scope(tenant, user)?;
            let hit = py
                .detach(|| self.inner.lookup(&scope, data))
                .map_err(cache_err)?;
            Ok(hit.map(|h| (h.value, h.similarity)))
        })
    }

    /// Stores `response` for the query embedding `vector`.
    #[pyo3(signature = (vector, response, tenant="default", user=None))]
    fn put(
        &self,
        py: Python<'_>,
        vector: &Bound<'_, PyAny>,
        response: String,
        tenant: &str,
        user: Option<&str>,
    ) -> PyResult<()> {
        guard(|| {
            let v = self.vector(vector)?;
            let data = v.as_slice()?;
            let scope = scope(tenant, user)?;
            py.detach(|| self.inner.insert(&scope, data, response))
                .map_err(cache_err)
        })
    }

    /// `{"hits", "misses", "mean_hit_similarity", "entries", "evictions",
    /// "hnsw_partitions"}`.
    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        guard(|| {
            let s = py.detach(|| self.inner.stats());
            let d = PyDict::new(py);
            d.set_item("hits", s.hits)?;
            d.set_item("misses", s.misses)?;
            d.set_item("mean_hit_similarity", s.mean_hit_similarity)?;
            d.set_item("entries", s.entries)?;
            d.set_item("evictions", s.evictions)?;
            d.set_item("hnsw_partitions", s.hnsw_partitions)?;
            Ok(d.unbind())
        })
    }

    /// Removes every entry of every tenant.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            py.detach(|| self.inner.clear());
            Ok(())
        })
    }

    /// Embedding dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.dim
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<EmbeddingCache>()?;
    m.add_class::<RetrievalCache>()?;
    m.add_class::<ResponseCache>()?;
    m.add_class::<SemanticCache>()?;
    Ok(())
}
