use std::path::PathBuf;

/// Everything that can go wrong in this crate.
///
/// Tier failures on the read and write paths (disk full, Redis down) are not
/// reported here: the cache degrades to the tiers that still work and counts
/// an error in its statistics, because a cache must never fail the request it
/// is meant to speed up. What remains are configuration mistakes, values that
/// cannot be serialised, and stores that cannot be opened.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::{CacheError, ResponseCache, SamplingParams, Scope};
///
/// let cache = ResponseCache::new()?;
/// // Answers may draw on what one user may see, so a tenant-wide scope is refused.
/// let err = cache.get(&Scope::tenant("acme"), "hi", "m", &SamplingParams::default()).unwrap_err();
/// assert!(matches!(err, CacheError::UserRequired));
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// An option is out of its valid range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The on-disk store could not be opened or created.
    #[error("could not open the disk cache at {path}: {reason}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A disk-store operation failed outside the degrade-on-error paths
    /// (for example `clear`).
    #[error("disk cache error: {0}")]
    Storage(String),
    /// A value could not be serialised.
    #[error("could not encode a cache value: {0}")]
    Encode(String),
    /// A batch compute function returned a different number of results than
    /// it was given inputs.
    #[error("batch compute returned {got} results for {expected} inputs")]
    BatchSize {
        /// How many inputs were passed.
        expected: usize,
        /// How many results came back.
        got: usize,
    },
    /// A vector has the wrong dimension for this semantic cache, or is empty,
    /// zero or not finite.
    #[error("invalid vector: {0}")]
    InvalidVector(String),
    /// The HNSW index behind a large semantic-cache partition refused an
    /// operation (an internal invariant broke; inputs are checked before).
    #[error("semantic index error: {0}")]
    Index(#[from] ragjet_retrieval::RetrievalError),
    /// A user-scoped cache was used with a scope that names no user.
    #[error("this cache is user-scoped: the scope must name a user")]
    UserRequired,
    /// The Redis tier could not be configured (bad URL).
    #[cfg(feature = "redis")]
    #[error("redis configuration error: {0}")]
    Redis(String),
}

/// Result alias for this crate.
pub type Result<T, E = CacheError> = std::result::Result<T, E>;

pub(crate) fn storage(e: impl std::fmt::Display) -> CacheError {
    CacheError::Storage(e.to_string())
}
