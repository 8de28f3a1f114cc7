use std::path::PathBuf;

/// Everything that can go wrong while loading or running an embedding model.
///
/// Bad user input (an empty list, a corrupt model folder, a bad option) is
/// reported here; nothing in this crate panics on it.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_inference::{Embedder, InferenceError};
///
/// let dir = std::env::temp_dir().join(format!("ragjet-doc-empty-model-{}", std::process::id()));
/// assert!(matches!(Embedder::load(&dir), Err(InferenceError::ModelNotFound(_))));
/// // A folder that exists but lacks a file names the file, so the fix is obvious.
/// std::fs::create_dir_all(&dir)?;
/// match Embedder::load(&dir) {
///     Err(InferenceError::MissingFile { path }) => assert!(path.ends_with("config.json")),
///     other => panic!("expected MissingFile, got {other:?}"),
/// }
/// std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferenceError {
    /// A file the model folder must contain is absent.
    #[error("model file {path} is missing")]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
    },
    /// A file exists but could not be read.
    #[error("could not read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its content is not what a model folder holds
    /// (bad JSON, truncated safetensors, missing or misshaped weights).
    #[error("{path} is not a valid model file: {reason}")]
    InvalidFile {
        /// The file that failed.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The folder holds a model this crate cannot run (not BERT-family, or
    /// a pooling mode or activation it does not implement).
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// No model folder could be found (see [`crate::locate_default_model`]).
    #[error("no model folder found: {0}")]
    ModelNotFound(String),
    /// `embed` was called with no texts.
    #[error("no texts to embed: the input list is empty")]
    EmptyInput,
    /// An option is out of its valid range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The tokenizer rejected the input.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// The requested device cannot be used: no `cuda` feature in this
    /// build, no GPU with that ordinal, or no NVIDIA driver.
    #[error("device unavailable: {0}")]
    DeviceUnavailable(String),
    /// The device ran out of memory on a batch of a single text, so halving
    /// the batch (see [`crate::Embedder`]'s back-off) cannot help.
    #[error("out of memory on {device} embedding one text of {tokens} tokens: {message}")]
    OutOfMemory {
        /// The device, as [`crate::Embedder::device_name`] names it.
        device: String,
        /// Tokens of the text that failed.
        tokens: usize,
        /// The error the device reported.
        message: String,
    },
    /// A tensor operation failed while running the model (the tensor
    /// library's message; its error type is not part of this API, so that
    /// a candle update is not a breaking change of ragjet).
    #[error("model execution failed: {0}")]
    Tensor(String),
}

/// Result alias for this crate.
pub type Result<T, E = InferenceError> = std::result::Result<T, E>;

pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl ToString) -> InferenceError {
    InferenceError::InvalidFile {
        path: path.into(),
        reason: reason.to_string(),
    }
}

/// A candle error as an [`InferenceError::Tensor`]. Deliberately not a
/// `From` impl: trait impls are public, and one would put candle's error
/// type into this crate's API.
pub(crate) fn tensor(e: candle_core::Error) -> InferenceError {
    InferenceError::Tensor(e.to_string())
}

/// `.tensor()?` on candle results, where `?` alone would need that `From`.
pub(crate) trait TensorResult<T> {
    fn tensor(self) -> Result<T>;
}

impl<T> TensorResult<T> for candle_core::Result<T> {
    fn tensor(self) -> Result<T> {
        self.map_err(tensor)
    }
}
