//! The device-generic BERT forward pass: texts padded to the longest of the
//! batch, an additive attention mask, and nothing but stock candle ops
//! (cuBLAS GEMMs and candle's fused softmax / layer-norm kernels on CUDA,
//! the `gemm` crate on the CPU), in f32, f16 or bf16.
//!
//! Differences from candle-transformers' `BertModel`, which this follows
//! otherwise:
//! - the mask's "minus infinity" is the smallest *finite* value of the
//!   dtype: `BertModel` multiplies `f32::MIN` cast to f16 (= −∞) by zero
//!   for real tokens, which gives NaN in f16/bf16;
//! - query, key and value are one GEMM (`[3·hidden, hidden]` weights), and
//!   the `1/√d` attention scale is folded into the query weights at load;
//! - attention runs on 3-D `[texts·heads, len, d]` tensors, the batch layout
//!   cuBLAS's strided-batched GEMM takes without copies;
//! - the last hidden states are cast to f32 and pooled on the device, so
//!   only `texts × dim` floats come back to the host.
//!
//! Batches arrive sorted by length (see `plan_batches`), so padding is small.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use tokenizers::Encoding;

use crate::backend::{check_ids, Backend};
use crate::config::{BertConfig, HiddenAct};
use crate::error::{invalid, InferenceError, Result, TensorResult};
use crate::pooling::PoolingMode;
use crate::weights::BertWeights;

pub(crate) struct PaddedBert {
    /// On `device` in `dtype`; the query projection pre-scaled by `1/√d`.
    w: BertWeights,
    hidden: usize,
    heads: usize,
    vocab: usize,
    type_vocab: usize,
    max_positions: usize,
    eps: f32,
    act: HiddenAct,
    dtype: DType,
    device: Device,
}

fn msg(text: String) -> InferenceError {
    InferenceError::Tensor(text)
}

/// The most negative finite value of `dtype`: added to the scores of
/// padding keys, it makes their softmax weight exactly zero without ever
/// producing an infinity times zero.
fn mask_min(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => half::f16::MIN.to_f32(),
        DType::BF16 => half::bf16::MIN.to_f32(),
        _ => f32::MIN,
    }
}

impl PaddedBert {
    /// Loads the weights (read as f32, fused and scaled on the CPU, then
    /// cast to `dtype` and moved to `device` once).
    pub fn load(
        config: &BertConfig,
        weights: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let c = config;
        let h = c.hidden_size;
        if c.num_attention_heads == 0 || !h.is_multiple_of(c.num_attention_heads) {
            return Err(invalid(
                weights,
                format!(
                    "hidden_size {h} is not a multiple of num_attention_heads {}",
                    c.num_attention_heads
                ),
            ));
        }
        let scale = 1.0 / ((h / c.num_attention_heads) as f64).sqrt();
        let w = BertWeights::load(c, weights, scale)?
            .map(|t| t.to_dtype(dtype)?.to_device(device))
            .map_err(|e| invalid(weights, e))?;
        Ok(Self {
            w,
            hidden: h,
            heads: c.num_attention_heads,
            vocab: c.vocab_size,
            type_vocab: c.type_vocab_size,
            max_positions: c.max_position_embeddings,
            eps: c.layer_norm_eps as f32,
            act: c.hidden_act,
            dtype,
            device: device.clone(),
        })
    }

    /// `x · wᵀ + b` for `x: [rows, in]`, `w: [out, in]` (cuBLAS takes the
    /// transposed weight as is: no copy).
    fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&w.t()?)?.broadcast_add(b)
    }

    fn layer_norm(x: &Tensor, ln: &(Tensor, Tensor), eps: f32) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &ln.0, &ln.1, eps)
    }

    /// Pooled f32 vectors `[texts, modes·hidden]` for one batch.
    fn forward(&self, batch: &[&Encoding], modes: &[PoolingMode]) -> Result<Tensor> {
        check_ids(batch, self.vocab, self.type_vocab)?;
        let b = batch.len();
        let s = batch.iter().map(|e| e.len()).max().unwrap_or(0);
        if b == 0 || s == 0 {
            return Err(msg("empty batch".into()));
        }
        if s > self.max_positions {
            return Err(msg(format!(
                "a text of {s} tokens exceeds the model's {} positions",
                self.max_positions
            )));
        }
        self.run(batch, modes, b, s).tensor()
    }

    /// [`forward`](Self::forward) after its checks: `b` texts, padded to `s`.
    fn run(
        &self,
        batch: &[&Encoding],
        modes: &[PoolingMode],
        b: usize,
        s: usize,
    ) -> candle_core::Result<Tensor> {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let mut ids = vec![0u32; b * s];
        let mut types = vec![0u32; b * s];
        let mut keep = vec![0f32; b * s];
        let mut lens = Vec::with_capacity(b);
        for (row, enc) in batch.iter().enumerate() {
            let n = enc.len();
            ids[row * s..row * s + n].copy_from_slice(enc.get_ids());
            types[row * s..row * s + n].copy_from_slice(enc.get_type_ids());
            keep[row * s..row * s + n].fill(1.0);
            lens.push(n as f32);
        }
        let dev = &self.device;
        let ids = Tensor::from_vec(ids, b * s, dev)?;
        let types = Tensor::from_vec(types, b * s, dev)?;
        // Additive mask over the keys: 0 for tokens, the dtype's most
        // negative finite value for padding.
        let min = mask_min(self.dtype);
        let bias: Vec<f32> = keep
            .iter()
            .map(|&k| if k > 0.0 { 0.0 } else { min })
            .collect();
        let mask = Tensor::from_vec(bias, (b, 1, 1, s), dev)?.to_dtype(self.dtype)?;

        // Embeddings: word + token type + position, then layer norm.
        let x =
            (self.w.word.index_select(&ids, 0)? + self.w.token_type.index_select(&types, 0)?)?;
        let x = x
            .reshape((b, s, h))?
            .broadcast_add(&self.w.position.narrow(0, 0, s)?.unsqueeze(0)?)?
            .reshape((b * s, h))?;
        let mut x = Self::layer_norm(&x, &self.w.emb_ln, self.eps)?;

        for layer in &self.w.layers {
            let qkv = Self::linear(&x, &layer.qkv_w, &layer.qkv_b)?
                .reshape((b, s, 3, heads, d))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?; // [3, b, heads, s, d]
            let q = qkv.get(0)?.reshape((b * heads, s, d))?;
            let k = qkv.get(1)?.reshape((b * heads, s, d))?;
            let v = qkv.get(2)?.reshape((b * heads, s, d))?;
            let scores = q
                .matmul(&k.t()?)?
                .reshape((b, heads, s, s))?
                .broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?.reshape((b * heads, s, s))?;
            let context = probs
                .matmul(&v)?
                .reshape((b, heads, s, d))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * s, h))?;
            let attn = (Self::linear(&context, &layer.out_w, &layer.out_b)? + &x)?;
            let attn = Self::layer_norm(&attn, &layer.attn_ln, self.eps)?;
            let up = Self::linear(&attn, &layer.up_w, &layer.up_b)?;
            let up = match self.act {
                HiddenAct::Gelu => up.gelu_erf()?,
                HiddenAct::GeluApproximate => up.gelu()?,
                HiddenAct::Relu => up.relu()?,
            };
            let down = (Self::linear(&up, &layer.down_w, &layer.down_b)? + &attn)?;
            x = Self::layer_norm(&down, &layer.ffn_ln, self.eps)?;
        }

        // Pooling, in f32, on the device.
        let states = x.to_dtype(DType::F32)?.reshape((b, s, h))?;
        let keep = Tensor::from_vec(keep, (b, s, 1), dev)?;
        let lens = Tensor::from_vec(lens, (b, 1), dev)?;
        let mut pooled = Vec::with_capacity(modes.len());
        for mode in modes {
            pooled.push(match mode {
                PoolingMode::Cls => states.narrow(1, 0, 1)?.squeeze(1)?,
                PoolingMode::Max => {
                    let pad = ((keep.ones_like()? - &keep)? * f64::from(f32::MIN))?;
                    states.broadcast_add(&pad)?.max(1)?
                }
                PoolingMode::Mean => states.broadcast_mul(&keep)?.sum(1)?.broadcast_div(&lens)?,
                PoolingMode::MeanSqrtLen => states
                    .broadcast_mul(&keep)?
                    .sum(1)?
                    .broadcast_div(&lens.sqrt()?)?,
            });
        }
        Tensor::cat(&pooled, D::Minus1)
    }
}

impl Backend for PaddedBert {
    fn hidden_size(&self) -> usize {
        self.hidden
    }

    fn pads(&self) -> bool {
        true
    }

    fn embed_batch(
        &self,
        batch: &[&Encoding],
        modes: &[PoolingMode],
        out: &mut [f32],
    ) -> Result<()> {
        let pooled = self.forward(batch, modes)?;
        let values = pooled
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .tensor()?;
        if values.len() != out.len() {
            return Err(msg(format!(
                "padded encoder returned {} values for {} expected",
                values.len(),
                out.len()
            )));
        }
        out.copy_from_slice(&values);
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn memory(&self) -> Option<(u64, u64)> {
        crate::device::device_memory(&self.device)
    }
}
