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

/// Packs `v` into bf16 pair words, `out[p]` holding components `2p` and
/// `2p + 1`.
type WordsFn = fn(&[f32], &mut [u32]);
/// One `MR × NR` micro-tile: `(q, b, pairs, out, stride, m_valid, cols)`,
/// as [`x86::tile`] documents.
type TileFn = fn(&[u32], &[u32], usize, &mut [f32], usize, usize, usize);

/// `scores[i * rb + j] ≈ qᵢ · rowⱼ` for the `rb = rows.len() / dim` rows.
///
/// # Panics
/// If [`available`] is false, `scores` is shorter than `m × rb`, or `q` was
/// built for another dimension.
pub(crate) fn scores(
    q: &Queries,
    rows: &[f32],
    dim: usize,
    panels: &mut Panels,
    scores: &mut [f32],
) {
    assert!(available(), "bf16 kernel used without AVX-512 BF16");
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (both): `available()` confirmed AVX-512F and AVX-512 BF16,
        // the functions' only precondition; they check every length they
        // rely on themselves.
        let words: WordsFn = |v, out| unsafe { x86::words(v, out) };
        let tile: TileFn = |q, b, pairs, out, stride, m_valid, cols| unsafe {
            x86::tile(q, b, pairs, out, stride, m_valid, cols)
        };
        scores_with(q, rows, dim, panels, scores, words, tile);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (q, rows, dim, panels, scores);
}

/// [`scores`] with the packing and tile functions given: the layout code
/// is shared by the AVX-512 BF16 kernel and the portable emulation the
/// tests run on every CPU.
fn scores_with(
    q: &Queries,
    rows: &[f32],
    dim: usize,
    panels: &mut Panels,
    scores: &mut [f32],
    words: WordsFn,
    tile: TileFn,
) {
    assert!(
        dim > 0 && q.pairs == dim.div_ceil(2),
        "queries packed for another dimension"
    );
    let rb = rows.len() / dim;
    assert!(scores.len() >= q.m * rb);
    let pairs = q.pairs;
    let n_panels = rb.div_ceil(NR);
    let buf = &mut panels.0;
    buf.clear();
    buf.resize(n_panels * pairs * NR, 0);
    let mut row_words = vec![0u32; pairs];
    for (r, row) in rows.chunks_exact(dim).enumerate() {
        words(row, &mut row_words);
        let base = (r / NR) * pairs * NR + r % NR;
        for (p, &w) in row_words.iter().enumerate() {
            buf[base + p * NR] = w;
        }
    }
    for panel in 0..n_panels {
        let cols = NR.min(rb - panel * NR);
        let b = &buf[panel * pairs * NR..(panel + 1) * pairs * NR];
        for (t, qt) in q.words.chunks_exact(MR * pairs).enumerate() {
            let first = t * MR;
            if first >= q.m {
                break;
            }
            let m_valid = MR.min(q.m - first);
            // `qt` holds MR queries of `pairs` words, `b` one panel of
            // `pairs × NR` words, and `out` m_valid rows of stride rb from
            // this panel's first column (cols ≤ NR of them); `tile` checks
            // these lengths again before it touches memory.
            let out = &mut scores[first * rb + panel * NR..];
            tile(qt, b, pairs, out, rb, m_valid, cols);
        }
    }
}

/// [`scores`] with a portable emulation of the instruction, on any CPU:
/// the tests check the layout and the rounding bound with it everywhere.
#[cfg(test)]
pub(crate) fn scores_emulated(
    q: &Queries,
    rows: &[f32],
    dim: usize,
    panels: &mut Panels,
    scores: &mut [f32],
) {
    scores_with(q, rows, dim, panels, scores, words, emulated_tile);
}

/// What `vdpbf16ps` computes, lane by lane, in portable code: the
/// products of the two bf16 halves of a query word and a row word
/// (exact in f32), added to the accumulator. Same signature and bounds
/// as the AVX-512 tile.
#[cfg(test)]
fn emulated_tile(
    q: &[u32],
    b: &[u32],
    pairs: usize,
    out: &mut [f32],
    stride: usize,
    m_valid: usize,
    cols: usize,
) {
    let half = |w: u32, hi: bool| {
        let bits = if hi { w >> 16 } else { w & 0xFFFF } as u16;
        bf16::from_bits(bits).to_f32()
    };
    for i in 0..m_valid {
        for j in 0..cols {
            let mut acc = 0.0f32;
            for p in 0..pairs {
                let (qw, rw) = (q[i * pairs + p], b[p * NR + j]);
                acc = acc + half(qw, true) * half(rw, true) + half(qw, false) * half(rw, false);
            }
            out[i * stride + j] = acc;
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
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512 BF16. Lengths are checked
    /// here (a short `out` panics before any store).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn words(v: &[f32], out: &mut [u32]) {
        assert!(out.len() >= v.len().div_ceil(2), "word buffer too short");
        let full = v.len() / 32;
        for c in 0..full {
            // In bounds: c * 32 + 32 <= v.len() and c * 16 + 16 <= out.len().
            let src = v.as_ptr().add(c * 32);
            let packed = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src.add(16)), _mm512_loadu_ps(src));
            _mm512_storeu_si512(
                out.as_mut_ptr().add(c * 16).cast(),
                std::mem::transmute::<__m512bh, __m512i>(packed),
            );
        }
        super::words(&v[full * 32..], &mut out[full * 16..]);
    }

    /// One MR × NR tile of scores: `out[i * stride + j] = q_i · b_j` for
    /// the first `m_valid` queries of `q` (MR queries of `pairs` words) and
    /// the first `cols` rows of the panel `b` (`pairs × NR` words).
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512 BF16. Every length the
    /// pointer arithmetic relies on is asserted here first, and each store
    /// stays inside `out`: nothing depends on slack its caller allocated.
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
        assert!(q.len() >= MR * pairs && b.len() >= pairs * NR);
        assert!(m_valid <= MR && cols <= NR);
        if m_valid == 0 || cols == 0 {
            return;
        }
        assert!(
            out.len() >= (m_valid - 1) * stride + cols,
            "score tile out of bounds"
        );
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let qp = q.as_ptr();
        let bp = b.as_ptr();
        for p in 0..pairs {
            // In bounds: p * NR + 32 <= pairs * NR <= b.len().
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(p * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(p * NR + 16).cast()));
            for (i, a) in acc.iter_mut().enumerate() {
                // In bounds: i * pairs + p < MR * pairs <= q.len().
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
        for (i, a) in acc.iter().enumerate().take(m_valid) {
            // Row i's `cols` outputs start at i * stride, and
            // i * stride + cols <= out.len() (asserted above): the masked
            // stores write only those, and the second one's pointer is
            // formed only when that row has more than 16 columns, so it
            // points inside the row.
            let o = out.as_mut_ptr().add(i * stride);
            _mm512_mask_storeu_ps(o, lo, a[0]);
            if cols > 16 {
                let hi: __mmask16 = if cols >= NR {
                    0xFFFF
                } else {
                    (1u16 << (cols - 16)) - 1
                };
                _mm512_mask_storeu_ps(o.add(16), hi, a[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd sizes everywhere: a partial query tile, a partial row panel
    /// (77 = 2 × 32 + 13 rows: the last panel has fewer than 16 columns),
    /// an odd dimension, and a score buffer of exactly `m × rb` with no
    /// slack after it.
    fn case() -> (Vec<Vec<f32>>, Vec<f32>, usize) {
        let (m, rb, dim) = (29, 77, 37);
        let mut next = crate::testutil::uniform(7);
        let qs: Vec<Vec<f32>> = (0..m).map(|_| (0..dim).map(|_| next()).collect()).collect();
        let rows: Vec<f32> = (0..rb * dim).map(|_| next()).collect();
        (qs, rows, dim)
    }

    fn assert_within_bound(qs: &[Vec<f32>], rows: &[f32], dim: usize, out: &[f32]) {
        let rb = rows.len() / dim;
        let bound = relative_error(dim);
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (i, qv) in qs.iter().enumerate() {
            for (j, row) in rows.chunks_exact(dim).enumerate() {
                let exact: f64 = qv.iter().zip(row).map(|(a, b)| *a as f64 * *b as f64).sum();
                let got = out[i * rb + j];
                let err = (got as f64 - exact).abs();
                assert!(
                    err <= (bound * norm(qv) * norm(row)) as f64,
                    "({i}, {j}): {got} vs {exact}"
                );
            }
        }
    }

    /// Runs on every CPU: the packing and tiling with the emulated
    /// instruction stay within the documented rounding bound.
    #[test]
    fn emulated_scores_match_f32_products_within_the_bound() {
        let (qs, rows, dim) = case();
        let q = Queries::new(&qs, dim);
        let mut out = vec![f32::NAN; qs.len() * (rows.len() / dim)];
        scores_with(
            &q,
            &rows,
            dim,
            &mut Panels::default(),
            &mut out,
            words,
            emulated_tile,
        );
        assert_within_bound(&qs, &rows, dim, &out);
    }

    /// The AVX-512 BF16 kernel against the bound and against the
    /// emulation, where the CPU has it; elsewhere it says so on stderr
    /// (the emulated test above still covers the layout).
    #[test]
    fn native_scores_match_the_emulation_and_the_bound() {
        if !available() {
            eprintln!(
                "SKIPPED native_scores_match_the_emulation_and_the_bound: this CPU has no \
                 AVX-512 BF16 (or RAGJET_SIMD forces an f32 path); only the emulated \
                 bf16 tile was checked"
            );
            return;
        }
        let (qs, rows, dim) = case();
        let q = Queries::new(&qs, dim);
        let n = qs.len() * (rows.len() / dim);
        let mut native = vec![f32::NAN; n];
        scores(&q, &rows, dim, &mut Panels::default(), &mut native);
        assert_within_bound(&qs, &rows, dim, &native);
        let mut emulated = vec![f32::NAN; n];
        scores_with(
            &q,
            &rows,
            dim,
            &mut Panels::default(),
            &mut emulated,
            words,
            emulated_tile,
        );
        for (i, (a, b)) in native.iter().zip(&emulated).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "score {i}: {a} vs {b}"
            );
        }
    }

    /// Queries packed for another dimension would make the tiles read
    /// rows with the wrong stride: refused before anything is packed.
    #[test]
    #[should_panic(expected = "queries packed for another dimension")]
    fn queries_of_another_dimension_are_refused() {
        let (qs, rows, dim) = case();
        let q = Queries::new(&qs, dim + 2);
        let mut out = vec![0.0; qs.len() * (rows.len() / dim)];
        scores_with(
            &q,
            &rows,
            dim,
            &mut Panels::default(),
            &mut out,
            words,
            emulated_tile,
        );
    }
}
