//! ragjet: the Rust hot path for retrieval-augmented generation.
//!
//! [`Engine`] is the product: documents in, ranked passages out, with
//! chunking, embedding (cached), vector / keyword / hybrid search, MMR,
//! reranking, result caches, metrics and one-directory persistence (not run
//! as a test: it loads the all-MiniLM-L6-v2 model, which a build machine
//! may not have):
//!
//! ```no_run
//! use ragjet::{Document, Engine, QueryOptions, SearchMode};
//!
//! # fn main() -> ragjet::Result<()> {
//! let engine = Engine::builder().store_dir("my-store").build()?;
//! let report = engine.ingest(vec![
//!     Document::new("rust", "Rust is a language empowering everyone to build reliable software.")
//!         .with_meta("topic", "languages"),
//! ])?;
//! println!("{} chunks, {} embeddings computed", report.chunks, report.embeddings_computed);
//! let options = QueryOptions::new().top_k(5).mode(SearchMode::Hybrid { alpha: 0.7 });
//! let answer = engine.query("which language is reliable?", &options)?;
//! for hit in &answer.hits {
//!     println!("{:.3} {} {:?}", hit.score, hit.chunk_id, hit.text);
//! }
//! engine.save("my-store")?;
//! let again = Engine::open("my-store")?;
//! # Ok(()) }
//! ```
//!
//! The crates that do the work are re-exported, so a program needs one
//! dependency:
//!
//! - [`inference`]: embedding models ([`inference::Embedder`]) and the
//!   cross-encoder reranker.
//! - [`retrieval`]: vector and keyword indexes, filters.
//! - [`cache`]: tiered and semantic caches.
//! - [`telemetry`]: metrics, traces and reports. The engine records the
//!   metric catalogue through the `metrics` facade; installing a recorder
//!   (`telemetry::Telemetry::init`) is the application's choice.
#![warn(missing_docs)]

pub mod chunk;
pub mod config;
pub mod control;
pub mod engine;
mod error;
pub mod query;
pub mod queue;

pub use config::{EngineConfig, IndexKind};
pub use engine::{
    Answer, CacheOutcome, Document, Engine, EngineBuilder, EngineHit, IngestOptions,
    IngestProgress, IngestReport, IngestStage, QueryOptions, SearchMode, StageTimings,
    VariantOptions, DEFAULT_NAMESPACE,
};
pub use error::{Error, ErrorKind, Refusal, Result};
pub use query::Hyde;
pub use queue::{BatchQueue, Overload, Priority, QueueError, QueueOptions, Ticket};
pub use ragjet_retrieval::{Metadata, MetadataFilters, MetadataValue};

pub use ragjet_cache as cache;
pub use ragjet_inference as inference;
pub use ragjet_retrieval as retrieval;
pub use ragjet_telemetry as telemetry;

/// The version of ragjet, as in `Cargo.toml`.
///
/// # Examples
///
/// ```
/// // Semantic version, e.g. for a `/version` endpoint or a saved store's manifest.
/// assert_eq!(ragjet::VERSION.split('.').count(), 3);
/// ```
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The README's and the getting-started guide's Rust examples, compiled as doctests so that the
/// first code a newcomer copies keeps building.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
#[doc = include_str!("../../../docs/getting-started.md")]
pub struct DocumentationExamples;
