//! Span conventions: one name and one attribute set per pipeline stage, so
//! every crate's spans line up in a trace viewer and in log lines.
//!
//! Attribute keys follow the OpenTelemetry semantic conventions where one
//! exists — GenAI (`gen_ai.*`) for model calls, database (`db.*`) for index
//! operations, `error.type` for failures — and use a `ragjet.*` key only
//! where no convention covers the value.
//!
//! Every helper declares all of its span's fields up front (a `tracing`
//! span can only record fields it declared), including the error fields,
//! so [`record_error`] works on any of them. Recording onto a span that no
//! subscriber is interested in is a no-op costing a branch.
//!
//! # Examples
//!
//! ```
//! use ragjet_telemetry::spans::{self, attr, names};
//!
//! // Record into a subscriber so the spans are live (with none they cost a branch).
//! tracing::subscriber::with_default(tracing_subscriber::registry(), || {
//!     let query = spans::query("docs", 5);
//!     let _entered = query.enter();
//!     assert_eq!(query.metadata().unwrap().name(), names::QUERY);
//!     assert!(query.field(attr::DB_COLLECTION_NAME).is_some());
//!
//!     let embed = spans::embedding("all-MiniLM-L6-v2", 32);
//!     spans::record_input_tokens(&embed, 812);
//!     let cache = spans::cache("embedding", "l1");
//!     spans::record_cache_result(&cache, "miss");
//!     spans::record_returned(&query, 5);
//!     # let _ = (spans::retrieval("docs", 5), spans::rerank("m", 20), spans::index_update("docs", "add", 3));
//! });
//! ```

use tracing::field::Empty;
use tracing::Span;

/// Span names.
pub mod names {
    /// A whole retrieval query, the root of its trace.
    pub const QUERY: &str = "ragjet.query";
    /// An embedding model call (GenAI operation `embeddings`).
    pub const EMBEDDING: &str = "ragjet.embedding";
    /// A vector index search.
    pub const RETRIEVAL: &str = "ragjet.retrieval";
    /// Re-ranking of retrieved candidates.
    pub const RERANK: &str = "ragjet.rerank";
    /// A cache look-up.
    pub const CACHE: &str = "ragjet.cache";
    /// An index update (add, delete, save, load).
    pub const INDEX_UPDATE: &str = "ragjet.index_update";
}

/// Attribute keys.
pub mod attr {
    /// OTel GenAI: operation (`embeddings`, `rerank`).
    pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
    /// OTel GenAI: model asked for.
    pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
    /// OTel GenAI: prompt/input tokens.
    pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    /// OTel GenAI: output tokens.
    pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    /// OTel GenAI: embedding dimension.
    pub const GEN_AI_EMBEDDINGS_DIMENSION_COUNT: &str = "gen_ai.embeddings.dimension.count";
    /// OTel DB: the database system (always `ragjet`).
    pub const DB_SYSTEM_NAME: &str = "db.system.name";
    /// OTel DB: operation (`search`, `add`, `delete`, `save`, `load`).
    pub const DB_OPERATION_NAME: &str = "db.operation.name";
    /// OTel DB: collection, i.e. the ragjet namespace.
    pub const DB_COLLECTION_NAME: &str = "db.collection.name";
    /// OTel DB: rows (hits) returned.
    pub const DB_RESPONSE_RETURNED_ROWS: &str = "db.response.returned_rows";
    /// OTel: class of error (an error enum variant, e.g. `EmptyInput`).
    pub const ERROR_TYPE: &str = "error.type";
    /// tracing-opentelemetry: setting it marks the span status as error
    /// with this description.
    pub const OTEL_STATUS_DESCRIPTION: &str = "otel.status_description";
    /// ragjet: number of texts in an embedding batch.
    pub const BATCH_SIZE: &str = "ragjet.batch_size";
    /// ragjet: hits asked for.
    pub const TOP_K: &str = "ragjet.top_k";
    /// ragjet: candidates given to a re-ranker.
    pub const CANDIDATES: &str = "ragjet.rerank.candidates";
    /// ragjet: cache name (`embedding|retrieval|response|semantic|generic`).
    pub const CACHE_NAME: &str = "ragjet.cache.name";
    /// ragjet: cache tier (`l1|l2|l3|semantic`).
    pub const CACHE_TIER: &str = "ragjet.cache.tier";
    /// ragjet: cache result (`hit|miss|error`).
    pub const CACHE_RESULT: &str = "ragjet.cache.result";
    /// ragjet: vectors touched by an index update.
    pub const VECTORS: &str = "ragjet.index.vectors";
}

/// Integers go to spans as `i64`: the OpenTelemetry bridge has no `u64`
/// attribute and would otherwise turn them into strings.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Opens the root span of a query over `namespace` asking for `top_k` hits.
pub fn query(namespace: &str, top_k: usize) -> Span {
    tracing::info_span!(
        "ragjet.query",
        db.collection.name = namespace,
        ragjet.top_k = int(top_k as u64),
        db.response.returned_rows = Empty,
        error.type = Empty,
        otel.status_description = Empty,
    )
}

/// Opens an embedding span for a batch of `batch_size` texts on `model`.
/// Record tokens with [`record_input_tokens`] once known.
pub fn embedding(model: &str, batch_size: usize) -> Span {
    tracing::info_span!(
        "ragjet.embedding",
        gen_ai.operation.name = "embeddings",
        gen_ai.request.model = model,
        ragjet.batch_size = int(batch_size as u64),
        gen_ai.usage.input_tokens = Empty,
        gen_ai.embeddings.dimension.count = Empty,
        error.type = Empty,
        otel.status_description = Empty,
    )
}

/// Opens a vector search span on `namespace`.
pub fn retrieval(namespace: &str, top_k: usize) -> Span {
    tracing::info_span!(
        "ragjet.retrieval",
        db.system.name = "ragjet",
        db.operation.name = "search",
        db.collection.name = namespace,
        ragjet.top_k = int(top_k as u64),
        db.response.returned_rows = Empty,
        error.type = Empty,
        otel.status_description = Empty,
    )
}

/// Opens a re-ranking span over `candidates` candidates with `model`.
pub fn rerank(model: &str, candidates: usize) -> Span {
    tracing::info_span!(
        "ragjet.rerank",
        gen_ai.operation.name = "rerank",
        gen_ai.request.model = model,
        ragjet.rerank.candidates = int(candidates as u64),
        error.type = Empty,
        otel.status_description = Empty,
    )
}

/// Opens a cache look-up span; record the outcome with [`record_cache_result`].
/// At debug level: caches are hit far more often than anything else.
pub fn cache(cache: &'static str, tier: &'static str) -> Span {
    tracing::debug_span!(
        "ragjet.cache",
        ragjet.cache.name = cache,
        ragjet.cache.tier = tier,
        ragjet.cache.result = Empty,
        error.type = Empty,
        otel.status_description = Empty,
    )
}

/// Opens an index update span (`operation`: add|delete|save|load).
pub fn index_update(namespace: &str, operation: &'static str, vectors: usize) -> Span {
    tracing::info_span!(
        "ragjet.index_update",
        db.system.name = "ragjet",
        db.operation.name = operation,
        db.collection.name = namespace,
        ragjet.index.vectors = int(vectors as u64),
        error.type = Empty,
        otel.status_description = Empty,
    )
}

/// Records the real (non-padding) input tokens of an embedding span.
pub fn record_input_tokens(span: &Span, tokens: u64) {
    span.record(attr::GEN_AI_USAGE_INPUT_TOKENS, int(tokens));
}

/// Records the number of hits a query or retrieval returned.
pub fn record_returned(span: &Span, rows: usize) {
    span.record(attr::DB_RESPONSE_RETURNED_ROWS, int(rows as u64));
}

/// Records `hit`, `miss` or `error` on a cache span.
pub fn record_cache_result(span: &Span, result: &'static str) {
    span.record(attr::CACHE_RESULT, result);
}

/// Marks `span` as failed: `error.type` gets `kind` (a stable, low-cardinality
/// class such as an error enum variant), the span status becomes error with
/// the message as description, and an error event is logged inside it.
///
/// # Examples
///
/// ```
/// use ragjet_telemetry::spans;
///
/// #[derive(Debug)]
/// enum LoadError {
///     Io { path: String },
/// }
/// let err = LoadError::Io { path: "model.safetensors".into() };
/// // The variant name is a low-cardinality `error.type`; the path goes only to the message.
/// let kind = spans::error_kind(&err);
/// assert_eq!(kind, "Io");
/// let span = spans::index_update("docs", "load", 0);
/// spans::record_error(&span, &kind, &"could not read model.safetensors");
/// ```
pub fn record_error(span: &Span, kind: &str, error: &dyn std::fmt::Display) {
    let message = error.to_string();
    span.record(attr::ERROR_TYPE, kind);
    span.record(attr::OTEL_STATUS_DESCRIPTION, message.as_str());
    span.in_scope(|| tracing::error!(error.type = kind, error = %message, "operation failed"));
}

/// The variant name of an error's `Debug` output (`Io { .. }` → `Io`), a
/// convenient `kind` for [`record_error`] with `thiserror` enums.
pub fn error_kind(error: &dyn std::fmt::Debug) -> String {
    let debug = format!("{error:?}");
    let end = debug
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(debug.len());
    debug[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)]
    enum E {
        Io { path: String },
        EmptyInput,
    }

    #[test]
    fn error_kind_is_the_variant_name() {
        assert_eq!(error_kind(&E::Io { path: "x".into() }), "Io");
        assert_eq!(error_kind(&E::EmptyInput), "EmptyInput");
    }
}
