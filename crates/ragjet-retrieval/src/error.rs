use std::path::PathBuf;

/// Everything that can go wrong while building, querying, saving or loading
/// an index.
///
/// Bad user input (a wrong dimension, a NaN component, a malformed filter, a
/// corrupt file) is reported here; nothing in this crate panics on it.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{Entry, FlatConfig, FlatIndex, Metric, RetrievalError, VectorIndex};
///
/// let mut index = FlatIndex::new(FlatConfig::new(3, Metric::Cosine))?;
/// let err = index.upsert(vec![Entry::new("a", vec![1.0, 2.0])]).unwrap_err();
/// assert!(matches!(err, RetrievalError::DimensionMismatch { .. }));
/// let err = index.upsert(vec![Entry::new("z", vec![0.0; 3])]).unwrap_err();
/// assert!(matches!(err, RetrievalError::ZeroVector));
/// assert!(index.is_empty()); // a refused batch leaves nothing behind
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetrievalError {
    /// A vector's length differs from the index dimension.
    #[error("dimension mismatch: index has dimension {expected}, vector has {got}")]
    DimensionMismatch {
        /// The index dimension.
        expected: usize,
        /// The length of the offending vector.
        got: usize,
    },
    /// A vector holds NaN or an infinity; such a vector has no defined
    /// distance to anything, so it is refused rather than silently ranked.
    #[error("vector has a non-finite component (NaN or infinity) at position {index}")]
    NonFinite {
        /// Position of the first bad component.
        index: usize,
    },
    /// An all-zero vector was given to a cosine index; it has no direction.
    #[error("zero vector: cosine similarity is undefined for a vector of norm 0")]
    ZeroVector,
    /// An option is out of its valid range (dimension 0, M too large, ...).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// An entry id is empty or appears twice in one batch.
    #[error("invalid id: {0}")]
    InvalidId(String),
    /// A filter cannot be read (bad JSON, an unknown operator or
    /// condition). Values never make a filter invalid: as in llama-index,
    /// they are judged against each entry's metadata.
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// The requested combination is not implemented (e.g. HNSW with the raw
    /// dot-product metric).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A namespace was not found in a [`crate::VectorStore`].
    #[error("namespace {0:?} does not exist")]
    NamespaceNotFound(String),
    /// A namespace with this name already exists.
    #[error("namespace {0:?} already exists")]
    NamespaceExists(String),
    /// An I/O operation on a saved index failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A saved index is corrupt, truncated, or from an unknown format
    /// version: loading refuses it instead of returning wrong answers.
    #[error("corrupt or unreadable index at {path}: {reason}")]
    Corrupt {
        /// The file that failed verification.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = RetrievalError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RetrievalError {
    let path = path.into();
    move |source| RetrievalError::Io { path, source }
}

pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl ToString) -> RetrievalError {
    RetrievalError::Corrupt {
        path: path.into(),
        reason: reason.to_string(),
    }
}
