//! Dense layers, `y = act(x·W + b)`, the encoder's matrix multiplications.
//!
//! Four of them per layer carry 95 % of a BERT encoder's arithmetic, and the
//! `gemm` crate's f32 kernel on stable Rust is its AVX2 one (its AVX-512
//! kernels need its `nightly` feature). On CPUs with AVX-512F this module's
//! own micro-kernel runs instead: a 12 × 32 output tile in 24 zmm
//! accumulators, weights packed once at load into 32-column panels (`gemm`
//! packs them on every call, which a one-text batch pays on every layer),
//! and the bias and activation applied while the task's rows are still in
//! cache. Other CPUs call `gemm` on row-major weights, then the same
//! epilogue; a test checks every path against an f64 product.
//!
//! [`Products::Bf16`] rounds both inputs of every product to bfloat16 (8
//! significant bits) and sums in f32. On CPUs with AVX-512 BF16, tiles of
//! the same shape run on `vdpbf16ps`, which does two multiply-adds per f32
//! lane, twice the f32 rate; elsewhere the inputs are rounded the same way
//! and the f32 paths multiply them, so every CPU computes the same numbers.
//!
//! [`Products::Int8`] quantizes each weight column to int8 at load (one
//! scale per output column) and each input row on the fly (one scale per
//! row), sums the integer products exactly in i32 and scales the sum back
//! to f32. On CPUs with AMX-INT8 (and Linux's permission) they run on
//! `tdpbusd` tiles (`amx.rs`); on CPUs with AVX-512 VNNI on `vpdpbusd`
//! (four multiply-adds per i32 lane); elsewhere [`int8_rows_emulated`]
//! computes the same integer sums in plain code. Integer sums do not depend
//! on their order, and all three finish them with the same f32 operations,
//! so they give the same bits (tested), and so every CPU gives the same
//! vectors.
//!
//! Measured on the 2-core Zen 4 development machine (`docs/performance.md`):
//! f32 tiles 200–216 GFLOP/s at the encoder's shapes against 168–210 for
//! `gemm`; bf16 tiles about 390 inside the encoder.

use rayon::prelude::*;

use crate::kernels::{Activation, Kernels};

/// Output rows per micro-tile.
const MR: usize = 12;
/// Output columns per micro-tile (two registers of 16 lanes).
const NR: usize = 32;
/// Micro-tiles of rows per task: 48 rows × `in` values stay in L2 while the
/// task's weight panels stream past them.
const TILES_PER_BLOCK: usize = 4;

/// f32 storage aligned to 64 bytes, so that a weight row starting at a
/// multiple of 16 values never splits a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// How a layer's products are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Products {
    /// f32 inputs, f32 sums.
    F32,
    /// bfloat16 inputs, f32 sums.
    Bf16,
    /// int8 weights (per output column) and inputs (per row), i32 sums.
    Int8,
}

/// The longest inner dimension int8 products take: `vpdpbusd` multiplies
/// unsigned inputs (at most 255) by signed weights (at most 127 in
/// magnitude), and the i32 sums of up to this many such products cannot
/// overflow (65,536 · 255 · 127 < 2³¹).
pub(crate) const MAX_INT8_DEPTH: usize = 1 << 16;

/// The weights' layout, which decides the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Row-major `[in, out]`, for `gemm`.
    RowMajor,
    /// Panels of `NR` columns, each panel's rows one after another (a tile
    /// then streams its weights from consecutive cache lines rather than
    /// one line per `out`-wide row), for the f32 AVX-512 tiles.
    F32Panels,
    /// Panels of `NR` columns of u32 words, word `q` of a column holding
    /// the bf16 weights of inputs `2q` and `2q + 1`, for `vdpbf16ps` tiles.
    Bf16Panels,
    /// The same panels with the inner dimension padded with zero words to
    /// whole AMX tiles (16 pairs), for `tdpbf16ps` (`amx.rs`).
    Bf16Amx,
    /// Panels of `NR` columns of u32 words, word `q` of a column holding
    /// the int8 weights of inputs `4q..4q + 4` (lowest byte first), summed
    /// by [`int8_rows_emulated`].
    Int8Panels,
    /// The same packing, summed by `vpdpbusd` tiles.
    Int8Vnni,
    /// The same panels with the inner dimension padded with zero words to
    /// whole AMX tiles (16 words), for `tdpbusd` (`amx.rs`).
    Int8Amx,
}

impl Layout {
    /// Every layout this CPU can run for `products`, fastest last.
    fn available(kernels: Kernels, products: Products) -> Vec<Self> {
        if products == Products::Int8 {
            let mut all = vec![Layout::Int8Panels];
            if kernels.has_avx512() && vnni_hardware() {
                all.push(Layout::Int8Vnni);
            }
            // The AMX tiles' finish is AVX-512F code.
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            if kernels.has_avx512() && crate::amx::int8_available() {
                all.push(Layout::Int8Amx);
            }
            return all;
        }
        let mut all = vec![Layout::RowMajor];
        if kernels.has_avx512() {
            all.push(Layout::F32Panels);
            if products == Products::Bf16 && bf16_hardware() {
                all.push(Layout::Bf16Panels);
                #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
                if crate::amx::available() {
                    all.push(Layout::Bf16Amx);
                }
            }
        }
        all
    }
}

/// Whether this CPU multiplies bfloat16 pairs natively (AVX-512 BF16).
pub(crate) fn bf16_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    return Kernels::detect().has_avx512() && is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU sums int8 products natively (AVX-512 VNNI).
pub(crate) fn vnni_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    return Kernels::detect().has_avx512()
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// What an int8 layer keeps per output column besides its weights, padded
/// to whole panels (zeros) so that tiles load full registers.
struct Int8Columns {
    /// The column's scale: weight ≈ scale · int8 value.
    scale: Vec<f32>,
    /// `Σ int8 weights` of the column: inputs are stored as `u8` values
    /// offset by their row's zero point (see [`RowQuant`]), and
    /// `zero · sum` takes the offset back out of a row's sum.
    sum: Vec<i32>,
    /// The input channel kept out of the int8 sums, if any
    /// ([`Linear::set_int8_outlier`]).
    outlier: Option<Outlier>,
}

/// The input channel with the largest values, which in most layers are far
/// larger than the others' (a "massive activation": all-MiniLM-L6-v2's
/// channel 99 reaches 30 where most stay under 2). Left in the int8 sums it
/// would set the scale of every row it is large in and leave the other
/// inputs a few levels; so its level is the zero point (it adds nothing to
/// the sums), and the finish adds `value · weight` in f32.
struct Outlier {
    channel: usize,
    /// The channel's weight for each output column, `scale · int8 weight`,
    /// padded to whole panels with zeros.
    weights: Vec<f32>,
}

/// How one input row was quantized for the int8 products: value ≈
/// `scale · (byte − zero)`, the bytes spanning the row's range from its
/// least value to its largest (and 0, which `zero` stands for) in 0..=255.
/// Asymmetric because rows are lopsided: a few channels reach far out on
/// one side (all-MiniLM-L6-v2's layer-norm outputs: +28 in channel 99
/// where the row's least value is about −4), and a scale symmetric about 0
/// leaves the other side's levels unused. 1 − mean cosine against
/// sentence-transformers: 0.0033 → 0.0015 (`tests/parity.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub(crate) struct RowQuant {
    pub scale: f32,
    pub zero: i32,
    /// The row's value of the layer's outlier channel (0 without one),
    /// which the finish adds in f32 ([`Outlier`]).
    pub outlier: f32,
}

/// What the int8 finish needs of each output column, from a task's first
/// column on: its scale, its sum of int8 weights and, if the layer has an
/// outlier channel, that channel's weight. Whole panels of each.
#[derive(Clone, Copy)]
pub(crate) struct ColumnsRef<'a> {
    pub scale: &'a [f32],
    pub sum: &'a [i32],
    pub outlier: Option<&'a [f32]>,
}

impl ColumnsRef<'_> {
    /// Whether every slice holds `columns` values.
    pub fn cover(&self, columns: usize) -> bool {
        self.scale.len() >= columns
            && self.sum.len() >= columns
            && self.outlier.is_none_or(|o| o.len() >= columns)
    }
}

/// A weight matrix `[in, out]`, laid out for the kernel that multiplies by
/// it (see [`Layout`]).
pub(crate) struct Linear {
    lines: Vec<Line>,
    k: usize,
    n: usize,
    kernels: Kernels,
    products: Products,
    layout: Layout,
    /// Present for the int8 layouts.
    int8: Option<Int8Columns>,
    /// Each input channel's largest magnitude so far, while
    /// [`observe_inputs`](Self::observe_inputs) is on.
    observed: Option<std::sync::Mutex<Vec<f32>>>,
}

/// What runs on each output row after the product.
#[derive(Clone, Copy)]
pub(crate) enum Epilogue<'a> {
    /// Nothing: a later fused pass adds the bias (residual + layer norm).
    None,
    /// `y + bias`, then the activation if there is one.
    Bias(&'a [f32], Option<Activation>),
}

/// One output buffer that parallel tasks write, each its own part.
///
/// It is `Copy + Send + Sync` so that rayon closures can capture it. Nothing
/// in the type can check that tasks keep to their parts: that is the
/// contract of the `unsafe` [`SharedOut::new`], and every access goes
/// through [`block`](Self::block) or [`slice_mut`](Self::slice_mut), which
/// check the extent against the buffer, so a task cannot stray outside it.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<'a> {
    ptr: *mut f32,
    len: usize,
    buffer: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: the value only carries the pointer between threads; writes
// through it follow the contract of `new` (disjoint parts per task).
unsafe impl Send for SharedOut<'_> {}
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    /// Shares `out` between tasks.
    ///
    /// # Safety
    /// While this value or a copy of it is in use, `out` is reached only
    /// through it, and no element is written by one task while another
    /// task reads or writes it: each task gets a region of its own.
    pub unsafe fn new(out: &'a mut [f32]) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            buffer: std::marker::PhantomData,
        }
    }

    /// Where the block of `rows` rows × `cols` values starting at element
    /// `start`, rows `stride` apart, begins: for a kernel that writes the
    /// block through a pointer. Panics if the block does not lie inside the
    /// buffer, so the kernel's extent is checked here, where the buffer's
    /// length is known. Writing through the pointer is `unsafe` and must
    /// keep to the block and to the contract of [`new`](Self::new).
    pub fn block(self, start: usize, rows: usize, cols: usize, stride: usize) -> *mut f32 {
        if rows > 0 && cols > 0 {
            let end = (rows - 1)
                .checked_mul(stride)
                .and_then(|v| v.checked_add(start))
                .and_then(|v| v.checked_add(cols));
            assert!(
                (rows == 1 || cols <= stride) && end.is_some_and(|end| end <= self.len),
                "block of {rows}×{cols} at {start}, stride {stride}, outside {} values",
                self.len
            );
        }
        self.ptr.wrapping_add(start)
    }

    /// Elements `start..start + len` as a slice. Panics if they are not in
    /// the buffer.
    ///
    /// # Safety
    /// No other task reads or writes these elements while the slice lives.
    pub unsafe fn slice_mut(self, start: usize, len: usize) -> &'a mut [f32] {
        assert!(
            start.checked_add(len).is_some_and(|end| end <= self.len),
            "{len} values at {start}, outside {} values",
            self.len
        );
        // SAFETY: in bounds (checked above); exclusive by the caller's word.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

impl Linear {
    /// `w`: `[k, n]` row-major (`in × out`, the transpose of PyTorch's);
    /// `kernels`: the variant that will run it. The fastest layout this
    /// CPU runs for `products` is chosen here, once.
    pub fn new(w: &[f32], k: usize, n: usize, kernels: Kernels, products: Products) -> Self {
        let best = *Layout::available(kernels, products).last().unwrap();
        Self::with_layout(w, k, n, kernels, products, best)
    }

    fn with_layout(
        w: &[f32],
        k: usize,
        n: usize,
        kernels: Kernels,
        products: Products,
        layout: Layout,
    ) -> Self {
        assert_eq!(w.len(), k * n, "weight shape");
        // The tiled layouts run `#[target_feature]` code: only a layout the
        // CPU check offered may be built (`forward` relies on it).
        assert!(
            Layout::available(kernels, products).contains(&layout),
            "{layout:?} is not available on this CPU for {products:?} products"
        );
        let panels = n.div_ceil(NR);
        let mut int8 = None;
        let lines = match layout {
            Layout::Int8Panels | Layout::Int8Vnni | Layout::Int8Amx => {
                assert!(k <= MAX_INT8_DEPTH, "int8 products over {k} inputs");
                let quads = int8_depth(k, layout);
                let mut lines = vec![Line([0.0; 16]); panels * quads * NR / 16];
                let dst = words_mut(&mut lines);
                let mut columns = Int8Columns {
                    scale: vec![0.0; panels * NR],
                    sum: vec![0; panels * NR],
                    outlier: None,
                };
                for j in 0..n {
                    let column = (0..k).map(|p| w[p * n + j]);
                    let max = column.clone().fold(0.0f32, |m, v| m.max(v.abs()));
                    let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
                    columns.scale[j] = max / 127.0;
                    let mut sum = 0i32;
                    for (p, v) in column.enumerate() {
                        let q = quantize(v, inv);
                        sum += q as i32;
                        let word = &mut dst[int8_word(j, p, quads)];
                        *word |= (q as u8 as u32) << (8 * (p % 4));
                    }
                    columns.sum[j] = sum;
                }
                int8 = Some(columns);
                lines
            }
            Layout::Bf16Panels | Layout::Bf16Amx => {
                let pairs = bf16_depth(k, layout);
                let mut lines = vec![Line([0.0; 16]); panels * pairs * NR / 16];
                let dst = words_mut(&mut lines);
                for q in 0..k.div_ceil(2) {
                    let even = &w[2 * q * n..][..n];
                    let odd = w.get((2 * q + 1) * n..(2 * q + 2) * n);
                    for j in 0..n {
                        let word = bf16_pair(even[j], odd.map_or(0.0, |o| o[j]));
                        dst[(j / NR) * pairs * NR + q * NR + j % NR] = word;
                    }
                }
                lines
            }
            Layout::F32Panels | Layout::RowMajor => {
                let mut lines = vec![Line([0.0; 16]); panels * k * NR / 16];
                let dst = lines_mut(&mut lines);
                if layout == Layout::F32Panels {
                    for p in 0..panels {
                        let width = (n - p * NR).min(NR);
                        for (row, chunk) in w
                            .chunks_exact(n)
                            .zip(dst[p * k * NR..].chunks_exact_mut(NR))
                        {
                            chunk[..width].copy_from_slice(&row[p * NR..][..width]);
                        }
                    }
                } else {
                    dst[..k * n].copy_from_slice(w);
                }
                if products == Products::Bf16 {
                    dst.iter_mut().for_each(|v| *v = round_bf16(*v));
                }
                lines
            }
        };
        Self {
            lines,
            k,
            n,
            kernels,
            products,
            layout,
            int8,
            observed: None,
        }
    }

    /// Starts recording each input channel's largest magnitude over the
    /// products that follow (for [`set_int8_outlier`](Self::set_int8_outlier)).
    pub fn observe_inputs(&mut self) {
        self.observed = Some(std::sync::Mutex::new(vec![0.0; self.k]));
    }

    /// Stops recording and returns what [`observe_inputs`](Self::observe_inputs)
    /// recorded (`None` if it was off).
    pub fn take_observed(&mut self) -> Option<Vec<f32>> {
        let observed = self.observed.take()?;
        // Plain numbers, valid whatever a panicking holder did.
        Some(observed.into_inner().unwrap_or_else(|e| e.into_inner()))
    }

    /// Keeps input `channel` out of the int8 sums and adds it in f32 (see
    /// [`Outlier`]); `None` puts every channel back. Nothing for the other
    /// products, or a channel outside the inputs.
    pub fn set_int8_outlier(&mut self, channel: Option<usize>) {
        let (k, n) = (self.k, self.n);
        let quads = int8_depth(k, self.layout);
        let Some(columns) = &mut self.int8 else {
            return;
        };
        columns.outlier = channel.filter(|&c| c < k).map(|channel| {
            let words = words_ref(&self.lines);
            let mut weights = vec![0.0; columns.scale.len()];
            for (j, w) in weights.iter_mut().enumerate().take(n) {
                let word = words[int8_word(j, channel, quads)];
                let q = (word >> (8 * (channel % 4))) as u8 as i8;
                *w = columns.scale[j] * q as f32;
            }
            Outlier { channel, weights }
        });
    }

    pub fn out_features(&self) -> usize {
        self.n
    }

    pub fn in_features(&self) -> usize {
        self.k
    }

    fn weights(&self) -> &[f32] {
        // SAFETY: `Line` is 16 f32 with no padding.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.lines.len() * 16) }
    }

    /// `out = epilogue(x · W)`: `x` is `m × in` and `out` `m × out`,
    /// row-major; threaded over the current rayon pool. `out` is only
    /// written, so callers can reuse one buffer for every layer.
    pub fn forward(
        &self,
        x: &[f32],
        out: &mut [f32],
        epilogue: Epilogue,
    ) -> candle_core::Result<()> {
        self.product(x, out, epilogue, true)
    }

    /// [`forward`](Self::forward) on the calling thread, as one task: for a
    /// caller that already runs parallel blocks of rows (the encoder's fused
    /// layers), so that a block's product and what follows it stay in this
    /// core's cache. Gives the same bits as `forward` on the AVX-512 and
    /// int8 paths (each output's sum runs in the same order however the
    /// rows are split); `gemm`'s blocking may differ in rounding.
    pub fn forward_rows(
        &self,
        x: &[f32],
        out: &mut [f32],
        epilogue: Epilogue,
    ) -> candle_core::Result<()> {
        self.product(x, out, epilogue, false)
    }

    fn product(
        &self,
        x: &[f32],
        out: &mut [f32],
        epilogue: Epilogue,
        parallel: bool,
    ) -> candle_core::Result<()> {
        let kernels = self.kernels;
        let m = match self.k {
            0 => out.len() / self.n.max(1),
            k => x.len() / k,
        };
        if out.len() != m * self.n || x.len() != m * self.k {
            candle_core::bail!(
                "dense {}×{}: {} inputs, {} outputs",
                self.k,
                self.n,
                x.len(),
                out.len()
            );
        }
        if m == 0 || self.n == 0 {
            return Ok(());
        }
        if let Some(observed) = &self.observed {
            let mut observed = observed.lock().unwrap_or_else(|e| e.into_inner());
            for row in x.chunks_exact(self.k.max(1)) {
                for (o, v) in observed.iter_mut().zip(row) {
                    *o = o.max(v.abs());
                }
            }
        }
        let finish = |out: &mut [f32]| match epilogue {
            Epilogue::Bias(bias, act) if parallel => out
                .par_chunks_mut(rows_per_task(m) * self.n)
                .for_each(|rows| apply(kernels, rows, bias, act)),
            Epilogue::Bias(bias, act) => apply(kernels, out, bias, act),
            Epilogue::None => {}
        };
        if self.k == 0 {
            // An empty sum: the product is zero (the tiles and the bf16
            // conversion split rows of width `k`, which must not be 0).
            out.fill(0.0);
            finish(out);
            return Ok(());
        }
        let grid = self.grid(m, parallel);
        // SAFETY: each task of the grid writes its own block of rows ×
        // columns, and `out` is not touched otherwise until they are done.
        let dst = unsafe { SharedOut::new(out) };
        let for_each_task = |run: &(dyn Fn(Task) + Sync)| {
            if parallel {
                (0..grid.tasks())
                    .into_par_iter()
                    .for_each(|task| run(grid.task(task)));
            } else {
                run(grid.task(0));
            }
        };
        if let Some(columns) = &self.int8 {
            for_each_task(&|task| self.int8_task(x, task, columns, dst, epilogue));
            return Ok(());
        }
        // Without native bf16 products, round the inputs and multiply them
        // in f32: the same numbers, at the f32 rate.
        let rounded: Vec<f32>;
        let x = if self.products == Products::Bf16
            && !matches!(self.layout, Layout::Bf16Panels | Layout::Bf16Amx)
        {
            rounded = match parallel {
                true => x.par_iter().map(|&v| round_bf16(v)).collect(),
                false => x.iter().map(|&v| round_bf16(v)).collect(),
            };
            &rounded
        } else {
            x
        };
        #[cfg(target_arch = "x86_64")]
        if self.layout != Layout::RowMajor {
            for_each_task(&|task| self.tiled_task(x, task, dst, epilogue));
            return Ok(());
        }
        // SAFETY: the shapes match the buffers (checked above).
        unsafe {
            gemm::gemm(
                m,
                self.n,
                self.k,
                out.as_mut_ptr(),
                1,
                self.n as isize,
                false,
                x.as_ptr(),
                1,
                self.k as isize,
                self.weights().as_ptr(),
                1,
                self.n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                if parallel {
                    gemm::Parallelism::Rayon(rayon::current_num_threads())
                } else {
                    gemm::Parallelism::None
                },
            );
        }
        finish(out);
        Ok(())
    }

    /// How the product of `m` rows is cut into tasks: one task when the
    /// caller runs it on its own thread; otherwise blocks of the kernel's
    /// rows × groups of column panels.
    fn grid(&self, m: usize, parallel: bool) -> TaskGrid {
        match (parallel, self.layout) {
            (false, _) => TaskGrid::whole(m, self.n),
            // The AMX tiles sum 32 rows × 32 columns at a time: blocks of
            // two such row groups (rather than 48 rows, whose last 16 would
            // load a weight tile per product instead of per two) that share
            // each weight panel from L1.
            (true, Layout::Int8Amx) => TaskGrid::with_block_rows(m, self.n, 64),
            (true, _) => TaskGrid::new(m, self.n),
        }
    }

    /// One task of the AVX-512 paths: its rows × its group of panels.
    #[cfg(target_arch = "x86_64")]
    fn tiled_task(&self, x: &[f32], task: Task, dst: SharedOut<'_>, epilogue: Epilogue) {
        let (k, n) = (self.k, self.n);
        let pairs = k.div_ceil(2);
        let Task {
            r0,
            r1,
            p0,
            p1,
            c0,
            c1,
        } = task;
        let (rows, cols) = (r1 - r0, c1 - c0);
        let c = dst.block(r0 * n + c0, rows, cols, n);
        let x = &x[r0 * k..r1 * k];
        // SAFETY: `x`, the weight panels and the output block `c` are
        // checked to hold what the tiles read and write (slicing here, the
        // length asserts of the tile functions, `dst.block`); this task
        // alone writes that output block; the CPU has the features of the
        // layout (`with_layout` only builds layouts that
        // `Layout::available` offers after its CPU check).
        unsafe {
            if self.layout == Layout::Bf16Amx {
                // Rows padded to whole tiles, each padded to `depth` words,
                // with zeros (which add nothing to the sums).
                let depth = bf16_depth(k, self.layout);
                BF16_ROWS.with_borrow_mut(|words| {
                    words.clear();
                    words.resize(rows.next_multiple_of(crate::amx::TILE) * depth, 0);
                    for (row, out) in x.chunks_exact(k).zip(words.chunks_exact_mut(depth)) {
                        avx512::to_bf16_pairs(row, k, &mut out[..pairs]);
                    }
                    let w = &words_ref(&self.lines)[p0 * depth * NR..p1 * depth * NR];
                    crate::amx::bf16_tiles(rows, cols, depth, words, w, c, n);
                });
            } else if self.layout == Layout::Bf16Panels {
                BF16_ROWS.with_borrow_mut(|words| {
                    words.resize(rows * pairs, 0);
                    avx512::to_bf16_pairs(x, k, words);
                    let w = &words_ref(&self.lines)[p0 * pairs * NR..p1 * pairs * NR];
                    avx512::bf16_tiles(rows, cols, pairs, words, w, c, n);
                });
            } else {
                let w = &self.weights()[p0 * k * NR..p1 * k * NR];
                avx512::f32_tiles(rows, cols, k, x, w, c, n);
            }
        }
        self.task_epilogue(task, dst, epilogue);
    }

    /// The bias and activation on a task's block, written just before.
    fn task_epilogue(&self, task: Task, dst: SharedOut<'_>, epilogue: Epilogue) {
        if let Epilogue::Bias(bias, act) = epilogue {
            for i in task.r0..task.r1 {
                // SAFETY: this task's block, which only this task writes.
                let row = unsafe { dst.slice_mut(i * self.n + task.c0, task.c1 - task.c0) };
                apply(self.kernels, row, &bias[task.c0..task.c1], act);
            }
        }
    }
}

impl Linear {
    /// One task of the int8 paths: quantizes its input rows once, then sums
    /// them against its panels on AMX or `vpdpbusd` tiles or in
    /// [`int8_rows_emulated`].
    fn int8_task(
        &self,
        x: &[f32],
        task: Task,
        columns: &Int8Columns,
        dst: SharedOut<'_>,
        epilogue: Epilogue,
    ) {
        let (k, n) = (self.k, self.n);
        let quads = int8_depth(k, self.layout);
        let Task {
            r0,
            r1,
            p0,
            p1,
            c0,
            c1,
        } = task;
        let (rows, cols) = (r1 - r0, c1 - c0);
        let w = &words_ref(&self.lines)[p0 * quads * NR..p1 * quads * NR];
        let outlier = columns.outlier.as_ref();
        let task_columns = ColumnsRef {
            scale: &columns.scale[c0..p1 * NR],
            sum: &columns.sum[c0..p1 * NR],
            outlier: outlier.map(|o| &o.weights[c0..p1 * NR]),
        };
        INT8_ROWS.with_borrow_mut(|(words, row_quants)| {
            // The AMX tiles read rows in whole tiles; what the padding rows
            // and words hold meets zero weights or is never stored.
            let padded_rows = match self.layout {
                Layout::Int8Amx => rows.next_multiple_of(16),
                _ => rows,
            };
            words.resize(padded_rows * quads, 0);
            row_quants.resize(rows, RowQuant::default());
            quantize_rows(
                self.kernels,
                &x[r0 * k..r1 * k],
                k,
                quads,
                words,
                row_quants,
                outlier.map(|o| o.channel),
            );
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            if self.layout == Layout::Int8Amx {
                let c = dst.block(r0 * n + c0, rows, cols, n);
                // SAFETY: the operands' lengths are checked by the tile
                // function and `dst.block`; this task alone writes the block
                // `c`; the CPU has AMX-INT8 with Linux's permission and
                // AVX-512F (`with_layout` only builds layouts
                // `Layout::available` offers after its checks).
                unsafe {
                    crate::amx::int8_tiles(
                        rows,
                        cols,
                        quads,
                        words,
                        row_quants,
                        w,
                        task_columns,
                        c,
                        n,
                    );
                }
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if self.layout == Layout::Int8Vnni {
                let c = dst.block(r0 * n + c0, rows, cols, n);
                // SAFETY: the operands' lengths are checked by the tile
                // function and `dst.block`; this task alone writes the block
                // `c`; the CPU has AVX-512 VNNI (`with_layout` only builds
                // layouts `Layout::available` offers after its CPU check).
                unsafe {
                    avx512::int8_tiles(rows, cols, quads, words, row_quants, w, task_columns, c, n);
                }
                return;
            }
            for (i, (a, &rq)) in words.chunks_exact(quads).zip(row_quants.iter()).enumerate() {
                // SAFETY: this task alone reads or writes its block.
                let row = unsafe { dst.slice_mut((r0 + i) * n + c0, cols) };
                int8_rows_emulated(a, rq, w, task_columns, row);
            }
        });
        self.task_epilogue(task, dst, epilogue);
    }
}

/// How a product of `m` rows by `n` columns is cut into parallel tasks:
/// blocks of up to `TILES_PER_BLOCK` row tiles × groups of column panels,
/// enough of them to keep every thread busy even for one short text.
struct TaskGrid {
    m: usize,
    n: usize,
    block_rows: usize,
    groups: usize,
    per_group: usize,
}

/// One task's rows `r0..r1`, panels `p0..p1` and columns `c0..c1`.
#[derive(Clone, Copy)]
struct Task {
    r0: usize,
    r1: usize,
    p0: usize,
    p1: usize,
    c0: usize,
    c1: usize,
}

impl TaskGrid {
    const BLOCK_ROWS: usize = MR * TILES_PER_BLOCK;

    fn new(m: usize, n: usize) -> Self {
        Self::with_block_rows(m, n, Self::BLOCK_ROWS)
    }

    /// Tasks of up to `block_rows` rows (a kernel's own row blocking).
    fn with_block_rows(m: usize, n: usize, block_rows: usize) -> Self {
        let row_blocks = m.div_ceil(block_rows);
        let panels = n.div_ceil(NR);
        let wanted = TASKS_PER_THREAD * rayon::current_num_threads();
        let groups = if row_blocks >= wanted {
            1
        } else {
            wanted.div_ceil(row_blocks.max(1)).min(panels)
        };
        let per_group = panels.div_ceil(groups).max(1);
        let groups = panels.div_ceil(per_group);
        Self {
            m,
            n,
            block_rows,
            groups,
            per_group,
        }
    }

    /// One task: every row, every panel.
    fn whole(m: usize, n: usize) -> Self {
        Self {
            m,
            n,
            block_rows: m.max(1),
            groups: 1,
            per_group: n.div_ceil(NR).max(1),
        }
    }

    fn tasks(&self) -> usize {
        self.m.div_ceil(self.block_rows) * self.groups
    }

    fn task(&self, task: usize) -> Task {
        let (block, group) = (task / self.groups, task % self.groups);
        let panels = self.n.div_ceil(NR);
        let (r0, r1) = (
            block * self.block_rows,
            ((block + 1) * self.block_rows).min(self.m),
        );
        let (p0, p1) = (
            group * self.per_group,
            ((group + 1) * self.per_group).min(panels),
        );
        Task {
            r0,
            r1,
            p0,
            p1,
            c0: p0 * NR,
            c1: (p1 * NR).min(self.n),
        }
    }
}

/// A weight's int8 value: `v · inv` rounded to the nearest integer (ties
/// to even) in -127..=127. Adding 1.5 · 2²³ rounds to an integer in the
/// low mantissa bits (f32 addition rounds to nearest even), which is
/// `round_ties_even` for these magnitudes; unlike `round_ties_even` and the
/// saturating `as` cast, which are calls and scalar code on the baseline
/// target, it vectorises ([`quantize_input`] rounds the inputs the same
/// way). A NaN product becomes −127: `f32::max` takes the bound.
#[inline(always)]
// Not `clamp`, which keeps a NaN.
#[allow(clippy::manual_clamp)]
fn quantize(v: f32, inv: f32) -> i8 {
    round_small((v * inv).max(-127.0).min(127.0)) as i8
}

/// `t` (|t| < 2²²) rounded to the nearest integer, ties to even, by the
/// shifted add that [`quantize`] describes.
#[inline(always)]
fn round_small(t: f32) -> i32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5·2²³
    (t + SHIFT).to_bits().wrapping_sub(SHIFT.to_bits()) as i32
}

/// A row's [`RowQuant`] from its least and largest values, and the factor
/// that maps a value to its level before the zero point is added. The
/// range always holds 0, so that 0 is a level of its own (`zero`) and the
/// zero point lies in 0..=255. Scalar code shared by every path, so that
/// they all get the same numbers.
#[inline(always)]
// Not `clamp`, which keeps a NaN.
#[allow(clippy::manual_clamp)]
fn row_quant(least: f32, largest: f32) -> (RowQuant, f32) {
    let (lo, hi) = (least.min(0.0), largest.max(0.0));
    let range = hi - lo;
    let inv = if range > 0.0 { 255.0 / range } else { 0.0 };
    // `max` first: a NaN (−∞ · 0, an infinite range) becomes 0.
    let zero = (-lo * inv).round_ties_even().max(0.0).min(255.0);
    let rq = RowQuant {
        scale: range / 255.0,
        zero: zero as i32,
        outlier: 0.0,
    };
    (rq, inv)
}

/// An input's byte: `v · inv` rounded to the nearest integer (ties to
/// even), kept inside the byte range around the zero point, plus the zero
/// point. The rounding of [`quantize`]; a NaN becomes byte 0, as `vmaxps`
/// gives its bound in [`quantize_rows_avx512`].
#[inline(always)]
#[allow(clippy::manual_clamp)]
fn quantize_input(v: f32, inv: f32, zero: i32) -> u8 {
    let z = zero as f32;
    (round_small((v * inv).max(-z).min(255.0 - z)) + zero) as u8
}

/// Each `k`-wide row of `x` as `u8` levels with a scale and zero point of
/// its own (see [`RowQuant`]), packed four to a word (the lowest input in
/// the lowest byte; a partial last word padded with the zero point, which
/// meets zero weights), as `vpdpbusd` reads them. Shared by every int8
/// path, so they all sum the same integers.
/// Rows are `stride` words apart in `words` (at least `k.div_ceil(4)`; the
/// words past a row's own are left as they are). An `outlier` channel
/// (see [`Outlier`]) counts for nothing in the range, its byte is the zero
/// point, and its value goes to [`RowQuant::outlier`].
fn quantize_rows(
    kernels: Kernels,
    x: &[f32],
    k: usize,
    stride: usize,
    words: &mut [u32],
    quants: &mut [RowQuant],
    outlier: Option<usize>,
) {
    let outlier = outlier.filter(|&c| c < k);
    #[cfg(target_arch = "x86_64")]
    if kernels.has_avx512() {
        // SAFETY: `has_avx512` means the CPU check found AVX-512F + VL + BW
        // (and AVX2 + FMA) for this `Kernels`.
        unsafe { quantize_rows_avx512(x, k, stride, words, quants, outlier) };
        return;
    }
    let _ = kernels;
    quantize_rows_body(x, k, stride, words, quants, outlier)
}

/// Gives `row`'s outlier channel the zero point's byte and its value to
/// `quant`, after the row's bytes were written without regard to it.
#[inline(always)]
fn set_outlier(row: &[f32], out: &mut [u32], quant: &mut RowQuant, outlier: Option<usize>) {
    if let Some(c) = outlier {
        let shift = 8 * (c % 4);
        out[c / 4] = (out[c / 4] & !(0xff << shift)) | ((quant.zero as u32) << shift);
        quant.outlier = row[c];
    }
}

/// [`quantize_rows_body`] in AVX-512 intrinsics: the same bytes (tested),
/// 64 inputs at a time, which the compiler did not find in the plain code.
///
/// # Safety
/// The CPU has AVX-512F + VL + BW, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma")]
unsafe fn quantize_rows_avx512(
    x: &[f32],
    k: usize,
    stride: usize,
    words: &mut [u32],
    quants: &mut [RowQuant],
    outlier: Option<usize>,
) {
    use std::arch::x86_64::*;
    let quads = k.div_ceil(4);
    assert!(stride >= quads, "rows of {quads} words, {stride} apart");
    let (full, tail) = (k / 16, k % 16);
    let tail_mask = crate::kernels::vector::lanes(tail);
    // The vector that holds the outlier channel (none: past the row) and
    // the lanes of it that count for the range.
    let (skipped, kept) = outlier.map_or((usize::MAX, 0xffff), |c| (c / 16, !(1u16 << (c % 16))));
    for ((row, out), quant) in x
        .chunks_exact(k)
        .zip(words.chunks_mut(stride))
        .zip(quants.iter_mut())
    {
        let out = &mut out[..quads];
        let src = row.as_ptr();
        // The lines of the row after next, requested now so that they
        // arrive before they are needed: rows written by the other core, or
        // long before, come from far, and the first pass over each waited
        // on them (one row ahead was not enough to hide that).
        crate::kernels::prefetch(src.wrapping_add(2 * k), k);
        // The least and largest values: `vminps` / `vmaxps` keep their
        // second operand when the first is NaN, as `f32::min` / `max` skip
        // it, and the extremes of a set do not depend on the order they
        // are taken in. Two running pairs, so that the loop is not one
        // chain of dependent operations (four cycles each); as variables,
        // since an array indexed by the step was kept on the stack.
        let load = |c: usize| _mm512_loadu_ps(src.add(16 * c));
        // Vectors `from..to`, none of them the outlier's.
        let extremes = |from: usize, to: usize, lo: __m512, hi: __m512| {
            let (mut lo0, mut hi0, mut lo1, mut hi1) = (lo, hi, lo, hi);
            let mut c = from;
            while c + 2 <= to {
                let (a, b) = (load(c), load(c + 1));
                lo0 = _mm512_min_ps(a, lo0);
                hi0 = _mm512_max_ps(a, hi0);
                lo1 = _mm512_min_ps(b, lo1);
                hi1 = _mm512_max_ps(b, hi1);
                c += 2;
            }
            if c < to {
                let a = load(c);
                lo0 = _mm512_min_ps(a, lo0);
                hi0 = _mm512_max_ps(a, hi0);
            }
            (_mm512_min_ps(lo0, lo1), _mm512_max_ps(hi0, hi1))
        };
        // Masked-off lanes load 0, which the range holds anyway.
        let partial = |c: usize, mask: __mmask16, (lo, hi): (__m512, __m512)| {
            let v = _mm512_maskz_loadu_ps(mask, src.add(16 * c));
            (_mm512_min_ps(v, lo), _mm512_max_ps(v, hi))
        };
        let zero = _mm512_setzero_ps();
        let (mut lo, mut hi) = if skipped < full {
            let range = extremes(0, skipped, zero, zero);
            let range = partial(skipped, kept, range);
            extremes(skipped + 1, full, range.0, range.1)
        } else {
            extremes(0, full, zero, zero)
        };
        if tail > 0 {
            let mask = if skipped == full {
                tail_mask & kept
            } else {
                tail_mask
            };
            (lo, hi) = partial(full, mask, (lo, hi));
        }
        let (rq, inv) = row_quant(_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
        *quant = rq;
        let z = rq.zero as f32;
        let (inv, bottom, top, zero) = (
            _mm512_set1_ps(inv),
            _mm512_set1_ps(-z),
            _mm512_set1_ps(255.0 - z),
            _mm512_set1_epi32(rq.zero),
        );
        // `quantize_input`: `vmaxps` gives its second operand, the bound,
        // for a NaN first one, as `f32::max` does; `vcvtps2dq` rounds to
        // nearest even (the default mode), as the shifted add.
        let levels = |v: __m512| {
            let bounded = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, inv), bottom), top);
            _mm512_add_epi32(_mm512_cvtps_epi32(bounded), zero)
        };
        // Four vectors to 64 bytes: two saturating packs (exact, the values
        // are in 0..=255) leave 4-byte groups in 128-bit lane order; one
        // permutation of 32-bit groups restores the row's. A third of the
        // work of narrowing each vector with `vpmovdb`.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        let dst = out.as_mut_ptr();
        let mut c = 0;
        while c + 4 <= full {
            let [a, b, d, e] = [0, 1, 2, 3].map(|i| levels(load(c + i)));
            let packed = _mm512_packus_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(d, e));
            _mm512_storeu_si512(
                dst.add(4 * c).cast(),
                _mm512_permutexvar_epi32(order, packed),
            );
            c += 4;
        }
        let bytes = |v: __m512| _mm512_cvtepi32_epi8(levels(v));
        for c in c..full {
            _mm_storeu_si128(dst.add(4 * c).cast(), bytes(load(c)));
        }
        if tail > 0 {
            let mut last = [0u8; 16];
            _mm_storeu_si128(
                last.as_mut_ptr().cast(),
                bytes(_mm512_maskz_loadu_ps(tail_mask, src.add(16 * full))),
            );
            // Past the row, the zero point, as in `quantize_rows_body`.
            last[tail..].fill(rq.zero as u8);
            for (w, b) in out[4 * full..].iter_mut().zip(last.chunks_exact(4)) {
                *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        set_outlier(row, out, quant, outlier);
    }
}

#[inline(always)]
fn quantize_rows_body(
    x: &[f32],
    k: usize,
    stride: usize,
    words: &mut [u32],
    quants: &mut [RowQuant],
    outlier: Option<usize>,
) {
    let quads = k.div_ceil(4);
    assert!(stride >= quads, "rows of {quads} words, {stride} apart");
    for ((row, out), quant) in x
        .chunks_exact(k)
        .zip(words.chunks_mut(stride))
        .zip(quants.iter_mut())
    {
        let out = &mut out[..quads];
        let (least, largest) = row
            .iter()
            .enumerate()
            .filter(|&(c, _)| Some(c) != outlier)
            .fold((0.0f32, 0.0f32), |(lo, hi), (_, &v)| (lo.min(v), hi.max(v)));
        let (rq, inv) = row_quant(least, largest);
        *quant = rq;
        let byte = |v: f32| quantize_input(v, inv, rq.zero);
        let mut full = row.chunks_exact(4);
        for (word, q) in out.iter_mut().zip(&mut full) {
            *word = u32::from_le_bytes([byte(q[0]), byte(q[1]), byte(q[2]), byte(q[3])]);
        }
        if let Some(last) = out.get_mut(k / 4) {
            let mut bytes = [rq.zero as u8; 4];
            for (b, &v) in bytes.iter_mut().zip(full.remainder()) {
                *b = byte(v);
            }
            *last = u32::from_le_bytes(bytes);
        }
        set_outlier(row, out, quant, outlier);
    }
}

/// One quantized input row (`a`: words from [`quantize_rows`], `rq` its
/// scale and zero point) times the int8 panels `w`, into `out` (as many
/// columns as it holds): the integer sums `vpdpbusd` computes, in plain
/// code, finished with the same operations in the same order as the tiles.
fn int8_rows_emulated(
    a: &[u32],
    rq: RowQuant,
    w: &[u32],
    columns: ColumnsRef<'_>,
    out: &mut [f32],
) {
    let quads = a.len();
    for (p, cols) in out.chunks_mut(NR).enumerate() {
        let panel = &w[p * quads * NR..][..quads * NR];
        let mut acc = [0i32; NR];
        for (&word, row) in a.iter().zip(panel.chunks_exact(NR)) {
            let xs = word.to_le_bytes().map(i32::from);
            for (s, &wq) in acc.iter_mut().zip(row) {
                let ws = wq.to_le_bytes().map(|b| b as i8 as i32);
                *s += xs[0] * ws[0] + xs[1] * ws[1] + xs[2] * ws[2] + xs[3] * ws[3];
            }
        }
        for (j, y) in cols.iter_mut().enumerate() {
            let c = p * NR + j;
            *y = (acc[j] - rq.zero * columns.sum[c]) as f32 * (rq.scale * columns.scale[c]);
            if let Some(wo) = columns.outlier {
                *y += rq.outlier * wo[c];
            }
        }
    }
}

/// Parallel tasks per pool thread: enough to balance the pool, few enough
/// that each one streams a sizeable block.
const TASKS_PER_THREAD: usize = 4;

/// Rows per parallel task for a pass over `rows` rows.
pub(crate) fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(TASKS_PER_THREAD * rayon::current_num_threads())
        .max(1)
}

thread_local! {
    /// A task's input rows as bf16 pairs: converted once per task, then
    /// read from L1/L2 by every tile of the task.
    static BF16_ROWS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A task's input rows as u8 quads and how each was quantized, the
    /// same way.
    static INT8_ROWS: std::cell::RefCell<(Vec<u32>, Vec<RowQuant>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

fn lines_mut(lines: &mut [Line]) -> &mut [f32] {
    // SAFETY: `Line` is 16 f32 with no padding.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 16) }
}

fn words_mut(lines: &mut [Line]) -> &mut [u32] {
    // SAFETY: `Line` is 64 bytes with no padding; any bits are a valid u32.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 16) }
}

fn words_ref(lines: &[Line]) -> &[u32] {
    // SAFETY: as for `words_mut`.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), lines.len() * 16) }
}

/// `v` rounded to the nearest bfloat16 (ties to even), as an f32.
fn round_bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

/// Words of bf16 pairs per input row in `layout`'s panels: AMX tiles read
/// the inner dimension 16 words at a time.
fn bf16_depth(k: usize, layout: Layout) -> usize {
    let pairs = k.div_ceil(2);
    match layout {
        Layout::Bf16Amx => pairs.next_multiple_of(16),
        _ => pairs,
    }
}

/// Words of four int8 values per input row in `layout`'s panels: AMX tiles
/// read the inner dimension 16 words at a time.
fn int8_depth(k: usize, layout: Layout) -> usize {
    let quads = k.div_ceil(4);
    match layout {
        Layout::Int8Amx => quads.next_multiple_of(16),
        _ => quads,
    }
}

/// Where weight (input `p`, column `j`) lies in int8 panels of `quads`
/// words a column: the word of four inputs, byte `p % 4` of it.
fn int8_word(j: usize, p: usize, quads: usize) -> usize {
    (j / NR) * quads * NR + (p / 4) * NR + j % NR
}

/// Two values as one word of bf16s, `lo` in the low half (the order
/// `vdpbf16ps` pairs them in).
fn bf16_pair(lo: f32, hi: f32) -> u32 {
    (half::bf16::from_f32(hi).to_bits() as u32) << 16 | half::bf16::from_f32(lo).to_bits() as u32
}

fn apply(kernels: Kernels, rows: &mut [f32], bias: &[f32], act: Option<Activation>) {
    match act {
        Some(act) => kernels.bias_act(rows, bias, act),
        None => kernels.bias_add(rows, bias),
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{ColumnsRef, RowQuant, MR, NR};

    /// `kernel::<rows>(args)` for a run-time `rows`.
    macro_rules! by_rows {
        ($rows:expr, $kernel:ident $args:tt, $($r:literal)*) => {
            match $rows {
                $($r => $kernel::<$r> $args,)*
                _ => unreachable!(),
            }
        };
    }

    /// Defines `$tiles`, a product of packed operands into row-major f32:
    /// `c[m × n] = a[m × depth] · b[depth × n]`, where one element of `a`
    /// or `b` ($elem) carries `$step`'s share of the inner dimension. Column
    /// panels of `NR` outside, row tiles of `MR` inside, so a panel of `b`
    /// serves every row tile of the block from cache. `a` is row-major
    /// (rows `depth` apart), `b` packed (panel `p` starts `p · depth · NR`
    /// elements in, its rows `NR` apart), `c` row-major with rows `ldc`
    /// apart. One monomorphised kernel per row count keeps the 2 × MR
    /// accumulators in registers for the partial tiles at the end of a
    /// batch too.
    macro_rules! tiled_product {
        ($features:literal, $tiles:ident, $kernel:ident, $elem:ty, $load:ident, $step:ident) => {
            /// # Safety
            /// The CPU has the target features; `c` points at `m` rows of
            /// `n` writable values, `ldc` apart. (`a` and `b` are checked
            /// here: whole panels of `b` are read, zero-filled past `n`.)
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = $features)]
            pub unsafe fn $tiles(
                m: usize,
                n: usize,
                depth: usize,
                a: &[$elem],
                b: &[$elem],
                c: *mut f32,
                ldc: usize,
            ) {
                assert!(a.len() >= m * depth, "tile rows");
                assert!(b.len() >= n.div_ceil(NR) * depth * NR, "tile panels");
                let (a, b) = (a.as_ptr(), b.as_ptr());
                for j0 in (0..n).step_by(NR) {
                    let width = (n - j0).min(NR);
                    let mask = if width >= NR {
                        u32::MAX
                    } else {
                        (1u32 << width) - 1
                    };
                    let (m0, m1) = (mask as __mmask16, (mask >> 16) as __mmask16);
                    let b = b.add(j0 * depth);
                    for i0 in (0..m).step_by(MR) {
                        let (a, c) = (a.add(i0 * depth), c.add(i0 * ldc + j0));
                        const _: () = assert!(MR == 12);
                        by_rows!(
                            (m - i0).min(MR),
                            $kernel(a, depth, b, c, ldc, m0, m1),
                            1 2 3 4 5 6 7 8 9 10 11 12
                        );
                    }
                }
            }

            #[allow(clippy::too_many_arguments)]
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn $kernel<const R: usize>(
                a: *const $elem,
                depth: usize,
                b: *const $elem,
                c: *mut f32,
                ldc: usize,
                m0: __mmask16,
                m1: __mmask16,
            ) {
                let mut lo = [_mm512_setzero_ps(); R];
                let mut hi = [_mm512_setzero_ps(); R];
                for p in 0..depth {
                    // Packing zero-fills panels to NR columns, so whole
                    // rows of a panel are always in bounds.
                    let row = b.add(p * NR);
                    let (b0, b1) = ($load(row), $load(row.add(16)));
                    for r in 0..R {
                        let av = *a.add(r * depth + p);
                        lo[r] = $step(lo[r], av, b0);
                        hi[r] = $step(hi[r], av, b1);
                    }
                }
                for r in 0..R {
                    _mm512_mask_storeu_ps(c.add(r * ldc), m0, lo[r]);
                    _mm512_mask_storeu_ps(c.wrapping_add(r * ldc + 16), m1, hi[r]);
                }
            }
        };
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn f32_load(b: *const f32) -> __m512 {
        _mm512_loadu_ps(b)
    }

    /// `acc + a · b`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn f32_step(acc: __m512, a: f32, b: __m512) -> __m512 {
        _mm512_fmadd_ps(_mm512_set1_ps(a), b, acc)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn bf16_load(b: *const u32) -> __m512bh {
        std::mem::transmute(_mm512_loadu_si512(b.cast()))
    }

    /// `acc + a.0 · b.0 + a.1 · b.1` in each of the 16 lanes, where `a` and
    /// every lane of `b` hold two bf16 values.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn bf16_step(acc: __m512, a: u32, b: __m512bh) -> __m512 {
        let a = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(a as i32));
        _mm512_dpbf16_ps(acc, a, b)
    }

    tiled_product!("avx512f", f32_tiles, f32_kernel, f32, f32_load, f32_step);
    tiled_product!(
        "avx512f,avx512bf16",
        bf16_tiles,
        bf16_kernel,
        u32,
        bf16_load,
        bf16_step
    );

    /// int8 products on `vpdpbusd`: `c[m × n] = a · b`, scaled back to
    /// f32. `a`: `m` rows of `quads` words of four u8 inputs, row `r`
    /// quantized as `rows[r]` says; `b`: int8 panels as
    /// [`tiled_product!`]'s, four weights per word; `columns`: what the
    /// finish needs of each column, whole panels of it. Each output is `(Σ − zero · sum) as f32 · (row scale · column
    /// scale)`, plus `outlier value · weight`, the operations of
    /// [`super::int8_rows_emulated`] in its order.
    ///
    /// # Safety
    /// The CPU has AVX-512 VNNI and BW; `c` points at `m` rows of `n`
    /// writable values, `ldc` apart. (The slices are checked here.)
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn int8_tiles(
        m: usize,
        n: usize,
        quads: usize,
        a: &[u32],
        rows: &[RowQuant],
        b: &[u32],
        columns: ColumnsRef<'_>,
        c: *mut f32,
        ldc: usize,
    ) {
        let panels = n.div_ceil(NR);
        assert!(a.len() >= m * quads && rows.len() >= m, "tile rows");
        assert!(b.len() >= panels * quads * NR, "tile panels");
        assert!(columns.cover(panels * NR), "tile columns");
        for j0 in (0..n).step_by(NR) {
            let width = (n - j0).min(NR);
            let mask = if width >= NR {
                u32::MAX
            } else {
                (1u32 << width) - 1
            };
            let (m0, m1) = (mask as __mmask16, (mask >> 16) as __mmask16);
            let bp = b.as_ptr().add(j0 * quads);
            let columns = PanelColumns::load(columns, j0);
            for i0 in (0..m).step_by(MR) {
                let ap = a.as_ptr().add(i0 * quads);
                let (rs, cp) = (rows.as_ptr().add(i0), c.add(i0 * ldc + j0));
                by_rows!(
                    (m - i0).min(MR),
                    int8_kernel(ap, quads, rs, bp, &columns, cp, ldc, m0, m1),
                    1 2 3 4 5 6 7 8 9 10 11 12
                );
            }
        }
    }

    /// One panel's [`ColumnsRef`], 16 lanes each.
    pub(crate) struct PanelColumns {
        scale: [__m512; 2],
        sum: [__m512i; 2],
        outlier: Option<[__m512; 2]>,
    }

    impl PanelColumns {
        /// The panel at column `j0`.
        ///
        /// # Safety
        /// The CPU has AVX-512F; `columns` covers `j0 + 32` columns.
        #[inline]
        #[target_feature(enable = "avx512f")]
        pub(crate) unsafe fn load(columns: ColumnsRef<'_>, j0: usize) -> Self {
            let f32s = |v: &[f32]| {
                [
                    _mm512_loadu_ps(v.as_ptr().add(j0)),
                    _mm512_loadu_ps(v.as_ptr().add(j0 + 16)),
                ]
            };
            Self {
                scale: f32s(columns.scale),
                sum: [
                    _mm512_loadu_si512(columns.sum.as_ptr().add(j0).cast()),
                    _mm512_loadu_si512(columns.sum.as_ptr().add(j0 + 16).cast()),
                ],
                outlier: columns.outlier.map(f32s),
            }
        }

        /// The finish of one row's sums `acc` over half `half` (16
        /// columns) of the panel: `(Σ − zero · sum) as f32 · (row scale ·
        /// column scale)`, plus `outlier value · weight`. The `vpdpbusd`
        /// and `tdpbusd` tiles both call this, and
        /// [`super::int8_rows_emulated`] does the same operations in the
        /// same order, so all give the same bits.
        #[inline]
        #[target_feature(enable = "avx512f")]
        pub(crate) fn finish(&self, acc: __m512i, half: usize, row: RowQuant) -> __m512 {
            let offset = _mm512_mullo_epi32(_mm512_set1_epi32(row.zero), self.sum[half]);
            let sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, offset));
            let scale = _mm512_mul_ps(_mm512_set1_ps(row.scale), self.scale[half]);
            let y = _mm512_mul_ps(sum, scale);
            match self.outlier {
                Some(w) => _mm512_add_ps(y, _mm512_mul_ps(_mm512_set1_ps(row.outlier), w[half])),
                None => y,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn int8_kernel<const R: usize>(
        a: *const u32,
        quads: usize,
        rows: *const RowQuant,
        b: *const u32,
        columns: &PanelColumns,
        c: *mut f32,
        ldc: usize,
        m0: __mmask16,
        m1: __mmask16,
    ) {
        let mut lo = [_mm512_setzero_si512(); R];
        let mut hi = [_mm512_setzero_si512(); R];
        for q in 0..quads {
            let row = b.add(q * NR);
            let b0 = _mm512_loadu_si512(row.cast());
            let b1 = _mm512_loadu_si512(row.add(16).cast());
            for r in 0..R {
                let av = _mm512_set1_epi32(*a.add(r * quads + q) as i32);
                lo[r] = _mm512_dpbusd_epi32(lo[r], av, b0);
                hi[r] = _mm512_dpbusd_epi32(hi[r], av, b1);
            }
        }
        for r in 0..R {
            let rq = *rows.add(r);
            _mm512_mask_storeu_ps(c.add(r * ldc), m0, columns.finish(lo[r], 0, rq));
            _mm512_mask_storeu_ps(
                c.wrapping_add(r * ldc + 16),
                m1,
                columns.finish(hi[r], 1, rq),
            );
        }
    }

    /// `x` (`rows × k`) as bf16 pairs, `rows × k.div_ceil(2)` words, rounded
    /// to nearest even as [`super::bf16_pair`] does.
    ///
    /// # Safety
    /// The CPU has AVX-512 BF16; `words` holds `x.len() / k` rows.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn to_bf16_pairs(x: &[f32], k: usize, words: &mut [u32]) {
        if k == 0 {
            return;
        }
        let pairs = k.div_ceil(2);
        for (row, out) in x.chunks_exact(k).zip(words.chunks_exact_mut(pairs)) {
            let full = k / 32;
            for c in 0..full {
                let src = row.as_ptr().add(c * 32);
                let packed =
                    _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src.add(16)), _mm512_loadu_ps(src));
                _mm512_storeu_si512(
                    out.as_mut_ptr().add(c * 16).cast(),
                    std::mem::transmute::<__m512bh, __m512i>(packed),
                );
            }
            for (w, pair) in out[full * 16..].iter_mut().zip(row[full * 32..].chunks(2)) {
                *w = super::bf16_pair(pair[0], pair.get(1).copied().unwrap_or(0.0));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Values in [-1, 1), the same for the same seed (also the encoder's
    /// tests' data).
    pub(crate) fn data(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn reference(x: &[f32], w: &[f32], k: usize, n: usize, bias: &[f32]) -> Vec<f64> {
        let m = x.len() / k;
        let mut y = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| x[i * k + p] as f64 * w[p * n + j] as f64)
                    .sum();
                y[i * n + j] = dot + bias[j] as f64;
            }
        }
        y
    }

    /// Every layout this CPU runs (the AVX-512 f32 and bf16 tiles where it
    /// has them, `gemm` always), for both kinds of products, against an
    /// f64 product of the same inputs (rounded to bf16 first for bf16
    /// products), over shapes that cut tiles, panels, pairs and task
    /// blocks at every edge.
    #[test]
    fn every_path_matches_an_f64_product() {
        let shapes = [
            (1, 1, 1),
            (1, 384, 1152),
            (5, 7, 3),
            (12, 32, 32),
            (13, 33, 31),
            (47, 64, 96),
            (49, 40, 50),
            (200, 96, 65),
            (640, 17, 384),
        ];
        let mut tested = Vec::new();
        for kernels in Kernels::available() {
            for products in [Products::F32, Products::Bf16] {
                for layout in Layout::available(kernels, products) {
                    tested.push(layout);
                    for (case, &(m, k, n)) in shapes.iter().enumerate() {
                        check(kernels, products, layout, m, k, n, case as u64);
                    }
                }
            }
        }
        assert_eq!(
            tested.contains(&Layout::Bf16Panels),
            bf16_hardware(),
            "the native bf16 tiles run exactly where the CPU has them"
        );
        for (layout, needs) in [
            (Layout::F32Panels, "AVX-512F + VL + BW"),
            (Layout::Bf16Panels, "AVX-512 BF16"),
            (
                Layout::Bf16Amx,
                "AMX-BF16 with Linux's permission, or RAGJET_AMX=off",
            ),
        ] {
            if !tested.contains(&layout) {
                eprintln!(
                    "SKIPPED: the {layout:?} tiles (this CPU lacks {needs}); \
                     the faster paths this CPU has ran instead"
                );
            }
        }
    }

    fn check(
        kernels: Kernels,
        products: Products,
        layout: Layout,
        m: usize,
        k: usize,
        n: usize,
        seed: u64,
    ) {
        let what = format!("{kernels:?} {products:?} {layout:?} {m}x{k}x{n}");
        let x = data(m * k, seed + 1);
        let w = data(k * n, seed + 100);
        let bias = data(n, seed + 200);
        let exact = |v: &[f32]| -> Vec<f32> {
            match products {
                Products::F32 => v.to_vec(),
                Products::Bf16 => v.iter().map(|&x| round_bf16(x)).collect(),
                Products::Int8 => unreachable!("int8 products have tests of their own"),
            }
        };
        let want = reference(&exact(&x), &exact(&w), k, n, &bias);
        let linear = Linear::with_layout(&w, k, n, kernels, products, layout);
        assert_eq!(linear.layout, layout);
        let run = |epilogue| {
            let mut y = vec![f32::NAN; m * n];
            linear.forward(&x, &mut y, epilogue).unwrap();
            y
        };
        let tol = 1e-5 * (k as f64).sqrt() + 1e-6;
        let got = run(Epilogue::Bias(&bias, None));
        assert_eq!(got.len(), want.len(), "{what}");
        for (idx, (&g, &e)) in got.iter().zip(&want).enumerate() {
            assert!((g as f64 - e).abs() <= tol, "{what} at {idx}: {g} vs {e}");
        }
        let plain = run(Epilogue::None);
        let relu = run(Epilogue::Bias(&bias, Some(Activation::Relu)));
        for ((&p, &r), (&e, &b)) in plain
            .iter()
            .zip(&relu)
            .zip(want.iter().zip(bias.iter().cycle()))
        {
            assert!(
                (p as f64 + b as f64 - e).abs() <= tol,
                "{what}: {p} + {b} vs {e}"
            );
            assert!(
                (r as f64 - e.max(0.0)).abs() <= tol,
                "{what}: relu {r} vs {e}"
            );
        }
    }

    /// bf16 products differ from f32 ones (the test above would pass for a
    /// bf16 path that silently multiplied in f32 only if rounding changed
    /// nothing, so make sure it does on these inputs).
    #[test]
    fn bf16_products_round_their_inputs() {
        let (m, k, n) = (13, 64, 40);
        let (x, w) = (data(m * k, 7), data(k * n, 8));
        for kernels in Kernels::available() {
            let mut f32_out = vec![0.0; m * n];
            Linear::new(&w, k, n, kernels, Products::F32)
                .forward(&x, &mut f32_out, Epilogue::None)
                .unwrap();
            let mut bf16_out = vec![0.0; m * n];
            Linear::new(&w, k, n, kernels, Products::Bf16)
                .forward(&x, &mut bf16_out, Epilogue::None)
                .unwrap();
            assert_eq!(f32_out.len(), bf16_out.len());
            // A NaN fails the bounds below (`f32::max` would drop it).
            let diff = f32_out
                .iter()
                .zip(&bf16_out)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, |acc, d| {
                    if acc.is_nan() || d.is_nan() {
                        f32::NAN
                    } else {
                        acc.max(d)
                    }
                });
            assert!(
                diff > 1e-4 && diff < 0.1,
                "{kernels:?}: max difference {diff}"
            );
        }
    }

    /// No inputs (`in` = 0, an `intermediate_size` of 0 reaching a layer):
    /// the product is zero and the output is the epilogue of zero, on every
    /// layout. The bf16 tiles used to split input rows of width 0 (a panic).
    #[test]
    fn a_product_over_no_inputs_is_zero() {
        let (m, n) = (5, 40);
        let bias = data(n, 3);
        for kernels in Kernels::available() {
            for products in [Products::F32, Products::Bf16, Products::Int8] {
                for layout in Layout::available(kernels, products) {
                    let linear = Linear::with_layout(&[], 0, n, kernels, products, layout);
                    let mut out = vec![f32::NAN; m * n];
                    linear
                        .forward(&[], &mut out, Epilogue::Bias(&bias, None))
                        .unwrap();
                    let want: Vec<f32> = bias.iter().copied().cycle().take(m * n).collect();
                    assert_eq!(out, want, "{kernels:?} {products:?} {layout:?}");
                }
            }
        }
    }

    /// The shared output's accessors check the extent they hand out: a
    /// block or slice past the end panics instead of writing there.
    #[test]
    fn shared_out_checks_every_extent() {
        let mut buffer = vec![0.0f32; 4 * 10];
        // SAFETY: this test is the only user, on one thread.
        let out = unsafe { SharedOut::new(&mut buffer) };
        assert_eq!(out.block(0, 4, 10, 10), out.block(0, 0, 0, 0));
        let _ = out.block(36, 1, 4, 10);
        let _ = out.block(6, 4, 4, 10);
        let caught =
            |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
        assert!(caught(&|| {
            out.block(7, 4, 4, 10);
        }));
        assert!(caught(&|| {
            out.block(0, 2, 11, 10);
        }));
        assert!(caught(&|| {
            out.block(usize::MAX, 2, 1, usize::MAX);
        }));
        // SAFETY: one slice at a time, on one thread.
        unsafe {
            out.slice_mut(30, 10).fill(1.0);
            assert!(caught(&|| {
                out.slice_mut(31, 10);
            }));
        }
        assert_eq!(buffer[29..].iter().sum::<f32>(), 10.0);
    }

    #[test]
    fn empty_batches_are_fine() {
        for kernels in Kernels::available() {
            for products in [Products::F32, Products::Bf16, Products::Int8] {
                let linear = Linear::new(&data(8 * 4, 1), 8, 4, kernels, products);
                linear.forward(&[], &mut [], Epilogue::None).unwrap();
                let no_outputs = Linear::new(&[], 8, 0, kernels, products);
                no_outputs
                    .forward(&data(3 * 8, 2), &mut [], Epilogue::None)
                    .unwrap();
            }
        }
    }

    /// The int8 result computed independently: per-column scales, per-row
    /// scales and zero points, the integer sum of the levels less the zero
    /// point times the int8 weights, then the f32 finish; an `outlier`
    /// channel out of the range and the sum, its value times its
    /// dequantized weight added last.
    fn int8_reference(
        x: &[f32],
        w: &[f32],
        k: usize,
        n: usize,
        outlier: Option<usize>,
    ) -> Vec<f32> {
        let m = x.len() / k;
        let inv = |max: f32| if max > 0.0 { 127.0 / max } else { 0.0 };
        let col_max: Vec<f32> = (0..n)
            .map(|j| (0..k).fold(0.0f32, |a, p| a.max(w[p * n + j].abs())))
            .collect();
        let mut y = vec![0.0f32; m * n];
        for i in 0..m {
            let row = &x[i * k..][..k];
            let kept = || (0..k).filter(|&p| Some(p) != outlier).map(|p| row[p]);
            let lo = kept().fold(0.0f32, |a, v| a.min(v));
            let hi = kept().fold(0.0f32, |a, v| a.max(v));
            let row_inv = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
            let zero = (-lo * row_inv).round_ties_even().clamp(0.0, 255.0);
            for j in 0..n {
                let qw = |p: usize| quantize(w[p * n + j], inv(col_max[j]));
                let sum: i64 = (0..k)
                    .filter(|&p| Some(p) != outlier)
                    .map(|p| {
                        let level = (row[p] * row_inv)
                            .round_ties_even()
                            .clamp(-zero, 255.0 - zero);
                        level as i64 * qw(p) as i64
                    })
                    .sum();
                let mut v = sum as i32 as f32 * ((hi - lo) / 255.0 * (col_max[j] / 127.0));
                if let Some(c) = outlier {
                    v += row[c] * (col_max[j] / 127.0 * qw(c) as f32);
                }
                y[i * n + j] = v;
            }
        }
        y
    }

    /// The shifted-add rounding is `round_ties_even` clamped to ±127, ties
    /// and saturation included, and both compiled variants of the row
    /// quantizer give the same bytes and scales.
    #[test]
    fn quantize_rounds_to_nearest_even_and_saturates() {
        for i in -3000..=3000 {
            let v = i as f32 * 0.125;
            for inv in [1.0f32, 0.37, 2.0, 0.0] {
                let want = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
                assert_eq!(quantize(v, inv), want, "{v} · {inv}");
            }
        }
        assert_eq!(quantize(2.5, 1.0), 2);
        assert_eq!(quantize(-2.5, 1.0), -2);
        assert_eq!(quantize(3.5, 1.0), 4);
        for i in -3000..=3000 {
            let v = i as f32 * 0.125;
            for inv in [1.0f32, 0.37, 2.0, 0.0] {
                for zero in [0, 1, 128, 200, 255] {
                    let z = zero as f32;
                    let want = (v * inv).round_ties_even().clamp(-z, 255.0 - z) + z;
                    assert_eq!(
                        quantize_input(v, inv, zero),
                        want as u8,
                        "{v} · {inv} + {zero}"
                    );
                }
            }
        }
        assert_eq!(quantize_input(f32::NAN, 1.0, 7), 0);
        let (rows, k) = (7, 45);
        let x = data(rows * k, 9);
        let run = |kernels| {
            let mut out = (
                vec![0u32; rows * k.div_ceil(4)],
                vec![RowQuant::default(); rows],
            );
            quantize_rows(kernels, &x, k, k.div_ceil(4), &mut out.0, &mut out.1, None);
            out
        };
        let portable = run(Kernels::portable());
        for kernels in Kernels::available() {
            assert_eq!(run(kernels), portable, "{kernels:?}");
        }
        // Every tail length of the 16-lane code, a padded stride, a row of
        // huge values, one with NaN and infinity, one whose least value is
        // subnormal (an infinite inverse scale), rows all above and all
        // below 0 (zero points 0 and 255): the same bytes, scales and zero
        // points from every compiled variant.
        for k in [1usize, 3, 4, 15, 16, 17, 31, 33, 64, 65, 384, 387] {
            let stride = k.div_ceil(4) + 3;
            let mut x = data(7 * k, k as u64);
            x[k..2 * k].iter_mut().for_each(|v| *v *= 3e38);
            x[2 * k] = f32::NAN;
            x[2 * k + k / 2] = f32::from_bits(0xffc0_1234); // a NaN with a payload
            x[3 * k - 1] = f32::INFINITY;
            x[3 * k..4 * k].fill(0.0);
            x[4 * k - 1] = -1e-45;
            x[4 * k..5 * k].iter_mut().for_each(|v| *v = v.abs() + 0.5);
            x[5 * k..6 * k].iter_mut().for_each(|v| *v = -v.abs() - 0.5);
            // Row 6 has a huge value in the outlier channel of the runs
            // that name one: in each part of the 16-lane code (the first
            // vector, the middle, the last vector or the tail), or past the
            // row (none).
            let channels = [None, Some(0), Some(k / 2), Some(k - 1), Some(k + 3)];
            for (i, &outlier) in channels.iter().enumerate() {
                let mut x = x.clone();
                let wanted = outlier.filter(|&c| c < k);
                if let Some(c) = wanted {
                    x[6 * k + c] = -1e4 * (i as f32);
                }
                let run = |kernels| {
                    let mut out = (vec![7u32; 7 * stride], vec![RowQuant::default(); 7]);
                    quantize_rows(kernels, &x, k, stride, &mut out.0, &mut out.1, outlier);
                    out
                };
                let portable = run(Kernels::portable());
                if k > 1 {
                    assert_eq!((portable.1[4].zero, portable.1[5].zero), (0, 255));
                }
                for kernels in Kernels::available() {
                    let got = run(kernels);
                    assert_eq!(got.0, portable.0, "{kernels:?} k = {k}, {outlier:?}");
                    let bits = |s: &[RowQuant]| {
                        s.iter()
                            .map(|q| (q.scale.to_bits(), q.zero, q.outlier.to_bits()))
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(bits(&got.1), bits(&portable.1), "{kernels:?} k = {k}");
                }
                if let Some(c) = wanted {
                    // Out of the range, its byte the zero point, its value
                    // kept.
                    let row = &x[6 * k..7 * k];
                    let others = (0..k).filter(|&p| p != c).map(|p| row[p]);
                    let lo = others.clone().fold(0.0f32, f32::min);
                    let hi = others.fold(0.0f32, f32::max);
                    let q = portable.1[6];
                    assert_eq!(q.scale, (hi - lo) / 255.0, "k = {k}, channel {c}");
                    assert_eq!(q.outlier.to_bits(), row[c].to_bits());
                    let byte = (portable.0[6 * stride + c / 4] >> (8 * (c % 4))) & 0xff;
                    assert_eq!(byte, q.zero as u32);
                } else {
                    assert!(portable.1.iter().all(|q| q.outlier == 0.0));
                }
                // The words past each row's own are left alone.
                assert!(portable
                    .0
                    .chunks(stride)
                    .all(|r| r[k.div_ceil(4)..] == [7; 3]));
            }
        }
        // Row 0, input 0 as the tiles read it: its level plus the zero
        // point, from the row's range.
        let lo = x[..k].iter().fold(0.0f32, |m, &v| m.min(v));
        let hi = x[..k].iter().fold(0.0f32, |m, &v| m.max(v));
        let inv = 255.0 / (hi - lo);
        let zero = (-lo * inv).round_ties_even();
        assert_eq!(portable.1[0].zero, zero as i32);
        assert_eq!(
            portable.0[0] & 0xff,
            ((x[0] * inv).round_ties_even() + zero) as u32
        );
    }

    /// Every int8 path (`vpdpbusd` tiles where the CPU has AVX-512 VNNI,
    /// the emulation always) gives the independent reference's bits
    /// exactly, so every CPU gives the same vectors; and stays within the
    /// rounding bound of the f32 product.
    #[test]
    fn every_int8_path_is_bit_exact_and_within_its_rounding_bound() {
        let shapes = [
            (1, 1, 1),
            (1, 384, 1152),
            (5, 7, 3),
            (12, 32, 32),
            (13, 33, 31),
            (47, 64, 96),
            (49, 41, 50),
            (200, 96, 65),
            (61, 1536, 40),
            // AMX tile edges: 16 / 32 rows, 32 columns, 64 inputs.
            (17, 65, 33),
            (33, 63, 97),
            (31, 129, 16),
            (16, 64, 32),
        ];
        let mut tested = Vec::new();
        for kernels in Kernels::available() {
            for layout in Layout::available(kernels, Products::Int8) {
                tested.push(layout);
                for (case, &(m, k, n)) in shapes.iter().enumerate() {
                    let what = format!("{kernels:?} {layout:?} {m}x{k}x{n}");
                    let mut x = data(m * k, case as u64 + 1);
                    // A zero row (scale 0), a wide-ranged one, one above 0
                    // and one below (zero points 0 and 255).
                    x[..k].fill(0.0);
                    if m > 2 {
                        x[2 * k] = 40.0;
                    }
                    if m > 4 {
                        x[3 * k..4 * k].iter_mut().for_each(|v| *v = v.abs() + 1.0);
                        x[4 * k..5 * k].iter_mut().for_each(|v| *v = -v.abs() - 1.0);
                    }
                    let w = data(k * n, case as u64 + 100);
                    let bias = data(n, case as u64 + 200);
                    let mut linear = Linear::with_layout(&w, k, n, kernels, Products::Int8, layout);
                    let mut got = vec![f32::NAN; m * n];
                    linear.forward(&x, &mut got, Epilogue::None).unwrap();
                    let want = int8_reference(&x, &w, k, n, None);
                    for (idx, (g, e)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(g.to_bits(), e.to_bits(), "{what} at {idx}: {g} vs {e}");
                    }
                    // With an outlier channel, large in every other row.
                    let channel = k / 3;
                    let mut xo = x.clone();
                    xo.chunks_exact_mut(k)
                        .step_by(2)
                        .for_each(|r| r[channel] = 30.0);
                    linear.set_int8_outlier(Some(channel));
                    linear.forward(&xo, &mut got, Epilogue::None).unwrap();
                    let want = int8_reference(&xo, &w, k, n, Some(channel));
                    for (idx, (g, e)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(g.to_bits(), e.to_bits(), "{what}, outlier, at {idx}");
                    }
                    linear.set_int8_outlier(None);
                    let mut biased = vec![f32::NAN; m * n];
                    linear
                        .forward(&x, &mut biased, Epilogue::Bias(&bias, None))
                        .unwrap();
                    let exact = reference(&x, &w, k, n, &bias);
                    for i in 0..m {
                        let row = &x[i * k..][..k];
                        let (lo, hi) = row
                            .iter()
                            .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                        let dx = (hi - lo) as f64 / 510.0;
                        for j in 0..n {
                            let dw = (0..k).fold(0.0f32, |a, p| a.max(w[p * n + j].abs())) as f64
                                / 254.0;
                            let bound: f64 = (0..k)
                                .map(|p| {
                                    row[p].abs() as f64 * dw
                                        + w[p * n + j].abs() as f64 * dx
                                        + dx * dw
                                })
                                .sum::<f64>()
                                * 1.001
                                + 1e-5;
                            let (g, e) = (biased[i * n + j] as f64, exact[i * n + j]);
                            assert!((g - e).abs() <= bound, "{what} at {i},{j}: {g} vs {e}");
                        }
                    }
                }
            }
        }
        assert_eq!(
            tested.contains(&Layout::Int8Vnni),
            vnni_hardware(),
            "the vpdpbusd tiles run exactly where the CPU has them"
        );
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        assert_eq!(
            tested.contains(&Layout::Int8Amx),
            Kernels::detect().has_avx512() && crate::amx::int8_available(),
            "the tdpbusd tiles run exactly where the CPU has them"
        );
        if !tested.contains(&Layout::Int8Vnni) {
            eprintln!(
                "SKIPPED: the vpdpbusd tiles (this CPU lacks AVX-512 VNNI); the emulation ran"
            );
        }
        if !tested.contains(&Layout::Int8Amx) {
            eprintln!(
                "SKIPPED: the tdpbusd tiles (this CPU lacks AMX-INT8 with Linux's permission, \
                 or RAGJET_AMX=off)"
            );
        }
    }

    /// The emulation and the `vpdpbusd` and `tdpbusd` tiles give the same
    /// bits on real layer shapes with large inputs, where an f32 sum in a
    /// different order would differ.
    #[test]
    fn native_int8_tiles_and_emulation_agree_bit_for_bit() {
        let kernels = Kernels::detect();
        let native: Vec<Layout> = Layout::available(kernels, Products::Int8)
            .into_iter()
            .filter(|&l| l != Layout::Int8Panels)
            .collect();
        if native.is_empty() {
            eprintln!("SKIPPED: no native int8 tiles (this CPU lacks AVX-512 VNNI and AMX-INT8)");
            return;
        }
        for (case, (m, k, n)) in [(100, 384, 1536), (37, 1536, 384)].into_iter().enumerate() {
            let x: Vec<f32> = data(m * k, 50 + case as u64)
                .iter()
                .map(|v| v * 9.0)
                .collect();
            let w = data(k * n, 60 + case as u64);
            let run = |layout| {
                let linear = Linear::with_layout(&w, k, n, kernels, Products::Int8, layout);
                let mut y = vec![f32::NAN; m * n];
                linear.forward(&x, &mut y, Epilogue::None).unwrap();
                y
            };
            let emulated = run(Layout::Int8Panels);
            for &layout in &native {
                let tiles = run(layout);
                assert!(tiles.iter().all(|v| v.is_finite()));
                assert!(
                    tiles
                        .iter()
                        .zip(&emulated)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{m}x{k}x{n}: the {layout:?} tiles and the emulation differ"
                );
            }
        }
    }
}
