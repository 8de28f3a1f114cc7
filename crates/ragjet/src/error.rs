//! The facade's one error type, so a caller (and the Python binding) maps a
//! single enum onto its own error classes instead of one per crate.

use std::path::PathBuf;
use std::time::Duration;

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
///
/// # Examples
///
/// ```
/// use ragjet::retrieval::RetrievalError;
/// use ragjet::{EngineConfig, Error, ErrorKind};
///
/// // Callers branch on the kind, not on every lower crate's variants.
/// let bad_config = EngineConfig::from_toml_str("[cache.semantic]\nthreshold = 'high'").unwrap_err();
/// assert!(matches!(bad_config, Error::Config { .. }));
/// assert_eq!(bad_config.kind(), ErrorKind::Config);
/// let bad_vector = Error::from(RetrievalError::ZeroVector);
/// assert_eq!(bad_vector.kind(), ErrorKind::InvalidInput);
/// assert_eq!(bad_vector.retry_after(), None); // retrying unchanged cannot help
/// ```
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
    /// The call was refused without being run: the model's queue is full
    /// or its deadline passed, a rate limit or an open circuit breaker
    /// turned it away, a model pool had no room. Retry later (after
    /// [`Error::retry_after`] when it is known) or shed load.
    #[error("overloaded: {0}")]
    Overloaded(Refusal),
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
    /// A production control's setting, input, storage or model loader
    /// failed. (A control's *refusal*, rate limited or circuit open, is
    /// [`Error::Overloaded`]: converting a [`ControlError`] sorts it.)
    ///
    /// [`ControlError`]: crate::control::ControlError
    #[error(transparent)]
    Control(crate::control::ControlError),
}

/// Why a call was refused without being run: what [`Error::Overloaded`]
/// holds, so a caller can tell a full queue from a rate limit and knows
/// how long to back off where that is known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The model's queue held `capacity` items already.
    #[error("queue full: {queue:?} holds {capacity} items waiting")]
    QueueFull {
        /// The queue's name (the model's).
        queue: String,
        /// Items it holds at most.
        capacity: usize,
    },
    /// The request waited in the queue past its deadline (`queue.timeout_ms`).
    #[error("queue {queue:?}: deadline expired after {:.1} ms", waited.as_secs_f64() * 1e3)]
    DeadlineExceeded {
        /// The queue's name.
        queue: String,
        /// How long the request waited.
        waited: Duration,
    },
    /// A rate limiter's bucket for `key` is empty.
    #[error("rate limited: {limiter} key {key:?} has no tokens left; retry after {retry_after:?}")]
    RateLimited {
        /// The limiter's name (`engine.query`, `engine.ingest`...).
        limiter: String,
        /// The key (namespace, tenant, user) that ran out.
        key: String,
        /// When a token is back.
        retry_after: Duration,
    },
    /// A circuit breaker is open after repeated failures of what it guards.
    #[error("circuit {breaker} is open after repeated failures; not calling it for another {retry_after:?}")]
    CircuitOpen {
        /// The breaker's name (`engine.model`...).
        breaker: String,
        /// When a probe will be let through.
        retry_after: Duration,
    },
    /// A model pool cannot fit another model: every loaded one is in use.
    #[error("model pool {pool} is full: {message}")]
    PoolFull {
        /// The pool's name.
        pool: String,
        /// Which bound is reached.
        message: String,
    },
}

impl Refusal {
    /// How long to wait before a retry can succeed, when the refuser knows
    /// (rate limit, open circuit); `None` for a full queue or pool, whose
    /// room depends on other callers.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::RateLimited { retry_after, .. } | Refusal::CircuitOpen { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

impl From<crate::control::ControlError> for Error {
    /// Refusals (rate limited, circuit open, pool full) become
    /// [`Error::Overloaded`]; everything else stays [`Error::Control`].
    fn from(e: crate::control::ControlError) -> Self {
        use crate::control::ControlError as C;
        match e {
            C::RateLimited {
                limiter,
                key,
                retry_after,
            } => Error::Overloaded(Refusal::RateLimited {
                limiter,
                key,
                retry_after,
            }),
            C::CircuitOpen {
                breaker,
                retry_after,
            } => Error::Overloaded(Refusal::CircuitOpen {
                breaker,
                retry_after,
            }),
            C::PoolFull { pool, message } => Error::Overloaded(Refusal::PoolFull { pool, message }),
            other => Error::Control(other),
        }
    }
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
    /// The refusal, when the call was refused without being run.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Error::Overloaded(r) => Some(r),
            _ => None,
        }
    }

    /// How long to back off before retrying, when the refusal says
    /// (see [`Refusal::retry_after`]).
    pub fn retry_after(&self) -> Option<Duration> {
        self.refusal().and_then(Refusal::retry_after)
    }

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
            Q::Overloaded { queue, reason } => Error::Overloaded(match reason {
                crate::queue::Overload::Full { capacity } => Refusal::QueueFull { queue, capacity },
                crate::queue::Overload::Expired { waited } => {
                    Refusal::DeadlineExceeded { queue, waited }
                }
            }),
            Q::InvalidOption(m) => Error::config("queue", m),
            other => Error::Queue(other.to_string()),
        }
    }
}

/// Result alias of the facade.
pub type Result<T, E = Error> = std::result::Result<T, E>;
