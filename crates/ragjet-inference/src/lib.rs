//! Embedding inference for ragjet: BERT-family sentence encoders (MiniLM,
//! BGE, E5) on [candle], giving the same vectors as sentence-transformers.
//!
//! ```no_run
//! use ragjet_inference::{locate_default_model, Embedder};
//!
//! # fn main() -> Result<(), ragjet_inference::InferenceError> {
//! let embedder = Embedder::load(locate_default_model()?)?;
//! let vectors = embedder.embed(&["a first passage", "and a second one"])?;
//! assert_eq!(vectors.rows(), 2);
//! assert_eq!(vectors.dim(), 384);
//! # Ok(()) }
//! ```
//!
//! The model folder is read like sentence-transformers reads it:
//! `config.json`, `model.safetensors`, `tokenizer.json`, and when present
//! `modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json`.
//! [`EmbedderOptions`] overrides any of those settings in code.
//!
//! [candle]: https://github.com/huggingface/candle
#![warn(missing_docs)]

mod embedder;
mod encoder;
mod error;
mod folder;
mod kernels;
mod locate;
mod pooling;

pub use embedder::{Embedder, EmbedderOptions, Embeddings, Progress};
pub use error::{InferenceError, Result};
pub use locate::{locate_default_model, MODEL_DIR_ENV, PYTHON_ENV};
pub use pooling::PoolingMode;
