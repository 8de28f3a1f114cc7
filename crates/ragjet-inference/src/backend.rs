//! The forward-pass backends behind [`Embedder`](crate::Embedder), in the
//! spirit of text-embeddings-inference's `Backend` trait: a backend takes one
//! batch of tokenised texts and returns one pooled f32 vector per text.
//! Batching, the adaptive token budget, normalisation and output order live
//! in the embedder and do not depend on the backend.
//!
//! - [`BackendKind::Packed`]: the CPU encoder of [`crate::encoder`] — f32
//!   or bf16 products, texts packed end to end with no padding, fused
//!   custom CPU kernels. The default on the CPU.
//! - [`BackendKind::Padded`]: [`crate::padded`] — texts padded to the
//!   longest of the batch with an attention mask, built only from stock
//!   candle ops, so it runs on any candle device (CUDA, CPU) and in any
//!   float format (f32, f16, bf16). The only backend on CUDA; on the CPU it
//!   is used for f16.

use tokenizers::Encoding;

use crate::encoder::{BertEncoder, PackedBatch};
use crate::error::{InferenceError, Result};
use crate::pooling::{pool_into, PoolingMode};

/// Which forward-pass implementation an [`Embedder`](crate::Embedder) uses.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_inference::{BackendKind, Device, Embedder, EmbedderOptions, Precision};
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-cross-encoder");
/// let load = |backend| {
///     Embedder::load_with(dir, EmbedderOptions {
///         device: Device::Cpu,
///         precision: Some(Precision::F32),
///         backend: Some(backend),
///         ..Default::default()
///     })
/// };
/// let packed = load(BackendKind::Packed)?;
/// let padded = load(BackendKind::Padded)?;
/// assert_eq!(packed.backend().to_string(), "packed");
/// // Two implementations, one answer.
/// let (a, b) = (packed.embed_one("same text")?, padded.embed_one("same text")?);
/// let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
/// let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
/// assert!(dot / (norm(&a) * norm(&b)) > 0.9999);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// The packed CPU encoder (f32 or bf16 products, CPU only): the fastest
    /// on the CPU.
    Packed,
    /// The padded candle encoder: any device, any [`Precision`](crate::Precision).
    Padded,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Packed => "packed",
            BackendKind::Padded => "padded",
        })
    }
}

/// One forward-pass implementation.
pub(crate) trait Backend: Send + Sync {
    /// Width of the model's hidden states.
    fn hidden_size(&self) -> usize;

    /// Whether a batch is padded to its longest text: the memory of a
    /// forward pass then grows with `texts × longest`, not with the sum of
    /// the lengths, and the token budget counts it that way.
    fn pads(&self) -> bool;

    /// Runs `batch` and writes, for text `r`, its pooled (not normalised)
    /// f32 vector of `modes.len() × hidden_size()` values into row `r` of
    /// `out`.
    fn embed_batch(
        &self,
        batch: &[&Encoding],
        modes: &[PoolingMode],
        out: &mut [f32],
    ) -> Result<()>;

    /// Used and total bytes of the device memory, where that means anything
    /// (a GPU); `None` on the CPU.
    fn memory(&self) -> Option<(u64, u64)> {
        None
    }
}

/// Rejects ids the model's embedding tables do not have (a tokenizer.json
/// from another model), before any device work.
pub(crate) fn check_ids(batch: &[&Encoding], vocab: usize, type_vocab: usize) -> Result<()> {
    check_not_empty(batch)?;
    for enc in batch {
        if let Some(&id) = enc.get_ids().iter().find(|&&id| id as usize >= vocab) {
            return Err(InferenceError::Tokenizer(format!(
                "token id {id} is outside the model's vocabulary of {vocab}: tokenizer.json does not belong to this model"
            )));
        }
        if enc.get_type_ids().iter().any(|&t| t as usize >= type_vocab) {
            return Err(InferenceError::Tokenizer(
                "token type id outside the model's type vocabulary".into(),
            ));
        }
    }
    Ok(())
}

/// Rejects texts of no tokens: they have nothing to attend over or pool
/// (a softmax over no columns, a mean over no rows). The embedder gives
/// them a zero vector without running a backend, so this is a backstop.
pub(crate) fn check_not_empty(batch: &[&Encoding]) -> Result<()> {
    if batch.iter().any(|e| e.is_empty()) {
        return Err(InferenceError::Tokenizer(
            "a text of no tokens reached the encoder".into(),
        ));
    }
    Ok(())
}

/// The packed CPU encoder as a [`Backend`]: pooling reads each text's own
/// rows of the packed hidden states.
pub(crate) struct PackedBackend(pub BertEncoder);

/// The most tokens one forward pass of the packed encoder takes (whole
/// texts; a longer text goes alone). Why: a pass holds 9 KB of f32
/// activations per token at all-MiniLM-L6-v2's width (layer input,
/// query/key/value, context, attention output), and once those outgrow the
/// caches every layer streams them through memory. On the 2-core Xeon here,
/// 32 fixture passages (~5,400 tokens) in one pass embedded 10–25 % slower
/// than in passes of 1,536–2,048 tokens, and bf16 was slower again at 1,024
/// (`docs/performance.md`, "Int8 encoder").
const FORWARD_TOKENS: usize = 2048;

impl PackedBackend {
    fn forward_group(
        &self,
        batch: &[&Encoding],
        modes: &[PoolingMode],
        out: &mut [f32],
    ) -> Result<()> {
        let packed = PackedBatch::from_encodings(batch);
        let states = self.0.forward(&packed)?;
        let hidden = self.hidden_size();
        let dim = modes.len() * hidden;
        for (row, dst) in out.chunks_exact_mut(dim).enumerate() {
            let (start, end) = (packed.offsets[row], packed.offsets[row + 1]);
            pool_into(
                &states[start * hidden..end * hidden],
                end - start,
                hidden,
                modes,
                dst,
            );
        }
        Ok(())
    }
}

impl Backend for PackedBackend {
    fn hidden_size(&self) -> usize {
        self.0.hidden_size()
    }

    fn pads(&self) -> bool {
        false
    }

    fn embed_batch(
        &self,
        batch: &[&Encoding],
        modes: &[PoolingMode],
        out: &mut [f32],
    ) -> Result<()> {
        check_not_empty(batch)?;
        let dim = modes.len() * self.hidden_size();
        let mut start = 0;
        while start < batch.len() {
            let (mut end, mut tokens) = (start + 1, batch[start].len());
            while end < batch.len() && tokens + batch[end].len() <= FORWARD_TOKENS {
                tokens += batch[end].len();
                end += 1;
            }
            let group = &batch[start..end];
            self.forward_group(group, modes, &mut out[start * dim..end * dim])?;
            start = end;
        }
        Ok(())
    }
}
