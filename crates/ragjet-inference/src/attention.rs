//! Self-attention of one head over one text's tokens,
//! `softmax(scale · Q·Kᵀ) · V`, for the packed encoder.
//!
//! On AVX-512 CPUs one fused kernel does the whole head: the `gemm` crate
//! runs its AVX2 micro-kernel on these small products (head widths of 32,
//! a few hundred tokens) and the score matrix made a round trip through
//! memory for a separate softmax pass, which together took about a third
//! of the encoder's time. The kernel packs Kᵀ and V of the head once, then
//! for each block of [`avx512::ROWS`] query rows computes their score rows,
//! takes their softmax while they are in L1 and accumulates `P·V` in
//! registers. Elsewhere the head runs as before: two `gemm` products around
//! [`Kernels::softmax_rows`]. Both paths compute the same softmax (subtract
//! the row's maximum, exponentiate, divide by the sum), to f32 rounding.

use std::cell::RefCell;

use crate::kernels::Kernels;

thread_local! {
    /// Per-thread working memory of [`Head::attend`]: scores, or packed
    /// keys, values and scores. Reused between calls, so that a head costs
    /// no allocation once a thread has seen its longest text.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One head of one text: where its queries, keys and values are.
pub(crate) struct Head<'a> {
    /// The text's rows of the fused projection's output, from its first
    /// token on.
    pub qkv: &'a [f32],
    /// Values from one row of `qkv` to the next.
    pub stride: usize,
    /// First columns of the head's query, key and value.
    pub cols: [usize; 3],
    /// Tokens of the text.
    pub len: usize,
    /// Head width.
    pub d: usize,
    /// Factor of the scores, `1/√d` in BERT. Positive: the fused kernel
    /// takes the row maximum before scaling.
    pub scale: f32,
}

impl Head<'_> {
    /// Writes the head's output, `len` rows of `d` values, to `out`, rows
    /// `out_stride` apart. Nothing for a text of no tokens. Panics if the
    /// head's inputs do not lie inside `qkv`, or if `scale` is not
    /// positive.
    ///
    /// # Safety
    /// `out` must be valid for writes of that block, and no one else may
    /// read or write the block during the call.
    pub unsafe fn attend(&self, kernels: Kernels, out: *mut f32, out_stride: usize) {
        let (len, d) = (self.len, self.d);
        if len == 0 || d == 0 {
            return;
        }
        assert!(self.scale > 0.0, "attention scale {} ≤ 0", self.scale);
        for col in self.cols {
            let end = (len - 1)
                .checked_mul(self.stride)
                .and_then(|v| v.checked_add(col))
                .and_then(|v| v.checked_add(d));
            assert!(
                col + d <= self.stride && end.is_some_and(|end| end <= self.qkv.len()),
                "attention head at column {col}, width {d}, {len} rows {} apart, outside {} values",
                self.stride,
                self.qkv.len()
            );
        }
        SCRATCH.with_borrow_mut(|scratch| {
            #[cfg(target_arch = "x86_64")]
            if kernels.has_avx512() {
                // SAFETY: `has_avx512` holds only after the CPU check found
                // AVX-512F; the reads were checked above, and the writes
                // keep to the block of this function's contract.
                unsafe { avx512::attend(self, scratch, out, out_stride) };
                return;
            }
            // SAFETY: as above.
            unsafe { self.with_gemm(kernels, scratch, out, out_stride) }
        })
    }

    /// The head as two `gemm` products around a softmax pass over the
    /// stored scores.
    ///
    /// # Safety
    /// As [`attend`](Self::attend), whose checks have run.
    unsafe fn with_gemm(
        &self,
        kernels: Kernels,
        scores: &mut Vec<f32>,
        out: *mut f32,
        out_stride: usize,
    ) {
        let (len, d, row) = (self.len, self.d, self.stride);
        let [q, k, v] = self.cols.map(|c| self.qkv[c..].as_ptr());
        scores.clear();
        scores.resize(len * len, 0.0);
        // SAFETY: the reads stay inside `qkv` (checked by `attend`) and
        // `scores`, the writes inside the caller's block.
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
                self.scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
            kernels.softmax_rows(scores, len);
            // out = P V   (len × len) · (len × d)
            gemm::gemm(
                len,
                d,
                len,
                out,
                1,
                out_stride as isize,
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
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Head;
    use crate::kernels::vector::{exp, lanes};

    /// Query rows per block: their score rows (`ROWS` × tokens) stay in
    /// L1, and `ROWS` × 2 accumulators of 16 lanes hide the FMA latency in
    /// both products. A last block of at most `ROWS / 2` rows runs as a
    /// block of that size.
    pub const ROWS: usize = 8;

    /// Lanes of a zmm register.
    const L: usize = 16;

    /// The head's keys and values packed in `scratch`, and room for the
    /// scores of one block of query rows.
    struct Packed {
        /// Kᵀ: `d` rows of `lp` values, zeros after the first `len`.
        kt: *const f32,
        /// V: `len` rows of `dp` values, zeros after the first `d`.
        v: *const f32,
        /// [`ROWS`] rows of `lp` values.
        scores: *mut f32,
        len: usize,
        d: usize,
        /// `len` rounded up to a multiple of 16.
        lp: usize,
        /// `d` rounded up to a multiple of 16.
        dp: usize,
        scale: f32,
    }

    /// The fused head.
    ///
    /// Layout of `scratch`, 64-byte aligned: Kᵀ, V, scores (see
    /// [`Packed`]). Every value a kernel reads is written first, so nothing
    /// left from an earlier call counts.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `head`'s inputs lie inside its `qkv`; `out`
    /// as in [`Head::attend`].
    #[target_feature(enable = "avx512f")]
    pub unsafe fn attend(head: &Head, scratch: &mut Vec<f32>, out: *mut f32, out_stride: usize) {
        let (len, d, stride) = (head.len, head.d, head.stride);
        let lp = len.next_multiple_of(L);
        let dp = d.next_multiple_of(L);
        let need = d * lp + len * dp + ROWS * lp + L;
        if scratch.len() < need {
            scratch.resize(need, 0.0);
        }
        let align = scratch.as_ptr().align_offset(64);
        let (kt, rest) = scratch[align..].split_at_mut(d * lp);
        let (v, scores) = rest.split_at_mut(len * dp);
        let (kt, v, scores) = (kt.as_mut_ptr(), v.as_mut_ptr(), scores.as_mut_ptr());
        let [q0, k0, v0] = head.cols.map(|c| head.qkv[c..].as_ptr());
        // SAFETY: the reads are the head's key and value rows (inside
        // `qkv`, checked by `attend`), the writes Kᵀ and V in `scratch`.
        unsafe {
            for j in (0..len).step_by(L) {
                for c in (0..d).step_by(L) {
                    let src = k0.add(j * stride + c);
                    transpose(src, stride, len - j, d - c, kt.add(c * lp + j), lp);
                }
            }
            for j in 0..len {
                for c in (0..dp).step_by(L) {
                    let x = _mm512_maskz_loadu_ps(lanes(d - c), v0.add(j * stride + c));
                    _mm512_store_ps(v.add(j * dp + c), x);
                }
            }
        }
        let packed = Packed {
            kt,
            v,
            scores,
            len,
            d,
            lp,
            dp,
            scale: head.scale,
        };
        let mut first = 0;
        while first < len {
            let rows = (len - first).min(ROWS);
            let q = q0.wrapping_add(first * stride);
            let dst = out.wrapping_add(first * out_stride);
            // SAFETY: the rows `first..first + rows` of the head's queries
            // (inside `qkv`) and of the caller's block; `packed` as above.
            unsafe {
                if rows <= ROWS / 2 {
                    block::<{ ROWS / 2 }>(&packed, q, stride, rows, dst, out_stride);
                } else {
                    block::<ROWS>(&packed, q, stride, rows, dst, out_stride);
                }
            }
            first += rows;
        }
    }

    /// Attention of `rows ≤ R` query rows, from `q` (rows `stride` apart),
    /// into `out` (rows `out_stride` apart). Fewer than `R` rows repeat the
    /// last in the unused slots, so that the kernels always run on `R`
    /// valid rows; only `rows` are stored.
    ///
    /// # Safety
    /// `rows ≥ 1` rows of `d` values are readable at `q` and writable at
    /// `out`; `p` describes packed keys and values and room for `R` score
    /// rows.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const R: usize>(
        p: &Packed,
        q: *const f32,
        stride: usize,
        rows: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let q: [*const f32; R] = std::array::from_fn(|r| q.wrapping_add(r.min(rows - 1) * stride));
        let mut max = [_mm512_set1_ps(f32::NEG_INFINITY); R];
        let mut j = 0;
        // SAFETY: as this function's contract.
        unsafe {
            while j + 2 * L <= p.lp {
                scores::<R, 2>(p, &q, j, &mut max);
                j += 2 * L;
            }
            if j < p.lp {
                scores::<R, 1>(p, &q, j, &mut max);
            }
            let inv = softmax::<R>(p, &max);
            let mut c = 0;
            while c + 2 * L <= p.dp {
                weigh::<R, 2>(p, c, &inv, out.add(c), out_stride, rows);
                c += 2 * L;
            }
            if c < p.dp {
                weigh::<R, 1>(p, c, &inv, out.add(c), out_stride, rows);
            }
        }
    }

    /// Transposes 16 × 16 values: the first `min(rows, 16)` rows of `src`,
    /// `stride` apart, and of those the first `min(cols, 16)` values,
    /// become the first columns and rows of `dst` (rows `lp` apart); the
    /// columns for missing rows are zeros. Writes `min(cols, 16)` rows of
    /// 16 values.
    ///
    /// # Safety
    /// Those parts of `src` are readable and those of `dst` writable;
    /// `dst` 64-byte aligned, `lp` a multiple of 16.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn transpose(
        src: *const f32,
        stride: usize,
        rows: usize,
        cols: usize,
        dst: *mut f32,
        lp: usize,
    ) {
        let keep = lanes(cols);
        let r: [__m512; L] = std::array::from_fn(|i| {
            if i < rows {
                // SAFETY: row `i` of the rows this function may read.
                unsafe { _mm512_maskz_loadu_ps(keep, src.add(i * stride)) }
            } else {
                _mm512_setzero_ps()
            }
        });
        // Pairs of rows interleaved, then quads (as f64 pairs): lane
        // quarter k of u[4a + b] holds rows 4a..4a + 4 of column 4k + b.
        let t: [__m512; L] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        let u: [__m512; L] = std::array::from_fn(|i| {
            let (quad, b) = (i / 4 * 4, i % 4);
            let (x, y) = (
                _mm512_castps_pd(t[quad + b / 2]),
                _mm512_castps_pd(t[quad + 2 + b / 2]),
            );
            _mm512_castpd_ps(if b % 2 == 0 {
                _mm512_unpacklo_pd(x, y)
            } else {
                _mm512_unpackhi_pd(x, y)
            })
        });
        // Then quarters: w[b] (b < 8) holds column b and b + 8 of rows
        // 0..8, w[8 + b] the same of rows 8..16, and a last shuffle of the
        // two gives whole columns.
        let w: [__m512; L] = std::array::from_fn(|i| {
            let (half, b) = (i / 8 * 8, i % 8);
            let (x, y) = (u[half + b % 4], u[half + 4 + b % 4]);
            if b < 4 {
                _mm512_shuffle_f32x4::<0x88>(x, y)
            } else {
                _mm512_shuffle_f32x4::<0xdd>(x, y)
            }
        });
        for c in 0..cols.min(L) {
            let (x, y) = (w[c % 8], w[8 + c % 8]);
            let column = if c < 8 {
                _mm512_shuffle_f32x4::<0x88>(x, y)
            } else {
                _mm512_shuffle_f32x4::<0xdd>(x, y)
            };
            // SAFETY: row `c` of the rows this function may write.
            unsafe { _mm512_store_ps(dst.add(c * lp), column) };
        }
    }

    /// Columns `j..j + N × 16` of the block's unscaled scores,
    /// `Σ_c q[r][c] · Kᵀ[c][j]`, folding the valid ones (not the padding
    /// after `len`) into each row's lane-wise maximum `max[r]`.
    ///
    /// # Safety
    /// Each `q[r]` has `d` readable values; `j + N × 16 ≤ lp`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    // Indexed loops keep `acc` in registers: with iterators over it (even
    // after the loop), LLVM stored every accumulator to the stack on each
    // step, 30 % slower.
    #[allow(clippy::needless_range_loop)]
    unsafe fn scores<const R: usize, const N: usize>(
        p: &Packed,
        q: &[*const f32; R],
        j: usize,
        max: &mut [__m512; R],
    ) {
        let mut acc = [[_mm512_setzero_ps(); N]; R];
        let kt = p.kt.wrapping_add(j);
        for c in 0..p.d {
            // SAFETY: inside the extents of this function's contract.
            unsafe {
                let k: [__m512; N] =
                    std::array::from_fn(|n| _mm512_load_ps(kt.add(c * p.lp + n * L)));
                for r in 0..R {
                    let x = _mm512_set1_ps(*q[r].add(c));
                    for n in 0..N {
                        acc[r][n] = _mm512_fmadd_ps(x, k[n], acc[r][n]);
                    }
                }
            }
        }
        for r in 0..R {
            for n in 0..N {
                let keep = lanes((p.len - j).saturating_sub(n * L));
                max[r] = _mm512_mask_max_ps(max[r], keep, max[r], acc[r][n]);
                // SAFETY: as above.
                unsafe { _mm512_store_ps(p.scores.add(r * p.lp + j + n * L), acc[r][n]) };
            }
        }
    }

    /// Replaces the first `len` scores `s` of each row of the block by
    /// `exp(scale · s − scale · max)`, `max` being the largest lane of
    /// `max[r]` (`scale > 0`, so that is the row maximum of the scaled
    /// scores); returns `1 / Σ exp` per row. The rows go through together,
    /// so that their sums are independent chains.
    ///
    /// # Safety
    /// `p.scores` holds `R` rows.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn softmax<const R: usize>(p: &Packed, max: &[__m512; R]) -> [f32; R] {
        let scale = _mm512_set1_ps(p.scale);
        let max = max.map(|m| _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_max_ps(m)), scale));
        let mut sum = [_mm512_setzero_ps(); R];
        for j in (0..p.lp).step_by(L) {
            let keep = lanes(p.len - j);
            for r in 0..R {
                // SAFETY: rows and columns of this function's contract.
                unsafe {
                    let at = p.scores.add(r * p.lp + j);
                    let e = exp(_mm512_fmsub_ps(_mm512_load_ps(at), scale, max[r]));
                    _mm512_store_ps(at, e);
                    sum[r] = _mm512_mask_add_ps(sum[r], keep, sum[r], e);
                }
            }
        }
        sum.map(|s| 1.0 / _mm512_reduce_add_ps(s))
    }

    /// Output columns `c..c + N × 16` of the block: `Σ_j p[r][j] · V[j]`,
    /// times `inv[r]`, stored for the first `rows` rows, and of them the
    /// columns before `d`.
    ///
    /// # Safety
    /// `out` is writable for `rows` rows of `min(d − c, N × 16)` values
    /// `out_stride` apart; `c + N × 16 ≤ dp`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    // As in `scores`.
    #[allow(clippy::needless_range_loop)]
    unsafe fn weigh<const R: usize, const N: usize>(
        p: &Packed,
        c: usize,
        inv: &[f32; R],
        out: *mut f32,
        out_stride: usize,
        rows: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); N]; R];
        let v = p.v.wrapping_add(c);
        for j in 0..p.len {
            // SAFETY: inside the extents of this function's contract.
            unsafe {
                let vj: [__m512; N] =
                    std::array::from_fn(|n| _mm512_load_ps(v.add(j * p.dp + n * L)));
                for r in 0..R {
                    let x = _mm512_set1_ps(*p.scores.add(r * p.lp + j));
                    for n in 0..N {
                        acc[r][n] = _mm512_fmadd_ps(x, vj[n], acc[r][n]);
                    }
                }
            }
        }
        for r in 0..rows {
            let scale = _mm512_set1_ps(inv[r]);
            for n in 0..N {
                let y = _mm512_mul_ps(acc[r][n], scale);
                let keep = lanes((p.d - c).saturating_sub(n * L));
                // SAFETY: as above; `keep` limits the store to `d`.
                unsafe { _mm512_mask_storeu_ps(out.add(r * out_stride + n * L), keep, y) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: uniform values in [-1, 1), the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            bits as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    /// The head in f64 from its f32 inputs, by the definition.
    /// Also returns the largest score's magnitude.
    fn reference(head: &Head) -> (Vec<f64>, f64) {
        let (len, d) = (head.len, head.d);
        let mut largest = 0.0f64;
        let at = |t: usize, which: usize, c: usize| {
            head.qkv[t * head.stride + head.cols[which] + c] as f64
        };
        let mut out = vec![0.0; len * d];
        for i in 0..len {
            let scores: Vec<f64> = (0..len)
                .map(|j| (0..d).map(|c| at(i, 0, c) * at(j, 1, c)).sum::<f64>() * head.scale as f64)
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            largest = scores.iter().fold(largest, |m, s| m.max(s.abs()));
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for c in 0..d {
                out[i * d + c] = (0..len).map(|j| e[j] * at(j, 2, c)).sum::<f64>() / sum;
            }
        }
        (out, largest)
    }

    /// Runs `attend` into a block at column 3 of rows `d + 5` wide, the
    /// rest of them holding a sentinel that must survive.
    fn run(kernels: Kernels, head: &Head) -> Vec<f32> {
        const SENTINEL: f32 = 7.5;
        let (len, d) = (head.len, head.d);
        let stride = d + 5;
        let mut out = vec![SENTINEL; len * stride];
        // SAFETY: the block (len rows of d values from column 3, rows
        // `stride` apart) lies inside `out`, which nothing else touches.
        unsafe { head.attend(kernels, out.as_mut_ptr().wrapping_add(3), stride) };
        let mut block = Vec::with_capacity(len * d);
        for row in out.chunks_exact(stride) {
            let (outside, inside) = (row[..3].iter().chain(&row[3 + d..]), &row[3..3 + d]);
            assert!(
                outside.into_iter().all(|&x| x == SENTINEL),
                "{kernels:?}: a write outside the block"
            );
            block.extend_from_slice(inside);
        }
        block
    }

    #[test]
    fn every_path_matches_the_definition() {
        let kernels = Kernels::available();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for d in [8, 24, 32, 64] {
            for len in [1, 2, 15, 16, 17, 31, 33, 64, 170, 256] {
                // Scores of order 1; of order 100 (whose exponentials
                // overflow f32 unless the row maximum is subtracted); and
                // all below −10 (queries ≥ 0, keys ≤ 0), where counting the
                // fused kernel's zero padding in the maximum or the sum
                // would show.
                for (magnitude, negative) in [(1.0f32, false), (12.0, false), (6.0, true)] {
                    let stride = 3 * d + 5;
                    let qkv: Vec<f32> = (0..len * stride)
                        .map(|i| {
                            let (col, x) = (i % stride, rng.next());
                            match col {
                                _ if col >= 2 * d + 4 => x,
                                _ if !negative => x * magnitude,
                                _ if col < d + 2 => (0.5 + x.abs()) * magnitude,
                                _ => -(0.5 + x.abs()) * magnitude,
                            }
                        })
                        .collect();
                    let head = Head {
                        qkv: &qkv,
                        stride,
                        cols: [1, d + 2, 2 * d + 4],
                        len,
                        d,
                        scale: 1.0 / (d as f32).sqrt(),
                    };
                    let (want, largest) = reference(&head);
                    for &k in &kernels {
                        let got = run(k, &head);
                        let err = got
                            .iter()
                            .zip(&want)
                            .map(|(&g, &w)| (g as f64 - w).abs())
                            .fold(0.0, f64::max);
                        // Values are at most 1. f32 scores are off by a
                        // few ulps of the largest, and an error δ in a
                        // score scales its weight by about 1 + δ.
                        let tol = 4.0 * f32::EPSILON as f64 * (1.0 + largest);
                        assert!(
                            err <= tol,
                            "{k:?}, d {d}, len {len}, magnitude {magnitude}: error {err:e} over {tol:e}"
                        );
                    }
                }
            }
        }
    }

    /// A text of no tokens has no output rows: nothing is written.
    #[test]
    fn a_text_of_no_tokens_writes_nothing() {
        for kernels in Kernels::available() {
            let head = Head {
                qkv: &[],
                stride: 96,
                cols: [0, 32, 64],
                len: 0,
                d: 32,
                scale: 1.0,
            };
            assert!(run(kernels, &head).is_empty());
        }
    }
}
