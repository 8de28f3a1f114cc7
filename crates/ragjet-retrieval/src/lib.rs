//! Vector and keyword retrieval for ragjet: exact and HNSW indexes,
//! metadata filters, BM25 and hybrid fusion.
//!
//! * [`FlatIndex`] — exact search over contiguous f32/f16 rows, rayon
//!   across rows for large indexes, a blocked path for query batches.
//! * [`HnswIndex`] — approximate search on ragjet's own HNSW graph, filters applied
//!   during the graph walk, tombstone deletes and [`HnswIndex::compact`].
//! * Both implement [`VectorIndex`]: string ids, upsert, delete by id and
//!   by `ref_doc_id`, metadata + text per entry, [`MetadataFilters`] with
//!   LlamaIndex semantics, crash-safe `save` / `load` ([`persist`]).
//! * [`VectorStore`] holds named, isolated collections (namespaces).
//! * [`Bm25Index`], [`reciprocal_rank_fusion`], [`alpha_fusion`] and
//!   [`mmr`] for keyword, hybrid and diversified retrieval.
//!
//! All similarity arithmetic lives in [`distance`], so faster kernels can
//! replace it in one place.
//!
//! Hybrid retrieval in a few lines: vectors and keywords searched
//! separately, fused, then diversified.
//!
//! ```
//! use ragjet_retrieval::{alpha_fusion, mmr, Bm25Index, Bm25Params, Entry, FlatConfig, FlatIndex, Metric, VectorIndex};
//!
//! # fn main() -> Result<(), ragjet_retrieval::RetrievalError> {
//! let docs = [
//!     ("a", "rust ownership and borrowing", [0.9, 0.1, 0.0]),
//!     ("b", "borrowing rules in rust explained", [0.88, 0.12, 0.0]),
//!     ("c", "garbage collection in java", [0.1, 0.9, 0.1]),
//! ];
//! let mut vectors = FlatIndex::new(FlatConfig::new(3, Metric::Cosine))?;
//! let mut keywords = Bm25Index::new(Bm25Params::default())?;
//! for (id, text, v) in docs {
//!     vectors.upsert(vec![Entry::new(id, v.to_vec()).with_text(text)])?;
//!     keywords.upsert(id, text)?;
//! }
//! let query_vector = [1.0, 0.0, 0.0];
//! let fused = alpha_fusion(
//!     &vectors.search(&query_vector, 3, None)?,
//!     &keywords.search("rust borrowing", 3),
//!     0.7,
//!     3,
//! )?;
//! assert_eq!(fused.last().unwrap().id, "c"); // far in meaning, no shared words
//! let candidates: Vec<Vec<f32>> = fused.iter().map(|h| vectors.vector(&h.id).unwrap()).collect();
//! let picked = mmr(&query_vector, &candidates, 0.5, 2, Metric::Cosine)?;
//! assert_eq!(picked.len(), 2);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod bf16_gemm;
pub mod bm25;
#[cfg(feature = "device")]
pub mod device_flat;
pub mod distance;
mod error;
pub mod filter;
mod flat;
mod graph;
mod hnsw;
mod hnsw_dump;
mod hnsw_legacy;
mod hybrid;
mod index;
pub mod metrics;
pub mod persist;
mod quantized;
mod records;
mod store;
#[cfg(test)]
mod testutil;
mod topk;
mod types;

pub use bm25::{Bm25Index, Bm25Params};
#[cfg(feature = "device")]
pub use device_flat::{CandleDevice, DeviceFlatIndex};
pub use distance::Metric;
pub use error::{Result, RetrievalError};
pub use filter::{FilterCondition, FilterNode, FilterOperator, MetadataFilter, MetadataFilters};
pub use flat::{FlatConfig, FlatIndex, Storage};
pub use hnsw::{HnswConfig, HnswIndex};
pub use hybrid::{alpha_fusion, mmr, reciprocal_rank_fusion};
pub use index::VectorIndex;
pub use store::{AnyIndex, IndexSpec, VectorStore};
pub use types::{
    Entry, Hit, Metadata, MetadataLookup, MetadataRef, MetadataValue, Record, RecordRef,
};
