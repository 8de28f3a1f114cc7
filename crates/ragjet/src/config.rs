//! The engine's settings, as one TOML file or in code.
//!
//! Every table and key is optional; what is left out takes the default
//! shown below. A key the engine does not know is an error naming its
//! dotted path, so a typo (`thresold`) cannot silently leave a default in
//! place. The layout mirrors the production profile: cache policies per
//! cache type, SLO targets and spending budgets.
//!
//! ```toml
//! [model]
//! # dir = "/models/all-MiniLM-L6-v2"  # default: ragjet_inference::locate_default_model()
//! device = "auto"                      # auto | cpu | cuda | cuda:N
//! # precision = "f32"                  # f32 | f16 | bf16 | int8 (opt-in, CPU); default: the device's
//! max_batch_tokens = 16384
//!
//! [chunking]
//! chunk_tokens = 256                   # capped at the model's max_seq_length - 2
//! overlap_tokens = 32
//!
//! [index]
//! kind = "auto"                        # auto | flat | hnsw
//! hnsw_threshold = 20000               # auto: flat below this many chunks, then HNSW
//!
//! [bm25]
//! enabled = true
//!
//! [cache.embedding]
//! enabled = true                       # memory tier, plus a disk tier in the store dir
//! ttl_seconds = 86400
//!
//! [cache.retrieval]
//! enabled = true
//! ttl_seconds = 3600                   # grows with hits up to max_ttl_seconds
//! max_ttl_seconds = 21600
//!
//! [cache.semantic]
//! enabled = false
//! threshold = 0.95
//!
//! [telemetry.slo]
//! p50_ms = 200
//! p95_ms = 500
//! p99_ms = 1000
//!
//! [control.rate_limit]                 # per namespace (tenant); off by default
//! enabled = false
//! queries_per_second = 50.0
//! query_burst = 100.0
//!
//! [control.breaker]                    # in front of the model; off by default
//! enabled = false
//! consecutive_failures = 5
//!
//! [control.retry]                      # ingest embedding on overload
//! max_attempts = 3
//!
//! [control.routing]                    # per-query model choice; off by default
//! enabled = false
//!
//! [control.experiment]                 # A/B variants of query options; off
//! enabled = false
//!
//! [control.model_pool]                 # rerankers shared between engines; off
//! enabled = false
//!
//! [control.autoscale]                  # GET /scale with the engine's signals; off
//! enabled = false
//! addr = "127.0.0.1:9465"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// All settings of an [`Engine`](crate::Engine).
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::{EngineConfig, ErrorKind, IndexKind};
///
/// let config = EngineConfig::from_toml_str(
///     r#"
///     [index]
///     kind = "hnsw"
///     hnsw_m = 32
///
///     [chunking]
///     chunk_tokens = 128
///     "#,
/// )?;
/// assert_eq!(config.index.kind, IndexKind::Hnsw);
/// assert_eq!(config.index.hnsw_m, 32);
/// assert_eq!(config.index.hnsw_ef_search, 64); // everything left out keeps its default
/// config.validate()?;
/// // Written back in full, it reads back the same.
/// assert_eq!(EngineConfig::from_toml_str(&config.to_toml_string()?)?, config);
///
/// // A typo is an error naming the key, never a silently ignored setting.
/// let err = EngineConfig::from_toml_str("[index]\nhnsw_mm = 32").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Config);
/// assert!(err.to_string().contains("hnsw_mm"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// The embedding model and where it runs.
    pub model: ModelConfig,
    /// How documents are cut into chunks.
    pub chunking: ChunkingConfig,
    /// The vector index.
    pub index: IndexConfig,
    /// The keyword index.
    pub bm25: Bm25Config,
    /// Embedding, retrieval and semantic caches.
    pub cache: CacheConfig,
    /// Query handling defaults.
    pub query: QueryConfig,
    /// The cross-encoder reranker.
    pub rerank: RerankConfig,
    /// The micro-batching queue in front of the shared model.
    pub queue: QueueConfig,
    /// SLO targets and budgets the engine reports against.
    pub telemetry: TelemetrySettings,
    /// Rate limits, circuit breaker, retries, model routing, an A/B
    /// experiment, a shared model pool and autoscaling advice.
    pub control: ControlConfig,
}

/// `[model]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Model folder (sentence-transformers layout); `None` finds the
    /// default model with `ragjet_inference::locate_default_model`.
    pub dir: Option<PathBuf>,
    /// Name on metrics and spans; default: the folder's name (or
    /// `all-MiniLM-L6-v2` for the default model).
    pub name: Option<String>,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// `f32`, `f16` or `bf16`; `None`: the device's default.
    pub precision: Option<String>,
    /// Threads for tokenisation and the forward pass; `None`: all cores.
    pub num_threads: Option<usize>,
    /// Most texts in one forward pass.
    pub max_batch_size: usize,
    /// Most tokens in one forward pass.
    pub max_batch_tokens: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            dir: None,
            name: None,
            device: "auto".into(),
            precision: None,
            num_threads: None,
            max_batch_size: 32,
            max_batch_tokens: 16384,
        }
    }
}

/// `[chunking]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkingConfig {
    /// Most tokens of the engine's tokenizer in one chunk. Capped at the
    /// model's `max_seq_length` minus its two special tokens, so no chunk is
    /// ever truncated by the model.
    pub chunk_tokens: usize,
    /// Tokens shared by consecutive chunks of one document.
    pub overlap_tokens: usize,
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        Self {
            chunk_tokens: 256,
            overlap_tokens: 32,
        }
    }
}

/// Which vector index a namespace uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// Exact search below `hnsw_threshold` chunks, HNSW from there on (the
    /// switch happens during the ingest that crosses the threshold, and
    /// never back).
    #[default]
    Auto,
    /// Always exact search.
    Flat,
    /// Always HNSW.
    Hnsw,
}

/// `[index]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// `auto`, `flat` or `hnsw`.
    pub kind: IndexKind,
    /// With `auto`: chunks in a namespace above which it moves to HNSW.
    /// Below ~20k chunks an exact scan answers in about a millisecond and
    /// is always right; above it the graph is clearly faster.
    pub hnsw_threshold: usize,
    /// HNSW links per node.
    pub hnsw_m: usize,
    /// HNSW candidate list while building.
    pub hnsw_ef_construction: usize,
    /// HNSW candidate list while searching.
    pub hnsw_ef_search: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            kind: IndexKind::Auto,
            hnsw_threshold: 20_000,
            hnsw_m: 16,
            hnsw_ef_construction: 200,
            hnsw_ef_search: 64,
        }
    }
}

/// `[bm25]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bm25Config {
    /// Keep a keyword index (needed by `keyword` and `hybrid` queries).
    pub enabled: bool,
    /// Term-frequency saturation.
    pub k1: f32,
    /// Length normalisation.
    pub b: f32,
}

impl Default for Bm25Config {
    fn default() -> Self {
        Self {
            enabled: true,
            k1: 1.2,
            b: 0.75,
        }
    }
}

/// `[cache]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Directory of the disk tier (L2); default: the engine's store
    /// directory. Without either, the caches live in memory only.
    pub dir: Option<PathBuf>,
    /// A Redis server (L3) shared by replicas, under the embedding and
    /// retrieval caches (needs the `redis` feature).
    pub redis_url: Option<String>,
    /// Environment variable holding the deployment's Redis secret (at
    /// least 16 random bytes, the same on every replica), from which the
    /// key authenticating every cached value is derived. The secret itself
    /// never goes into this file; `EngineBuilder::redis_secret` sets it in
    /// code instead.
    pub redis_secret_env: String,
    /// `[cache.embedding]`
    pub embedding: EmbeddingCacheConfig,
    /// `[cache.retrieval]`
    pub retrieval: RetrievalCacheConfig,
    /// `[cache.semantic]`
    pub semantic: SemanticCacheConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            dir: None,
            redis_url: None,
            redis_secret_env: "RAGJET_REDIS_SECRET".into(),
            embedding: EmbeddingCacheConfig::default(),
            retrieval: RetrievalCacheConfig::default(),
            semantic: SemanticCacheConfig::default(),
        }
    }
}

/// `[cache.embedding]`: vectors per (model, text); only new text is embedded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingCacheConfig {
    /// Use the cache.
    pub enabled: bool,
    /// Bound of the memory tier.
    pub memory_bytes: u64,
    /// Keep a disk tier when a directory is known.
    pub disk: bool,
    /// Bound of the disk tier.
    pub disk_bytes: u64,
    /// Lifetime of an entry; `None`: until evicted.
    pub ttl_seconds: Option<u64>,
}

impl Default for EmbeddingCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            memory_bytes: 64 << 20,
            disk: true,
            disk_bytes: 1 << 30,
            ttl_seconds: Some(86_400),
        }
    }
}

/// `[cache.retrieval]`: results per (query, options, filters, index version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalCacheConfig {
    /// Use the cache.
    pub enabled: bool,
    /// Bound of the memory tier.
    pub memory_bytes: u64,
    /// Lifetime of a fresh entry.
    pub ttl_seconds: u64,
    /// Longest lifetime a popular entry reaches.
    pub max_ttl_seconds: u64,
}

impl Default for RetrievalCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            memory_bytes: 64 << 20,
            ttl_seconds: 3600,
            max_ttl_seconds: 6 * 3600,
        }
    }
}

/// `[cache.semantic]`: results of earlier queries whose embedding is
/// within `threshold` cosine of the new one. Off by default: a paraphrase
/// answered from the cache is a (small) change of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SemanticCacheConfig {
    /// Use the cache.
    pub enabled: bool,
    /// Lowest cosine similarity of a hit, in (-1, 1].
    pub threshold: f32,
    /// Lifetime of an entry; `None`: until evicted.
    pub ttl_seconds: Option<u64>,
    /// Most entries kept per namespace and option set.
    pub max_entries: usize,
}

impl Default for SemanticCacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: 0.95,
            ttl_seconds: Some(3600),
            max_entries: 10_000,
        }
    }
}

/// `[query]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Largest `top_k` (and rerank `top_n`) a query may ask for.
    pub max_top_k: usize,
    /// Candidates fetched per hit kept when a later stage (MMR, reranking,
    /// keyword rules, a cutoff) may drop or reorder hits.
    pub candidate_factor: usize,
    /// Clean queries before caching and search: Unicode NFKC and single
    /// spaces (off: only trimmed).
    pub clean: bool,
    /// Cleaning also lowercases (harmless for uncased models such as
    /// all-MiniLM-L6-v2, and more cache hits).
    pub lowercase: bool,
    /// Cleaning also replaces punctuation by spaces, except inside words
    /// and numbers ("node.js", "C#", "1,000").
    pub strip_punctuation: bool,
    /// Choose `top_k` and the search mode from the query's intent
    /// (factual, comparison, procedural, exploratory) when the caller
    /// does not set them.
    pub intent: bool,
    /// Synonyms added to keyword queries: a term maps to its alternatives.
    pub synonyms: BTreeMap<String, Vec<String>>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            max_top_k: 1000,
            candidate_factor: 4,
            clean: true,
            lowercase: false,
            strip_punctuation: false,
            intent: false,
            synonyms: BTreeMap::new(),
        }
    }
}

/// `[rerank]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RerankConfig {
    /// Folder of a cross-encoder (`BertForSequenceClassification`); without
    /// one, queries asking for reranking are refused.
    pub model_dir: Option<PathBuf>,
    /// `sigmoid` (scores in 0..1, comparable across queries) or `identity`
    /// (raw logits); `None`: what the model folder says.
    pub activation: Option<String>,
    /// Token limit of a (query, passage) pair; `None`: the model's.
    pub max_length: Option<usize>,
}

/// `[queue]`: one model instance serves every caller; concurrent
/// embedding and reranking requests are coalesced into shared batches
/// ([`crate::queue`]), queries before ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Go through the queue (off: every caller runs the model itself).
    pub enabled: bool,
    /// Longest the oldest request of a batch waits for others to join.
    pub max_wait_ms: u64,
    /// Most texts in one batch.
    pub max_batch_items: usize,
    /// Most tokens in one batch.
    pub max_batch_tokens: usize,
    /// Requests waiting at most, per priority; one more is refused at once
    /// as overloaded.
    pub capacity: usize,
    /// Longest a query waits for its embedding, queueing included, before
    /// it fails as overloaded; `None`: no deadline. Ingest has none.
    pub timeout_ms: Option<u64>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_wait_ms: 0,
            max_batch_items: 64,
            max_batch_tokens: 16384,
            capacity: 4096,
            timeout_ms: Some(30_000),
        }
    }
}

/// `[telemetry]`: what the engine's reports are judged against. The
/// engine emits metrics through the `metrics` facade and spans through
/// `tracing`; installing a recorder and exporters is the application's
/// job (`ragjet::telemetry::Telemetry::init`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// Length of the sliding latency window behind [`Engine::slo_report`](crate::Engine::slo_report).
    pub window_seconds: u64,
    /// `[telemetry.slo]`
    pub slo: SloConfig,
    /// `[telemetry.budgets]`
    pub budgets: BudgetConfig,
    /// `[telemetry.prices.<model>]`: price per million tokens, for the
    /// engine's cost tracker (embedding tokens are charged as input).
    pub prices: BTreeMap<String, PriceConfig>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            window_seconds: 300,
            slo: SloConfig::default(),
            budgets: BudgetConfig::default(),
            prices: BTreeMap::new(),
        }
    }
}

/// `[telemetry.slo]`, ragjet's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SloConfig {
    /// Median latency target.
    pub p50_ms: u64,
    /// 95th percentile target.
    pub p95_ms: u64,
    /// 99th percentile target.
    pub p99_ms: u64,
    /// Highest share of failed queries.
    pub max_error_rate: f64,
    /// Lowest share of served queries.
    pub availability: f64,
}

impl Default for SloConfig {
    fn default() -> Self {
        let d = ragjet_telemetry::SloTargets::default();
        Self {
            p50_ms: d.p50.as_millis() as u64,
            p95_ms: d.p95.as_millis() as u64,
            p99_ms: d.p99.as_millis() as u64,
            max_error_rate: d.max_error_rate,
            availability: d.availability,
        }
    }
}

impl SloConfig {
    /// As the telemetry crate's targets.
    pub fn targets(&self) -> ragjet_telemetry::SloTargets {
        ragjet_telemetry::SloTargets {
            p50: Duration::from_millis(self.p50_ms),
            p95: Duration::from_millis(self.p95_ms),
            p99: Duration::from_millis(self.p99_ms),
            max_error_rate: self.max_error_rate,
            availability: self.availability,
        }
    }
}

/// `[telemetry.budgets]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Daily spending budget in USD.
    pub daily_usd: Option<f64>,
    /// Monthly spending budget in USD.
    pub monthly_usd: Option<f64>,
}

/// `[telemetry.prices.<model>]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// USD per million input tokens.
    pub input_per_million: f64,
    /// USD per million output tokens.
    #[serde(default)]
    pub output_per_million: f64,
}

/// `[control]`: production controls in front of the engine
/// ([`crate::control`], `docs/controls.md`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// `[control.rate_limit]`
    pub rate_limit: RateLimitConfig,
    /// `[control.breaker]`
    pub breaker: BreakerSettings,
    /// `[control.retry]`
    pub retry: RetrySettings,
    /// `[control.routing]`
    pub routing: RoutingSettings,
    /// `[control.experiment]`
    pub experiment: ExperimentSettings,
    /// `[control.model_pool]`
    pub model_pool: ModelPoolSettings,
    /// `[control.autoscale]`
    pub autoscale: AutoscaleSettings,
}

/// `[control.routing]`: a [`Router`](crate::control::Router) over
/// `routes` picks, per query, the model the caller's LLM should answer
/// with; the decision is in [`Answer::route`](crate::Answer::route) and
/// counted per route ([`Engine::route_counts`](crate::Engine::route_counts)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSettings {
    /// Route every query.
    pub enabled: bool,
    /// Tokens at which a query's length alone counts as fully complex.
    pub long_tokens: usize,
    /// The routes, `[[control.routing.routes]]` (at least one when enabled).
    pub routes: Vec<RouteSettings>,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            long_tokens: 512,
            routes: Vec::new(),
        }
    }
}

/// `[[control.routing.routes]]`: one model a query can be routed to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Route name (the `route` label).
    pub name: String,
    /// Model identifier handed to the caller.
    pub model: String,
    /// Highest complexity score (0..=1) this model is trusted with.
    pub max_complexity: f64,
    /// Price, USD per 1k tokens: the cheapest fitting route wins.
    #[serde(default)]
    pub cost_per_1k_tokens: f64,
    /// Typical p95 latency in milliseconds.
    #[serde(default)]
    pub p95_latency_ms: f64,
}

/// `[control.experiment]`: an A/B [`Experiment`](crate::control::Experiment)
/// over the engine's own query options. A query naming a user
/// ([`QueryOptions::user`](crate::QueryOptions::user)) runs with its
/// variant's options; latency and cache hits are recorded per variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentSettings {
    /// Assign users and apply their variant's options.
    pub enabled: bool,
    /// The experiment's name (part of the assignment hash: renaming it
    /// reshuffles users).
    pub name: String,
    /// Append-only log of first assignments (JSON lines); `None`: no log.
    pub log_path: Option<PathBuf>,
    /// The variants, `[[control.experiment.variants]]`; the first is the
    /// control (at least two when enabled).
    pub variants: Vec<VariantSettings>,
}

impl Default for ExperimentSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            name: "engine".into(),
            log_path: None,
            variants: Vec::new(),
        }
    }
}

/// `[[control.experiment.variants]]`: a variant and the query options it
/// sets (unset ones keep the caller's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSettings {
    /// Variant name.
    pub name: String,
    /// Share of users, relative to the other variants' weights.
    #[serde(default = "one")]
    pub weight: u32,
    /// Hits wanted.
    pub top_k: Option<usize>,
    /// `vector`, `keyword` or `hybrid`.
    pub mode: Option<String>,
    /// Vector weight of `hybrid` (default 0.5).
    pub alpha: Option<f32>,
    /// Rerank and keep this many; 0 turns reranking off.
    pub rerank_top_n: Option<usize>,
    /// MMR lambda.
    pub mmr: Option<f32>,
}

fn one() -> u32 {
    1
}

/// `[control.model_pool]`: the reranker is taken from a
/// [`ModelPool`](crate::control::ModelPool) shared by every engine of the
/// process that names the same pool, instead of each loading its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelPoolSettings {
    /// Share rerankers through the pool.
    pub enabled: bool,
    /// The pool's name: engines naming the same pool share it.
    pub name: String,
    /// Most models loaded at once.
    pub max_models: usize,
    /// Most bytes of model weights loaded at once.
    pub max_bytes: u64,
    /// A model unused this long is unloaded.
    pub idle_ttl_seconds: u64,
    /// How often idle models are looked for; 0: never in the background.
    pub cleanup_seconds: u64,
}

impl Default for ModelPoolSettings {
    fn default() -> Self {
        let d = crate::control::PoolConfig::default();
        Self {
            enabled: false,
            name: "default".into(),
            max_models: d.max_models,
            max_bytes: d.max_bytes,
            idle_ttl_seconds: d.idle_ttl.as_secs(),
            cleanup_seconds: 60,
        }
    }
}

/// `[control.autoscale]`: the engine's own signals (queue depth, p95
/// latency, utilisation, error rate) fed to the autoscaling advice, served
/// on `GET /scale` at `addr`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoscaleSettings {
    /// Serve the advice endpoint.
    pub enabled: bool,
    /// Where (port 0 picks a free one; loopback by default).
    pub addr: String,
    /// Replicas the deployment runs, reported with this one's signals.
    pub replicas: u32,
    /// Requests this replica serves at once at full utilisation.
    pub concurrency: f64,
    /// `[control.autoscale.policy]`: thresholds of the advice.
    pub policy: crate::control::ScalePolicy,
}

impl Default for AutoscaleSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            addr: crate::control::DEFAULT_ADVICE_ADDR.into(),
            replicas: 1,
            concurrency: 1.0,
            policy: crate::control::ScalePolicy::default(),
        }
    }
}

/// `[control.rate_limit]`: token buckets per namespace (the tenant), one
/// token per call. A refused call is `Error::Overloaded` with
/// [`Refusal::RateLimited`](crate::Refusal::RateLimited).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Limit calls.
    pub enabled: bool,
    /// Queries per second per namespace.
    pub queries_per_second: f64,
    /// Queries a namespace may send at once after idling.
    pub query_burst: f64,
    /// Ingest calls per second per namespace.
    pub ingests_per_second: f64,
    /// Ingest calls at once after idling.
    pub ingest_burst: f64,
    /// Longest a call waits for a token; 0: refused at once.
    pub max_wait_ms: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            queries_per_second: 50.0,
            query_burst: 100.0,
            ingests_per_second: 5.0,
            ingest_burst: 10.0,
            max_wait_ms: 0,
        }
    }
}

/// `[control.breaker]`: one circuit breaker in front of the engine's model
/// for queries and ingests. Failures are model, device, overload and
/// storage errors; bad input says nothing of the model's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Use the breaker.
    pub enabled: bool,
    /// Failures in a row that open it.
    pub consecutive_failures: u32,
    /// Failed share over the window that opens it.
    pub failure_rate: f64,
    /// Window of the failure rate.
    pub window_seconds: u64,
    /// Calls in the window before the rate is judged.
    pub min_requests: u32,
    /// Time open before probing.
    pub open_seconds: u64,
    /// Probes at once when half-open, and successes that close it.
    pub half_open_probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        let d = crate::control::BreakerConfig::default();
        Self {
            enabled: false,
            consecutive_failures: d.consecutive_failures,
            failure_rate: d.failure_rate,
            window_seconds: d.window.as_secs(),
            min_requests: d.min_requests,
            open_seconds: d.open_for.as_secs(),
            half_open_probes: d.half_open_probes,
        }
    }
}

impl BreakerSettings {
    /// As the breaker's own settings.
    pub fn breaker_config(&self) -> crate::control::BreakerConfig {
        crate::control::BreakerConfig {
            consecutive_failures: self.consecutive_failures,
            failure_rate: self.failure_rate,
            window: Duration::from_secs(self.window_seconds),
            min_requests: self.min_requests,
            open_for: Duration::from_secs(self.open_seconds),
            half_open_probes: self.half_open_probes,
        }
    }
}

/// `[control.retry]`: retries of an ingest's embedding when the model's
/// queue is full (the only transient failure there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts in all; 1: no retry.
    pub max_attempts: u32,
    /// Back-off cap of the first retry.
    pub base_delay_ms: u64,
    /// Largest back-off cap.
    pub max_delay_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay_ms: 100,
            max_delay_ms: 5000,
        }
    }
}

impl EngineConfig {
    /// Parses a TOML document. An unknown key, a value of the wrong type or
    /// out of range is [`Error::Config`] naming the key's dotted path.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let de = toml::de::Deserializer::parse(text)
            .map_err(|e| Error::config("", format!("not valid TOML: {e}")))?;
        let cfg: EngineConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut key = e.path().to_string();
            let message = e.inner().message().to_string();
            if let Some(field) = unknown_field(&message) {
                // The path may or may not already end at the unknown key.
                let already = key == field || key.ends_with(&format!(".{field}"));
                if key == "." || key.is_empty() {
                    key = field.to_string();
                } else if !already {
                    key = format!("{key}.{field}");
                }
            }
            if key == "." {
                key.clear();
            }
            Error::config(key, message.trim().to_string())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::storage(path, e))?;
        Self::from_toml_str(&text)
    }

    /// The configuration as TOML (every key written, defaults included).
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::config("", e.to_string()))
    }

    /// Checks every value's range; the error names the first bad key.
    pub fn validate(&self) -> Result<()> {
        let positive = |key: &str, v: usize| {
            if v == 0 {
                Err(Error::config(key, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        self.model
            .device
            .parse::<ragjet_inference::Device>()
            .map_err(|e| Error::config("model.device", e.to_string()))?;
        if let Some(p) = &self.model.precision {
            p.parse::<ragjet_inference::Precision>()
                .map_err(|e| Error::config("model.precision", e.to_string()))?;
        }
        if self.model.num_threads == Some(0) {
            return Err(Error::config("model.num_threads", "must be at least 1"));
        }
        positive("model.max_batch_size", self.model.max_batch_size)?;
        positive("model.max_batch_tokens", self.model.max_batch_tokens)?;
        positive("chunking.chunk_tokens", self.chunking.chunk_tokens)?;
        if self.chunking.overlap_tokens >= self.chunking.chunk_tokens {
            return Err(Error::config(
                "chunking.overlap_tokens",
                format!(
                    "{} must be smaller than chunking.chunk_tokens ({})",
                    self.chunking.overlap_tokens, self.chunking.chunk_tokens
                ),
            ));
        }
        positive("index.hnsw_threshold", self.index.hnsw_threshold)?;
        if !(2..=256).contains(&self.index.hnsw_m) {
            return Err(Error::config("index.hnsw_m", "must be within 2..=256"));
        }
        positive(
            "index.hnsw_ef_construction",
            self.index.hnsw_ef_construction,
        )?;
        positive("index.hnsw_ef_search", self.index.hnsw_ef_search)?;
        if !(self.bm25.k1.is_finite() && self.bm25.k1 >= 0.0) {
            return Err(Error::config("bm25.k1", "must be finite and >= 0"));
        }
        if !(0.0..=1.0).contains(&self.bm25.b) {
            return Err(Error::config("bm25.b", "must be within 0..=1"));
        }
        let s = &self.cache.semantic;
        if !(s.threshold > -1.0 && s.threshold <= 1.0) {
            return Err(Error::config(
                "cache.semantic.threshold",
                format!("{} is outside (-1, 1]", s.threshold),
            ));
        }
        positive("cache.semantic.max_entries", s.max_entries)?;
        if self.cache.embedding.enabled && self.cache.embedding.memory_bytes == 0 {
            return Err(Error::config(
                "cache.embedding.memory_bytes",
                "must be at least 1",
            ));
        }
        let r = &self.cache.retrieval;
        if r.enabled {
            if r.memory_bytes == 0 {
                return Err(Error::config(
                    "cache.retrieval.memory_bytes",
                    "must be at least 1",
                ));
            }
            if r.ttl_seconds == 0 {
                return Err(Error::config(
                    "cache.retrieval.ttl_seconds",
                    "must be at least 1",
                ));
            }
            if r.max_ttl_seconds < r.ttl_seconds {
                return Err(Error::config(
                    "cache.retrieval.max_ttl_seconds",
                    "must be at least cache.retrieval.ttl_seconds",
                ));
            }
        }
        if let Some(url) = &self.cache.redis_url {
            if !cfg!(feature = "redis") {
                return Err(Error::config(
                    "cache.redis_url",
                    "this build of ragjet has no Redis support (feature `redis`)",
                ));
            }
            if url.is_empty() {
                return Err(Error::config("cache.redis_url", "is empty"));
            }
        }
        if let Some(a) = &self.rerank.activation {
            if !matches!(a.as_str(), "sigmoid" | "identity") {
                return Err(Error::config(
                    "rerank.activation",
                    format!("{a:?}: expected \"sigmoid\" or \"identity\""),
                ));
            }
        }
        if self.rerank.max_length == Some(0) {
            return Err(Error::config("rerank.max_length", "must be at least 1"));
        }
        positive("query.max_top_k", self.query.max_top_k)?;
        positive("query.candidate_factor", self.query.candidate_factor)?;
        for (term, alts) in &self.query.synonyms {
            if term.trim().is_empty() || alts.iter().any(|a| a.trim().is_empty()) {
                return Err(Error::config(
                    format!("query.synonyms.{term}"),
                    "terms and synonyms must not be empty",
                ));
            }
        }
        positive("queue.max_batch_items", self.queue.max_batch_items)?;
        positive("queue.max_batch_tokens", self.queue.max_batch_tokens)?;
        positive("queue.capacity", self.queue.capacity)?;
        if self.queue.timeout_ms == Some(0) {
            return Err(Error::config("queue.timeout_ms", "must be at least 1"));
        }
        let t = &self.telemetry;
        if t.window_seconds == 0 {
            return Err(Error::config(
                "telemetry.window_seconds",
                "must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&t.slo.max_error_rate) {
            return Err(Error::config(
                "telemetry.slo.max_error_rate",
                "must be within 0..=1",
            ));
        }
        if !(0.0..=1.0).contains(&t.slo.availability) {
            return Err(Error::config(
                "telemetry.slo.availability",
                "must be within 0..=1",
            ));
        }
        for (key, v) in [
            ("telemetry.budgets.daily_usd", t.budgets.daily_usd),
            ("telemetry.budgets.monthly_usd", t.budgets.monthly_usd),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::config(key, "must be finite and positive"));
                }
            }
        }
        for (model, p) in &t.prices {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !ok(p.input_per_million) || !ok(p.output_per_million) {
                return Err(Error::config(
                    format!("telemetry.prices.{model}"),
                    "prices must be finite and non-negative",
                ));
            }
        }
        let c = &self.control;
        if c.rate_limit.enabled {
            for (key, v, min) in [
                (
                    "control.rate_limit.queries_per_second",
                    c.rate_limit.queries_per_second,
                    0.0,
                ),
                (
                    "control.rate_limit.ingests_per_second",
                    c.rate_limit.ingests_per_second,
                    0.0,
                ),
            ] {
                if !(v.is_finite() && v > min) {
                    return Err(Error::config(key, "must be finite and > 0"));
                }
            }
            for (key, v) in [
                ("control.rate_limit.query_burst", c.rate_limit.query_burst),
                ("control.rate_limit.ingest_burst", c.rate_limit.ingest_burst),
            ] {
                if !(v.is_finite() && v >= 1.0) {
                    return Err(Error::config(key, "must be finite and >= 1"));
                }
            }
        }
        if c.breaker.enabled {
            let b = &c.breaker;
            if b.consecutive_failures == 0 {
                return Err(Error::config(
                    "control.breaker.consecutive_failures",
                    "must be at least 1",
                ));
            }
            if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
                return Err(Error::config(
                    "control.breaker.failure_rate",
                    "must be within (0, 1]",
                ));
            }
            for (key, v) in [
                ("control.breaker.window_seconds", b.window_seconds),
                ("control.breaker.min_requests", b.min_requests as u64),
                (
                    "control.breaker.half_open_probes",
                    b.half_open_probes as u64,
                ),
            ] {
                if v == 0 {
                    return Err(Error::config(key, "must be at least 1"));
                }
            }
        }
        if c.retry.max_attempts == 0 {
            return Err(Error::config(
                "control.retry.max_attempts",
                "must be at least 1",
            ));
        }
        if c.retry.base_delay_ms > c.retry.max_delay_ms {
            return Err(Error::config(
                "control.retry.base_delay_ms",
                "must not exceed control.retry.max_delay_ms",
            ));
        }
        if c.routing.enabled && c.routing.routes.is_empty() {
            return Err(Error::config(
                "control.routing.routes",
                "routing needs at least one route",
            ));
        }
        if c.experiment.enabled {
            if c.experiment.variants.len() < 2 {
                return Err(Error::config(
                    "control.experiment.variants",
                    "an experiment needs at least two variants",
                ));
            }
            for v in &c.experiment.variants {
                crate::engine::variant_overrides(v)?;
            }
        }
        if c.model_pool.enabled {
            let p = &c.model_pool;
            if p.max_models == 0 || p.max_bytes == 0 {
                return Err(Error::config(
                    "control.model_pool.max_models",
                    "max_models and max_bytes must be at least 1",
                ));
            }
        }
        if c.autoscale.enabled {
            let a = &c.autoscale;
            if a.addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(Error::config(
                    "control.autoscale.addr",
                    format!("{:?} is not an address such as 127.0.0.1:9465", a.addr),
                ));
            }
            if a.replicas == 0 {
                return Err(Error::config(
                    "control.autoscale.replicas",
                    "must be at least 1",
                ));
            }
            if !(a.concurrency.is_finite() && a.concurrency > 0.0) {
                return Err(Error::config(
                    "control.autoscale.concurrency",
                    "must be finite and > 0",
                ));
            }
            a.policy
                .validate()
                .map_err(|e| Error::config("control.autoscale.policy", e.to_string()))?;
        }
        Ok(())
    }
}

/// The field name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.split("unknown field `").nth(1)?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(
            EngineConfig::from_toml_str("").unwrap(),
            EngineConfig::default()
        );
    }

    #[test]
    fn round_trips_through_toml() {
        let mut c = EngineConfig::default();
        c.cache.semantic.enabled = true;
        c.cache.semantic.threshold = 0.9;
        c.index.kind = IndexKind::Hnsw;
        c.query
            .synonyms
            .insert("k8s".into(), vec!["kubernetes".into()]);
        c.telemetry.prices.insert(
            "m".into(),
            PriceConfig {
                input_per_million: 0.02,
                output_per_million: 0.0,
            },
        );
        let text = c.to_toml_string().unwrap();
        assert_eq!(EngineConfig::from_toml_str(&text).unwrap(), c);
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let err = EngineConfig::from_toml_str("[cache.semantic]\nthresold = 0.9\n").unwrap_err();
        match err {
            Error::Config { key, message } => {
                assert_eq!(key, "cache.semantic.thresold", "{message}");
                assert!(message.contains("thresold"), "{message}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        let err = EngineConfig::from_toml_str("colour = 1\n").unwrap_err();
        assert!(
            matches!(err, Error::Config { ref key, .. } if key == "colour"),
            "{err}"
        );
        let err = EngineConfig::from_toml_str("[telemetry.slo]\np42_ms = 1\n").unwrap_err();
        assert!(
            matches!(err, Error::Config { ref key, .. } if key == "telemetry.slo.p42_ms"),
            "{err}"
        );
    }

    #[test]
    fn wrong_types_and_ranges_name_the_key() {
        let err = EngineConfig::from_toml_str("[chunking]\nchunk_tokens = \"big\"\n").unwrap_err();
        assert!(
            matches!(err, Error::Config { ref key, .. } if key == "chunking.chunk_tokens"),
            "{err}"
        );
        let err = EngineConfig::from_toml_str("[cache.semantic]\nthreshold = 1.5\n").unwrap_err();
        assert!(
            matches!(err, Error::Config { ref key, .. } if key == "cache.semantic.threshold"),
            "{err}"
        );
        let err = EngineConfig::from_toml_str("[model]\ndevice = \"tpu\"\n").unwrap_err();
        assert!(
            matches!(err, Error::Config { ref key, .. } if key == "model.device"),
            "{err}"
        );
        let err = EngineConfig::from_toml_str("[index]\nkind = \"ivf\"\n").unwrap_err();
        assert!(
            matches!(err, Error::Config { ref key, .. } if key == "index.kind"),
            "{err}"
        );
        let err = EngineConfig::from_toml_str("[chunking]\nchunk_tokens = 8\noverlap_tokens = 8\n")
            .unwrap_err();
        assert!(
            matches!(err, Error::Config { ref key, .. } if key == "chunking.overlap_tokens"),
            "{err}"
        );
        let err = EngineConfig::from_toml_str("not toml [").unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
    }

    #[test]
    fn control_keys_parse_and_are_checked() {
        let c = EngineConfig::from_toml_str(
            "[control.rate_limit]\nenabled = true\nqueries_per_second = 2.5\n\
             [control.breaker]\nenabled = true\nopen_seconds = 5\n\
             [control.retry]\nmax_attempts = 5\n",
        )
        .unwrap();
        assert!(c.control.rate_limit.enabled);
        assert_eq!(c.control.rate_limit.queries_per_second, 2.5);
        assert_eq!(
            c.control.breaker.breaker_config().open_for,
            Duration::from_secs(5)
        );
        assert_eq!(c.control.retry.max_attempts, 5);
        for (text, key) in [
            (
                "[control.breaker]\nconsecutive_failure = 3\n",
                "control.breaker.consecutive_failure",
            ),
            ("[control]\nretries = 3\n", "control.retries"),
            (
                "[control.rate_limit]\nenabled = true\nquery_burst = 0.5\n",
                "control.rate_limit.query_burst",
            ),
            (
                "[control.breaker]\nenabled = true\nfailure_rate = 2.0\n",
                "control.breaker.failure_rate",
            ),
            (
                "[control.retry]\nmax_attempts = 0\n",
                "control.retry.max_attempts",
            ),
        ] {
            let err = EngineConfig::from_toml_str(text).unwrap_err();
            assert!(
                matches!(err, Error::Config { key: ref k, .. } if k == key),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn redis_url_needs_the_feature() {
        let r = EngineConfig::from_toml_str("[cache]\nredis_url = \"redis://127.0.0.1\"\n");
        if cfg!(feature = "redis") {
            r.unwrap();
        } else {
            let err = r.unwrap_err();
            assert!(
                matches!(err, Error::Config { ref key, .. } if key == "cache.redis_url"),
                "{err}"
            );
        }
    }
}
