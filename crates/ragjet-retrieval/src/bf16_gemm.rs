//! A first-pass score matrix in bfloat16 for [`crate::FlatIndex`]'s batched
//! search.
//!
//! A batch of queries against every row is a matrix product bound by the
//! multiply rate: f32 `gemm` runs near the two cores' FMA peak, level with
//! faiss's BLAS. AVX-512 BF16's `vdpbf16ps` multiplies pairs of bfloat16
//! values into f32 sums at twice the f32 rate. Its scores are approximate
//! (each input keeps 8 significant bits), so they only choose a candidate
//! pool; the pool is rescored in f32 and a rounding bound proves that no
//! row outside it could have ranked in the top k (see `FlatIndex`). The
//! bound per score is [`relative_error`] × ‖q‖ × ‖row‖.
//!
//! Layout: a query is `dim / 2` u32 words, each holding the bf16 values of
//! two consecutive components. Rows are packed in panels of [`NR`] rows,
//! word `p` of the panel's 16·2 rows side by side, so one 64-byte load
//! feeds 16 rows and a broadcast word of a query feeds all of them.

use half::bf16;

/// Queries per micro-tile.
const MR: usize = 12;
/// Rows per micro-tile (two registers of 16 lanes).
const NR: usize = 32;

/// Worst relative error of a bf16 score against the exact product:
/// rounding both inputs to 8 significant bits (2 × 2⁻⁹ per product, summed
/// over |qᵢ·rᵢ| ≤ ‖q‖‖r‖), plus f32 accumulation over `dim` terms.
pub(crate) fn relative_error(dim: usize) -> f32 {
    2.0 * (2f32).powi(-9) + (2f32).powi(-18) + f32::EPSILON * dim as f32 * 2.5
}

/// Whether this CPU runs the kernel, and `RAGJET_SIMD` (see
/// [`crate::distance::Kernel`]) does not ask for an f32-only path.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let forced_off = matches!(
            std::env::var("RAGJET_SIMD").as_deref(),
            Ok("portable" | "avx2")
        );
        !forced_off
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn pair(lo: f32, hi: f32) -> u32 {
    (bf16::from_f32(hi).to_bits() as u32) << 16 | bf16::from_f32(lo).to_bits() as u32
}

fn words(v: &[f32], out: &mut [u32]) {
    for (w, c) in out.iter_mut().zip(v.chunks(2)) {
        *w = pair(c[0], c.get(1).copied().unwrap_or(0.0));
    }
}

/// A block of queries in bf16 words, padded to whole micro-tiles.
pub(crate) struct Queries {
    words: Vec<u32>,
    m: usize,
    pairs: usize,
}

impl Queries {
    pub(crate) fn new(qs: &[Vec<f32>], dim: usize) -> Self {
        let pairs = dim.div_ceil(2);
        let mut w = vec![0u32; qs.len().next_multiple_of(MR) * pairs];
        for (q, out) in qs.iter().zip(w.chunks_exact_mut(pairs)) {
            words(q, out);
        }
        Queries {
            words: w,
            m: qs.len(),
            pairs,
        }
    }
}

/// Reusable panel buffer for one row block.
#[derive(Default)]
pub(crate) struct Panels(Vec<u32>);

/// `scores[i * rb + j] ≈ qᵢ · rowⱼ` for the `rb = rows.len() / dim` rows.
///
/// # Panics
/// If [`available`] is false or `scores` is shorter than `m × rb`.
pub(crate) fn scores(
    q: &Queries,
    rows: &[f32],
    dim: usize,
    panels: &mut Panels,
    scores: &mut [f32],
) {
    assert!(available(), "bf16 kernel used without AVX-512 BF16");
    let rb = rows.len() / dim;
    assert!(scores.len() >= q.m * rb);
    let pairs = q.pairs;
    let n_panels = rb.div_ceil(NR);
    let buf = &mut panels.0;
    buf.clear();
    buf.resize(n_panels * pairs * NR, 0);
    let mut row_words = vec![0u32; pairs];
    for (r, row) in rows.chunks_exact(dim).enumerate() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` was checked above.
        unsafe {
            x86::words(row, &mut row_words)
        };
        let base = (r / NR) * pairs * NR + r % NR;
        for (p, &w) in row_words.iter().enumerate() {
            buf[base + p * NR] = w;
        }
    }
    #[cfg(target_arch = "x86_64")]
    for panel in 0..n_panels {
        let cols = NR.min(rb - panel * NR);
        let b = &buf[panel * pairs * NR..(panel + 1) * pairs * NR];
        for (t, qt) in q.words.chunks_exact(MR * pairs).enumerate() {
            let first = t * MR;
            let m_valid = MR.min(q.m - first);
            let out = &mut scores[first * rb + panel * NR..];
            // SAFETY: `available()` was checked above; `qt` holds MR
            // queries of `pairs` words, `b` one panel of `pairs × NR`
            // words, and `out` covers m_valid rows of stride rb from this
            // panel's first column (cols ≤ NR of them), as `tile` reads.
            unsafe { x86::tile(qt, b, pairs, out, rb, m_valid, cols) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// [`super::words`] 32 components at a time (round to nearest even,
    /// as `half` does; f32 subnormals become zero, an error far inside the
    /// bound's `f32::MIN_POSITIVE` slack).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn words(v: &[f32], out: &mut [u32]) {
        let full = v.len() / 32;
        for c in 0..full {
            let src = v.as_ptr().add(c * 32);
            let packed = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src.add(16)), _mm512_loadu_ps(src));
            _mm512_storeu_si512(
                out.as_mut_ptr().add(c * 16).cast(),
                std::mem::transmute::<__m512bh, __m512i>(packed),
            );
        }
        super::words(&v[full * 32..], &mut out[full * 16..]);
    }

    /// One MR × NR tile of scores.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn tile(
        q: &[u32],
        b: &[u32],
        pairs: usize,
        out: &mut [f32],
        stride: usize,
        m_valid: usize,
        cols: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let qp = q.as_ptr();
        let bp = b.as_ptr();
        for p in 0..pairs {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(p * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(p * NR + 16).cast()));
            for (i, a) in acc.iter_mut().enumerate() {
                let w: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*qp.add(i * pairs + p) as i32));
                a[0] = _mm512_dpbf16_ps(a[0], w, b0);
                a[1] = _mm512_dpbf16_ps(a[1], w, b1);
            }
        }
        let lo: __mmask16 = if cols >= 16 {
            0xFFFF
        } else {
            (1u16 << cols) - 1
        };
        let hi: __mmask16 = if cols >= NR {
            0xFFFF
        } else if cols > 16 {
            (1u16 << (cols - 16)) - 1
        } else {
            0
        };
        for (i, a) in acc.iter().enumerate().take(m_valid) {
            let o = out.as_mut_ptr().add(i * stride);
            _mm512_mask_storeu_ps(o, lo, a[0]);
            _mm512_mask_storeu_ps(o.add(16), hi, a[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_f32_products_within_the_bound() {
        if !available() {
            eprintln!("no AVX-512 BF16 on this CPU: nothing to test");
            return;
        }
        // Odd sizes everywhere: a partial query tile, a partial row panel,
        // an odd dimension.
        let (m, rb, dim) = (29, 77, 37);
        let mut next = crate::testutil::uniform(7);
        let qs: Vec<Vec<f32>> = (0..m).map(|_| (0..dim).map(|_| next()).collect()).collect();
        let rows: Vec<f32> = (0..rb * dim).map(|_| next()).collect();
        let q = Queries::new(&qs, dim);
        let mut out = vec![f32::NAN; m * rb];
        scores(&q, &rows, dim, &mut Panels::default(), &mut out);
        let bound = relative_error(dim);
        for (i, qv) in qs.iter().enumerate() {
            for (j, row) in rows.chunks_exact(dim).enumerate() {
                let exact: f64 = qv.iter().zip(row).map(|(a, b)| *a as f64 * *b as f64).sum();
                let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
                let got = out[i * rb + j];
                let err = (got as f64 - exact).abs();
                assert!(
                    err <= (bound * norm(qv) * norm(row)) as f64,
                    "({i}, {j}): {got} vs {exact}"
                );
            }
        }
    }
}
