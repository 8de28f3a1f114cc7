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

use candle_core::{CpuStorage, DType, Device, InplaceOp2, InplaceOp3, Layout, Tensor};
use rayon::prelude::*;
use tokenizers::Encoding;

use crate::attention::Head;
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

    /// The batch of `encodings`, in their order.
    pub fn from_encodings(encodings: &[&Encoding]) -> Self {
        let tokens = encodings.iter().map(|e| e.len()).sum();
        let mut batch = Self::with_capacity(encodings.len(), tokens);
        for enc in encodings {
            batch.push(enc.get_ids(), enc.get_type_ids());
        }
        batch
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

/// The channel of `maxima` (each input channel's largest magnitude on the
/// calibration texts) that an int8 layer keeps out of its sums: the
/// largest, in every layer. all-MiniLM-L6-v2 has a far larger one in most
/// of its 24 dense layers (channel 99 reaches 30 where most channels stay
/// under 2); in a layer without one, a channel added in f32 costs a little
/// time and loses nothing. Measured on the fixtures (`tests/parity.rs`),
/// recall@10 of the reference top 10: 0.933 with no channel, 0.946 with
/// one only where it exceeds 4× the median channel (19 layers), 0.952 with
/// one in every layer. `None` when nothing was observed, every value was
/// 0, or the largest is NaN.
fn outlier_channel(maxima: &[f32]) -> Option<usize> {
    let (channel, &largest) = maxima
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    (largest > 0.0).then_some(channel)
}

/// Every dense layer of `layers`.
fn linears_mut(layers: &mut [Layer]) -> impl Iterator<Item = &mut Linear> {
    layers
        .iter_mut()
        .flat_map(|l| [&mut l.qkv, &mut l.out, &mut l.up, &mut l.down])
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

    /// Chooses each int8 layer's outlier input channel (see
    /// `linear::Outlier`, [`outlier_channel`]) from the largest magnitude
    /// each channel reaches on `batch`; returns how many layers got one.
    /// Nothing changes for f32 and bf16 products. Deterministic: every CPU
    /// computes the same int8 numbers, so every CPU chooses the same
    /// channels.
    pub fn calibrate_int8(&mut self, batch: &PackedBatch) -> Result<usize> {
        for linear in linears_mut(&mut self.layers) {
            linear.set_int8_outlier(None);
            linear.observe_inputs();
        }
        let run = self.forward(batch);
        let mut chosen = 0;
        for linear in linears_mut(&mut self.layers) {
            let channel = linear.take_observed().and_then(|m| outlier_channel(&m));
            if run.is_ok() && channel.is_some() {
                linear.set_int8_outlier(channel);
                chosen += 1;
            }
        }
        run.map(|_| chosen)
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
        let buffer = |width: usize| Tensor::zeros((tokens, width), DType::F32, &self.device);
        let (qkv, context, attn) = (
            buffer(3 * self.hidden)?,
            buffer(self.hidden)?,
            buffer(self.hidden)?,
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
            // attn = LayerNorm(context · W_out + bias + x)
            attn.inplace_op3(
                &context,
                &x,
                &Sublayer {
                    kernels: self.kernels,
                    first: (&layer.out, Epilogue::None),
                    second: None,
                    bias: &layer.out_bias,
                    ln: &layer.attn_ln,
                    eps: self.eps,
                },
            )?;
            // x = LayerNorm(act(attn · W_up + b_up) · W_down + bias + attn):
            // the layer's input is spent, its buffer takes the output.
            x.inplace_op2(
                &attn,
                &Sublayer {
                    kernels: self.kernels,
                    first: (&layer.up, Epilogue::Bias(&layer.up_bias, Some(self.act))),
                    second: Some(&layer.down),
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

/// A sublayer after attention, from its input to its normalised output:
/// `out = LayerNorm(products(input) + bias + residual)`, where the products
/// are one dense layer (the attention output) or two with the first's
/// epilogue between them (the feed-forward block).
///
/// Why one op: with enough rows, each parallel task takes a block of rows
/// through all of it, so the block's products, the feed-forward block's
/// wide intermediate (4 × hidden) and the layer norm stay in the core's
/// cache, instead of each step streaming the whole batch through memory
/// (on a 2-core Xeon, batches over ~1,000 tokens ran 10–20 % slower per
/// text that way). Short batches, which one block per thread would leave
/// unbalanced, run each step over the whole batch, threaded by columns.
struct Sublayer<'a> {
    kernels: Kernels,
    first: (&'a Linear, Epilogue<'a>),
    second: Option<&'a Linear>,
    bias: &'a [f32],
    ln: &'a (Vec<f32>, Vec<f32>),
    eps: f32,
}

thread_local! {
    /// A block's feed-forward intermediate, reused by every block (see
    /// `Sublayer::products` for why it is taken, not borrowed).
    static INTERMEDIATE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Sublayer<'_> {
    /// Rows per task when blocks of rows take the sublayer whole: whole
    /// AMX row tiles, at most 64 (what the product tasks use), and at least
    /// two blocks per thread; `None` when the batch is too short for that.
    fn block_rows(tokens: usize) -> Option<usize> {
        let threads = rayon::current_num_threads();
        let rows = tokens
            .div_ceil(4 * threads)
            .next_multiple_of(16)
            .clamp(32, 64);
        (tokens >= 2 * threads * rows).then_some(rows)
    }

    /// `out = products(input)`: on the calling thread when `parallel` is
    /// false (a block of rows, the caller's task), else over the pool.
    fn products(&self, input: &[f32], out: &mut [f32], parallel: bool) -> candle_core::Result<()> {
        let (first, epilogue) = self.first;
        let forward = |linear: &Linear, x: &[f32], y: &mut [f32], e| match parallel {
            true => linear.forward(x, y, e),
            false => linear.forward_rows(x, y, e),
        };
        let Some(second) = self.second else {
            return forward(first, input, out, epilogue);
        };
        let rows = input.len() / first.in_features().max(1);
        // Taken out while in use, not borrowed: during a parallel product
        // this thread runs other jobs of the pool (another call's sublayer
        // among them), which then find an empty buffer and grow their own
        // instead of a borrowed one (a panic). The last one put back stays.
        let mut middle = INTERMEDIATE.take();
        // Only grown: `forward` writes every value it later reads.
        let len = rows * first.out_features();
        if middle.len() < len {
            middle.resize(len, 0.0);
        }
        let result = forward(first, input, &mut middle[..len], epilogue)
            .and_then(|()| forward(second, &middle[..len], out, Epilogue::None));
        INTERMEDIATE.set(middle);
        result
    }

    /// The op on blocks of `block_rows` rows, or step by step over the
    /// whole batch with `None`.
    fn run(
        &self,
        out: &mut [f32],
        input: &[f32],
        residual: &[f32],
        block_rows: Option<usize>,
    ) -> candle_core::Result<()> {
        let (h, k) = (self.bias.len(), self.first.0.in_features());
        let tokens = out.len() / h.max(1);
        if out.len() != tokens * h || input.len() != tokens * k || residual.len() != out.len() {
            candle_core::bail!(
                "sublayer: {} outputs, {} inputs and {} residuals for width {h}",
                out.len(),
                input.len(),
                residual.len()
            );
        }
        if tokens == 0 {
            return Ok(());
        }
        let Some(rows) = block_rows else {
            self.products(input, out, true)?;
            let chunk = rows_per_task(tokens) * h;
            out.par_chunks_mut(chunk)
                .zip(residual.par_chunks(chunk))
                .for_each(|(rows, res)| self.layer_norm(rows, res));
            return Ok(());
        };
        out.par_chunks_mut(rows * h)
            .zip(input.par_chunks(rows * k))
            .zip(residual.par_chunks(rows * h))
            .try_for_each(|((out, input), residual)| {
                self.products(input, out, false)?;
                self.layer_norm(out, residual);
                Ok(())
            })
    }

    fn layer_norm(&self, rows: &mut [f32], residual: &[f32]) {
        let (gamma, beta) = self.ln;
        self.kernels
            .residual_layer_norm(rows, residual, self.bias, gamma, beta, self.eps);
    }
}

/// The feed-forward block's form: its input is its residual.
impl InplaceOp2 for Sublayer<'_> {
    fn name(&self) -> &'static str {
        "ragjet-sublayer"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (out, input) = (f32_mut(s1, l1)?, f32_ref(s2, l2)?);
        let tokens = out.len() / self.bias.len().max(1);
        self.run(out, input, input, Self::block_rows(tokens))
    }
}

/// The attention output's form: input and residual apart.
impl InplaceOp3 for Sublayer<'_> {
    fn name(&self) -> &'static str {
        "ragjet-sublayer"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let (out, input, residual) = (f32_mut(s1, l1)?, f32_ref(s2, l2)?, f32_ref(s3, l3)?);
        let tokens = out.len() / self.bias.len().max(1);
        self.run(out, input, residual, Self::block_rows(tokens))
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
        let row = 3 * h;
        (0..texts * self.heads).into_par_iter().for_each(|task| {
            let (text, head) = (task / self.heads, task % self.heads);
            let (start, end) = (self.offsets[text], self.offsets[text + 1]);
            if start == end {
                // A text of no tokens: no scores, no output rows.
                return;
            }
            let len = end - start;
            // Checked here: the block this task writes.
            let dst = out.block(start * h + head * d, len, d, h);
            let head = Head {
                qkv: &qkv[start * row..end * row],
                stride: row,
                cols: [head * d, h + head * d, 2 * h + head * d],
                len,
                d,
                scale,
            };
            // SAFETY: `dst`'s block, which `block` checked, is this task's
            // alone.
            unsafe { head.attend(self.kernels, dst, h) };
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::tests::data;

    /// The largest channel, in every layer; nothing for empty, all-zero or
    /// NaN observations.
    #[test]
    fn outlier_channel_is_the_largest() {
        let mut maxima = vec![1.0f32; 384];
        maxima[7] = 1.5;
        assert_eq!(outlier_channel(&maxima), Some(7));
        maxima[99] = 30.0;
        assert_eq!(outlier_channel(&maxima), Some(99));
        maxima[3] = f32::NAN;
        assert_eq!(outlier_channel(&maxima), None, "a NaN is not an outlier");
        assert_eq!(outlier_channel(&[]), None);
        assert_eq!(outlier_channel(&[0.0; 8]), None);
    }

    /// Blocks of rows taken through a whole sublayer give what passes over
    /// the whole batch give: the same bits on the AVX-512 and int8 paths
    /// (each output's sum runs in one order however the rows are split),
    /// within f32 rounding on `gemm`'s.
    #[test]
    fn row_blocks_equal_passes_over_the_batch() {
        let kernels = Kernels::detect();
        let (h, inter) = (48, 160);
        for products in [Products::F32, Products::Bf16, Products::Int8] {
            let exact = kernels.has_avx512() || products == Products::Int8;
            let up = Linear::new(&data(h * inter, 1), h, inter, kernels, products);
            let down = Linear::new(&data(inter * h, 2), inter, h, kernels, products);
            let out = Linear::new(&data(h * h, 3), h, h, kernels, products);
            let (up_bias, bias, ln) = (data(inter, 4), data(h, 5), (data(h, 6), data(h, 7)));
            let gelu = Epilogue::Bias(&up_bias, Some(Activation::Gelu));
            for (first, second) in [((&up, gelu), Some(&down)), ((&out, Epilogue::None), None)] {
                let layer = Sublayer {
                    kernels,
                    first,
                    second,
                    bias: &bias,
                    ln: &ln,
                    eps: 1e-12,
                };
                for tokens in [1, 31, 200] {
                    let (input, residual) = (data(tokens * h, 8), data(tokens * h, 9));
                    let mut whole = vec![f32::NAN; tokens * h];
                    layer.run(&mut whole, &input, &residual, None).unwrap();
                    assert!(whole.iter().all(|v| v.is_finite()));
                    for rows in [32, 64] {
                        let mut blocks = vec![f32::NAN; tokens * h];
                        layer
                            .run(&mut blocks, &input, &residual, Some(rows))
                            .unwrap();
                        for (i, (a, b)) in whole.iter().zip(&blocks).enumerate() {
                            let same = if exact {
                                a.to_bits() == b.to_bits()
                            } else {
                                (a - b).abs() <= 1e-5
                            };
                            assert!(same, "{products:?}, {tokens} tokens, blocks of {rows}, value {i}: {a} vs {b}");
                        }
                    }
                }
            }
        }
    }
}
