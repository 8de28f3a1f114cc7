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
//! Measured on the 2-core Zen 4 development machine (`docs/performance.md`):
//! 200–216 GFLOP/s at the encoder's shapes against 168–210 for `gemm`.

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

/// A weight matrix `[in, out]`, laid out for the kernel that multiplies by
/// it: for the AVX-512 tiles, panels of `NR` columns, each panel's rows one
/// after another (a tile then streams its weights from consecutive cache
/// lines rather than one line per `out`-wide row); for `gemm`, row-major.
pub(crate) struct Linear {
    lines: Vec<Line>,
    k: usize,
    n: usize,
    kernels: Kernels,
}

/// What runs on each output row after the product.
#[derive(Clone, Copy)]
pub(crate) enum Epilogue<'a> {
    /// Nothing: a later fused pass adds the bias (residual + layer norm).
    None,
    /// `y + bias`, then the activation if there is one.
    Bias(&'a [f32], Option<Activation>),
}

/// A pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub *mut f32);
// SAFETY: every user writes disjoint elements from each task (see the call
// sites).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    // A method, not field access, so closures capture the Send + Sync wrapper.
    pub fn ptr(self) -> *mut f32 {
        self.0
    }
}

impl Linear {
    /// `w`: `[k, n]` row-major (`in × out`, the transpose of PyTorch's);
    /// `kernels`: the variant that will run it.
    pub fn new(w: &[f32], k: usize, n: usize, kernels: Kernels) -> Self {
        assert_eq!(w.len(), k * n, "weight shape");
        let panels = n.div_ceil(NR);
        let mut lines = vec![Line([0.0; 16]); panels * k * NR / 16];
        let dst = lines_mut(&mut lines);
        if uses_tiles(kernels) && n > 0 {
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
        Self {
            lines,
            k,
            n,
            kernels,
        }
    }

    pub fn out_features(&self) -> usize {
        self.n
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
        #[cfg(target_arch = "x86_64")]
        if uses_tiles(kernels) {
            self.tiled(x, m, SharedOut(out.as_mut_ptr()), epilogue);
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
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
        if let Epilogue::Bias(bias, act) = epilogue {
            out.par_chunks_mut(rows_per_task(m) * self.n)
                .for_each(|rows| apply(kernels, rows, bias, act));
        }
        Ok(())
    }

    /// The AVX-512 path: tasks of up to `TILES_PER_BLOCK` row tiles × a group
    /// of column panels, enough of them to keep every thread busy even for
    /// one short text.
    #[cfg(target_arch = "x86_64")]
    fn tiled(&self, x: &[f32], m: usize, dst: SharedOut, epilogue: Epilogue) {
        let (k, n) = (self.k, self.n);
        let w = self.weights();
        let block_rows = MR * TILES_PER_BLOCK;
        let row_blocks = m.div_ceil(block_rows);
        let panels = n.div_ceil(NR);
        let wanted = TASKS_PER_THREAD * rayon::current_num_threads();
        let groups = if row_blocks >= wanted {
            1
        } else {
            wanted.div_ceil(row_blocks.max(1)).min(panels)
        };
        let per_group = panels.div_ceil(groups);
        let groups = panels.div_ceil(per_group);
        (0..row_blocks * groups).into_par_iter().for_each(|task| {
            let (block, group) = (task / groups, task % groups);
            let (r0, r1) = (block * block_rows, ((block + 1) * block_rows).min(m));
            let (p0, p1) = (group * per_group, ((group + 1) * per_group).min(panels));
            let (c0, c1) = (p0 * NR, (p1 * NR).min(n));
            // SAFETY: rows r0..r1 of x and of the output, panels p0..p1 of w
            // and columns c0..c1 of the output are in bounds; this task
            // alone writes that output block; the CPU has AVX-512F (the
            // weights were laid out for it).
            unsafe {
                avx512::tiles(
                    r1 - r0,
                    c1 - c0,
                    k,
                    x.as_ptr().add(r0 * k),
                    w.as_ptr().add(p0 * k * NR),
                    dst.ptr().add(r0 * n + c0),
                    n,
                );
            }
            if let Epilogue::Bias(bias, act) = epilogue {
                for i in r0..r1 {
                    // SAFETY: this task's block, written above.
                    let row = unsafe {
                        std::slice::from_raw_parts_mut(dst.ptr().add(i * n + c0), c1 - c0)
                    };
                    apply(self.kernels, row, &bias[c0..c1], act);
                }
            }
        });
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

/// Whether `kernels` multiplies with this module's AVX-512 tiles.
fn uses_tiles(kernels: Kernels) -> bool {
    #[cfg(target_arch = "x86_64")]
    return kernels == Kernels::Avx512;
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = kernels;
        false
    }
}

fn lines_mut(lines: &mut [Line]) -> &mut [f32] {
    // SAFETY: `Line` is 16 f32 with no padding.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 16) }
}

fn apply(kernels: Kernels, rows: &mut [f32], bias: &[f32], act: Option<Activation>) {
    match act {
        Some(act) => kernels.bias_act(rows, bias, act),
        None => kernels.bias_add(rows, bias),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// `c[m × n] = a[m × k] · b[k × n]`: column panels of `NR` outside,
    /// row tiles of `MR` inside, so a panel of `b` serves every row tile of
    /// the block from cache. `a` is row-major (rows `k` apart), `b` packed
    /// (panel `p` starts `p · k · NR` values in, its rows `NR` apart), `c`
    /// row-major with rows `ldc` apart.
    ///
    /// # Safety
    /// As for [`tile`], for every tile.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tiles(
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        for j0 in (0..n).step_by(NR) {
            for i0 in (0..m).step_by(MR) {
                tile(
                    (m - i0).min(MR),
                    a.add(i0 * k),
                    k,
                    b.add(j0 * k),
                    c.add(i0 * ldc + j0),
                    ldc,
                    (n - j0).min(NR),
                );
            }
        }
    }

    /// `c[rows × width] = a[rows × k] · b[k × width]`, `rows ≤ MR`,
    /// `width ≤ NR`; `b` is one packed panel, `ldc` the row stride of `c`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; every row and column named is in bounds.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile(
        rows: usize,
        a: *const f32,
        k: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        width: usize,
    ) {
        let mask = if width >= NR {
            u32::MAX
        } else {
            (1u32 << width) - 1
        };
        let (m0, m1) = (mask as __mmask16, (mask >> 16) as __mmask16);
        // One monomorphised kernel per row count keeps the accumulators in
        // registers for the partial tiles at the end of a batch too.
        macro_rules! dispatch {
            ($($r:literal)*) => {
                match rows {
                    $($r => kernel::<$r>(a, k, b, c, ldc, m0, m1),)*
                    _ => unreachable!("tile rows {rows} > {MR}"),
                }
            };
        }
        const _: () = assert!(MR == 12);
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12);
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const R: usize>(
        a: *const f32,
        k: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        m0: __mmask16,
        m1: __mmask16,
    ) {
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        for p in 0..k {
            // Masked loads: columns past the matrix's edge read nothing
            // (AVX-512 suppresses faults on masked-off lanes).
            let row = b.wrapping_add(p * NR);
            let b0 = _mm512_maskz_loadu_ps(m0, row);
            let b1 = _mm512_maskz_loadu_ps(m1, row.wrapping_add(16));
            for r in 0..R {
                let av = _mm512_set1_ps(*a.add(r * k + p));
                lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
                hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
            }
        }
        for r in 0..R {
            _mm512_mask_storeu_ps(c.add(r * ldc), m0, lo[r]);
            _mm512_mask_storeu_ps(c.wrapping_add(r * ldc + 16), m1, hi[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u64) -> Vec<f32> {
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

    /// Every kernel variant (the AVX-512 tiles where the CPU has them, the
    /// `gemm` path otherwise) against an f64 product, over shapes that cut
    /// tiles, panels and task blocks at every edge.
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
        for kernels in Kernels::available() {
            for (case, &(m, k, n)) in shapes.iter().enumerate() {
                let x = data(m * k, case as u64 + 1);
                let w = data(k * n, case as u64 + 100);
                let bias = data(n, case as u64 + 200);
                let want = reference(&x, &w, k, n, &bias);
                let linear = Linear::new(&w, k, n, kernels);
                let run = |epilogue| {
                    let mut y = vec![f32::NAN; m * n];
                    linear.forward(&x, &mut y, epilogue).unwrap();
                    y
                };
                let got = run(Epilogue::Bias(&bias, None));
                for (idx, (&g, &e)) in got.iter().zip(&want).enumerate() {
                    let tol = 1e-5 * (k as f64).sqrt() + 1e-6;
                    assert!(
                        (g as f64 - e).abs() <= tol,
                        "{kernels:?} {m}x{k}x{n} at {idx}: {g} vs {e}"
                    );
                }
                let plain = run(Epilogue::None);
                let relu = run(Epilogue::Bias(&bias, Some(Activation::Relu)));
                for ((&p, &r), (&e, &b)) in plain
                    .iter()
                    .zip(&relu)
                    .zip(want.iter().zip(bias.iter().cycle()))
                {
                    assert!((p as f64 + b as f64 - e).abs() <= 1e-5 * (k as f64).sqrt() + 1e-6);
                    assert!((r as f64 - e.max(0.0)).abs() <= 1e-5 * (k as f64).sqrt() + 1e-6);
                }
            }
        }
    }

    #[test]
    fn empty_batches_are_fine() {
        for kernels in Kernels::available() {
            let linear = Linear::new(&data(8 * 4, 1), 8, 4, kernels);
            linear.forward(&[], &mut [], Epilogue::None).unwrap();
            let no_outputs = Linear::new(&[], 8, 0, kernels);
            no_outputs
                .forward(&data(3 * 8, 2), &mut [], Epilogue::None)
                .unwrap();
        }
    }
}
