//! Tiered caching for ragjet: memory, disk and Redis tiers, typed caches for
//! embeddings, retrieval results and responses, and a semantic cache.
//!
//! This crate is being built; it has no public API yet.
#![warn(missing_docs)]
