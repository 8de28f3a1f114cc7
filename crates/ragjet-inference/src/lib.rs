//! Embedding inference for ragjet: BERT-family sentence encoders (MiniLM,
//! BGE, E5) on [candle], giving the same vectors as sentence-transformers.
//! (This example is not run as a test because it needs the real
//! all-MiniLM-L6-v2 model; the item examples below run on a tiny test model.)
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
//! # Devices and precision
//!
//! [`EmbedderOptions::device`] picks where the model runs: [`Device::Cpu`],
//! [`Device::Cuda`]`(n)` (crate feature `cuda`), or [`Device::Auto`] (the
//! default), which takes GPU 0 when the crate was built with `cuda` and a GPU
//! answers and otherwise the CPU, logging which and why (`tracing` info).
//! Asking for CUDA where it cannot run is an
//! [`InferenceError::DeviceUnavailable`], never a panic. [`cuda_available`]
//! says beforehand whether this build can use a GPU here, and
//! [`cuda_driver_available`] is ragjet's one probe for an NVIDIA driver
//! (it loads the library without calling into it).
//! [`EmbedderOptions::precision`] picks the forward pass's float format
//! ([`Precision`]); by default f16 on CUDA, and on the CPU bf16 products
//! where it has AVX-512 BF16 (twice the f32 multiply rate; embeddings within
//! cosine 0.9999 of sentence-transformers' f32) and f32 elsewhere
//! ([`Precision::cpu_default`]). Hidden states are cast to f32 before
//! pooling and normalisation in every case.
//!
//! Two forward-pass backends ([`BackendKind`]) sit behind the same
//! [`Embedder`]:
//! - **packed** (CPU, f32 or bf16 products, the CPU default): the texts of a
//!   batch are packed end to end without padding and run through fused
//!   custom CPU kernels;
//! - **padded** (any candle device, f32/f16/bf16): texts padded to the
//!   batch's longest with an attention mask, only stock candle ops (cuBLAS
//!   and candle's CUDA kernels on a GPU). It is the only backend on CUDA and
//!   runs f16 on the CPU; in f32 it agrees with the packed one to cosine
//!   ≥ 0.99999.
//!
//! # Adaptive batching
//!
//! Texts are sorted by length (so padding stays small) and grouped under a
//! token budget that starts at [`EmbedderOptions::max_batch_tokens`]
//! (padded batches count `texts × longest`). When a forward pass runs out of
//! device memory (CUDA/cuBLAS out-of-memory errors, recognised by their
//! text), the budget drops to half the failed batch's cost and the same
//! texts are re-planned and retried: no text is dropped, and the smaller
//! limit is kept ([`Embedder::batch_token_limit`], gauge
//! `ragjet_embedding_batch_token_limit{device}`). On a GPU the budget grows by a
//! quarter after a few successful batches it limited while a quarter of the
//! device memory is free, up to 8 × `max_batch_tokens` and ¾ of the smallest
//! batch that failed. A single text that does not fit is an
//! [`InferenceError::OutOfMemory`]. [`EmbedderOptions::simulate_oom_above_tokens`]
//! fakes the out-of-memory error, to test the back-off without a GPU.
//! On CUDA, `ragjet_gpu_memory_used_bytes` / `ragjet_gpu_memory_total_bytes`
//! are set after every batch; `gpu_memory` (feature `cuda`) reads them on
//! demand. Metric names: [`metrics`].
//!
//! [candle]: https://github.com/huggingface/candle
#![warn(missing_docs)]

mod adaptive;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx;
mod attention;
mod backend;
mod config;
mod cross_encoder;
mod device;
mod embedder;
mod encoder;
mod error;
mod folder;
mod kernels;
mod linear;
mod locate;
pub mod metrics;
mod padded;
mod pooling;
mod weights;

pub use backend::BackendKind;
pub use cross_encoder::{CrossEncoder, CrossEncoderOptions, ScoreActivation};
#[cfg(feature = "cuda")]
pub use device::gpu_memory;
pub use device::{cuda_available, cuda_driver_available, Device, Precision};
pub use embedder::{EmbedCall, Embedder, EmbedderOptions, Embeddings, Progress, Prompt};
pub use error::{InferenceError, Result};
pub use locate::{locate_default_model, MODEL_DIR_ENV, PYTHON_ENV};
pub use pooling::PoolingMode;
