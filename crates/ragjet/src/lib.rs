//! ragjet: the Rust hot path for retrieval-augmented generation.
//!
//! This facade re-exports the crates that do the work, so that a program
//! needs one dependency:
//!
//! - [`inference`]: embedding models ([`inference::Embedder`]).
//! - [`retrieval`]: vector and keyword indexes.
//! - [`cache`]: tiered and semantic caches.
//! - [`telemetry`]: metrics, traces and reports.
//!
//! ```no_run
//! use ragjet::inference::{locate_default_model, Embedder};
//!
//! # fn main() -> Result<(), ragjet::inference::InferenceError> {
//! let embedder = Embedder::load(locate_default_model()?)?;
//! let v = embedder.embed_one("what is retrieval-augmented generation?")?;
//! assert_eq!(v.len(), embedder.dim());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub use ragjet_cache as cache;
pub use ragjet_inference as inference;
pub use ragjet_retrieval as retrieval;
pub use ragjet_telemetry as telemetry;

/// The version of ragjet, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
