//! Vector and keyword indexes (`FlatIndex`, `HnswIndex`, `Bm25Index`), the
//! `Hit` they return, and the fusion helpers.
//!
//! Each index sits behind a `RwLock` that is only ever taken with the GIL
//! released: a thread holding the GIL while it waits for the lock would
//! stall every other Python thread behind one long `add`.

use std::path::PathBuf;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use ragjet::retrieval::{
    self as rr, Bm25Params, Entry, FlatConfig, HnswConfig, Metadata, MetadataFilters, Metric,
    Record, Storage, VectorIndex,
};

use crate::convert::{
    check_rows, count, describe, dict_to_metadata, guard, invalid, is_matrix, metadata_list,
    metadata_to_py, optional_str_list, parse_filters, read_matrix, read_vector, retrieval_err,
    str_list,
};

/// One search result (or one stored entry, from `get`).
///
/// `score` is higher-is-better: cosine similarity, inner product, or the
/// negated squared Euclidean distance for `metric="l2"`. `text`,
/// `metadata` and `ref_doc_id` are what was stored with the entry (`text`
/// is `None` for keyword and fusion results that carry no text).
#[pyclass(frozen, module = "ragjet")]
pub(crate) struct Hit {
    id: String,
    score: f32,
    text: Option<String>,
    metadata: Py<PyDict>,
    ref_doc_id: Option<String>,
    /// Byte range of an engine chunk in its document's text.
    span: Option<(usize, usize)>,
}

impl Hit {
    fn from_record(
        py: Python<'_>,
        id: String,
        score: f32,
        record: Option<&Record>,
    ) -> PyResult<Self> {
        let metadata = match record {
            Some(r) => metadata_to_py(py, &r.metadata)?,
            None => PyDict::new(py),
        };
        Ok(Self {
            id,
            score,
            text: record.map(|r| r.text.clone()),
            metadata: metadata.unbind(),
            ref_doc_id: record.and_then(|r| r.ref_doc_id.clone()),
            span: None,
        })
    }

    /// A hit from its parts (the retrieval cache's stored form).
    pub(crate) fn build(
        py: Python<'_>,
        id: String,
        score: f32,
        text: Option<String>,
        metadata: &Metadata,
        ref_doc_id: Option<String>,
    ) -> PyResult<Self> {
        Ok(Self {
            id,
            score,
            text,
            metadata: metadata_to_py(py, metadata)?.unbind(),
            ref_doc_id,
            span: None,
        })
    }

    /// The hit's parts, its metadata checked as index metadata is.
    #[allow(clippy::type_complexity)]
    pub(crate) fn parts(
        &self,
        py: Python<'_>,
    ) -> PyResult<(String, f32, Option<String>, Metadata, Option<String>)> {
        let metadata = dict_to_metadata(self.metadata.bind(py).as_any(), "hit.metadata")?;
        Ok((
            self.id.clone(),
            self.score,
            self.text.clone(),
            metadata,
            self.ref_doc_id.clone(),
        ))
    }

    fn with_score(&self, py: Python<'_>, score: f32) -> Self {
        Self {
            id: self.id.clone(),
            score,
            text: self.text.clone(),
            metadata: self.metadata.clone_ref(py),
            ref_doc_id: self.ref_doc_id.clone(),
            span: self.span,
        }
    }

    /// The same hit with the byte range of its chunk (engine hits).
    pub(crate) fn with_span(mut self, start: usize, end: usize) -> Self {
        self.span = Some((start, end));
        self
    }
}

#[pymethods]
impl Hit {
    /// Makes a hit by hand (for `alpha_fusion` inputs, tests, or caching).
    #[new]
    #[pyo3(signature = (id, score, text=None, metadata=None, ref_doc_id=None, span=None))]
    fn new(
        py: Python<'_>,
        id: String,
        score: f32,
        text: Option<String>,
        metadata: Option<&Bound<'_, PyAny>>,
        ref_doc_id: Option<String>,
        span: Option<(usize, usize)>,
    ) -> PyResult<Self> {
        guard(|| {
            let metadata = match metadata.filter(|m| !m.is_none()) {
                Some(m) => {
                    let m = m.cast::<PyDict>().map_err(|_| {
                        invalid(format!("metadata must be a dict, not {}", describe(m)))
                    })?;
                    m.copy()?
                }
                None => PyDict::new(py),
            };
            Ok(Self {
                id,
                score,
                text,
                metadata: metadata.unbind(),
                ref_doc_id,
                span,
            })
        })
    }

    /// The entry's id.
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// Similarity to the query, higher is better.
    #[getter]
    fn score(&self) -> f32 {
        self.score
    }

    /// The stored text, or None where the result carries none.
    #[getter]
    fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// The stored metadata (the hit's own dict).
    #[getter]
    fn metadata(&self, py: Python<'_>) -> Py<PyDict> {
        self.metadata.clone_ref(py)
    }

    /// The id of the source document, if one was stored.
    #[getter]
    fn ref_doc_id(&self) -> Option<&str> {
        self.ref_doc_id.as_deref()
    }

    /// For `Engine` hits: `(start, end)`, the byte range of the chunk in
    /// its document's text (UTF-8); None elsewhere.
    #[getter]
    fn span(&self) -> Option<(usize, usize)> {
        self.span
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let repr = |s: &str| -> PyResult<String> { Ok(PyString::new(py, s).repr()?.to_string()) };
        let opt = |s: &Option<String>| -> PyResult<String> {
            s.as_deref().map_or_else(|| Ok("None".to_owned()), repr)
        };
        let text = match &self.text {
            Some(t) if t.chars().count() > 40 => {
                format!("{}...", repr(&t.chars().take(40).collect::<String>())?)
            }
            other => opt(other)?,
        };
        Ok(format!(
            "Hit(id={}, score={}, text={text}, ref_doc_id={})",
            repr(&self.id)?,
            self.score,
            opt(&self.ref_doc_id)?
        ))
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(other) = other.cast::<Hit>() else {
            return Ok(false);
        };
        let other = other.get();
        Ok(self.id == other.id
            && self.score == other.score
            && self.text == other.text
            && self.ref_doc_id == other.ref_doc_id
            && self.span == other.span
            && self.metadata.bind(py).eq(other.metadata.bind(py))?)
    }
}

fn parse_metric(metric: &str) -> PyResult<Metric> {
    match metric.to_ascii_lowercase().as_str() {
        "cosine" => Ok(Metric::Cosine),
        "ip" | "dot" => Ok(Metric::Dot),
        "l2" | "euclidean" => Ok(Metric::L2),
        _ => Err(invalid(format!(
            "metric must be \"cosine\", \"ip\" or \"l2\", not {metric:?}"
        ))),
    }
}

fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "cosine",
        Metric::Dot => "ip",
        Metric::L2 => "l2",
    }
}

fn dim_arg(dim: i64) -> PyResult<usize> {
    count("dim", dim)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Hits with their records, made while the index is locked.
type Found = Vec<(rr::Hit, Option<Record>)>;

fn with_records<I: VectorIndex>(index: &I, hits: Vec<rr::Hit>) -> Found {
    hits.into_iter()
        .map(|h| {
            let record = index.get(&h.id).map(|r| r.to_record());
            (h, record)
        })
        .collect()
}

fn found_to_py(py: Python<'_>, found: Found) -> PyResult<Vec<Hit>> {
    found
        .into_iter()
        .map(|(h, r)| Hit::from_record(py, h.id, h.score, r.as_ref()))
        .collect()
}

/// `add` of both vector indexes: checks everything under the GIL, then
/// builds the entries and upserts them with it released.
#[allow(clippy::too_many_arguments)]
fn add_entries<I: VectorIndex>(
    py: Python<'_>,
    lock: &RwLock<I>,
    dim: usize,
    ids: &Bound<'_, PyAny>,
    vectors: &Bound<'_, PyAny>,
    metadata: Option<&Bound<'_, PyAny>>,
    texts: Option<&Bound<'_, PyAny>>,
    ref_doc_ids: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let ids = str_list("ids", ids)?;
    let matrix: PyReadonlyArray2<'_, f32> = read_matrix(vectors, "vectors")?;
    let shape = matrix.shape().to_vec();
    if shape[0] != ids.len() {
        return Err(invalid(format!(
            "{} ids but {} vectors: give one row per id",
            ids.len(),
            shape[0]
        )));
    }
    let n = ids.len();
    let metadata: Vec<Metadata> = metadata_list(metadata, n)?;
    let texts = optional_str_list("texts", texts, n)?;
    let refs = optional_str_list("ref_doc_ids", ref_doc_ids, n)?;
    let data = matrix.as_slice()?;
    check_rows(data, shape[1], dim, "vectors")?;
    py.detach(|| {
        let entries: Vec<Entry> = ids
            .into_iter()
            .zip(metadata)
            .zip(texts)
            .zip(refs)
            .enumerate()
            .map(|(i, (((id, metadata), text), ref_doc_id))| Entry {
                id,
                vector: data[i * dim..(i + 1) * dim].to_vec(),
                text: text.unwrap_or_default(),
                metadata,
                ref_doc_id,
            })
            .collect();
        write(lock).upsert(entries)
    })
    .map_err(retrieval_err)
}

/// One query gives a list of hits, a matrix of queries a list of lists.
fn search_any<I: VectorIndex>(
    py: Python<'_>,
    lock: &RwLock<I>,
    dim: usize,
    query: &Bound<'_, PyAny>,
    k: i64,
    filters: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let k = count("k", k)?;
    let filters = parse_filters(filters)?;
    if is_matrix(query) {
        let matrix = read_matrix(query, "query")?;
        let cols = matrix.shape()[1];
        let data = matrix.as_slice()?;
        check_rows(data, cols, dim, "query")?;
        let found = py
            .detach(|| {
                let queries: Vec<Vec<f32>> = data.chunks_exact(dim).map(<[f32]>::to_vec).collect();
                let index = read(lock);
                let all = index.search_batch(&queries, k, filters.as_ref())?;
                Ok(all
                    .into_iter()
                    .map(|hits| with_records(&*index, hits))
                    .collect::<Vec<_>>())
            })
            .map_err(retrieval_err)?;
        let lists = found
            .into_iter()
            .map(|f| found_to_py(py, f))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(PyList::new(py, lists)?.into_any().unbind());
    }
    let is_vector = query
        .cast::<numpy::PyUntypedArray>()
        .is_ok_and(|a| a.ndim() == 1);
    if !is_vector {
        return Err(invalid(format!(
            "query must be a float32 vector of shape (dim,) or a float32 matrix of shape \
             (q, dim); got {}",
            describe_array(query)
        )));
    }
    let vector = read_vector(query, "query")?;
    let data = vector.as_slice()?;
    check_rows(data, data.len(), dim, "query")?;
    let found = py
        .detach(|| {
            let index = read(lock);
            let hits = index.search(data, k, filters.as_ref())?;
            Ok(with_records(&*index, hits))
        })
        .map_err(retrieval_err)?;
    Ok(PyList::new(py, found_to_py(py, found)?)?
        .into_any()
        .unbind())
}

/// What an argument that should be an array is, for messages.
fn describe_array(obj: &Bound<'_, PyAny>) -> String {
    match (obj.getattr("dtype"), obj.getattr("shape")) {
        (Ok(dtype), Ok(shape)) => format!("an array of dtype {dtype} and shape {shape}"),
        _ => format!("an object {}", describe(obj)),
    }
}

fn ids_arg(ids: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    str_list("ids", ids)
}

fn get_hit<I: VectorIndex>(py: Python<'_>, lock: &RwLock<I>, id: &str) -> PyResult<Option<Hit>> {
    let record = py.detach(|| read(lock).get(id).map(|r| r.to_record()));
    record
        .map(|r| Hit::from_record(py, id.to_owned(), 0.0, Some(&r)))
        .transpose()
}

fn ids_matching<I: VectorIndex>(
    py: Python<'_>,
    lock: &RwLock<I>,
    filters: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<String>> {
    let filters: Option<MetadataFilters> = parse_filters(filters)?;
    py.detach(|| read(lock).ids_matching(filters.as_ref()))
        .map_err(retrieval_err)
}

fn vectors_of(
    py: Python<'_>,
    dim: usize,
    ids: &[String],
    lookup: impl Fn(&str) -> Option<Vec<f32>> + Sync,
) -> PyResult<Py<PyAny>> {
    let data = py.detach(|| {
        let mut data = Vec::with_capacity(ids.len() * dim);
        for id in ids {
            match lookup(id) {
                Some(v) => data.extend_from_slice(&v),
                None => return Err(id.clone()),
            }
        }
        Ok(data)
    });
    let data = data.map_err(|id| invalid(format!("no entry with id {id:?}")))?;
    Ok(PyArray1::from_vec(py, data)
        .reshape([ids.len(), dim])?
        .into_any()
        .unbind())
}

/// The methods `FlatIndex` and `HnswIndex` share (pyo3 allows one
/// `#[pymethods]` block per class, so the class-specific ones come in as
/// `$extra`).
macro_rules! vector_index_class {
    ($name:ident, $inner:ty, $kind:literal, { $($extra:tt)* }) => {
        #[pymethods]
        impl $name {
            $($extra)*

            /// Adds entries, replacing those whose id exists (all or
            /// nothing: one bad row refuses the whole batch).
            ///
            /// `vectors` is a C-contiguous float32 array of shape
            /// (len(ids), dim), read in place. `metadata` (one dict per id;
            /// values str, int, float, bool, None or lists of them),
            /// `texts` and `ref_doc_ids` (str or None per id) are optional.
            /// The GIL is released while adding.
            #[pyo3(signature = (ids, vectors, metadata=None, texts=None, ref_doc_ids=None))]
            fn add(
                &self,
                py: Python<'_>,
                ids: &Bound<'_, PyAny>,
                vectors: &Bound<'_, PyAny>,
                metadata: Option<&Bound<'_, PyAny>>,
                texts: Option<&Bound<'_, PyAny>>,
                ref_doc_ids: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<()> {
                guard(|| add_entries(py, &self.inner, self.dim, ids, vectors, metadata, texts, ref_doc_ids))
            }

            /// The `k` entries most similar to `query` that pass `filters`,
            /// best first: a (dim,) vector gives a list of `Hit`, a (q, dim)
            /// matrix a list of lists. `filters`: None, a dict or JSON str
            /// in LlamaIndex's `MetadataFilters.model_dump()` shape, or a
            /// LlamaIndex `MetadataFilters`, with llama-index-core's
            /// semantics. The GIL is released while searching.
            #[pyo3(signature = (query, k=10, filters=None))]
            fn search(
                &self,
                py: Python<'_>,
                query: &Bound<'_, PyAny>,
                k: i64,
                filters: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<Py<PyAny>> {
                guard(|| search_any(py, &self.inner, self.dim, query, k, filters))
            }

            /// Deletes entries by id; returns how many existed.
            fn delete(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<usize> {
                guard(|| {
                    let ids = ids_arg(ids)?;
                    Ok(py.detach(|| {
                        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                        write(&self.inner).delete(&refs)
                    }))
                })
            }

            /// Deletes every entry added with this `ref_doc_id`; returns how
            /// many.
            fn delete_ref_doc(&self, py: Python<'_>, ref_doc_id: &str) -> PyResult<usize> {
                guard(|| Ok(py.detach(|| write(&self.inner).delete_ref_doc(ref_doc_id))))
            }

            /// Removes every entry (the settings stay).
            fn clear(&self, py: Python<'_>) -> PyResult<()> {
                guard(|| {
                    py.detach(|| {
                        let mut index = write(&self.inner);
                        let mut empty = <$inner>::new(index.config().clone())?;
                        empty.set_namespace(index.namespace());
                        *index = empty;
                        Ok(())
                    })
                    .map_err(retrieval_err)
                })
            }

            /// The stored entry `id` as a `Hit` (score 0.0), or None.
            fn get(&self, py: Python<'_>, id: &str) -> PyResult<Option<Hit>> {
                guard(|| get_hit(py, &self.inner, id))
            }

            /// Ids of the entries passing `filters` (every id with None),
            /// in no particular order.
            #[pyo3(signature = (filters=None))]
            fn ids(&self, py: Python<'_>, filters: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
                guard(|| ids_matching(py, &self.inner, filters))
            }

            /// The stored vectors of `ids` as a float32 array (len(ids),
            /// dim): unit length under cosine (vectors are normalised when
            /// added). An unknown id is an `InvalidInputError`.
            fn get_vectors(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
                guard(|| {
                    let ids = ids_arg(ids)?;
                    let index = &self.inner;
                    vectors_of(py, self.dim, &ids, |id| read(index).vector(id))
                })
            }

            /// Saves the index to the directory `path`, crash-safe: a
            /// reader sees the old or the new index, never a mix.
            fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
                guard(|| py.detach(|| read(&self.inner).save(&path)).map_err(retrieval_err))
            }

            /// Loads an index saved with `save`. A damaged or truncated
            /// directory raises `StorageError`.
            #[staticmethod]
            fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
                guard(|| {
                    let index = py.detach(|| <$inner>::load(&path)).map_err(retrieval_err)?;
                    Ok(Self::wrap(index))
                })
            }

            /// Vector dimension.
            #[getter]
            fn dim(&self) -> usize {
                self.dim
            }

            /// Similarity metric: "cosine", "ip" or "l2".
            #[getter]
            fn metric(&self) -> &'static str {
                metric_name(self.metric)
            }

            fn __len__(&self, py: Python<'_>) -> usize {
                py.detach(|| read(&self.inner).len())
            }

            fn __contains__(&self, py: Python<'_>, id: &str) -> bool {
                py.detach(|| read(&self.inner).get(id).is_some())
            }

            fn __repr__(&self, py: Python<'_>) -> String {
                format!(
                    "{}(dim={}, metric={:?}, len={})",
                    $kind,
                    self.dim,
                    metric_name(self.metric),
                    self.__len__(py)
                )
            }
        }
    };
}

/// The `storage` argument of `FlatIndex` and `HnswIndex`.
fn parse_storage(storage: &str) -> PyResult<Storage> {
    Ok(match storage.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Storage::F32,
        "f16" | "float16" => Storage::F16,
        "int8" => Storage::Int8,
        "binary" => Storage::Binary,
        _ => {
            return Err(invalid(format!(
                "storage must be \"f32\", \"f16\", \"int8\" or \"binary\", not {storage:?}"
            )))
        }
    })
}

fn storage_name(storage: Storage) -> &'static str {
    match storage {
        Storage::F32 => "f32",
        Storage::F16 => "f16",
        Storage::Int8 => "int8",
        Storage::Binary => "binary",
    }
}

/// Exact nearest-neighbour search over contiguous float32 (or float16)
/// rows: `FlatIndex(dim, metric="cosine", storage="f32")`.
///
/// Entries have string ids, optional text, metadata and `ref_doc_id`;
/// re-adding an id replaces it. Searches take the same filters as
/// LlamaIndex vector stores. Safe to share between threads; the GIL is
/// released in every call that does work.
#[pyclass(frozen, module = "ragjet")]
pub(crate) struct FlatIndex {
    inner: RwLock<rr::FlatIndex>,
    dim: usize,
    metric: Metric,
}

impl FlatIndex {
    fn wrap(index: rr::FlatIndex) -> Self {
        Self {
            dim: index.dim(),
            metric: index.metric(),
            inner: RwLock::new(index),
        }
    }
}

vector_index_class!(FlatIndex, rr::FlatIndex, "FlatIndex", {
    /// `metric`: "cosine" (vectors normalised when added), "ip" (raw
    /// inner product) or "l2"; `storage`: "f32", "f16" (half the
    /// memory, scores to about 3 digits), "int8" or "binary" (a byte or a
    /// bit per component scanned, then the best `rescore`·k rows rescored
    /// exactly from f32 rows kept alongside; `rescore` 0 is the default,
    /// 4 for int8 and 64 for binary).
    #[new]
    #[pyo3(signature = (dim, metric="cosine", storage="f32", rescore=0))]
    fn new(dim: i64, metric: &str, storage: &str, rescore: usize) -> PyResult<Self> {
        guard(|| {
            let cfg = FlatConfig::new(dim_arg(dim)?, parse_metric(metric)?)
                .with_storage(parse_storage(storage)?)
                .with_rescore(rescore);
            Ok(Self::wrap(rr::FlatIndex::new(cfg).map_err(retrieval_err)?))
        })
    }

    /// Element type of the scanned vectors: "f32", "f16", "int8" or
    /// "binary".
    #[getter]
    fn storage(&self, py: Python<'_>) -> &'static str {
        storage_name(py.detach(|| read(&self.inner).config().storage))
    }
});

/// Approximate nearest-neighbour search on an HNSW graph:
/// `HnswIndex(dim, metric="cosine", m=16, ef_construction=200,
/// ef_search=64, storage="f32", rescore=0)`.
///
/// The same methods as `FlatIndex`; metric "cosine" or "l2" (a graph
/// cannot search raw inner products reliably). Filters are applied during
/// the graph walk, and filters passing few entries are answered exactly.
/// Deletes leave tombstones; `compact()` rebuilds the graph without them.
#[pyclass(frozen, module = "ragjet")]
pub(crate) struct HnswIndex {
    inner: RwLock<rr::HnswIndex>,
    dim: usize,
    metric: Metric,
}

impl HnswIndex {
    fn wrap(index: rr::HnswIndex) -> Self {
        Self {
            dim: index.dim(),
            metric: index.metric(),
            inner: RwLock::new(index),
        }
    }
}

vector_index_class!(HnswIndex, rr::HnswIndex, "HnswIndex", {
    /// `m`: links per node (2..=255); `ef_construction`: candidate list
    /// while building; `ef_search`: candidate list while searching (raised
    /// to `k` when smaller); `storage`: "f32", or "int8" / "binary" to walk
    /// the graph on a byte or a bit per component, keeping
    /// max(ef_search, `rescore`·k) candidates that are rescored exactly
    /// from the f32 rows (scores stay exact; `rescore` 0 is the default, 4
    /// for int8 and 64 for binary). "f16" is refused.
    #[new]
    #[pyo3(signature = (dim, metric="cosine", m=16, ef_construction=200, ef_search=64, storage="f32", rescore=0))]
    fn new(
        dim: i64,
        metric: &str,
        m: i64,
        ef_construction: i64,
        ef_search: i64,
        storage: &str,
        rescore: usize,
    ) -> PyResult<Self> {
        guard(|| {
            let mut cfg = HnswConfig::new(dim_arg(dim)?, parse_metric(metric)?)
                .with_storage(parse_storage(storage)?)
                .with_rescore(rescore);
            cfg.m = count("m", m)?;
            cfg.ef_construction = count("ef_construction", ef_construction)?;
            cfg.ef_search = count("ef_search", ef_search)?;
            Ok(Self::wrap(rr::HnswIndex::new(cfg).map_err(retrieval_err)?))
        })
    }

    /// Candidate list size while searching; settable.
    #[getter]
    fn ef_search(&self, py: Python<'_>) -> usize {
        py.detach(|| read(&self.inner).config().ef_search)
    }

    #[setter]
    fn set_ef_search(&self, py: Python<'_>, ef: i64) -> PyResult<()> {
        guard(|| {
            let ef = count("ef_search", ef)?;
            py.detach(|| write(&self.inner).set_ef_search(ef))
                .map_err(retrieval_err)
        })
    }

    /// Links per node (`M`).
    #[getter]
    fn m(&self, py: Python<'_>) -> usize {
        py.detach(|| read(&self.inner).config().m)
    }

    /// What the search walks on: "f32", "int8" or "binary".
    #[getter]
    fn storage(&self, py: Python<'_>) -> &'static str {
        storage_name(py.detach(|| read(&self.inner).config().storage))
    }

    /// Deleted or replaced entries still in the graph.
    #[getter]
    fn tombstones(&self, py: Python<'_>) -> usize {
        py.detach(|| read(&self.inner).tombstones())
    }

    /// Rebuilds the graph from the live entries; returns how many
    /// tombstones were dropped.
    fn compact(&self, py: Python<'_>) -> PyResult<usize> {
        guard(|| Ok(py.detach(|| write(&self.inner).compact())))
    }
});

/// Okapi BM25 keyword search: `Bm25Index(k1=1.2, b=0.75)`.
///
/// Texts are split on Unicode word boundaries and lowercased. Ids are the
/// same strings as in the vector indexes, so keyword and vector hits can
/// be fused with `alpha_fusion`.
#[pyclass(frozen, module = "ragjet")]
pub(crate) struct Bm25Index {
    inner: RwLock<rr::Bm25Index>,
}

#[pymethods]
impl Bm25Index {
    /// `k1` ≥ 0 (term-frequency saturation), 0 ≤ `b` ≤ 1 (length
    /// normalisation).
    #[new]
    #[pyo3(signature = (k1=1.2, b=0.75))]
    fn new(k1: f32, b: f32) -> PyResult<Self> {
        guard(|| {
            let inner = rr::Bm25Index::new(Bm25Params { k1, b }).map_err(retrieval_err)?;
            Ok(Self {
                inner: RwLock::new(inner),
            })
        })
    }

    /// Adds documents, replacing those whose id exists. The GIL is
    /// released while indexing.
    fn add(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        texts: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard(|| {
            let ids = ids_arg(ids)?;
            let texts = str_list("texts", texts)?;
            if ids.len() != texts.len() {
                return Err(invalid(format!(
                    "{} ids but {} texts: give one text per id",
                    ids.len(),
                    texts.len()
                )));
            }
            if let Some(i) = ids.iter().position(String::is_empty) {
                return Err(invalid(format!("ids[{i}] is empty")));
            }
            py.detach(|| {
                let mut index = write(&self.inner);
                for (id, text) in ids.iter().zip(&texts) {
                    index.upsert(id, text)?;
                }
                Ok(())
            })
            .map_err(retrieval_err)
        })
    }

    /// The `k` best-scoring documents for `query`, best first, as `Hit`s
    /// with id and score (documents sharing no term are not returned).
    #[pyo3(signature = (query, k=10))]
    fn search(&self, py: Python<'_>, query: &Bound<'_, PyAny>, k: i64) -> PyResult<Vec<Hit>> {
        guard(|| {
            let k = count("k", k)?;
            let query = query
                .cast::<PyString>()
                .map_err(|_| invalid(format!("query must be a str, not {}", describe(query))))?
                .to_cow()?
                .into_owned();
            let hits = py.detach(|| read(&self.inner).search(&query, k));
            hits.into_iter()
                .map(|h| {
                    Hit::from_record(py, h.id, h.score, None).map(|mut hit| {
                        hit.text = None;
                        hit
                    })
                })
                .collect()
        })
    }

    /// Deletes documents by id; returns how many existed.
    fn delete(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<usize> {
        guard(|| {
            let ids = ids_arg(ids)?;
            Ok(py.detach(|| {
                let mut index = write(&self.inner);
                ids.iter().filter(|id| index.delete(id)).count()
            }))
        })
    }

    /// Removes every document (k1 and b stay).
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            py.detach(|| {
                let mut index = write(&self.inner);
                *index = rr::Bm25Index::new(index.params())?;
                Ok(())
            })
            .map_err(retrieval_err)
        })
    }

    /// Saves the index to the directory `path` (crash-safe).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        guard(|| {
            py.detach(|| read(&self.inner).save(&path))
                .map_err(retrieval_err)
        })
    }

    /// Loads an index saved with `save`; a damaged one raises
    /// `StorageError`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        guard(|| {
            let inner = py
                .detach(|| rr::Bm25Index::load(&path))
                .map_err(retrieval_err)?;
            Ok(Self {
                inner: RwLock::new(inner),
            })
        })
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        py.detach(|| read(&self.inner).len())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("Bm25Index(len={})", self.__len__(py))
    }
}

fn hits_arg(what: &str, hits: &Bound<'_, PyAny>) -> PyResult<Vec<Py<Hit>>> {
    let iter = hits.try_iter().map_err(|_| {
        invalid(format!(
            "{what} must be a list of Hit, not {}",
            describe(hits)
        ))
    })?;
    iter.enumerate()
        .map(|(i, h)| {
            let h = h?;
            h.cast::<Hit>()
                .map(|h| h.clone().unbind())
                .map_err(|_| invalid(format!("{what}[{i}] is {}, not a Hit", describe(&h))))
        })
        .collect()
}

/// LlamaIndex's hybrid fusion: each list's scores are min-max normalised,
/// then `alpha * vector + (1 - alpha) * keyword` (an id missing from a list
/// scores 0 there); `alpha=1` is vector only, `alpha=0` keyword only.
/// Returns the best `k` as new `Hit`s, keeping the text and metadata of
/// the input hit (the vector one where both have the id).
#[pyfunction]
#[pyo3(signature = (vector_hits, keyword_hits, alpha, k))]
fn alpha_fusion(
    py: Python<'_>,
    vector_hits: &Bound<'_, PyAny>,
    keyword_hits: &Bound<'_, PyAny>,
    alpha: f32,
    k: i64,
) -> PyResult<Vec<Hit>> {
    guard(|| {
        let k = count("k", k)?;
        let vector = hits_arg("vector_hits", vector_hits)?;
        let keyword = hits_arg("keyword_hits", keyword_hits)?;
        let plain = |hits: &[Py<Hit>]| -> Vec<rr::Hit> {
            hits.iter()
                .map(|h| {
                    let h = h.get();
                    rr::Hit {
                        id: h.id.clone(),
                        score: h.score,
                    }
                })
                .collect()
        };
        let (v, kw) = (plain(&vector), plain(&keyword));
        let fused = py
            .detach(|| rr::alpha_fusion(&v, &kw, alpha, k))
            .map_err(retrieval_err)?;
        let mut by_id = std::collections::HashMap::new();
        for h in keyword.iter().chain(vector.iter()) {
            // Vector hits come last, so theirs win.
            by_id.insert(h.get().id.clone(), h);
        }
        fused
            .into_iter()
            .map(|f| match by_id.get(&f.id) {
                Some(h) => Ok(h.get().with_score(py, f.score)),
                None => Hit::from_record(py, f.id, f.score, None),
            })
            .collect()
    })
}

/// Maximal marginal relevance over `candidates` (a float32 matrix of shape
/// (n, dim), one row per id): picks up to `k`, each step taking the row
/// maximising `lambda_ * sim(query, row) - (1 - lambda_) * max sim(row,
/// chosen)`. `lambda_=1` is plain relevance order. Returns `(id,
/// similarity to the query)` in selection order.
#[pyfunction]
#[pyo3(signature = (query, candidates, ids, k, lambda_=0.5, metric="cosine"))]
fn mmr(
    py: Python<'_>,
    query: &Bound<'_, PyAny>,
    candidates: &Bound<'_, PyAny>,
    ids: &Bound<'_, PyAny>,
    k: i64,
    lambda_: f32,
    metric: &str,
) -> PyResult<Vec<(String, f32)>> {
    guard(|| {
        let k = count("k", k)?;
        let metric = parse_metric(metric)?;
        let ids = ids_arg(ids)?;
        let q = read_vector(query, "query")?;
        let c = read_matrix(candidates, "candidates")?;
        let q = q.as_slice()?;
        let dim = q.len();
        check_rows(q, dim, dim, "query")?;
        let shape = c.shape().to_vec();
        if shape[0] != ids.len() {
            return Err(invalid(format!(
                "{} ids but {} candidate rows: give one row per id",
                ids.len(),
                shape[0]
            )));
        }
        let data = c.as_slice()?;
        check_rows(data, shape[1], dim, "candidates")?;
        py.detach(|| {
            let rows: Vec<Vec<f32>> = data.chunks_exact(dim).map(<[f32]>::to_vec).collect();
            let picked = rr::mmr(q, &rows, lambda_, k, metric)?;
            let mut query = q.to_vec();
            metric.prepare(&mut query, dim)?;
            picked
                .into_iter()
                .map(|i| {
                    let mut row = rows[i].clone();
                    metric.prepare(&mut row, dim)?;
                    Ok((ids[i].clone(), metric.score(&query, &row)))
                })
                .collect::<rr::Result<Vec<_>>>()
        })
        .map_err(retrieval_err)
    })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Hit>()?;
    m.add_class::<FlatIndex>()?;
    m.add_class::<HnswIndex>()?;
    m.add_class::<Bm25Index>()?;
    m.add_function(wrap_pyfunction!(alpha_fusion, m)?)?;
    m.add_function(wrap_pyfunction!(mmr, m)?)?;
    Ok(())
}
