//! A BERT checkpoint's parameters, read once for both backends.
//!
//! The packed CPU encoder and the padded (any device) encoder walk the same
//! tensor names and shapes and fuse Q, K and V the same way; they differ
//! only in the layout they keep (the packed encoder's `Linear` panels, the
//! checkpoint's own layout cast to the device dtype for candle's matmul).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::BertConfig;
use crate::error::{invalid, InferenceError, Result};

/// One encoder layer as the checkpoint stores it: linear weights are
/// `[out, in]`; Q, K and V are fused into one `[3h, h]` projection.
pub(crate) struct LayerWeights {
    pub qkv_w: Tensor,
    pub qkv_b: Tensor,
    pub out_w: Tensor,
    pub out_b: Tensor,
    /// Layer norm `(weight, bias)` after attention.
    pub attn_ln: (Tensor, Tensor),
    pub up_w: Tensor,
    pub up_b: Tensor,
    pub down_w: Tensor,
    pub down_b: Tensor,
    /// Layer norm `(weight, bias)` after the feed-forward block.
    pub ffn_ln: (Tensor, Tensor),
}

/// Every parameter of a BERT encoder, f32 on the CPU.
pub(crate) struct BertWeights {
    pub word: Tensor,
    pub position: Tensor,
    pub token_type: Tensor,
    pub emb_ln: (Tensor, Tensor),
    pub layers: Vec<LayerWeights>,
}

impl BertWeights {
    /// Reads `weights` (safetensors, with or without the `bert.` prefix of
    /// `BertModel` checkpoints). Q's weight and bias are multiplied by
    /// `q_scale` (1 keeps them as stored).
    ///
    /// The file is read into memory, not memory-mapped: every tensor is
    /// copied out of it here anyway, and a mapped file that another process
    /// truncates while it is read is undefined behaviour (a SIGBUS at best),
    /// whereas a short read is an error. The bytes are dropped on return.
    pub fn load(config: &BertConfig, weights: &Path, q_scale: f64) -> Result<Self> {
        let bytes = std::fs::read(weights).map_err(|source| InferenceError::Io {
            path: weights.to_owned(),
            source,
        })?;
        // safetensors validates the header and every tensor's extent
        // against the buffer before anything is read.
        let vb = VarBuilder::from_slice_safetensors(&bytes, DType::F32, &Device::Cpu)
            .map_err(|e| invalid(weights, e))?;
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        Self::read(config, vb, q_scale).map_err(|e| invalid(weights, e))
    }

    /// Every tensor through `f` (a dtype cast, a move to a device).
    pub fn map(
        self,
        f: impl Fn(Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Self> {
        let pair = |(a, b): (Tensor, Tensor)| -> candle_core::Result<_> { Ok((f(a)?, f(b)?)) };
        let layers = self
            .layers
            .into_iter()
            .map(|l| {
                Ok(LayerWeights {
                    qkv_w: f(l.qkv_w)?,
                    qkv_b: f(l.qkv_b)?,
                    out_w: f(l.out_w)?,
                    out_b: f(l.out_b)?,
                    attn_ln: pair(l.attn_ln)?,
                    up_w: f(l.up_w)?,
                    up_b: f(l.up_b)?,
                    down_w: f(l.down_w)?,
                    down_b: f(l.down_b)?,
                    ffn_ln: pair(l.ffn_ln)?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(BertWeights {
            word: f(self.word)?,
            position: f(self.position)?,
            token_type: f(self.token_type)?,
            emb_ln: pair(self.emb_ln)?,
            layers,
        })
    }

    fn read(c: &BertConfig, vb: VarBuilder<'_>, q_scale: f64) -> candle_core::Result<Self> {
        let h = c.hidden_size;
        let ln = |vb: VarBuilder<'_>| -> candle_core::Result<(Tensor, Tensor)> {
            Ok((vb.get(h, "weight")?, vb.get(h, "bias")?))
        };
        let linear = |vb: VarBuilder<'_>, out: usize, inp: usize| -> candle_core::Result<_> {
            Ok((vb.get((out, inp), "weight")?, vb.get(out, "bias")?))
        };
        let q_scaled = |t: Tensor| if q_scale == 1.0 { Ok(t) } else { t * q_scale };
        let e = vb.pp("embeddings");
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention.self");
            let (q, k, v) = (a.pp("query"), a.pp("key"), a.pp("value"));
            let qkv_w = Tensor::cat(
                &[
                    q_scaled(q.get((h, h), "weight")?)?,
                    k.get((h, h), "weight")?,
                    v.get((h, h), "weight")?,
                ],
                0,
            )?;
            let qkv_b = Tensor::cat(
                &[
                    q_scaled(q.get(h, "bias")?)?,
                    k.get(h, "bias")?,
                    v.get(h, "bias")?,
                ],
                0,
            )?;
            let (out_w, out_b) = linear(l.pp("attention.output.dense"), h, h)?;
            let (up_w, up_b) = linear(l.pp("intermediate.dense"), c.intermediate_size, h)?;
            let (down_w, down_b) = linear(l.pp("output.dense"), h, c.intermediate_size)?;
            layers.push(LayerWeights {
                qkv_w,
                qkv_b,
                out_w,
                out_b,
                attn_ln: ln(l.pp("attention.output.LayerNorm"))?,
                up_w,
                up_b,
                down_w,
                down_b,
                ffn_ln: ln(l.pp("output.LayerNorm"))?,
            });
        }
        Ok(BertWeights {
            word: e.get((c.vocab_size, h), "word_embeddings.weight")?,
            position: e.get((c.max_position_embeddings, h), "position_embeddings.weight")?,
            token_type: e.get((c.type_vocab_size, h), "token_type_embeddings.weight")?,
            emb_ln: ln(e.pp("LayerNorm"))?,
            layers,
        })
    }
}
