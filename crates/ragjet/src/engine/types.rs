//! What goes into and comes out of the [`Engine`](super::Engine).

use std::ops::Range;
use std::time::Duration;

use ragjet_retrieval::{Metadata, MetadataFilters};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The namespace used when a call names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A document to ingest: its id is the upsert key (ingesting the same id
/// again replaces every chunk of the earlier version).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Document {
    /// Unique within a namespace; chunks get ids `"{id}#{index}"`.
    pub id: String,
    /// The text; must hold something other than whitespace.
    pub text: String,
    /// Copied onto every chunk, so filters and hits see it.
    #[serde(default)]
    pub metadata: Metadata,
}

impl Document {
    /// A document without metadata.
    pub fn new(id: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            text: text.into(),
            metadata: Metadata::new(),
        }
    }

    /// Adds one metadata key.
    pub fn with_meta(
        mut self,
        key: impl Into<String>,
        value: impl Into<ragjet_retrieval::MetadataValue>,
    ) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// Which part of an ingest a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestStage {
    /// Cutting documents into chunks (`done`/`total`: documents).
    Chunking,
    /// Embedding chunks the cache did not hold (`done`/`total`: chunks).
    Embedding,
    /// Writing into the indexes (`done`/`total`: documents).
    Indexing,
}

/// A progress report of [`Engine::ingest_with`](super::Engine::ingest_with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestProgress {
    /// The stage.
    pub stage: IngestStage,
    /// Units done in this stage.
    pub done: usize,
    /// Units in this stage.
    pub total: usize,
}

/// Settings of one ingest call.
#[derive(Default)]
pub struct IngestOptions<'a> {
    /// Target namespace; `None`: [`DEFAULT_NAMESPACE`]. Created on first use.
    pub namespace: Option<&'a str>,
    /// Called as the ingest advances (from the calling thread or the
    /// model's worker threads, hence `Sync`).
    pub progress: Option<&'a (dyn Fn(IngestProgress) + Send + Sync)>,
}

impl std::fmt::Debug for IngestOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestOptions")
            .field("namespace", &self.namespace)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What an ingest did. A document that fails is listed with its error; the
/// others are ingested all the same.
#[derive(Debug, Default)]
pub struct IngestReport {
    /// Ids of the documents now in the index as given (new, changed or
    /// unchanged).
    pub ingested: Vec<String>,
    /// Documents not ingested, with why (empty text, a duplicate id in the
    /// batch, an embedding failure...).
    pub failed: Vec<(String, Error)>,
    /// Documents skipped because the index already held them unchanged.
    pub unchanged: usize,
    /// Chunks written to the index.
    pub chunks: usize,
    /// Chunk embeddings computed by the model.
    pub embeddings_computed: usize,
    /// Chunk embeddings taken from the embedding cache.
    pub embeddings_cached: usize,
    /// Wall time of the call.
    pub seconds: f64,
}

/// How hits are found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum SearchMode {
    /// Cosine similarity of embeddings.
    Vector,
    /// BM25 over the chunk texts.
    Keyword,
    /// Both, fused: `alpha × vector + (1 − alpha) × keyword` after min-max
    /// normalising each list (alpha in 0..=1).
    Hybrid {
        /// Weight of the vector side.
        alpha: f32,
    },
}

impl SearchMode {
    /// A stable text form, part of the retrieval-cache key.
    pub(crate) fn key(&self) -> String {
        match self {
            SearchMode::Vector => "vector".into(),
            SearchMode::Keyword => "keyword".into(),
            SearchMode::Hybrid { alpha } => format!("hybrid:{:08x}", alpha.to_bits()),
        }
    }
}

/// Options of one query. `None` fields take the engine's defaults (or,
/// with `query.intent` on, the choice of the intent rules).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryOptions {
    /// Hits wanted (default 10, at most `query.max_top_k`).
    pub top_k: Option<usize>,
    /// Only chunks whose metadata pass this filter.
    pub filters: Option<MetadataFilters>,
    /// The namespace searched; `None`: [`DEFAULT_NAMESPACE`].
    pub namespace: Option<String>,
    /// Vector, keyword or hybrid (default vector).
    pub mode: Option<SearchMode>,
    /// Diversify with maximal marginal relevance; the value is lambda in
    /// 0..=1 (1 = relevance only).
    pub mmr: Option<f32>,
    /// Rerank the hits with the cross-encoder and keep this many.
    pub rerank_top_n: Option<usize>,
    /// Drop hits scoring below this (on the mode's own scale: cosine for
    /// vector, BM25 for keyword, the fused 0..1 score for hybrid).
    pub similarity_cutoff: Option<f32>,
    /// Keep only chunks containing every one of these words or phrases
    /// (case-insensitive, whole words).
    pub required_keywords: Vec<String>,
    /// Drop chunks containing any of these words or phrases.
    pub excluded_keywords: Vec<String>,
    /// Pack the best passages (2 to 5) into a context of at most this many
    /// tokens, for a prompt.
    pub context_tokens: Option<usize>,
    /// Embed the passage the engine's HyDE hook writes instead of the
    /// query: `None` does so whenever the engine has a hook, `Some(false)`
    /// never, `Some(true)` requires a hook.
    pub hyde: Option<bool>,
    /// Skip the retrieval and semantic caches, reading and writing (to
    /// measure cold latency, or to see fresh results).
    pub no_cache: bool,
    /// Who asks: assigns the A/B variant (`[control.experiment]`) and is
    /// offered to the router's rules. `None`: no variant.
    pub user: Option<String>,
}

impl QueryOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets `top_k`.
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }
    /// Sets the filter.
    pub fn filters(mut self, f: MetadataFilters) -> Self {
        self.filters = Some(f);
        self
    }
    /// Sets the namespace.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }
    /// Sets the mode.
    pub fn mode(mut self, mode: SearchMode) -> Self {
        self.mode = Some(mode);
        self
    }
    /// Turns MMR on with this lambda.
    pub fn mmr(mut self, lambda: f32) -> Self {
        self.mmr = Some(lambda);
        self
    }
    /// Reranks and keeps `n`.
    pub fn rerank(mut self, n: usize) -> Self {
        self.rerank_top_n = Some(n);
        self
    }
    /// Sets the similarity cutoff.
    pub fn similarity_cutoff(mut self, cutoff: f32) -> Self {
        self.similarity_cutoff = Some(cutoff);
        self
    }
    /// Adds a required keyword.
    pub fn require(mut self, keyword: impl Into<String>) -> Self {
        self.required_keywords.push(keyword.into());
        self
    }
    /// Adds an excluded keyword.
    pub fn exclude(mut self, keyword: impl Into<String>) -> Self {
        self.excluded_keywords.push(keyword.into());
        self
    }
    /// Packs a context of at most `tokens` tokens.
    pub fn context_tokens(mut self, tokens: usize) -> Self {
        self.context_tokens = Some(tokens);
        self
    }
    /// Uses (or not) the HyDE hook's passage instead of the query.
    pub fn hyde(mut self, on: bool) -> Self {
        self.hyde = Some(on);
        self
    }
    /// Bypasses the retrieval and semantic caches.
    pub fn no_cache(mut self, on: bool) -> Self {
        self.no_cache = on;
        self
    }
    /// Names the user (A/B assignment, routing rules).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
}

/// The query options an A/B variant sets; fields left `None` keep the
/// caller's. A variant changes what the engine does, so comparing
/// variants compares settings (hybrid or not, reranking or not, top-k).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VariantOptions {
    /// Hits wanted.
    pub top_k: Option<usize>,
    /// Search mode.
    pub mode: Option<SearchMode>,
    /// `Some(Some(n))` reranks keeping `n`; `Some(None)` turns reranking
    /// off.
    pub rerank_top_n: Option<Option<usize>>,
    /// MMR lambda.
    pub mmr: Option<f32>,
}

impl VariantOptions {
    /// A variant as `[[control.experiment.variants]]` writes it
    /// (`rerank_top_n = 0` turns reranking off); the error names the key.
    pub fn from_settings(v: &crate::config::VariantSettings) -> crate::Result<Self> {
        super::controls::variant_overrides(v)
    }

    /// `options` with this variant's settings in force.
    pub fn apply(&self, options: &QueryOptions) -> QueryOptions {
        let mut o = options.clone();
        if let Some(k) = self.top_k {
            o.top_k = Some(k);
        }
        if let Some(m) = self.mode {
            o.mode = Some(m);
        }
        if let Some(r) = self.rerank_top_n {
            o.rerank_top_n = r;
        }
        if let Some(l) = self.mmr {
            o.mmr = Some(l);
        }
        o
    }
}

/// One hit: a chunk of a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineHit {
    /// `"{doc_id}#{index}"`.
    pub chunk_id: String,
    /// The document the chunk comes from.
    pub doc_id: String,
    /// Higher is better; the scale is the last stage's (see
    /// [`QueryOptions::similarity_cutoff`]; reranked hits carry the
    /// cross-encoder's score).
    pub score: f32,
    /// The chunk's text.
    pub text: String,
    /// The document's metadata.
    pub metadata: Metadata,
    /// Byte range of the chunk in the document's text.
    pub span: Range<usize>,
}

/// Where a query's time went. Stages that did not run are zero.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StageTimings {
    /// Query cleaning, expansion and intent.
    pub clean: Duration,
    /// Cache look-ups and stores.
    pub cache: Duration,
    /// Embedding the query (or the HyDE hook and its passage).
    pub embed: Duration,
    /// Index search and fusion.
    pub search: Duration,
    /// Keyword rules, cutoff, MMR, building hits and the context.
    pub postprocess: Duration,
    /// Cross-encoder reranking.
    pub rerank: Duration,
    /// The whole call.
    pub total: Duration,
}

/// Whether a cache answered the query.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum CacheOutcome {
    /// Computed (and stored when caching is on).
    #[default]
    Miss,
    /// The retrieval cache held this exact query and options.
    RetrievalHit,
    /// The semantic cache held a query this similar, with the same options.
    SemanticHit {
        /// Cosine similarity of the two queries' embeddings.
        similarity: f32,
    },
    /// Caches off for this query or this engine.
    Bypassed,
}

/// The answer to a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Best first.
    pub hits: Vec<EngineHit>,
    /// The packed context, when [`QueryOptions::context_tokens`] was set.
    pub context: Option<String>,
    /// The query as searched, after cleaning.
    pub query: String,
    /// The `top_k` used.
    pub top_k: usize,
    /// The mode used.
    pub mode: SearchMode,
    /// Per-stage times.
    pub timings: StageTimings,
    /// Which cache answered, if any.
    pub cache: CacheOutcome,
    /// The model `[control.routing]` chose for answering this query (for
    /// the caller's LLM call), with the complexity estimate and the reason.
    pub route: Option<crate::control::RouteDecision>,
    /// The A/B variant the query ran with (`[control.experiment]` and a
    /// [`QueryOptions::user`]).
    pub variant: Option<String>,
}
