//! The facade's one error type, so a caller (and the Python binding) maps a
//! single enum onto its own error classes instead of one per crate.

use std::path::PathBuf;

use ragjet_cache::CacheError;
use ragjet_inference::InferenceError;
use ragjet_retrieval::RetrievalError;
use ragjet_telemetry::TelemetryError;

/// Everything an [`Engine`](crate::Engine) call can fail with.
///
/// Bad user input is always an error value, never a panic. The lower
/// crates' errors are kept whole (their variants say what went wrong);
/// [`Error::kind`] sorts every variant into the few classes a caller acts
/// on differently.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading or running the embedding or reranking model failed.
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// The vector or keyword index refused an operation.
    #[error(transparent)]
    Retrieval(#[from] RetrievalError),
    /// A cache could not be opened or configured.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A telemetry report or cost setting was refused.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// An argument is out of its valid range: empty text, `top_k` of 0, a
    /// NaN weight, a malformed filter, an unknown namespace.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A configuration value is wrong or unknown; `key` is its dotted path
    /// in the TOML file (`cache.semantic.threshold`).
    #[error("configuration key `{key}`: {message}")]
    Config {
        /// Dotted path of the offending key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The shared model is busy: its queue is full or the request's
    /// deadline passed before it was served. Retry later or shed load.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// Reading or writing an engine directory failed, or what was read is
    /// not a complete, checksummed engine state.
    #[error("storage error at {path}: {message}")]
    Storage {
        /// The file or directory involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Cutting a document into chunks failed (bad chunk settings, a
    /// tokenizer failure).
    #[error(transparent)]
    Chunk(#[from] crate::chunk::ChunkError),
    /// The model's queue failed without running the request (its worker
    /// panicked or shut down).
    #[error("model queue: {0}")]
    Queue(String),
    /// Query handling failed: an empty query, a bad synonym map or intent
    /// policy, a failing HyDE hook.
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    /// A production control refused the call: rate limited, circuit open
    /// (kind `Overloaded`), or a control's setting or storage failed.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
}

/// The class of an [`Error`]: what a caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request was wrong; retrying it unchanged fails again.
    InvalidInput,
    /// The engine's settings are wrong.
    Config,
    /// No model could be found or loaded.
    ModelLoad,
    /// Temporarily unable to serve; retrying later may succeed.
    Overloaded,
    /// Disk or saved state trouble.
    Storage,
    /// A device (GPU) is unavailable or out of memory.
    Device,
    /// Anything else (a model execution failure, a failing HyDE hook).
    Internal,
}

impl Error {
    /// Sorts this error into an [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::Config { .. } => ErrorKind::Config,
            Error::Overloaded(_) => ErrorKind::Overloaded,
            Error::Storage { .. } => ErrorKind::Storage,
            Error::Queue(_) => ErrorKind::Internal,
            Error::Chunk(e) => match e {
                crate::chunk::ChunkError::InvalidConfig(_) => ErrorKind::Config,
                _ => ErrorKind::InvalidInput,
            },
            Error::Query(e) => match e {
                crate::query::QueryError::Empty
                | crate::query::QueryError::EmptyAfterCleaning { .. } => ErrorKind::InvalidInput,
                crate::query::QueryError::InvalidSynonym(_)
                | crate::query::QueryError::InvalidPolicy(_) => ErrorKind::Config,
                _ => ErrorKind::Internal,
            },
            Error::Inference(e) => match e {
                InferenceError::MissingFile { .. }
                | InferenceError::Io { .. }
                | InferenceError::InvalidFile { .. }
                | InferenceError::Unsupported(_)
                | InferenceError::ModelNotFound(_) => ErrorKind::ModelLoad,
                InferenceError::EmptyInput | InferenceError::Tokenizer(_) => {
                    ErrorKind::InvalidInput
                }
                InferenceError::InvalidOption(_) => ErrorKind::Config,
                InferenceError::DeviceUnavailable(_) | InferenceError::OutOfMemory { .. } => {
                    ErrorKind::Device
                }
                _ => ErrorKind::Internal,
            },
            Error::Retrieval(e) => match e {
                RetrievalError::DimensionMismatch { .. }
                | RetrievalError::NonFinite { .. }
                | RetrievalError::ZeroVector
                | RetrievalError::InvalidId(_)
                | RetrievalError::InvalidFilter(_)
                | RetrievalError::NamespaceNotFound(_)
                | RetrievalError::NamespaceExists(_) => ErrorKind::InvalidInput,
                RetrievalError::InvalidOption(_) | RetrievalError::Unsupported(_) => {
                    ErrorKind::Config
                }
                RetrievalError::Io { .. } | RetrievalError::Corrupt { .. } => ErrorKind::Storage,
                _ => ErrorKind::Internal,
            },
            Error::Cache(e) => match e {
                CacheError::InvalidOption(_) => ErrorKind::Config,
                CacheError::Open { .. } | CacheError::Storage(_) => ErrorKind::Storage,
                CacheError::InvalidVector(_) => ErrorKind::InvalidInput,
                _ => ErrorKind::Internal,
            },
            Error::Telemetry(_) => ErrorKind::Config,
            Error::Control(e) => {
                use crate::control::ControlError as C;
                match e {
                    C::RateLimited { .. } | C::CircuitOpen { .. } | C::PoolFull { .. } => {
                        ErrorKind::Overloaded
                    }
                    C::InvalidConfig(_) => ErrorKind::Config,
                    C::InvalidInput(_) => ErrorKind::InvalidInput,
                    C::Storage { .. } => ErrorKind::Storage,
                    C::Load { .. } => ErrorKind::ModelLoad,
                }
            }
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn storage(path: impl Into<PathBuf>, message: impl ToString) -> Self {
        Error::Storage {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

impl From<crate::queue::QueueError<InferenceError>> for Error {
    fn from(e: crate::queue::QueueError<InferenceError>) -> Self {
        use crate::queue::QueueError as Q;
        match e {
            Q::Failed(inner) => Error::Inference(inner),
            Q::Overloaded { .. } => Error::Overloaded(e.to_string()),
            Q::InvalidOption(m) => Error::config("queue", m),
            other => Error::Queue(other.to_string()),
        }
    }
}

/// Result alias of the facade.
pub type Result<T, E = Error> = std::result::Result<T, E>;
