//! Tiered caching for ragjet: memory, disk and Redis tiers, typed caches for
//! embeddings, retrieval results and responses, and a semantic cache.
//!
//! Recomputing embeddings, searches and LLM answers is the largest avoidable
//! cost of a RAG request; this crate removes it without ever mixing tenants
//! or failing a request because a cache tier is down.
//!
//! ```
//! use ragjet_cache::{DiskConfig, MemoryConfig, Scope, TieredCache};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), ragjet_cache::CacheError> {
//! let dir = tempfile::tempdir().unwrap();
//! let cache = TieredCache::builder()
//!     .memory(MemoryConfig::default())
//!     .disk(DiskConfig::new(dir.path().join("cache.redb")))
//!     .default_ttl(Some(Duration::from_secs(3600)))
//!     .build()?;
//! let scope = Scope::tenant("acme").with_data_version(3);
//! let key = scope.key("answers").str("what is a cache?").finish();
//! let answer: Result<String, std::convert::Infallible> =
//!     cache.get_or_compute(&key, || Ok("a place to keep results".to_string()));
//! assert_eq!(cache.get::<String>(&key), answer.ok());
//! // Another tenant asking the same thing never sees acme's entry.
//! let other = Scope::tenant("globex").key("answers").str("what is a cache?").finish();
//! assert_eq!(cache.get::<String>(&other), None);
//! # Ok(()) }
//! ```
//!
//! * Keys: [`Scope`] → [`KeyBuilder`] → [`CacheKey`], a BLAKE3 hash of a
//!   documented length-prefixed encoding (see [`key`](crate::CacheKey)).
//! * Values: any [`CacheValue`] (serde + a type name and schema version),
//!   stored as postcard behind a checked header; wrong type or version is a
//!   miss.
//! * Tiers: L1 memory ([`MemoryConfig`], quick_cache, byte-bounded), L2 disk
//!   ([`DiskConfig`], redb, lz4, crash-safe), L3 Redis (feature `redis`,
//!   `RedisConfig`), combined by [`TieredCache`].
//! * Typed caches: [`EmbeddingCache`], [`RetrievalCache`], [`ResponseCache`],
//!   and the embedding-similarity [`SemanticCache`].
//! * Telemetry: counters and gauges named in [`metrics`],
//!   spans `cache.get` and `cache.compute`; no recorder or subscriber is
//!   installed here.
//!
//! Time comes from a [`Clock`]; expiry times are absolute (ms since the
//! epoch) and travel with the values, so they hold across restarts and
//! replicas, and tests move a [`ManualClock`] instead of sleeping.
#![warn(missing_docs)]

mod clock;
mod codec;
mod disk;
mod error;
mod key;
mod memory;
pub mod metrics;
mod probe;
#[cfg(feature = "redis")]
mod redis_tier;
mod semantic;
mod stats;
mod tiered;
mod typed;

#[cfg(test)]
mod tests;

pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{type_tag, CacheValue};
pub use disk::DiskConfig;
pub use error::{CacheError, Result};
pub use key::{CacheKey, KeyBuilder, Scope};
pub use memory::MemoryConfig;
#[cfg(feature = "redis")]
pub use redis_tier::RedisConfig;
pub use semantic::{
    SemanticCache, SemanticConfig, SemanticHit, SemanticStats, SEMANTIC_INDEX_NAMESPACE,
};
pub use stats::{CacheKind, CacheStats, TierKind, TierStats};
pub use tiered::{TieredCache, TieredCacheBuilder};
pub use typed::{
    AdaptiveTtl, EmbeddingCache, ResponseCache, RetrievalCache, RetrievalQuery, SamplingParams,
};
