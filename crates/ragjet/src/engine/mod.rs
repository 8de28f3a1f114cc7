//! [`Engine`]: documents in, ranked passages out.
//!
//! One object owns the embedding model, the vector and keyword indexes of
//! every namespace, the document table and the caches, and composes them:
//!
//! - **ingest**: documents are upserted by id; each is cut into chunks of
//!   the model's own tokens ([`crate::chunk`]), only chunks whose text the
//!   embedding cache does not hold are embedded, and the chunks replace
//!   the document's earlier ones in both indexes. Every mutation bumps the
//!   engine's version, which is part of every retrieval- and
//!   semantic-cache key, so no stale result is ever served.
//! - **query**: cleaning → caches → embedding → search → postprocessing
//!   (keyword rules, cutoff, MMR) → reranking → cache store, with the time
//!   of each stage in the answer.
//! - **save / open**: the whole state in one directory, switched atomically.
//!
//! `Engine` is `Send + Sync` and every method takes `&self`: queries run
//! concurrently under a read lock, an ingest computes its embeddings
//! without any lock and takes the write lock only to apply them.

mod answer;
mod controls;
mod ingest;
mod model;
mod persist;
mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use ragjet_cache::{
    AdaptiveTtl, CacheKind, DiskConfig, EmbeddingCache, MemoryConfig, RetrievalCache, Scope,
    SemanticCache, SemanticConfig, TieredCacheBuilder,
};
use ragjet_inference::{
    CrossEncoder, CrossEncoderOptions, Embedder, InferenceError, ScoreActivation,
};
use ragjet_retrieval::{
    AnyIndex, Bm25Index, Bm25Params, FlatConfig, HnswConfig, IndexSpec, Metric, VectorIndex,
    VectorStore,
};
use ragjet_telemetry::{CostTracker, LatencyRecorder, SloReport};

use crate::chunk::{Chunker, ChunkerConfig};
use crate::config::{EngineConfig, IndexKind};
use crate::error::{Error, Result};
use crate::query::{CleanOptions, Hyde, IntentPolicy, QueryProcessor, SynonymMap};
use crate::queue::{BatchQueue, Priority};
use model::ModelIdentity;
use persist::DocEntry;

pub use controls::reranker_loader;
pub(crate) use controls::variant_overrides;
pub use types::{
    Answer, CacheOutcome, Document, EngineHit, IngestOptions, IngestProgress, IngestReport,
    IngestStage, QueryOptions, SearchMode, StageTimings, VariantOptions, DEFAULT_NAMESPACE,
};

/// File name of the disk tier of the embedding cache in a store directory.
pub const EMBEDDING_CACHE_FILE: &str = "embeddings.redb";

/// Tenant of the embedding cache: shared by every engine on the same model
/// (the key holds the model's fingerprint and precision), so a new engine
/// or process reuses what an earlier one computed.
const EMBEDDING_TENANT: &str = "ragjet-engine";

/// The searchable state: one entry per namespace in each map.
#[derive(Default)]
struct State {
    store: VectorStore,
    bm25: BTreeMap<String, Bm25Index>,
    docs: BTreeMap<String, BTreeMap<String, DocEntry>>,
    /// Per namespace, the engine version of its last mutation: the
    /// version in its cache keys, so a change to one namespace leaves the
    /// others' cached results valid.
    versions: BTreeMap<String, u64>,
}

impl State {
    fn version_of(&self, ns: &str) -> u64 {
        self.versions.get(ns).copied().unwrap_or(0)
    }
}

/// Documents in, ranked passages out. See the [module docs](self).
///
/// ```no_run
/// use ragjet::{Document, Engine, QueryOptions};
///
/// # fn main() -> ragjet::Result<()> {
/// let engine = Engine::builder().build()?;
/// engine.ingest(vec![Document::new("a", "Rust is a systems language.")])?;
/// let answer = engine.query("what is rust?", &QueryOptions::new().top_k(3))?;
/// for hit in &answer.hits {
///     println!("{:.3} {} {}", hit.score, hit.doc_id, hit.text);
/// }
/// # Ok(()) }
/// ```
pub struct Engine {
    config: EngineConfig,
    model: ModelIdentity,
    embedder: Arc<Embedder>,
    /// The advice endpoint (`[control.autoscale]`); stopped first on drop.
    advice: Option<crate::control::AdviceServer>,
    /// In front of `embedder` when `queue.enabled` (shared with the advice
    /// endpoint, which reads its depth).
    embed_queue: Option<Arc<BatchQueue<String, Vec<f32>, InferenceError>>>,
    reranker: Option<Arc<CrossEncoder>>,
    /// The reranker's pool, instead of `reranker` (`[control.model_pool]`
    /// or [`EngineBuilder::model_pool`]).
    rerank_pool: Option<controls::PooledReranker>,
    /// In front of `reranker` when `queue.enabled`.
    rerank_queue: Option<BatchQueue<(String, String), f32, InferenceError>>,
    chunker: Chunker,
    state: RwLock<State>,
    /// Bumped on every mutation; part of every result-cache key.
    version: AtomicU64,
    /// Random per created engine (kept by save/open): keeps two engines'
    /// versions apart in a shared (Redis) retrieval cache.
    instance: u64,
    store_dir: Option<PathBuf>,
    embedding_cache: Option<EmbeddingCache>,
    /// The disk file of the embedding cache, when it has one.
    embedding_cache_file: Option<PathBuf>,
    retrieval_cache: Option<RetrievalCache>,
    semantic_cache: Option<SemanticCache<answer::CachedHits>>,
    /// Cleaning, synonyms and intent (HyDE is kept apart: it is per query).
    processor: QueryProcessor,
    hyde: Option<Hyde>,
    latency: Arc<LatencyRecorder>,
    cost: CostTracker,
    controls: controls::EngineControls,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.model)
            .field("store_dir", &self.store_dir)
            .field("version", &self.version())
            .field("chunks", &self.len())
            .finish_non_exhaustive()
    }
}

/// Configures and builds an [`Engine`]; every setting has a default, so
/// `Engine::builder().build()` works with the default model.
#[derive(Default)]
pub struct EngineBuilder {
    config: EngineConfig,
    store_dir: Option<PathBuf>,
    hyde: Option<Hyde>,
    redis_secret: Option<String>,
    router: Option<crate::control::Router>,
    experiment: Option<controls::EngineExperiment>,
    model_pool: Option<Arc<crate::control::ModelPool<CrossEncoder>>>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .field("store_dir", &self.store_dir)
            .field("hyde", &self.hyde.is_some())
            .field(
                "redis_secret",
                &self.redis_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("router", &self.router)
            .field("experiment", &self.experiment)
            .field("model_pool", &self.model_pool)
            .finish()
    }
}

impl EngineBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }
    /// Reads the configuration from a TOML file (see [`crate::config`]).
    pub fn config_file(mut self, path: impl AsRef<Path>) -> Result<Self> {
        self.config = EngineConfig::from_file(path)?;
        Ok(self)
    }
    /// Changes the configuration in place.
    pub fn configure(mut self, f: impl FnOnce(&mut EngineConfig)) -> Self {
        f(&mut self.config);
        self
    }
    /// The model folder (default: the bundled all-MiniLM-L6-v2).
    pub fn model_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.model.dir = Some(dir.into());
        self
    }
    /// Where the model runs.
    pub fn device(mut self, device: ragjet_inference::Device) -> Self {
        self.config.model.device = device.to_string();
        self
    }
    /// The model's floating-point format.
    pub fn precision(mut self, precision: ragjet_inference::Precision) -> Self {
        self.config.model.precision = Some(precision.to_string());
        self
    }
    /// Threads of the model (default: all cores).
    pub fn num_threads(mut self, n: usize) -> Self {
        self.config.model.num_threads = Some(n);
        self
    }
    /// Chunk size and overlap, in tokens.
    pub fn chunking(mut self, chunk_tokens: usize, overlap_tokens: usize) -> Self {
        self.config.chunking.chunk_tokens = chunk_tokens;
        self.config.chunking.overlap_tokens = overlap_tokens;
        self
    }
    /// The vector index kind.
    pub fn index(mut self, kind: IndexKind) -> Self {
        self.config.index.kind = kind;
        self
    }
    /// Keeps (or not) a BM25 keyword index.
    pub fn bm25(mut self, on: bool) -> Self {
        self.config.bm25.enabled = on;
        self
    }
    /// Turns the embedding cache on or off.
    pub fn embedding_cache(mut self, on: bool) -> Self {
        self.config.cache.embedding.enabled = on;
        self
    }
    /// Turns the retrieval cache on or off.
    pub fn retrieval_cache(mut self, on: bool) -> Self {
        self.config.cache.retrieval.enabled = on;
        self
    }
    /// Turns the semantic cache on with this similarity threshold, or off.
    pub fn semantic_cache(mut self, threshold: Option<f32>) -> Self {
        match threshold {
            Some(t) => {
                self.config.cache.semantic.enabled = true;
                self.config.cache.semantic.threshold = t;
            }
            None => self.config.cache.semantic.enabled = false,
        }
        self
    }
    /// Directory of the caches' disk tier (default: the store directory).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.cache.dir = Some(dir.into());
        self
    }
    /// A Redis server under the embedding and retrieval caches (feature
    /// `redis`).
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.config.cache.redis_url = Some(url.into());
        self
    }
    /// The deployment's Redis secret (at least 16 random bytes, the same on
    /// every replica); without it the one in the environment variable named
    /// by `cache.redis_secret_env` is used. Kept out of the configuration,
    /// so [`Engine::save`] never writes it.
    pub fn redis_secret(mut self, secret: impl Into<String>) -> Self {
        self.redis_secret = Some(secret.into());
        self
    }
    /// The engine's home: the embedding cache's disk tier lives there, and
    /// [`Engine::save`] without another directory writes there. `build`
    /// starts empty even if the directory holds a saved engine: use
    /// [`Engine::open`] or [`EngineBuilder::open`] to load it.
    pub fn store_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.store_dir = Some(dir.into());
        self
    }
    /// The cross-encoder folder used by queries that ask for reranking.
    pub fn reranker(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.rerank.model_dir = Some(dir.into());
        self
    }
    /// Synonyms added to keyword queries.
    pub fn synonyms(mut self, synonyms: BTreeMap<String, Vec<String>>) -> Self {
        self.config.query.synonyms = synonyms;
        self
    }
    /// A HyDE hook: queries embed the passage it writes instead of the
    /// query itself (unless [`QueryOptions::hyde`] says otherwise).
    pub fn hyde(mut self, hook: Hyde) -> Self {
        self.hyde = Some(hook);
        self
    }

    /// Routes every query with `router` (instead of `[control.routing]`):
    /// [`Answer::route`] names the model for the caller's LLM, and
    /// [`Engine::route_counts`] counts the decisions. A router built in
    /// code may carry rules (`Router::rule`), which a TOML file cannot.
    pub fn router(mut self, router: crate::control::Router) -> Self {
        self.router = Some(router);
        self
    }
    /// Runs `experiment` over the engine's queries (instead of
    /// `[control.experiment]`): a query with a [`QueryOptions::user`] runs
    /// with its variant's `options`, and its latency and cache outcome are
    /// recorded for that variant. Every variant of the experiment needs an
    /// entry (an empty [`VariantOptions`] changes nothing).
    pub fn experiment(
        mut self,
        experiment: Arc<crate::control::Experiment>,
        variants: impl IntoIterator<Item = (String, VariantOptions)>,
    ) -> Self {
        self.experiment = Some(controls::EngineExperiment {
            experiment,
            variants: variants.into_iter().collect(),
        });
        self
    }
    /// Takes the reranker (`rerank.model_dir`, the model's name in the
    /// pool) from `pool`, shared with whoever else holds it, instead of
    /// loading one for this engine. The pool's loader decides the
    /// reranker's options ([`reranker_loader`] loads folders).
    pub fn model_pool(mut self, pool: Arc<crate::control::ModelPool<CrossEncoder>>) -> Self {
        self.model_pool = Some(pool);
        self
    }
    /// Serves the autoscaling advice for this engine's signals on
    /// `GET /scale` at `addr` (`[control.autoscale]`; port 0 picks a free
    /// port, see [`Engine::advice_addr`]).
    pub fn advice_endpoint(mut self, addr: std::net::SocketAddr) -> Self {
        self.config.control.autoscale.enabled = true;
        self.config.control.autoscale.addr = addr.to_string();
        self
    }

    /// Builds an empty engine.
    pub fn build(self) -> Result<Engine> {
        Engine::create(self, None)
    }

    /// Opens the engine saved in `dir` with this builder's settings for
    /// everything that does not change stored data (device, threads,
    /// caches, reranker, hooks). The saved model must be the configured
    /// one, else [`Error::Config`] with key `model`: vectors of another
    /// model are meaningless to the saved index. `dir` becomes the store
    /// directory.
    pub fn open(mut self, dir: impl AsRef<Path>) -> Result<Engine> {
        let dir = dir.as_ref();
        let saved = persist::read(dir)?;
        self.store_dir = Some(dir.to_path_buf());
        Engine::create(self, Some(saved))
    }
}

impl Engine {
    /// A builder with default settings.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// Opens the engine saved in `dir` with the configuration saved with it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Engine> {
        let dir = dir.as_ref();
        let config = persist::read_config(dir)?;
        Engine::builder().config(config).open(dir)
    }

    /// Whether `dir` holds a saved engine.
    pub fn exists(dir: impl AsRef<Path>) -> bool {
        persist::exists(dir.as_ref())
    }

    fn create(builder: EngineBuilder, saved: Option<persist::Saved>) -> Result<Engine> {
        let EngineBuilder {
            config,
            store_dir,
            hyde,
            redis_secret,
            router,
            experiment,
            model_pool,
        } = builder;
        let redis = redis_settings(&config, redis_secret)?;
        config.validate()?;
        let (embedder, model) = model::load(&config.model)?;
        if let Some(saved) = &saved {
            if saved.model.fingerprint != model.fingerprint || saved.model.dim != model.dim {
                return Err(Error::config(
                    "model",
                    format!(
                        "the saved engine was built with model {:?} (fingerprint {}, {} dims), \
                         the configured model is {:?} (fingerprint {}, {} dims)",
                        saved.model.name,
                        saved.model.fingerprint,
                        saved.model.dim,
                        model.name,
                        model.fingerprint,
                        model.dim
                    ),
                ));
            }
        }
        let embedder = Arc::new(embedder);
        let rerank_pool =
            controls::pooled_reranker(&config, model_pool, || rerank_options(&config))?;
        let reranker = match rerank_pool {
            Some(_) => None,
            None => load_reranker(&config)?.map(Arc::new),
        };
        let (embed_queue, rerank_queue) = if config.queue.enabled {
            let eq = Arc::new(model::embedding_queue(
                Arc::clone(&embedder),
                model.name.clone(),
                &config.queue,
            )?);
            let rq = match &reranker {
                Some(r) => Some(crate::queue::rerank_queue(
                    Arc::clone(r),
                    model::queue_options("rerank", &config.queue),
                )?),
                None => None,
            };
            (Some(eq), rq)
        } else {
            (None, None)
        };
        let chunker = Chunker::new(chunker_config(&config, &embedder))?;
        let processor = query_processor(&config)?;

        let l2_dir = config.cache.dir.clone().or_else(|| store_dir.clone());
        let (embedding_cache, embedding_cache_file) = build_embedding_cache(
            &config,
            &model,
            embedder.precision(),
            l2_dir.as_deref(),
            redis.as_ref(),
        )?;
        let retrieval_cache = if config.cache.retrieval.enabled {
            let r = &config.cache.retrieval;
            let mut b = TieredCacheBuilder::new(CacheKind::Retrieval).memory(MemoryConfig {
                max_bytes: r.memory_bytes,
                ..MemoryConfig::default()
            });
            b = with_redis(b, redis.as_ref());
            Some(RetrievalCache::with_cache(
                b.build()?,
                AdaptiveTtl {
                    base: Duration::from_secs(r.ttl_seconds),
                    max: Duration::from_secs(r.max_ttl_seconds),
                },
            ))
        } else {
            None
        };
        let semantic_cache = if config.cache.semantic.enabled {
            let s = &config.cache.semantic;
            let mut sc = SemanticConfig::new(model.dim);
            sc.threshold = s.threshold;
            sc.ttl = s.ttl_seconds.map(Duration::from_secs);
            sc.max_entries_per_scope = s.max_entries;
            Some(SemanticCache::new(sc)?)
        } else {
            None
        };
        let latency = Arc::new(LatencyRecorder::new(Duration::from_secs(
            config.telemetry.window_seconds,
        ))?);
        let prices = config
            .telemetry
            .prices
            .iter()
            .map(|(k, p)| {
                (
                    k.clone(),
                    ragjet_telemetry::ModelPrice {
                        input_per_million: p.input_per_million,
                        output_per_million: p.output_per_million,
                    },
                )
            })
            .collect();
        let cost = CostTracker::new(
            prices,
            ragjet_telemetry::Budgets {
                daily_usd: config.telemetry.budgets.daily_usd,
                monthly_usd: config.telemetry.budgets.monthly_usd,
            },
        )?;

        let (mut state, version, instance) = match saved {
            Some(s) => (s.state, s.version, s.instance),
            None => (State::default(), 0, new_instance_id()),
        };
        sync_bm25(&mut state, &config)?;
        ensure_namespace(&mut state, &config, model.dim, DEFAULT_NAMESPACE)?;
        let controls = controls::EngineControls::new(&config.control, router, experiment)?;
        if let Some(e) = &controls.experiment {
            let names: Vec<String> = e
                .experiment
                .summary()
                .variants
                .into_iter()
                .map(|v| v.variant)
                .collect();
            if let Some(extra) = e.variants.keys().find(|k| !names.contains(k)) {
                return Err(Error::config(
                    "control.experiment.variants",
                    format!("options for {extra:?}, which is not a variant of the experiment"),
                ));
            }
            for name in &names {
                let Some(v) = e.variants.get(name) else {
                    return Err(Error::config(
                        "control.experiment.variants",
                        format!("variant {name:?} has no options"),
                    ));
                };
                if matches!(v.rerank_top_n, Some(Some(_)))
                    && reranker.is_none()
                    && rerank_pool.is_none()
                {
                    return Err(Error::config(
                        "rerank.model_dir",
                        format!("variant {name:?} reranks but no reranker is configured"),
                    ));
                }
            }
        }
        let advice = if config.control.autoscale.enabled {
            let a = &config.control.autoscale;
            let (latency, queue) = (
                Arc::downgrade(&latency),
                embed_queue.as_ref().map(Arc::downgrade),
            );
            let (replicas, concurrency) = (a.replicas, a.concurrency);
            Some(crate::control::AdviceServer::start(
                controls::advice_addr(&a.addr)?,
                a.policy.clone(),
                move || {
                    // `None` (503) once the engine is gone.
                    let latency = latency.upgrade()?;
                    let depth = queue
                        .as_ref()
                        .and_then(std::sync::Weak::upgrade)
                        .map_or(0, |q| controls::queue_depth(&q));
                    Some(controls::scale_signals(
                        &latency,
                        depth,
                        replicas,
                        concurrency,
                    ))
                },
            )?)
        } else {
            None
        };
        Ok(Engine {
            config,
            model,
            advice,
            embedder,
            embed_queue,
            reranker,
            rerank_pool,
            rerank_queue,
            chunker,
            state: RwLock::new(state),
            version: AtomicU64::new(version),
            instance,
            store_dir,
            embedding_cache,
            embedding_cache_file,
            retrieval_cache,
            semantic_cache,
            processor,
            hyde,
            latency,
            cost,
            controls,
        })
    }

    /// The circuit breaker in front of the model (`[control.breaker]`),
    /// for its state and for tests; `None` when it is off.
    pub fn circuit_breaker(&self) -> Option<&crate::control::CircuitBreaker> {
        self.controls.breaker.as_ref()
    }

    /// The router of `[control.routing]` (or [`EngineBuilder::router`]).
    pub fn router(&self) -> Option<&crate::control::Router> {
        self.controls.router.as_ref()
    }

    /// Routing decisions so far, per route name.
    pub fn route_counts(&self) -> BTreeMap<String, u64> {
        self.controls.route_counts()
    }

    /// The A/B experiment (for [`Experiment::summary`](crate::control::Experiment::summary)).
    pub fn experiment(&self) -> Option<&Arc<crate::control::Experiment>> {
        self.controls.experiment.as_ref().map(|e| &e.experiment)
    }

    /// Records a feedback score (0..=1, for example a thumbs-up as 1) from
    /// `user` for the variant they are assigned; returns the variant.
    /// Errors: no experiment ([`Error::Config`]), a score out of range.
    pub fn record_feedback(&self, user: &str, score: f64) -> Result<String> {
        let Some(e) = &self.controls.experiment else {
            return Err(Error::config(
                "control.experiment.enabled",
                "feedback needs an A/B experiment",
            ));
        };
        let variant = e.experiment.assign(user)?;
        e.experiment.record_feedback(&variant, score)?;
        Ok(variant)
    }

    /// The pool the reranker comes from, when it does.
    pub fn model_pool(&self) -> Option<&Arc<crate::control::ModelPool<CrossEncoder>>> {
        self.rerank_pool.as_ref().map(|p| &p.shared.pool)
    }

    /// This replica's signals for the autoscaling advice, over the latency
    /// window: queue depth (the model queues' waiting items), p95 latency,
    /// utilisation (queries in the engine over
    /// `control.autoscale.concurrency`, by Little's law), error rate
    /// (failed or refused queries), with `control.autoscale.replicas`.
    pub fn scale_signals(&self) -> crate::control::ScaleSignals {
        let a = &self.config.control.autoscale;
        let depth = self.embed_queue.as_deref().map_or(0, controls::queue_depth)
            + self.rerank_queue.as_ref().map_or(0, controls::queue_depth);
        controls::scale_signals(&self.latency, depth, a.replicas, a.concurrency)
    }

    /// The advice for [`Engine::scale_signals`] under
    /// `control.autoscale.policy`.
    pub fn scale_advice(&self) -> Result<crate::control::ScaleDecision> {
        Ok(crate::control::advise(
            &self.scale_signals(),
            &self.config.control.autoscale.policy,
        )?)
    }

    /// Where the advice endpoint listens (`[control.autoscale]`).
    pub fn advice_addr(&self) -> Option<std::net::SocketAddr> {
        self.advice
            .as_ref()
            .map(crate::control::AdviceServer::local_addr)
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The embedding model (shared with the engine; embedding through it
    /// directly does not touch the engine's state).
    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.embedder
    }

    /// The model's name, as on metrics.
    pub fn model_name(&self) -> &str {
        &self.model.name
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.model.dim
    }

    /// The store directory, if the engine has one.
    pub fn store_dir(&self) -> Option<&Path> {
        self.store_dir.as_deref()
    }

    /// The version: bumped by every ingest or delete that changed something
    /// (in any namespace). Cached results of a namespace are keyed on the
    /// version of its own last change.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Chunks in all namespaces.
    pub fn len(&self) -> usize {
        let st = self.read();
        st.store
            .namespaces()
            .iter()
            .filter_map(|ns| st.store.namespace(ns).ok())
            .map(VectorIndex::len)
            .sum()
    }

    /// Whether no namespace holds a chunk.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Documents in `namespace` (0 for an unknown namespace).
    pub fn num_documents(&self, namespace: &str) -> usize {
        self.read().docs.get(namespace).map_or(0, BTreeMap::len)
    }

    /// Chunks in `namespace` (0 for an unknown namespace).
    pub fn num_chunks(&self, namespace: &str) -> usize {
        self.read()
            .store
            .namespace(namespace)
            .map_or(0, VectorIndex::len)
    }

    /// Namespace names, sorted.
    pub fn namespaces(&self) -> Vec<String> {
        self.read()
            .store
            .namespaces()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// Ids of the documents of `namespace`, sorted.
    pub fn document_ids(&self, namespace: &str) -> Vec<String> {
        self.read()
            .docs
            .get(namespace)
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the index of `namespace` is HNSW (else exact).
    pub fn is_hnsw(&self, namespace: &str) -> bool {
        matches!(
            self.read().store.namespace(namespace),
            Ok(AnyIndex::Hnsw(_))
        )
    }

    /// The SLO report over the latency window of this engine's queries.
    pub fn slo_report(&self) -> SloReport {
        SloReport::evaluate(
            &self.latency.snapshot(),
            &self.config.telemetry.slo.targets(),
        )
    }

    /// The cost tracker: embedding tokens are charged to the model's price
    /// when `telemetry.prices` has one; budgets alert through it.
    pub fn cost_tracker(&self) -> &CostTracker {
        &self.cost
    }

    /// Saves the whole state into `dir` (see [`Engine::open`]): the
    /// indexes, BM25, the document table and the configuration are written
    /// as a new generation and switched to atomically, so a crash leaves
    /// the previous or the new state, never a mix. The embedding cache's
    /// vectors of every chunk go into `dir`'s embedding cache too, so a
    /// later re-ingest from `dir` embeds nothing it already had.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let _span = ragjet_telemetry::spans::index_update("*", "save", self.len()).entered();
        let st = self.read();
        persist::write(
            dir,
            &persist::SaveView {
                config: &self.config,
                model: &self.model,
                version: self.version(),
                instance: self.instance,
                store: &st.store,
                bm25: &st.bm25,
                docs: &st.docs,
                versions: &st.versions,
            },
        )?;
        self.copy_embeddings(&st, dir)
    }

    /// Records a mutation of `ns` (called under the write lock).
    fn bump(&self, st: &mut State, ns: &str) {
        let v = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        st.versions.insert(ns.to_string(), v);
    }

    fn chunker_config(&self) -> ChunkerConfig {
        self.chunker.config()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // The state is only changed by code that cannot panic half-way
        // through a mutation it has not validated, so a poisoned lock still
        // guards a consistent state.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Embeds through the model, via the queue when there is one.
    fn embed_raw(
        &self,
        texts: &[&str],
        priority: Priority,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Vec<Vec<f32>>> {
        let vectors = match &self.embed_queue {
            None => model::embed(&self.embedder, &self.model.name, texts, progress)?,
            Some(q) if texts.len() == 1 => vec![q.submit(texts[0].to_string(), priority)?],
            Some(q) => {
                // Bulk work has no deadline (an ingest should not fail
                // because queries kept the model busy); it is queued in
                // slices of two batches, so the worker always has the next
                // batch waiting and the queue's capacity is not exceeded.
                let cfg = &self.config.queue;
                let slice = (2 * cfg.max_batch_items).min(cfg.capacity).max(1);
                let timeout = match priority {
                    Priority::Bulk => None,
                    Priority::Interactive => cfg.timeout_ms.map(Duration::from_millis),
                };
                let mut out = Vec::with_capacity(texts.len());
                for part in texts.chunks(slice) {
                    let tickets: Vec<_> = part
                        .iter()
                        .map(|t| q.submit_async_with(t.to_string(), priority, timeout))
                        .collect();
                    for t in tickets {
                        out.push(model::block_on(t)?);
                    }
                    progress(out.len(), texts.len());
                }
                out
            }
        };
        self.charge(texts);
        Ok(vectors)
    }

    /// Whether queries may ask for reranking.
    fn has_reranker(&self) -> bool {
        self.reranker.is_some() || self.rerank_pool.is_some()
    }

    /// The reranker for one call: the engine's own, or one borrowed from
    /// the pool (loaded again if the pool unloaded it).
    fn reranker(&self) -> Result<Option<controls::RerankerRef<'_>>> {
        if let Some(r) = &self.reranker {
            return Ok(Some(controls::RerankerRef::Own(r)));
        }
        match &self.rerank_pool {
            Some(p) => Ok(Some(controls::RerankerRef::Pooled(
                p.shared.pool.get(&p.model)?,
            ))),
            None => Ok(None),
        }
    }

    /// The reranker's name on spans.
    fn reranker_name(&self) -> String {
        if let Some(p) = &self.rerank_pool {
            return std::path::Path::new(&p.model)
                .file_name()
                .map_or_else(|| p.model.clone(), |n| n.to_string_lossy().into_owned());
        }
        self.reranker
            .as_ref()
            .and_then(|r| r.model_dir().file_name())
            .map_or_else(|| "reranker".into(), |n| n.to_string_lossy().into_owned())
    }

    /// Scores passages with the cross-encoder; the best `top_n` as
    /// (index into `passages`, score).
    fn rerank_passages(
        &self,
        reranker: &CrossEncoder,
        query: &str,
        passages: &[&str],
        top_n: usize,
    ) -> Result<Vec<(usize, f32)>> {
        if passages.is_empty() {
            return Ok(Vec::new());
        }
        let Some(q) = &self.rerank_queue else {
            return Ok(reranker.rerank(query, passages, top_n)?);
        };
        let pairs = passages
            .iter()
            .map(|p| (query.to_string(), p.to_string()))
            .collect();
        let mut ranked = Vec::with_capacity(passages.len());
        for (i, r) in q
            .submit_many(pairs, Priority::Interactive)
            .into_iter()
            .enumerate()
        {
            ranked.push((i, r?));
        }
        // As CrossEncoder::rerank orders: best first, ties in input order.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(top_n);
        Ok(ranked)
    }

    /// Adds embedding tokens to the cost tracker when the model has a price.
    fn charge(&self, texts: &[&str]) {
        if self.config.telemetry.prices.contains_key(&self.model.name) {
            let tokens: usize = texts
                .iter()
                .map(|t| self.embedder.count_tokens(t).unwrap_or(0))
                .sum();
            if let Err(e) = self.cost.record(&self.model.name, tokens as u64, 0) {
                tracing::warn!(error = %e, "embedding cost not recorded");
            }
        }
    }

    /// Writes the vector of every chunk into `dir`'s embedding cache, unless
    /// that is this engine's own cache file (already up to date).
    fn copy_embeddings(&self, st: &State, dir: &Path) -> Result<()> {
        if !self.config.cache.embedding.enabled || !self.config.cache.embedding.disk {
            return Ok(());
        }
        let target = dir.join(EMBEDDING_CACHE_FILE);
        persist::refuse_link(&target)?;
        if let Some(own) = &self.embedding_cache_file {
            if same_file(own, &target) {
                return Ok(());
            }
        }
        let cache = EmbeddingCache::with_cache(
            TieredCacheBuilder::new(CacheKind::Embedding)
                .disk(disk_config(&self.config, &target))
                .default_ttl(
                    self.config
                        .cache
                        .embedding
                        .ttl_seconds
                        .map(Duration::from_secs),
                )
                .build()?,
            self.model.name.clone(),
            self.model.cache_revision(self.embedder.precision()),
        );
        let scope = Scope::tenant(EMBEDDING_TENANT);
        for ns in st.store.namespaces() {
            let idx = st.store.namespace(ns)?;
            let ids = idx.ids_matching(None)?;
            for batch in ids.chunks(512) {
                let (batch, texts): (Vec<&str>, Vec<&str>) = batch
                    .iter()
                    .filter_map(|id| idx.get(id).map(|r| (id.as_str(), r.text)))
                    .unzip();
                let vectors = answer::chunk_vectors(self, idx, &batch, &texts, Priority::Bulk)?;
                let items: Vec<_> = texts
                    .iter()
                    .zip(vectors)
                    .map(|(t, v)| (cache.key(&scope, t), v))
                    .collect();
                // One transaction per batch: a disk commit per vector would
                // cost an fsync each.
                cache.cache().put_many(&items)?;
            }
        }
        Ok(())
    }
}

/// The chunk size in force: the configured one, capped so that a chunk
/// plus `[CLS]` and `[SEP]` fits the model (a longer chunk would lose its
/// tail when embedded).
fn chunker_config(cfg: &EngineConfig, embedder: &Embedder) -> ChunkerConfig {
    let fits = embedder.max_seq_length().saturating_sub(2).max(1);
    let mut chunk_tokens = cfg.chunking.chunk_tokens;
    if chunk_tokens > fits {
        tracing::info!(
            configured = chunk_tokens,
            used = fits,
            "chunking.chunk_tokens capped at the model's max_seq_length - 2"
        );
        chunk_tokens = fits;
    }
    ChunkerConfig {
        chunk_tokens,
        overlap_tokens: cfg.chunking.overlap_tokens.min(chunk_tokens - 1),
    }
}

fn query_processor(cfg: &EngineConfig) -> Result<QueryProcessor> {
    let q = &cfg.query;
    let cleaning = q.clean.then_some(CleanOptions {
        nfkc: true,
        lowercase: q.lowercase,
        strip_punctuation: q.strip_punctuation,
    });
    let synonyms = if q.synonyms.is_empty() {
        None
    } else {
        let map = q
            .synonyms
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some(SynonymMap::new(map).map_err(|e| Error::config("query.synonyms", e.to_string()))?)
    };
    Ok(QueryProcessor::default()
        .with_cleaning(cleaning)
        .with_synonyms(synonyms)
        .with_intent(q.intent.then(IntentPolicy::default)))
}

fn load_reranker(cfg: &EngineConfig) -> Result<Option<CrossEncoder>> {
    let Some(dir) = &cfg.rerank.model_dir else {
        return Ok(None);
    };
    Ok(Some(CrossEncoder::load_with(dir, rerank_options(cfg)?)?))
}

/// The cross-encoder's options from `[rerank]` and `[model]`.
fn rerank_options(cfg: &EngineConfig) -> Result<CrossEncoderOptions> {
    let device = cfg
        .model
        .device
        .parse()
        .map_err(|e: ragjet_inference::InferenceError| {
            Error::config("model.device", e.to_string())
        })?;
    let precision = match &cfg.model.precision {
        Some(p) => Some(p.parse().map_err(|e: ragjet_inference::InferenceError| {
            Error::config("model.precision", e.to_string())
        })?),
        None => None,
    };
    let activation = match cfg.rerank.activation.as_deref() {
        Some("sigmoid") => Some(ScoreActivation::Sigmoid),
        Some("identity") => Some(ScoreActivation::Identity),
        Some(other) => {
            return Err(Error::config(
                "rerank.activation",
                format!("{other:?}: expected \"sigmoid\" or \"identity\""),
            ))
        }
        None => None,
    };
    Ok(CrossEncoderOptions {
        num_threads: cfg.model.num_threads,
        max_length: cfg.rerank.max_length,
        activation,
        device,
        precision,
        ..CrossEncoderOptions::default()
    })
}

fn check_namespace(ns: &str) -> Result<()> {
    if ns.is_empty() {
        return Err(Error::invalid("namespace name is empty"));
    }
    Ok(())
}

/// Makes the BM25 indexes match `bm25.enabled`: an engine saved without
/// them and opened with them gets them rebuilt from the chunk texts the
/// vector index keeps; opened without, they are dropped.
fn sync_bm25(st: &mut State, cfg: &EngineConfig) -> Result<()> {
    if !cfg.bm25.enabled {
        st.bm25.clear();
        return Ok(());
    }
    let params = Bm25Params {
        k1: cfg.bm25.k1,
        b: cfg.bm25.b,
    };
    for ns in st.store.namespaces() {
        if st.bm25.contains_key(ns) {
            continue;
        }
        let idx = st.store.namespace(ns)?;
        let mut b = Bm25Index::new(params)?;
        for id in idx.ids_matching(None)? {
            if let Some(rec) = idx.get(&id) {
                b.upsert(&id, rec.text)?;
            }
        }
        st.bm25.insert(ns.to_string(), b);
    }
    Ok(())
}

/// Creates `ns` (index, BM25, document table) when it does not exist.
fn ensure_namespace(st: &mut State, cfg: &EngineConfig, dim: usize, ns: &str) -> Result<()> {
    if st.store.namespace(ns).is_err() {
        let spec = match cfg.index.kind {
            IndexKind::Hnsw => IndexSpec::Hnsw(HnswConfig {
                m: cfg.index.hnsw_m,
                ef_construction: cfg.index.hnsw_ef_construction,
                ef_search: cfg.index.hnsw_ef_search,
                ..HnswConfig::new(dim, Metric::Cosine)
            }),
            IndexKind::Auto | IndexKind::Flat => {
                IndexSpec::Flat(FlatConfig::new(dim, Metric::Cosine))
            }
        };
        st.store.create_namespace(ns, spec)?;
    }
    if cfg.bm25.enabled && !st.bm25.contains_key(ns) {
        st.bm25.insert(
            ns.to_string(),
            Bm25Index::new(Bm25Params {
                k1: cfg.bm25.k1,
                b: cfg.bm25.b,
            })?,
        );
    }
    st.docs.entry(ns.to_string()).or_default();
    Ok(())
}

fn disk_config(cfg: &EngineConfig, path: &Path) -> DiskConfig {
    DiskConfig {
        max_bytes: cfg.cache.embedding.disk_bytes,
        ..DiskConfig::new(path)
    }
}

fn build_embedding_cache(
    cfg: &EngineConfig,
    model: &ModelIdentity,
    precision: ragjet_inference::Precision,
    l2_dir: Option<&Path>,
    redis: Option<&RedisSettings>,
) -> Result<(Option<EmbeddingCache>, Option<PathBuf>)> {
    let e = &cfg.cache.embedding;
    if !e.enabled {
        return Ok((None, None));
    }
    let memory = MemoryConfig {
        max_bytes: e.memory_bytes,
        ..MemoryConfig::default()
    };
    let ttl = e.ttl_seconds.map(Duration::from_secs);
    let make = |file: Option<&Path>| -> Result<ragjet_cache::TieredCache> {
        let mut b = TieredCacheBuilder::new(CacheKind::Embedding)
            .memory(memory.clone())
            .default_ttl(ttl);
        if let Some(f) = file {
            persist::refuse_link(f)?;
            b = b.disk(disk_config(cfg, f));
        }
        b = with_redis(b, redis);
        Ok(b.build()?)
    };
    let file = match l2_dir {
        Some(d) if e.disk => {
            std::fs::create_dir_all(d).map_err(|err| Error::storage(d, err))?;
            Some(d.join(EMBEDDING_CACHE_FILE))
        }
        _ => None,
    };
    let (cache, file) = match make(file.as_deref()) {
        Ok(c) => (c, file),
        // Another engine of this process may hold the file (a notebook
        // re-running a cell before the old engine is dropped): work from
        // memory rather than refuse to start.
        Err(err) if file.is_some() => {
            tracing::warn!(error = %err, "embedding cache disk tier unavailable; using memory only");
            (make(None)?, None)
        }
        Err(err) => return Err(err),
    };
    Ok((
        Some(EmbeddingCache::with_cache(
            cache,
            model.name.clone(),
            model.cache_revision(precision),
        )),
        file,
    ))
}

/// The Redis tier's settings, when `cache.redis_url` is set: the MAC key
/// comes from the builder's secret, else from the environment variable
/// `cache.redis_secret_env` names.
#[cfg(feature = "redis")]
fn redis_settings(
    cfg: &EngineConfig,
    secret: Option<String>,
) -> Result<Option<ragjet_cache::RedisConfig>> {
    let Some(url) = &cfg.cache.redis_url else {
        return Ok(None);
    };
    let env = &cfg.cache.redis_secret_env;
    let secret = match secret.or_else(|| std::env::var(env).ok()) {
        Some(s) => s,
        None => {
            return Err(Error::config(
                "cache.redis_secret_env",
                format!(
                    "a Redis cache needs the deployment's secret: set {env} (or call \
                     EngineBuilder::redis_secret) to at least 16 random bytes"
                ),
            ))
        }
    };
    let key = ragjet_cache::RedisConfig::mac_key_from_secret(&secret)
        .map_err(|e| Error::config("cache.redis_secret_env", e.to_string()))?;
    Ok(Some(ragjet_cache::RedisConfig::new(url.clone(), key)))
}

#[cfg(feature = "redis")]
type RedisSettings = ragjet_cache::RedisConfig;

#[cfg(feature = "redis")]
fn with_redis(b: TieredCacheBuilder, redis: Option<&RedisSettings>) -> TieredCacheBuilder {
    match redis {
        Some(r) => b.redis(r.clone()),
        None => b,
    }
}

/// Without the `redis` feature there is no Redis tier; a configured URL was
/// refused by [`EngineConfig::validate`].
#[cfg(not(feature = "redis"))]
type RedisSettings = ();

#[cfg(not(feature = "redis"))]
fn redis_settings(cfg: &EngineConfig, _secret: Option<String>) -> Result<Option<RedisSettings>> {
    match &cfg.cache.redis_url {
        Some(_) => Err(Error::config(
            "cache.redis_url",
            "this build of ragjet has no Redis support (feature `redis`)",
        )),
        None => Ok(None),
    }
}

#[cfg(not(feature = "redis"))]
fn with_redis(b: TieredCacheBuilder, _redis: Option<&RedisSettings>) -> TieredCacheBuilder {
    b
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (
        a.parent().map(std::fs::canonicalize),
        b.parent().map(std::fs::canonicalize),
    ) {
        (Some(Ok(pa)), Some(Ok(pb))) => pa == pb && a.file_name() == b.file_name(),
        _ => a == b,
    }
}

fn new_instance_id() -> u64 {
    let mut h = blake3::Hasher::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url() -> EngineConfig {
        let mut c = EngineConfig::default();
        c.cache.redis_url = Some("redis://127.0.0.1:6379/0".into());
        // A variable no environment sets.
        c.cache.redis_secret_env = "RAGJET_TEST_SECRET_THAT_IS_NEVER_SET".into();
        c
    }

    #[test]
    fn no_redis_url_no_redis_tier() {
        assert!(redis_settings(&EngineConfig::default(), None)
            .unwrap()
            .is_none());
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_redis_tier_needs_a_long_enough_secret() {
        let err = redis_settings(&with_url(), None).unwrap_err();
        assert!(
            matches!(err, Error::Config { ref key, .. } if key == "cache.redis_secret_env"),
            "{err}"
        );
        let err = redis_settings(&with_url(), Some("short".into())).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        let r = redis_settings(&with_url(), Some("0123456789abcdef0123".into()))
            .unwrap()
            .expect("a Redis tier");
        assert_eq!(r.url, "redis://127.0.0.1:6379/0");
        assert_ne!(r.mac_key, [0u8; 32]);
    }

    #[cfg(not(feature = "redis"))]
    #[test]
    fn a_redis_url_without_the_feature_is_refused() {
        let err = redis_settings(&with_url(), Some("0123456789abcdef0123".into())).unwrap_err();
        assert!(
            matches!(err, Error::Config { ref key, .. } if key == "cache.redis_url"),
            "{err}"
        );
    }
}
