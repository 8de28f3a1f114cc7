//! The metric catalogue: every metric ragjet exports, with its type, labels,
//! unit, help text and histogram buckets, in one place.
//!
//! The names are `pub const` so recording code never spells one by hand;
//! [`catalogue`] is the data the Prometheus recorder is configured from
//! (help text, buckets) and that `docs/metrics.md` is generated from
//! ([`catalogue_markdown`]), so the documentation cannot drift from the code.
//!
//! The recording helpers at the bottom ([`record_query`],
//! [`record_embedding_batch`], ...) go through the `metrics` facade: they
//! cost a few atomic operations when a recorder is installed and nothing
//! when none is.
//!
//! # Examples
//!
//! ```
//! use ragjet_telemetry::metrics::{self, MetricKind, QUERY_DURATION_SECONDS};
//!
//! let def = metrics::find(QUERY_DURATION_SECONDS).expect("catalogued");
//! assert_eq!(def.kind, MetricKind::Histogram);
//! assert_eq!(def.kind.as_str(), "histogram");
//! assert_eq!(def.labels, &["status"]);
//! assert!(!def.buckets.is_empty());
//! // Every metric of every feature is documented, even where this build lacks it.
//! assert!(metrics::full_catalogue().count() >= metrics::catalogue().count());
//! assert!(metrics::catalogue_markdown().contains(QUERY_DURATION_SECONDS));
//! assert!(metrics::find("not_a_metric").is_none());
//! ```

use ::metrics::{counter, gauge, histogram, Unit};
use serde::Serialize;
use std::time::Duration;

/// `ragjet_queries_total{status}`: queries answered, by outcome.
pub const QUERIES_TOTAL: &str = "ragjet_queries_total";
/// `ragjet_query_duration_seconds{status}`: end-to-end query latency.
pub const QUERY_DURATION_SECONDS: &str = "ragjet_query_duration_seconds";
/// `ragjet_embedding_batches_total{model}`: embedding batches run.
pub const EMBEDDING_BATCHES_TOTAL: &str = "ragjet_embedding_batches_total";
/// `ragjet_embedding_batch_size{model}`: texts per embedding batch.
pub const EMBEDDING_BATCH_SIZE: &str = "ragjet_embedding_batch_size";
/// `ragjet_embedding_tokens_total{model}`: tokens fed to embedding models.
pub const EMBEDDING_TOKENS_TOTAL: &str = "ragjet_embedding_tokens_total";
/// `ragjet_embedding_batch_token_limit{device}`: the token budget of one
/// forward pass that the embedder's adaptive batching uses (recorded by
/// ragjet-inference).
pub const EMBEDDING_BATCH_TOKEN_LIMIT: &str = "ragjet_embedding_batch_token_limit";
/// `ragjet_queue_depth{queue,priority}`: items waiting in a micro-batching
/// queue (recorded by `ragjet::queue`).
pub const QUEUE_DEPTH: &str = "ragjet_queue_depth";
/// `ragjet_queue_wait_seconds{queue,priority}`: time from submission to the
/// start of the item's batch.
pub const QUEUE_WAIT_SECONDS: &str = "ragjet_queue_wait_seconds";
/// `ragjet_queue_batch_size{queue}`: items per batch a queue's worker ran.
pub const QUEUE_BATCH_SIZE: &str = "ragjet_queue_batch_size";
/// `ragjet_queue_rejected_total{queue,reason}`: items shed (`full|expired`).
pub const QUEUE_REJECTED_TOTAL: &str = "ragjet_queue_rejected_total";
/// `ragjet_tokens_total{model,direction}`: generation tokens in and out.
pub const TOKENS_TOTAL: &str = "ragjet_tokens_total";
/// `ragjet_index_size{namespace}`: vectors held by an index.
pub const INDEX_SIZE: &str = "ragjet_index_size";
/// `ragjet_index_operations_total{namespace,kind}`: index operations.
pub const INDEX_OPERATIONS_TOTAL: &str = "ragjet_index_operations_total";
/// `ragjet_cache_requests_total{cache,tier,result}`: cache look-ups.
pub const CACHE_REQUESTS_TOTAL: &str = "ragjet_cache_requests_total";
/// `ragjet_cache_evictions_total{cache,tier}`: entries evicted.
pub const CACHE_EVICTIONS_TOTAL: &str = "ragjet_cache_evictions_total";
/// `ragjet_cache_bytes{cache,tier}`: bytes held by a cache tier.
pub const CACHE_BYTES: &str = "ragjet_cache_bytes";
/// `ragjet_cache_rejected_total{cache,tier,reason}`: stored entries refused
/// on read (each also counted as a miss).
pub const CACHE_REJECTED_TOTAL: &str = "ragjet_cache_rejected_total";
/// `ragjet_cache_damaged_files_total{cache,tier}`: cache files found
/// damaged on open, moved aside and replaced by an empty one.
pub const CACHE_DAMAGED_FILES_TOTAL: &str = "ragjet_cache_damaged_files_total";
/// `ragjet_span_duration_seconds{span,status}`: duration of named
/// pipeline steps reported from outside Rust (the Python binding's
/// `Telemetry.record_span`, LlamaIndex span handlers).
pub const SPAN_DURATION_SECONDS: &str = "ragjet_span_duration_seconds";
/// `ragjet_feedback_score`: user feedback, normalised to 0..=1.
pub const FEEDBACK_SCORE: &str = "ragjet_feedback_score";
/// `ragjet_cost_microdollars_total{model}`: estimated spend in millionths
/// of a US dollar.
pub const COST_MICRODOLLARS_TOTAL: &str = "ragjet_cost_microdollars_total";
/// `process_resident_memory_bytes`: resident set size, read at scrape time.
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
/// `process_virtual_memory_bytes`: virtual memory size, read at scrape time.
pub const PROCESS_VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
/// `process_cpu_seconds_total`: user + system CPU time, read at scrape time.
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
/// `process_open_fds`: open file descriptors, read at scrape time.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// `process_max_fds`: soft limit on open file descriptors, read at scrape time.
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
/// `process_start_time_seconds`: process start, seconds since the epoch.
pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";
/// `process_threads`: OS threads of the process, read at scrape time.
pub const PROCESS_THREADS: &str = "process_threads";
/// `ragjet_gpu_memory_used_bytes{device}` (feature `cuda` only).
#[cfg(feature = "cuda")]
pub const GPU_MEMORY_USED_BYTES: &str = "ragjet_gpu_memory_used_bytes";
/// `ragjet_gpu_memory_total_bytes{device}` (feature `cuda` only).
#[cfg(feature = "cuda")]
pub const GPU_MEMORY_TOTAL_BYTES: &str = "ragjet_gpu_memory_total_bytes";

/// `ragjet_rate_limited_total{limiter}`: calls a rate limiter refused.
pub const RATE_LIMITED_TOTAL: &str = "ragjet_rate_limited_total";
/// `ragjet_circuit_state{breaker}`: 0 closed, 1 half-open, 2 open.
pub const CIRCUIT_STATE: &str = "ragjet_circuit_state";
/// `ragjet_circuit_rejected_total{breaker}`: calls an open breaker refused.
pub const CIRCUIT_REJECTED_TOTAL: &str = "ragjet_circuit_rejected_total";
/// `ragjet_retries_total{operation}`: attempts after the first.
pub const RETRIES_TOTAL: &str = "ragjet_retries_total";
/// `ragjet_dead_letters_total{store}`: items that failed every retry.
pub const DEAD_LETTERS_TOTAL: &str = "ragjet_dead_letters_total";
/// `ragjet_dead_letters_pending{store}`: dead letters not yet re-driven.
pub const DEAD_LETTERS_PENDING: &str = "ragjet_dead_letters_pending";
/// `ragjet_dead_letters_redriven_total{store}`: dead letters re-driven.
pub const DEAD_LETTERS_REDRIVEN_TOTAL: &str = "ragjet_dead_letters_redriven_total";
/// `ragjet_route_decisions_total{router,route,reason}`: routing decisions.
pub const ROUTE_DECISIONS_TOTAL: &str = "ragjet_route_decisions_total";
/// `ragjet_ab_assignments_total{experiment,variant}`: A/B assignments.
pub const AB_ASSIGNMENTS_TOTAL: &str = "ragjet_ab_assignments_total";
/// `ragjet_ab_latency_seconds{experiment,variant}`: latency per variant.
pub const AB_LATENCY_SECONDS: &str = "ragjet_ab_latency_seconds";
/// `ragjet_ab_cache_requests_total{experiment,variant,result}`.
pub const AB_CACHE_REQUESTS_TOTAL: &str = "ragjet_ab_cache_requests_total";
/// `ragjet_ab_feedback_score{experiment,variant}`: feedback per variant.
pub const AB_FEEDBACK_SCORE: &str = "ragjet_ab_feedback_score";
/// `ragjet_pool_active_requests{pool,model}`: callers using a pooled model.
pub const POOL_ACTIVE_REQUESTS: &str = "ragjet_pool_active_requests";
/// `ragjet_pool_queue_size{pool,model}`: callers waiting for a model to load.
pub const POOL_QUEUE_SIZE: &str = "ragjet_pool_queue_size";
/// `ragjet_pool_loaded_bytes{pool}`: declared memory of the loaded models.
pub const POOL_LOADED_BYTES: &str = "ragjet_pool_loaded_bytes";
/// `ragjet_pool_evictions_total{pool,reason}`: models unloaded.
pub const POOL_EVICTIONS_TOTAL: &str = "ragjet_pool_evictions_total";

/// Label keys used across the catalogue.
pub mod labels {
    /// Query outcome: `ok` or `error`.
    pub const STATUS: &str = "status";
    /// Name of a pipeline step (`retrieve`, `synthesize`, `llm`, ...).
    pub const SPAN: &str = "span";
    /// Model identifier as configured (e.g. `all-MiniLM-L6-v2`).
    pub const MODEL: &str = "model";
    /// Token direction: `in` (prompt) or `out` (completion).
    pub const DIRECTION: &str = "direction";
    /// Index namespace.
    pub const NAMESPACE: &str = "namespace";
    /// Index operation: `add|delete|search|save|load`.
    pub const KIND: &str = "kind";
    /// Cache: `embedding|retrieval|response|semantic|generic`.
    pub const CACHE: &str = "cache";
    /// Cache tier: `l1|l2|l3|semantic`.
    pub const TIER: &str = "tier";
    /// Cache result: `hit|miss|error`.
    pub const RESULT: &str = "result";
    /// Why a stored cache entry was refused (`auth|oversize|corrupt`), or
    /// a queue shed an item (`full|expired`).
    pub const REASON: &str = "reason";
    /// Micro-batching queue name (`QueueOptions::name`).
    pub const QUEUE: &str = "queue";
    /// Queue priority: `interactive|bulk`.
    pub const PRIORITY: &str = "priority";
    /// Name of a rate limiter (production controls).
    pub const LIMITER: &str = "limiter";
    /// Name of a circuit breaker.
    pub const BREAKER: &str = "breaker";
    /// Operation a retry policy or dead-letter store guards.
    pub const OPERATION: &str = "operation";
    /// Name of a dead-letter store.
    pub const STORE: &str = "store";
    /// Name of a model router.
    pub const ROUTER: &str = "router";
    /// Route chosen by a model router.
    pub const ROUTE: &str = "route";
    /// Name of an A/B experiment.
    pub const EXPERIMENT: &str = "experiment";
    /// Variant of an A/B experiment.
    pub const VARIANT: &str = "variant";
    /// Name of a model pool.
    pub const POOL: &str = "pool";
    /// GPU ordinal.
    pub const DEVICE: &str = "device";
}

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// Monotonic total.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Distribution with fixed buckets.
    Histogram,
}

impl MetricKind {
    /// The Prometheus `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MetricDef {
    /// Exported name.
    pub name: &'static str,
    /// Type as it appears in the `# TYPE` line of `/metrics`.
    pub kind: MetricKind,
    /// Label keys, in the order they are documented.
    pub labels: &'static [&'static str],
    /// Unit, in words (`seconds`, `bytes`, `tokens`, `microdollars`, `1`).
    pub unit: &'static str,
    /// Help text (the `# HELP` line).
    pub help: &'static str,
    /// Histogram bucket upper bounds; empty for counters and gauges.
    pub buckets: &'static [f64],
    /// Cargo feature the metric needs, if any.
    pub feature: Option<&'static str>,
    /// True when the value is read at scrape time by this crate rather than
    /// recorded through the `metrics` facade.
    pub on_scrape: bool,
}

impl MetricDef {
    const fn new(
        name: &'static str,
        kind: MetricKind,
        labels: &'static [&'static str],
        unit: &'static str,
        help: &'static str,
    ) -> Self {
        Self {
            name,
            kind,
            labels,
            unit,
            help,
            buckets: &[],
            feature: None,
            on_scrape: false,
        }
    }

    const fn buckets(mut self, buckets: &'static [f64]) -> Self {
        self.buckets = buckets;
        self
    }

    const fn on_scrape(mut self) -> Self {
        self.on_scrape = true;
        self
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    const fn feature(mut self, feature: &'static str) -> Self {
        self.feature = Some(feature);
        self
    }

    /// The unit as the `metrics` crate knows it, when it has a name for it.
    pub fn metrics_unit(&self) -> Option<Unit> {
        match self.unit {
            "seconds" => Some(Unit::Seconds),
            "bytes" => Some(Unit::Bytes),
            _ => None,
        }
    }
}

/// Query latency buckets: 1 ms to 10 s in 1-2.5-5 steps.
pub const QUERY_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Embedding batch size buckets: powers of two up to 1024 texts.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// Queue wait buckets: 0.1 ms to 10 s in 1-2.5-5 steps.
pub const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Feedback score buckets over the normalised 0..=1 range.
pub const FEEDBACK_BUCKETS: &[f64] = &[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

use labels::*;
use MetricKind::*;

static BASE: &[MetricDef] = &[
    MetricDef::new(
        QUERIES_TOTAL,
        Counter,
        &[STATUS],
        "1",
        "Queries answered, by outcome (ok|error).",
    ),
    MetricDef::new(
        QUERY_DURATION_SECONDS,
        Histogram,
        &[STATUS],
        "seconds",
        "End-to-end query latency.",
    )
    .buckets(QUERY_DURATION_BUCKETS),
    MetricDef::new(
        EMBEDDING_BATCHES_TOTAL,
        Counter,
        &[MODEL],
        "1",
        "Embedding batches run.",
    ),
    MetricDef::new(
        EMBEDDING_BATCH_SIZE,
        Histogram,
        &[MODEL],
        "texts",
        "Texts per embedding batch.",
    )
    .buckets(BATCH_SIZE_BUCKETS),
    MetricDef::new(
        EMBEDDING_TOKENS_TOTAL,
        Counter,
        &[MODEL],
        "tokens",
        "Tokens fed to embedding models, padding excluded.",
    ),
    MetricDef::new(
        EMBEDDING_BATCH_TOKEN_LIMIT,
        Gauge,
        &[DEVICE],
        "tokens",
        "Token budget of one embedding forward pass (halved on out-of-memory, grown on GPU).",
    ),
    MetricDef::new(
        QUEUE_DEPTH,
        Gauge,
        &[QUEUE, PRIORITY],
        "items",
        "Items waiting in a micro-batching queue, by priority (interactive|bulk).",
    ),
    MetricDef::new(
        QUEUE_WAIT_SECONDS,
        Histogram,
        &[QUEUE, PRIORITY],
        "seconds",
        "Time from submission to the start of the item's batch.",
    )
    .buckets(QUEUE_WAIT_BUCKETS),
    MetricDef::new(
        QUEUE_BATCH_SIZE,
        Histogram,
        &[QUEUE],
        "items",
        "Items per batch run by a queue's worker.",
    )
    .buckets(BATCH_SIZE_BUCKETS),
    MetricDef::new(
        QUEUE_REJECTED_TOTAL,
        Counter,
        &[QUEUE, REASON],
        "1",
        "Items a queue shed with an Overloaded error: full (queue at capacity) or expired (deadline passed).",
    ),
    MetricDef::new(
        TOKENS_TOTAL,
        Counter,
        &[MODEL, DIRECTION],
        "tokens",
        "Generation tokens by model and direction (in|out).",
    ),
    MetricDef::new(
        INDEX_SIZE,
        Gauge,
        &[NAMESPACE],
        "vectors",
        "Vectors held by the index of a namespace.",
    ),
    MetricDef::new(
        INDEX_OPERATIONS_TOTAL,
        Counter,
        &[NAMESPACE, KIND],
        "1",
        "Index operations (add|delete|search|save|load).",
    ),
    MetricDef::new(
        CACHE_REQUESTS_TOTAL,
        Counter,
        &[CACHE, TIER, RESULT],
        "1",
        "Cache look-ups by cache, tier and result (hit|miss|error).",
    ),
    MetricDef::new(
        CACHE_EVICTIONS_TOTAL,
        Counter,
        &[CACHE, TIER],
        "1",
        "Cache entries evicted.",
    ),
    MetricDef::new(
        CACHE_BYTES,
        Gauge,
        &[CACHE, TIER],
        "bytes",
        "Bytes held by a cache tier.",
    ),
    MetricDef::new(
        CACHE_REJECTED_TOTAL,
        Counter,
        &[CACHE, TIER, REASON],
        "1",
        "Stored cache entries refused on read, each answered as a miss: auth (MAC check failed), oversize (above the tier's max_value_bytes), corrupt (damaged or filed under another key).",
    ),
    MetricDef::new(
        CACHE_DAMAGED_FILES_TOTAL,
        Counter,
        &[CACHE, TIER],
        "1",
        "Cache files found damaged when opened (checked in a child process), renamed with a .damaged suffix and replaced by an empty cache.",
    ),
    MetricDef::new(
        SPAN_DURATION_SECONDS,
        Histogram,
        &[SPAN, STATUS],
        "seconds",
        "Duration of named pipeline steps reported from Python (LlamaIndex spans), by outcome (ok|error).",
    )
    .buckets(QUERY_DURATION_BUCKETS),
    MetricDef::new(
        FEEDBACK_SCORE,
        Histogram,
        &[],
        "1",
        "User feedback normalised to 0..1 (thumbs: 0|1; stars s: (s-1)/4).",
    )
    .buckets(FEEDBACK_BUCKETS),
    // Spend only grows, so it is a counter (rate() and increase() then
    // handle restarts); the metrics facade's counters are integers, hence
    // millionths of a dollar. CostTracker carries the fractions between
    // requests, so sub-micro-dollar requests still add up.
    MetricDef::new(
        COST_MICRODOLLARS_TOTAL,
        Counter,
        &[MODEL],
        "microdollars",
        "Estimated spend by model in millionths of a US dollar (divide by 1e6 for USD).",
    ),
    MetricDef::new(
        RATE_LIMITED_TOTAL,
        Counter,
        &[LIMITER],
        "1",
        "Calls a token-bucket rate limiter refused (try_acquire, or acquire past its deadline).",
    ),
    MetricDef::new(
        CIRCUIT_STATE,
        Gauge,
        &[BREAKER],
        "1",
        "State of a circuit breaker: 0 closed, 1 half-open, 2 open.",
    ),
    MetricDef::new(
        CIRCUIT_REJECTED_TOTAL,
        Counter,
        &[BREAKER],
        "1",
        "Calls a circuit breaker failed fast (open, or half-open with every probe taken).",
    ),
    MetricDef::new(
        RETRIES_TOTAL,
        Counter,
        &[OPERATION],
        "1",
        "Attempts after the first made by a retry policy.",
    ),
    MetricDef::new(
        DEAD_LETTERS_TOTAL,
        Counter,
        &[STORE],
        "1",
        "Items written to a dead-letter store after failing every retry.",
    ),
    MetricDef::new(
        DEAD_LETTERS_PENDING,
        Gauge,
        &[STORE],
        "items",
        "Dead letters stored and not yet re-driven or discarded.",
    ),
    MetricDef::new(
        DEAD_LETTERS_REDRIVEN_TOTAL,
        Counter,
        &[STORE],
        "1",
        "Dead letters re-driven successfully and removed from their store.",
    ),
    MetricDef::new(
        ROUTE_DECISIONS_TOTAL,
        Counter,
        &[ROUTER, ROUTE, REASON],
        "1",
        "Model routing decisions by route and reason (rule|complexity|latency|fallback).",
    ),
    MetricDef::new(
        AB_ASSIGNMENTS_TOTAL,
        Counter,
        &[EXPERIMENT, VARIANT],
        "1",
        "Users assigned to an A/B variant (each user once per experiment and process).",
    ),
    MetricDef::new(
        AB_LATENCY_SECONDS,
        Histogram,
        &[EXPERIMENT, VARIANT],
        "seconds",
        "Request latency per A/B variant.",
    )
    .buckets(QUERY_DURATION_BUCKETS),
    MetricDef::new(
        AB_CACHE_REQUESTS_TOTAL,
        Counter,
        &[EXPERIMENT, VARIANT, RESULT],
        "1",
        "Cache look-ups per A/B variant by result (hit|miss).",
    ),
    MetricDef::new(
        AB_FEEDBACK_SCORE,
        Histogram,
        &[EXPERIMENT, VARIANT],
        "1",
        "User feedback (0..1) per A/B variant.",
    )
    .buckets(FEEDBACK_BUCKETS),
    MetricDef::new(
        POOL_ACTIVE_REQUESTS,
        Gauge,
        &[POOL, MODEL],
        "1",
        "Callers holding a model of a model pool.",
    ),
    MetricDef::new(
        POOL_QUEUE_SIZE,
        Gauge,
        &[POOL, MODEL],
        "1",
        "Callers waiting for a pooled model to finish loading.",
    ),
    MetricDef::new(
        POOL_LOADED_BYTES,
        Gauge,
        &[POOL],
        "bytes",
        "Memory declared by the models a pool holds loaded.",
    ),
    MetricDef::new(
        POOL_EVICTIONS_TOTAL,
        Counter,
        &[POOL, REASON],
        "1",
        "Models a pool unloaded, by reason (count|memory|idle).",
    ),
    MetricDef::new(
        PROCESS_RESIDENT_MEMORY_BYTES,
        Gauge,
        &[],
        "bytes",
        "Resident memory size of this process.",
    )
    .on_scrape(),
    MetricDef::new(
        PROCESS_VIRTUAL_MEMORY_BYTES,
        Gauge,
        &[],
        "bytes",
        "Virtual memory size of this process.",
    )
    .on_scrape(),
    MetricDef::new(
        PROCESS_CPU_SECONDS_TOTAL,
        Counter,
        &[],
        "seconds",
        "User and system CPU time spent by this process.",
    )
    .on_scrape(),
    MetricDef::new(
        PROCESS_OPEN_FDS,
        Gauge,
        &[],
        "1",
        "Open file descriptors of this process.",
    )
    .on_scrape(),
    MetricDef::new(
        PROCESS_MAX_FDS,
        Gauge,
        &[],
        "1",
        "Soft limit on open file descriptors (absent when unlimited).",
    )
    .on_scrape(),
    MetricDef::new(
        PROCESS_START_TIME_SECONDS,
        Gauge,
        &[],
        "seconds",
        "Start time of this process since the Unix epoch.",
    )
    .on_scrape(),
    MetricDef::new(
        PROCESS_THREADS,
        Gauge,
        &[],
        "1",
        "OS threads of this process.",
    )
    .on_scrape(),
];

#[cfg(feature = "cuda")]
static GPU: &[MetricDef] = &[
    MetricDef::new(
        GPU_MEMORY_USED_BYTES,
        Gauge,
        &[DEVICE],
        "bytes",
        "GPU memory in use.",
    )
    .feature("cuda"),
    MetricDef::new(
        GPU_MEMORY_TOTAL_BYTES,
        Gauge,
        &[DEVICE],
        "bytes",
        "GPU memory on the device.",
    )
    .feature("cuda"),
];
#[cfg(not(feature = "cuda"))]
static GPU: &[MetricDef] = &[];

/// The GPU gauges' entries, listed in the docs whatever the build's features.
static GPU_DOC: &[MetricDef] = &[
    MetricDef::new(
        "ragjet_gpu_memory_used_bytes",
        Gauge,
        &[DEVICE],
        "bytes",
        "GPU memory in use.",
    )
    .feature("cuda"),
    MetricDef::new(
        "ragjet_gpu_memory_total_bytes",
        Gauge,
        &[DEVICE],
        "bytes",
        "GPU memory on the device.",
    )
    .feature("cuda"),
];

/// The metrics this build exports (GPU gauges only with feature `cuda`).
pub fn catalogue() -> impl Iterator<Item = &'static MetricDef> {
    BASE.iter().chain(GPU.iter())
}

/// Looks a metric up by name in this build's catalogue.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    catalogue().find(|m| m.name == name)
}

/// Every metric of every feature combination, for documentation.
pub fn full_catalogue() -> impl Iterator<Item = &'static MetricDef> {
    BASE.iter().chain(GPU_DOC.iter())
}

/// The catalogue as the Markdown document kept at `docs/metrics.md`.
///
/// A test fails when the file and this output differ; run
/// `RAGJET_UPDATE_DOCS=1 cargo test -p ragjet-telemetry --test catalogue`
/// to rewrite the file after changing the catalogue.
pub fn catalogue_markdown() -> String {
    let mut out = String::from(
        "# ragjet metric catalogue\n\n\
         Generated from `crates/ragjet-telemetry/src/metrics.rs` \
         (`ragjet_telemetry::metrics::catalogue_markdown`); a test keeps the two in step.\n\
         Served at `http://127.0.0.1:9464/metrics` by default (`TelemetryConfig::metrics_addr`).\n\n\
         | name | type | labels | unit | buckets | help |\n\
         |---|---|---|---|---|---|\n",
    );
    for m in full_catalogue() {
        let labels = if m.labels.is_empty() {
            "—".to_string()
        } else {
            m.labels.join(", ")
        };
        let buckets = if m.buckets.is_empty() {
            "—".to_string()
        } else {
            m.buckets
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        // A bare `|` would end the table cell.
        let mut help = m.help.replace('|', "\\|");
        if let Some(f) = m.feature {
            help.push_str(&format!(" Only with feature `{f}`."));
        }
        if m.on_scrape {
            help.push_str(" Read from the OS at scrape time.");
        }
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            m.name,
            m.kind.as_str(),
            labels,
            m.unit,
            buckets,
            help
        ));
    }
    out
}

/// Registers help text and units of every facade-recorded metric with the
/// current recorder (global, or local inside `metrics::with_local_recorder`).
pub fn describe_all() {
    for m in catalogue().filter(|m| !m.on_scrape) {
        let unit = m.metrics_unit();
        match (m.kind, unit) {
            (Counter, Some(u)) => ::metrics::describe_counter!(m.name, u, m.help),
            (Counter, None) => ::metrics::describe_counter!(m.name, m.help),
            (Gauge, Some(u)) => ::metrics::describe_gauge!(m.name, u, m.help),
            (Gauge, None) => ::metrics::describe_gauge!(m.name, m.help),
            (Histogram, Some(u)) => ::metrics::describe_histogram!(m.name, u, m.help),
            (Histogram, None) => ::metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// Outcome of a query, the `status` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryStatus {
    /// Answered.
    Ok,
    /// Failed.
    Error,
}

impl QueryStatus {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryStatus::Ok => "ok",
            QueryStatus::Error => "error",
        }
    }
}

/// Counts one query and records its latency.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_telemetry::metrics::{self, QueryStatus};
/// use std::time::Duration;
///
/// let (recorder, handle) = ragjet_telemetry::build_recorder()?;
/// ::metrics::with_local_recorder(&recorder, || {
///     metrics::record_query(QueryStatus::Ok, Duration::from_millis(30));
///     metrics::record_query(QueryStatus::Error, Duration::from_millis(2));
///     metrics::record_embedding_batch("minilm", 32, 900);
///     metrics::set_index_size("docs", 10_000);
///     metrics::record_cache_request("embedding", "l1", "hit");
/// });
/// let text = handle.render();
/// assert!(text.contains("ragjet_queries_total{status=\"ok\"} 1"));
/// assert!(text.contains("ragjet_queries_total{status=\"error\"} 1"));
/// assert!(text.contains("ragjet_index_size{namespace=\"docs\"} 10000"));
/// # Ok(()) }
/// ```
pub fn record_query(status: QueryStatus, duration: Duration) {
    let s = status.as_str();
    counter!(QUERIES_TOTAL, STATUS => s).increment(1);
    histogram!(QUERY_DURATION_SECONDS, STATUS => s).record(duration.as_secs_f64());
}

/// Records the duration of one named pipeline step.
pub fn record_span(span: &str, status: QueryStatus, duration: Duration) {
    histogram!(SPAN_DURATION_SECONDS, SPAN => span.to_owned(), STATUS => status.as_str())
        .record(duration.as_secs_f64());
}

/// Counts one embedding batch of `batch_size` texts holding `tokens` real
/// (non-padding) tokens.
pub fn record_embedding_batch(model: &str, batch_size: usize, tokens: u64) {
    let model = model.to_owned();
    counter!(EMBEDDING_BATCHES_TOTAL, MODEL => model.clone()).increment(1);
    histogram!(EMBEDDING_BATCH_SIZE, MODEL => model.clone()).record(batch_size as f64);
    counter!(EMBEDDING_TOKENS_TOTAL, MODEL => model).increment(tokens);
}

/// Sets how many items wait in `queue` at `priority`.
pub fn set_queue_depth(queue: &str, priority: &'static str, depth: usize) {
    gauge!(QUEUE_DEPTH, QUEUE => queue.to_owned(), PRIORITY => priority).set(depth as f64);
}

/// Records how long one item waited in `queue` before its batch started.
pub fn record_queue_wait(queue: &str, priority: &'static str, waited: Duration) {
    histogram!(QUEUE_WAIT_SECONDS, QUEUE => queue.to_owned(), PRIORITY => priority)
        .record(waited.as_secs_f64());
}

/// Records one batch of `items` run by `queue`'s worker.
pub fn record_queue_batch(queue: &str, items: usize) {
    histogram!(QUEUE_BATCH_SIZE, QUEUE => queue.to_owned()).record(items as f64);
}

/// Counts one item `queue` shed (`reason`: full|expired).
pub fn record_queue_rejected(queue: &str, reason: &'static str) {
    counter!(QUEUE_REJECTED_TOTAL, QUEUE => queue.to_owned(), REASON => reason).increment(1);
}

/// Counts generation tokens for `model`.
pub fn record_tokens(model: &str, input: u64, output: u64) {
    let model = model.to_owned();
    counter!(TOKENS_TOTAL, MODEL => model.clone(), DIRECTION => "in").increment(input);
    counter!(TOKENS_TOTAL, MODEL => model, DIRECTION => "out").increment(output);
}

/// Adds `microdollars` (millionths of a US dollar) to the estimated spend
/// of `model`.
///
/// Whole units only: rounding every small request on its own would lose or
/// inflate spend, so callers with fractional amounts carry the remainder
/// (as [`crate::CostTracker::record`] does) rather than round here.
pub fn record_cost_microdollars(model: &str, microdollars: u64) {
    if microdollars > 0 {
        counter!(COST_MICRODOLLARS_TOTAL, MODEL => model.to_owned()).increment(microdollars);
    }
}

/// Records one user feedback score; values are clamped to 0..=1 and NaN is
/// ignored.
pub fn record_feedback(score: f64) {
    if !score.is_nan() {
        histogram!(FEEDBACK_SCORE).record(score.clamp(0.0, 1.0));
    }
}

/// Sets the size of a namespace's index.
pub fn set_index_size(namespace: &str, vectors: u64) {
    gauge!(INDEX_SIZE, NAMESPACE => namespace.to_owned()).set(vectors as f64);
}

/// Counts one index operation (`kind`: add|delete|search|save|load).
pub fn record_index_operation(namespace: &str, kind: &'static str) {
    counter!(INDEX_OPERATIONS_TOTAL, NAMESPACE => namespace.to_owned(), KIND => kind).increment(1);
}

/// Counts one cache look-up.
pub fn record_cache_request(cache: &'static str, tier: &'static str, result: &'static str) {
    counter!(CACHE_REQUESTS_TOTAL, CACHE => cache, TIER => tier, RESULT => result).increment(1);
}

/// Counts one stored cache entry refused on read (`reason`:
/// auth|oversize|corrupt).
pub fn record_cache_rejected(cache: &'static str, tier: &'static str, reason: &'static str) {
    counter!(CACHE_REJECTED_TOTAL, CACHE => cache, TIER => tier, REASON => reason).increment(1);
}

/// Sets the GPU memory gauges of device `device`.
#[cfg(feature = "cuda")]
pub fn set_gpu_memory(device: u32, used_bytes: u64, total_bytes: u64) {
    let d = device.to_string();
    gauge!(GPU_MEMORY_USED_BYTES, DEVICE => d.clone()).set(used_bytes as f64);
    gauge!(GPU_MEMORY_TOTAL_BYTES, DEVICE => d).set(total_bytes as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_valid() {
        let mut seen = HashSet::new();
        for m in full_catalogue() {
            assert!(seen.insert(m.name), "duplicate {}", m.name);
            assert!(m.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert!(!m.help.is_empty());
            // Prometheus naming (promtool check metrics): counters and only
            // counters end in `_total`.
            assert_eq!(
                m.kind == Counter,
                m.name.ends_with("_total"),
                "{}: counters end in _total, other types must not",
                m.name
            );
            assert_eq!(m.kind == Histogram, !m.buckets.is_empty(), "{}", m.name);
            assert!(m.buckets.windows(2).all(|w| w[0] < w[1]), "{}", m.name);
        }
    }

    #[test]
    fn query_buckets_span_one_ms_to_ten_s() {
        assert_eq!(QUERY_DURATION_BUCKETS.first(), Some(&0.001));
        assert_eq!(QUERY_DURATION_BUCKETS.last(), Some(&10.0));
    }

    #[test]
    fn gpu_gauges_follow_the_cuda_feature() {
        let has = find("ragjet_gpu_memory_used_bytes").is_some();
        assert_eq!(has, cfg!(feature = "cuda"));
        assert!(full_catalogue().any(|m| m.name == "ragjet_gpu_memory_total_bytes"));
    }
}
