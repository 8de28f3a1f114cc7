//! Vector and keyword retrieval for ragjet: exact and HNSW indexes,
//! metadata filters, BM25 and hybrid fusion.
//!
//! This crate is being built; it has no public API yet.
#![warn(missing_docs)]
