//! The BERT encoder's forward pass on the CPU.
//!
//! The texts of a batch are packed end to end, with no padding: the
//! projections ([`crate::linear`], threaded over the embedder's pool) see
//! `tokens × hidden` rows, and attention runs per text and per head on that
//! text's own tokens only. Everything between two matrix multiplications is
//! one fused, in-place pass (see [`crate::kernels`]). All of it runs as
//! candle in-place custom ops on one set of buffers per batch. This file is
//! the only one that knows how the forward pass is computed: batching,
//! tokenisation and pooling around it do not change when it does.

use std::cell::RefCell;
use std::path::Path;

use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor};
use rayon::prelude::*;

use crate::config::{BertConfig, HiddenAct};
use crate::error::{invalid, InferenceError, Result, TensorResult};
use crate::kernels::{Activation, Kernels};
use crate::linear::{rows_per_task, Epilogue, Linear, Products, SharedOut, MAX_INT8_DEPTH};
use crate::weights::BertWeights;

/// The texts of one batch, packed end to end: text `i` owns the token rows
/// `offsets[i]..offsets[i + 1]`.
pub(crate) struct PackedBatch {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub offsets: Vec<usize>,
}

impl PackedBatch {
    pub fn with_capacity(texts: usize, tokens: usize) -> Self {
        let mut offsets = Vec::with_capacity(texts + 1);
        offsets.push(0);
        Self {
            ids: Vec::with_capacity(tokens),
            type_ids: Vec::with_capacity(tokens),
            positions: Vec::with_capacity(tokens),
            offsets,
        }
    }

    pub fn push(&mut self, ids: &[u32], type_ids: &[u32]) {
        self.ids.extend_from_slice(ids);
        self.type_ids.extend_from_slice(type_ids);
        self.positions.extend(0..ids.len() as u32);
        self.offsets.push(self.ids.len());
    }

    pub fn tokens(&self) -> usize {
        self.ids.len()
    }
}

struct Layer {
    /// `[hidden, 3·hidden]`: query, key and value projections in one matmul.
    qkv: Linear,
    qkv_bias: Vec<f32>,
    out: Linear,
    out_bias: Vec<f32>,
    attn_ln: (Vec<f32>, Vec<f32>),
    up: Linear,
    up_bias: Vec<f32>,
    down: Linear,
    down_bias: Vec<f32>,
    ffn_ln: (Vec<f32>, Vec<f32>),
}

pub(crate) struct BertEncoder {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_ln: (Vec<f32>, Vec<f32>),
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    vocab: usize,
    type_vocab: usize,
    eps: f32,
    act: Activation,
    zeros: Vec<f32>,
    kernels: Kernels,
    device: Device,
}

fn vec1(t: Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_vec1::<f32>()
}

/// A PyTorch `[out, in]` weight as a [`Linear`] (`[in, out]`).
fn linear(t: Tensor, kernels: Kernels, products: Products) -> candle_core::Result<Linear> {
    let (n, k) = t.dims2()?;
    if products == Products::Int8 && k > MAX_INT8_DEPTH {
        candle_core::bail!(
            "int8 products take at most {MAX_INT8_DEPTH} inputs per output (their i32 sums would overflow), this layer has {k}"
        );
    }
    let w = t.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    Ok(Linear::new(&w, k, n, kernels, products))
}

impl BertEncoder {
    pub fn load(config: &BertConfig, weights: &Path, products: Products) -> Result<Self> {
        let w = BertWeights::load(config, weights, 1.0)?;
        Self::from_weights(config, w, products).map_err(|e| invalid(weights, e))
    }

    /// Keeps linear weights as [`Linear`]s (`[in, out]`), biases and layer
    /// norms as plain vectors.
    fn from_weights(
        c: &BertConfig,
        w: BertWeights,
        products: Products,
    ) -> candle_core::Result<Self> {
        let h = c.hidden_size;
        let ln = |(g, b): (Tensor, Tensor)| -> candle_core::Result<_> { Ok((vec1(g)?, vec1(b)?)) };
        let flat = |t: Tensor| t.flatten_all().and_then(vec1);
        let kernels = Kernels::detect();
        let layers = w
            .layers
            .into_iter()
            .map(|l| {
                Ok(Layer {
                    qkv: linear(l.qkv_w, kernels, products)?,
                    qkv_bias: vec1(l.qkv_b)?,
                    out: linear(l.out_w, kernels, products)?,
                    out_bias: vec1(l.out_b)?,
                    attn_ln: ln(l.attn_ln)?,
                    up: linear(l.up_w, kernels, products)?,
                    up_bias: vec1(l.up_b)?,
                    down: linear(l.down_w, kernels, products)?,
                    down_bias: vec1(l.down_b)?,
                    ffn_ln: ln(l.ffn_ln)?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            word: flat(w.word)?,
            position: flat(w.position)?,
            token_type: flat(w.token_type)?,
            emb_ln: ln(w.emb_ln)?,
            layers,
            hidden: h,
            heads: c.num_attention_heads,
            vocab: c.vocab_size,
            type_vocab: c.type_vocab_size,
            eps: c.layer_norm_eps as f32,
            act: match c.hidden_act {
                HiddenAct::Gelu => Activation::Gelu,
                HiddenAct::GeluApproximate => Activation::GeluTanh,
                HiddenAct::Relu => Activation::Relu,
            },
            zeros: vec![0.0; h],
            kernels,
            device: Device::Cpu,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Runs the encoder on a packed batch; returns the last hidden states,
    /// row-major `tokens × hidden`, in the batch's token order.
    pub fn forward(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        if let Some(&id) = batch.ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(InferenceError::Tokenizer(format!(
                "token id {id} is outside the model's vocabulary of {}: tokenizer.json does not belong to this model",
                self.vocab
            )));
        }
        let max_positions = self.position.len() / self.hidden;
        if batch
            .offsets
            .windows(2)
            .any(|w| w[1].saturating_sub(w[0]) > max_positions)
        {
            return Err(InferenceError::Tokenizer(format!(
                "a text longer than the model's {max_positions} positions"
            )));
        }
        if batch
            .type_ids
            .iter()
            .any(|&t| t as usize >= self.type_vocab)
        {
            return Err(InferenceError::Tokenizer(
                "token type id outside the model's type vocabulary".into(),
            ));
        }
        self.run(batch).tensor()
    }

    /// [`forward`](Self::forward) after its checks.
    fn run(&self, batch: &PackedBatch) -> candle_core::Result<Vec<f32>> {
        let x = self.embed(batch)?;
        // One buffer per activation for the whole batch, written in place by
        // every layer: fresh buffers per layer cost page faults (the kernel
        // zeroing tens of MB per layer) and allocator traffic.
        let tokens = batch.tokens();
        let inter = self.layers.first().map_or(0, |l| l.up.out_features());
        let buffer = |width: usize| Tensor::zeros((tokens, width), DType::F32, &self.device);
        let (qkv, context, attn, up) = (
            buffer(3 * self.hidden)?,
            buffer(self.hidden)?,
            buffer(self.hidden)?,
            buffer(inter)?,
        );
        let attention = Attention {
            offsets: &batch.offsets,
            heads: self.heads,
            hidden: self.hidden,
            kernels: self.kernels,
        };
        for layer in &self.layers {
            self.dense(&qkv, &x, &layer.qkv, Epilogue::Bias(&layer.qkv_bias, None))?;
            context.inplace_op2(&qkv, &attention)?;
            self.dense(&attn, &context, &layer.out, Epilogue::None)?;
            attn.inplace_op2(
                &x,
                &ResidualLayerNorm {
                    kernels: self.kernels,
                    bias: &layer.out_bias,
                    ln: &layer.attn_ln,
                    eps: self.eps,
                },
            )?;
            let gelu = Epilogue::Bias(&layer.up_bias, Some(self.act));
            self.dense(&up, &attn, &layer.up, gelu)?;
            // The layer's input is spent: its buffer takes the output.
            self.dense(&x, &up, &layer.down, Epilogue::None)?;
            x.inplace_op2(
                &attn,
                &ResidualLayerNorm {
                    kernels: self.kernels,
                    bias: &layer.down_bias,
                    ln: &layer.ffn_ln,
                    eps: self.eps,
                },
            )?;
        }
        x.flatten_all()?.to_vec1::<f32>()
    }

    /// `out = epilogue(x · W)` in place.
    fn dense(
        &self,
        out: &Tensor,
        x: &Tensor,
        linear: &Linear,
        epilogue: Epilogue,
    ) -> candle_core::Result<()> {
        out.inplace_op2(x, &Dense { linear, epilogue })
    }

    /// Word + position + token-type embeddings, then layer norm.
    fn embed(&self, batch: &PackedBatch) -> candle_core::Result<Tensor> {
        let h = self.hidden;
        let mut x = vec![0.0f32; batch.tokens() * h];
        x.par_chunks_mut(h)
            .zip(batch.ids.par_iter())
            .zip(batch.type_ids.par_iter().zip(batch.positions.par_iter()))
            .for_each(|((row, &id), (&tt, &pos))| {
                let w = &self.word[id as usize * h..][..h];
                let t = &self.token_type[tt as usize * h..][..h];
                for ((r, a), b) in row.iter_mut().zip(w).zip(t) {
                    *r = a + b;
                }
                let p = &self.position[pos as usize * h..][..h];
                self.kernels.residual_layer_norm(
                    row,
                    p,
                    &self.zeros,
                    &self.emb_ln.0,
                    &self.emb_ln.1,
                    self.eps,
                );
            });
        Tensor::from_vec(x, (batch.tokens(), h), &self.device)
    }
}

fn f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("kernel input must be contiguous".into()))?;
    match s {
        CpuStorage::F32(v) => Ok(&mut v[start..end]),
        _ => candle_core::bail!("kernel input must be f32"),
    }
}

fn f32_ref<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("kernel input must be contiguous".into()))?;
    Ok(&s.as_slice::<f32>()?[start..end])
}

/// `out = act(x·W + bias)` as a candle op: [`Linear`] with its fused
/// epilogue.
struct Dense<'a> {
    linear: &'a Linear,
    epilogue: Epilogue<'a>,
}

impl InplaceOp2 for Dense<'_> {
    fn name(&self) -> &'static str {
        "ragjet-dense"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        self.linear
            .forward(f32_ref(s2, l2)?, f32_mut(s1, l1)?, self.epilogue)
    }
}

/// `x = LayerNorm(x + bias + residual)` in place.
struct ResidualLayerNorm<'a> {
    kernels: Kernels,
    bias: &'a [f32],
    ln: &'a (Vec<f32>, Vec<f32>),
    eps: f32,
}

impl InplaceOp2 for ResidualLayerNorm<'_> {
    fn name(&self) -> &'static str {
        "ragjet-residual-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let x = f32_mut(s1, l1)?;
        let residual = f32_ref(s2, l2)?;
        let h = self.bias.len();
        let chunk = rows_per_task(x.len() / h) * h;
        x.par_chunks_mut(chunk)
            .zip(residual.par_chunks(chunk))
            .for_each(|(rows, res)| {
                self.kernels
                    .residual_layer_norm(rows, res, self.bias, &self.ln.0, &self.ln.1, self.eps)
            });
        Ok(())
    }
}

/// Multi-head self-attention over packed texts: `[tokens, 3·hidden]`
/// (query | key | value, biases added) to `[tokens, hidden]`.
struct Attention<'a> {
    offsets: &'a [usize],
    heads: usize,
    hidden: usize,
    kernels: Kernels,
}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl InplaceOp2 for Attention<'_> {
    fn name(&self) -> &'static str {
        "ragjet-packed-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (out, qkv) = (f32_mut(s1, l1)?, f32_ref(s2, l2)?);
        let h = self.hidden;
        let d = h / self.heads;
        let tokens = *self.offsets.last().unwrap_or(&0);
        if qkv.len() != tokens * 3 * h || out.len() != tokens * h {
            candle_core::bail!(
                "attention: {} inputs and {} outputs for {tokens} tokens of width {h}",
                qkv.len(),
                out.len()
            );
        }
        if self.offsets.windows(2).any(|w| w[0] > w[1]) || d == 0 {
            candle_core::bail!("attention: offsets out of order or no head width");
        }
        // SAFETY: task (text, head) writes only columns head·d.. of its own
        // text's rows, so no two tasks write the same element, and `out` is
        // not touched otherwise until they are done.
        let out = unsafe { SharedOut::new(out) };
        let scale = 1.0 / (d as f32).sqrt();
        let texts = self.offsets.len().saturating_sub(1);
        (0..texts * self.heads).into_par_iter().for_each(|task| {
            let (text, head) = (task / self.heads, task % self.heads);
            let start = self.offsets[text];
            let len = self.offsets[text + 1] - start;
            if len == 0 {
                // A text of no tokens: no scores, no output rows.
                return;
            }
            let row = 3 * h;
            // Checked here: the block this task writes.
            let dst = out.block(start * h + head * d, len, d, h);
            let q = qkv[start * row + head * d..].as_ptr();
            let k = qkv[start * row + h + head * d..].as_ptr();
            let v = qkv[start * row + 2 * h + head * d..].as_ptr();
            SCORES.with_borrow_mut(|scores| {
                scores.clear();
                scores.resize(len * len, 0.0);
                // SAFETY: the reads stay inside `qkv` (its length was checked
                // against the offsets above) and `scores`; the writes inside
                // `dst`'s block, which `block` checked and no other task
                // writes.
                unsafe {
                    // scores = scale · Q Kᵀ   (len × d) · (d × len)
                    gemm::gemm(
                        len,
                        len,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        len as isize,
                        false,
                        q,
                        1,
                        row as isize,
                        k,
                        row as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                    self.kernels.softmax_rows(scores, len);
                    // out = P V   (len × len) · (len × d)
                    gemm::gemm(
                        len,
                        d,
                        len,
                        dst,
                        1,
                        h as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        len as isize,
                        v,
                        1,
                        row as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
        });
        Ok(())
    }
}
