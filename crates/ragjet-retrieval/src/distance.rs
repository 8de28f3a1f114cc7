//! Distance kernels and metrics, shared by [`crate::FlatIndex`] and
//! [`crate::HnswIndex`].
//!
//! Every similarity computation in the crate goes through this module. The
//! kernels (dot and squared L2, f32 rows and f16 rows widened on the fly)
//! exist in three versions: AVX-512F, AVX2 + FMA + F16C, and a portable
//! chunked loop. [`Kernel::active`] picks the fastest the CPU offers once
//! per process (`is_x86_feature_detected!`), and a crate-private table of
//! function pointers makes the hot loops — the HNSW distance, the flat scan
//! — pay one indirect call rather than a feature test. A test checks every
//! available version against the portable one.
//!
//! Every kernel, SIMD ones included, reads only the common prefix of its
//! two slices, whatever their lengths: a length mismatch gives the score of
//! the prefix, never a read past the shorter slice. Indexes check every
//! vector against their dimension before it gets here
//! ([`RetrievalError::DimensionMismatch`]), so inside the crate the
//! lengths are always equal.
//!
//! Within one process every index and [`Metric::score`] use the same
//! kernel, so exact search is deterministic and the naive reference in the
//! tests (which calls [`Metric::score`]) can be compared bit for bit. The
//! versions differ from each other in the last bits (summation order), so
//! scores can differ across machines by f32 rounding.
//!
//! Measured (20k × 384, release example, this 2-core EPYC, noisy shared
//! machine): AVX-512 vs portable — HNSW queries 1.2–1.3× faster, build
//! 28 s vs 37 s, flat single query 791 vs 597 q/s.
//!
//! # Examples
//!
//! ```
//! use ragjet_retrieval::distance::{self, Kernel};
//! use ragjet_retrieval::Metric;
//!
//! let a = [1.0, 2.0, 3.0];
//! let b = [4.0, 5.0, 6.0];
//! assert_eq!(distance::dot(&a, &b), 32.0);
//! assert_eq!(distance::l2_squared(&a, &b), 27.0);
//! assert_eq!(Metric::L2.score(&a, &b), -27.0); // higher is always more similar
//! // Every kernel the CPU offers gives the same answer as the portable one.
//! for k in Kernel::available() {
//!     assert!(k.is_available());
//!     assert_eq!(k.dot(&a, &b), 32.0);
//! }
//! assert!(Kernel::available().contains(&Kernel::active()));
//! ```

use std::sync::OnceLock;

use half::{f16, slice::HalfFloatSliceExt};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RetrievalError};

/// Width of the accumulator block in the kernels.
const LANES: usize = 16;

/// How similarity between two vectors is measured.
///
/// Scores returned by searches are always "higher is more similar":
/// the dot product for [`Metric::Dot`] and [`Metric::Cosine`], and the
/// *negated squared* Euclidean distance for [`Metric::L2`].
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::Metric;
///
/// let mut v = vec![3.0, 4.0];
/// Metric::Cosine.prepare(&mut v, 2)?; // checked and normalised in place
/// assert_eq!(v, [0.6, 0.8]);
/// assert!((Metric::Cosine.score(&v, &[0.6, 0.8]) - 1.0).abs() < 1e-6);
/// assert_eq!(Metric::Dot.score(&[1.0, 2.0], &[3.0, 4.0]), 11.0);
/// // Zero vectors have no direction; wrong lengths never reach a kernel.
/// assert!(Metric::Cosine.prepare(&mut [0.0, 0.0], 2).is_err());
/// assert!(Metric::Dot.prepare(&mut [1.0], 2).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Raw inner product (maximum inner-product search).
    Dot,
    /// Cosine similarity. Vectors are normalised to unit length when they
    /// are added and queries when they are searched, so the kernel is a dot
    /// product; zero vectors are rejected.
    Cosine,
    /// Euclidean distance (scores are `-‖a − b‖²`).
    L2,
}

impl Metric {
    /// Similarity score of two equally long f32 vectors (already normalised
    /// for cosine). Higher is more similar. Of two slices of different
    /// lengths only the common prefix is scored.
    #[inline]
    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Dot | Metric::Cosine => dot(a, b),
            Metric::L2 => -l2_squared(a, b),
        }
    }

    /// Checks and prepares a vector for this metric: right length, finite,
    /// and for cosine non-zero and normalised in place.
    pub fn prepare(self, v: &mut [f32], dim: usize) -> Result<()> {
        check_vector(v, dim)?;
        if self == Metric::Cosine {
            normalize(v)?;
        }
        Ok(())
    }
}

/// Checks the length and finiteness of a vector.
///
/// # Examples
///
/// ```
/// use ragjet_retrieval::{distance::check_vector, RetrievalError};
///
/// assert!(check_vector(&[1.0, 2.0], 2).is_ok());
/// assert!(matches!(check_vector(&[1.0], 2), Err(RetrievalError::DimensionMismatch { .. })));
/// assert!(matches!(check_vector(&[f32::NAN, 0.0], 2), Err(RetrievalError::NonFinite { .. })));
/// ```
pub fn check_vector(v: &[f32], dim: usize) -> Result<()> {
    if v.len() != dim {
        return Err(RetrievalError::DimensionMismatch {
            expected: dim,
            got: v.len(),
        });
    }
    if let Some(index) = v.iter().position(|x| !x.is_finite()) {
        return Err(RetrievalError::NonFinite { index });
    }
    Ok(())
}

/// Scales `v` to unit Euclidean length. Fails on the zero vector (and on a
/// vector whose norm overflows to infinity).
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut v = [0.0, 2.0];
/// ragjet_retrieval::distance::normalize(&mut v)?;
/// assert_eq!(v, [0.0, 1.0]);
/// assert!(ragjet_retrieval::distance::normalize(&mut [0.0, 0.0]).is_err());
/// # Ok(()) }
/// ```
pub fn normalize(v: &mut [f32]) -> Result<()> {
    let norm = dot(v, v).sqrt();
    if norm == 0.0 {
        return Err(RetrievalError::ZeroVector);
    }
    if !norm.is_finite() {
        return Err(RetrievalError::NonFinite { index: 0 });
    }
    let inv = 1.0 / norm;
    v.iter_mut().for_each(|x| *x *= inv);
    Ok(())
}

/// Which implementation of the distance kernels runs.
///
/// Chosen once per process by [`Kernel::active`] from what the CPU offers
/// (AVX-512F, else AVX2 + FMA + F16C, else portable); every index and every
/// [`Metric::score`] call uses the same one, so exact search is
/// deterministic within a process. The environment variable
/// `RAGJET_SIMD=portable|avx2|avx512` forces a path (an unavailable one
/// falls back to detection), which is how the speed-ups are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Chunked scalar loops with 16 accumulators (auto-vectorised to
    /// whatever the build target allows).
    Portable,
    /// 256-bit AVX2 with fused multiply-add; F16C widens f16 rows.
    Avx2,
    /// 512-bit AVX-512F (its own f16 → f32 conversion).
    Avx512,
}

static ACTIVE: OnceLock<Kernel> = OnceLock::new();

impl Kernel {
    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every kernel this CPU can run, portable first.
    pub fn available() -> Vec<Kernel> {
        [Kernel::Portable, Kernel::Avx2, Kernel::Avx512]
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// The fastest available kernel (or the one `RAGJET_SIMD` forces).
    pub fn detect() -> Kernel {
        let forced = match std::env::var("RAGJET_SIMD").as_deref() {
            Ok("portable") => Some(Kernel::Portable),
            Ok("avx2") => Some(Kernel::Avx2),
            Ok("avx512") => Some(Kernel::Avx512),
            _ => None,
        };
        if let Some(k) = forced.filter(|k| k.is_available()) {
            return k;
        }
        [Kernel::Avx512, Kernel::Avx2]
            .into_iter()
            .find(|k| k.is_available())
            .unwrap_or(Kernel::Portable)
    }

    /// The kernel the crate uses, detected on first call.
    #[inline]
    pub fn active() -> Kernel {
        *ACTIVE.get_or_init(Kernel::detect)
    }

    /// Inner product over the common prefix of `a` and `b`.
    #[inline]
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        (Fns::for_kernel(self).dot)(a, b)
    }

    /// Squared Euclidean distance over the common prefix.
    #[inline]
    pub fn l2_squared(self, a: &[f32], b: &[f32]) -> f32 {
        (Fns::for_kernel(self).l2)(a, b)
    }

    /// Inner product of an f32 query with an f16 row, widening on the fly
    /// (no temporary row buffer). Unavailable kernels fall back to the
    /// portable loop, as in every method here.
    #[cfg(test)]
    pub(crate) fn dot_f16(self, a: &[f32], b: &[f16]) -> f32 {
        (Fns::for_kernel(self).dot_f16)(a, b)
    }

    /// Integer inner product of an i16 query with a row of `u8` codes.
    #[cfg(test)]
    pub(crate) fn dot_u8(self, a: &[i16], b: &[u8]) -> i32 {
        (Fns::for_kernel(self).dot_u8)(a, b)
    }

    /// Hamming distance of two bit-packed rows.
    #[cfg(test)]
    pub(crate) fn hamming(self, a: &[u64], b: &[u64]) -> u32 {
        (Fns::for_kernel(self).hamming)(a, b)
    }

    /// Squared Euclidean distance of an f32 query and an f16 row.
    #[cfg(test)]
    pub(crate) fn l2_squared_f16(self, a: &[f32], b: &[f16]) -> f32 {
        (Fns::for_kernel(self).l2_f16)(a, b)
    }
}

/// The active kernel's functions, resolved once: the hot loops (the HNSW
/// distance, flat scans) pay one indirect call, not a feature test.
///
/// Crate-private: each entry is safe for slices of any lengths (it scores
/// the common prefix), but the table is an implementation detail.
#[derive(Clone, Copy)]
pub(crate) struct Fns {
    /// Inner product.
    pub(crate) dot: fn(&[f32], &[f32]) -> f32,
    /// Squared Euclidean distance.
    pub(crate) l2: fn(&[f32], &[f32]) -> f32,
    /// Inner product with an f16 row.
    pub(crate) dot_f16: fn(&[f32], &[f16]) -> f32,
    /// Squared Euclidean distance to an f16 row.
    pub(crate) l2_f16: fn(&[f32], &[f16]) -> f32,
    /// Integer inner product of an i16 query (scaled per dimension and
    /// rounded) with a row of int8-storage codes (`u8`), wrapping i32 sums.
    pub(crate) dot_u8: fn(&[i16], &[u8]) -> i32,
    /// Hamming distance of two bit-packed rows (binary storage).
    pub(crate) hamming: fn(&[u64], &[u64]) -> u32,
}

static FNS: OnceLock<Fns> = OnceLock::new();

impl Fns {
    /// The functions of kernel `k`, or the portable ones when this CPU
    /// cannot run `k`.
    fn for_kernel(k: Kernel) -> Fns {
        match k {
            // SAFETY (every x86 entry): installed only after `is_available`
            // confirmed the CPU features at run time, the kernels' only
            // precondition (they bound every read by both slices' lengths).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if k.is_available() => Fns {
                dot: |a, b| unsafe { x86::dot_avx512(a, b) },
                l2: |a, b| unsafe { x86::l2_avx512(a, b) },
                dot_f16: |a, b| unsafe { x86::dot_f16_avx512(a, b) },
                l2_f16: |a, b| unsafe { x86::l2_f16_avx512(a, b) },
                dot_u8: x86::dot_u8_fn(true),
                hamming: x86::hamming_fn(),
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if k.is_available() => Fns {
                dot: |a, b| unsafe { x86::dot_avx2(a, b) },
                l2: |a, b| unsafe { x86::l2_avx2(a, b) },
                dot_f16: |a, b| unsafe { x86::dot_f16_avx2(a, b) },
                l2_f16: |a, b| unsafe { x86::l2_f16_avx2(a, b) },
                dot_u8: x86::dot_u8_fn(false),
                hamming: x86::hamming_fn(),
            },
            _ => Fns {
                dot: portable::dot,
                l2: portable::l2,
                dot_f16: portable::dot_f16,
                l2_f16: portable::l2_f16,
                dot_u8: portable::dot_u8,
                hamming: portable::hamming,
            },
        }
    }

    /// The table of [`Kernel::active`].
    #[inline]
    pub(crate) fn get() -> &'static Fns {
        FNS.get_or_init(|| Fns::for_kernel(Kernel::active()))
    }
}

/// Inner product of two f32 slices of equal length, with the active
/// [`Kernel`].
///
/// Only the common prefix is used if the lengths differ; callers check
/// dimensions before reaching the kernel.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (Fns::get().dot)(a, b)
}

/// Squared Euclidean distance of two f32 slices of equal length, with the
/// active [`Kernel`].
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    (Fns::get().l2)(a, b)
}

mod portable {
    use super::{f16, LANES};

    #[inline]
    pub(super) fn dot_u8(a: &[i16], b: &[u8]) -> i32 {
        a.iter()
            .zip(b)
            .fold(0i32, |s, (x, y)| s.wrapping_add(*x as i32 * *y as i32))
    }

    #[inline]
    pub(super) fn hamming(a: &[u64], b: &[u64]) -> u32 {
        a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
    }

    #[inline]
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; LANES];
        let ca = a.chunks_exact(LANES);
        let cb = b.chunks_exact(LANES);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                acc[i] += x[i] * y[i];
            }
        }
        let mut tail = 0.0f32;
        for (x, y) in ra.iter().zip(rb) {
            tail += x * y;
        }
        reduce(&acc) + tail
    }

    #[inline]
    pub(super) fn l2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; LANES];
        let ca = a.chunks_exact(LANES);
        let cb = b.chunks_exact(LANES);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                let d = x[i] - y[i];
                acc[i] += d * d;
            }
        }
        let mut tail = 0.0f32;
        for (x, y) in ra.iter().zip(rb) {
            let d = x - y;
            tail += d * d;
        }
        reduce(&acc) + tail
    }

    #[inline]
    pub(super) fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; LANES];
        let ca = a.chunks_exact(LANES);
        let cb = b.chunks_exact(LANES);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                acc[i] += x[i] * y[i].to_f32();
            }
        }
        let mut tail = 0.0f32;
        for (x, y) in ra.iter().zip(rb) {
            tail += x * y.to_f32();
        }
        reduce(&acc) + tail
    }

    #[inline]
    pub(super) fn l2_f16(a: &[f32], b: &[f16]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; LANES];
        let ca = a.chunks_exact(LANES);
        let cb = b.chunks_exact(LANES);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                let d = x[i] - y[i].to_f32();
                acc[i] += d * d;
            }
        }
        let mut tail = 0.0f32;
        for (x, y) in ra.iter().zip(rb) {
            let d = x - y.to_f32();
            tail += d * d;
        }
        reduce(&acc) + tail
    }

    /// Pairwise tree reduction of the accumulators (fixed order).
    #[inline]
    fn reduce(acc: &[f32; LANES]) -> f32 {
        let mut s = [0.0f32; LANES / 2];
        for i in 0..LANES / 2 {
            s[i] = acc[i] + acc[i + LANES / 2];
        }
        let mut t = [0.0f32; LANES / 4];
        for i in 0..LANES / 4 {
            t[i] = s[i] + s[i + LANES / 4];
        }
        (t[0] + t[2]) + (t[1] + t[3])
    }
}

/// x86-64 kernels. Each is `unsafe` only because of `#[target_feature]`:
/// callers must have checked the feature at run time ([`Kernel::is_available`]).
/// All loads are unaligned (`loadu`), so no alignment contract, and each
/// kernel stops at the shorter slice's end (`n = min(a.len(), b.len())`),
/// so no length contract either: a caller passing slices of different
/// lengths gets the prefix's score, never a read out of bounds.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_op_in_unsafe_fn)]
mod x86 {
    use super::f16;
    use std::arch::x86_64::*;

    /// `u8` codes times an i16 query, 32 lanes: codes widened to i16,
    /// `vpmaddwd` pairs into i32 (exact; sums wrap like the portable one).
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn dot_u8_avx512(a: &[i16], b: &[u8]) -> i32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = _mm512_setzero_si512();
        let mut i = 0;
        while i + 32 <= n {
            let c = _mm512_cvtepu8_epi16(_mm256_loadu_si256(pb.add(i) as *const __m256i));
            let q = _mm512_loadu_si512(pa.add(i) as *const __m512i);
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(q, c));
            i += 32;
        }
        let mut s = _mm512_reduce_add_epi32(acc);
        while i < n {
            s = s.wrapping_add(*pa.add(i) as i32 * *pb.add(i) as i32);
            i += 1;
        }
        s
    }

    /// AVX2 version of [`dot_u8_avx512`], 16 lanes per step.
    #[target_feature(enable = "avx2")]
    unsafe fn dot_u8_avx2(a: &[i16], b: &[u8]) -> i32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i + 16 <= n {
            let c = _mm256_cvtepu8_epi16(_mm_loadu_si128(pb.add(i) as *const __m128i));
            let q = _mm256_loadu_si256(pa.add(i) as *const __m256i);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(q, c));
            i += 16;
        }
        let lo = _mm256_castsi256_si128(acc);
        let hi = _mm256_extracti128_si256(acc, 1);
        let v = _mm_add_epi32(lo, hi);
        let v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0b01_00_11_10));
        let v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0b10_11_00_01));
        let mut s = _mm_cvtsi128_si32(v);
        while i < n {
            s = s.wrapping_add(*pa.add(i) as i32 * *pb.add(i) as i32);
            i += 1;
        }
        s
    }

    /// The widest integer code kernel the CPU runs: AVX-512BW when asked
    /// for (the AVX-512 table) and present, else AVX2, else portable.
    pub(super) fn dot_u8_fn(avx512: bool) -> fn(&[i16], &[u8]) -> i32 {
        if avx512 && is_x86_feature_detected!("avx512bw") {
            // SAFETY: avx512f and avx512bw detected; reads stay below the
            // shorter slice's length.
            |a, b| unsafe { dot_u8_avx512(a, b) }
        } else if is_x86_feature_detected!("avx2") {
            // SAFETY: avx2 detected; reads stay below the shorter length.
            |a, b| unsafe { dot_u8_avx2(a, b) }
        } else {
            super::portable::dot_u8
        }
    }

    /// Hamming distance with the `popcnt` instruction (the portable
    /// `count_ones` is a bit-twiddling sequence unless the build target
    /// enables it).
    #[target_feature(enable = "popcnt")]
    unsafe fn hamming_popcnt(a: &[u64], b: &[u64]) -> u32 {
        a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
    }

    /// The popcnt Hamming kernel where the CPU has the instruction, else
    /// the portable one.
    pub(super) fn hamming_fn() -> fn(&[u64], &[u64]) -> u32 {
        if is_x86_feature_detected!("popcnt") {
            // SAFETY: popcnt, the function's only requirement, was just
            // detected; it reads only the zipped pairs of both slices.
            |a, b| unsafe { hamming_popcnt(a, b) }
        } else {
            super::portable::hamming
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn hsum256(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
        _mm_cvtss_f32(s)
    }

    /// Generates an AVX-512 kernel: 4 × 16-lane accumulators over 64
    /// elements per step, 16-lane steps, then one masked step for the tail.
    macro_rules! avx512_kernel {
        ($name:ident, $bt:ty, $load_b:ident, $load_b_mask:ident, $step:ident) => {
            #[target_feature(enable = "avx512f")]
            pub(super) unsafe fn $name(a: &[f32], b: &[$bt]) -> f32 {
                // Every load below is at an index < n, so within both.
                let n = a.len().min(b.len());
                let pa = a.as_ptr();
                let pb = b.as_ptr();
                let mut acc0 = _mm512_setzero_ps();
                let mut acc1 = _mm512_setzero_ps();
                let mut acc2 = _mm512_setzero_ps();
                let mut acc3 = _mm512_setzero_ps();
                let mut i = 0;
                while i + 64 <= n {
                    acc0 = $step(acc0, _mm512_loadu_ps(pa.add(i)), $load_b(pb.add(i)));
                    acc1 = $step(
                        acc1,
                        _mm512_loadu_ps(pa.add(i + 16)),
                        $load_b(pb.add(i + 16)),
                    );
                    acc2 = $step(
                        acc2,
                        _mm512_loadu_ps(pa.add(i + 32)),
                        $load_b(pb.add(i + 32)),
                    );
                    acc3 = $step(
                        acc3,
                        _mm512_loadu_ps(pa.add(i + 48)),
                        $load_b(pb.add(i + 48)),
                    );
                    i += 64;
                }
                while i + 16 <= n {
                    acc0 = $step(acc0, _mm512_loadu_ps(pa.add(i)), $load_b(pb.add(i)));
                    i += 16;
                }
                if i < n {
                    let m: __mmask16 = (1u32 << (n - i)) as u16 - 1;
                    let x = _mm512_maskz_loadu_ps(m, pa.add(i));
                    let y = $load_b_mask(m, pb.add(i));
                    acc1 = $step(acc1, x, y);
                }
                let s = _mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3));
                _mm512_reduce_add_ps(s)
            }
        };
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn fma512(acc: __m512, x: __m512, y: __m512) -> __m512 {
        _mm512_fmadd_ps(x, y, acc)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sq512(acc: __m512, x: __m512, y: __m512) -> __m512 {
        let d = _mm512_sub_ps(x, y);
        _mm512_fmadd_ps(d, d, acc)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn ld_f32(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn ld_f32_mask(m: __mmask16, p: *const f32) -> __m512 {
        _mm512_maskz_loadu_ps(m, p)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn ld_f16(p: *const f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn ld_f16_mask(m: __mmask16, p: *const f16) -> __m512 {
        // Masked 16-bit load needs AVX-512BW; copy the tail instead.
        let n = (m as u32).count_ones() as usize;
        let mut buf = [0u16; 16];
        std::ptr::copy_nonoverlapping(p as *const u16, buf.as_mut_ptr(), n);
        _mm512_cvtph_ps(_mm256_loadu_si256(buf.as_ptr() as *const __m256i))
    }

    avx512_kernel!(dot_avx512, f32, ld_f32, ld_f32_mask, fma512);
    avx512_kernel!(l2_avx512, f32, ld_f32, ld_f32_mask, sq512);
    avx512_kernel!(dot_f16_avx512, f16, ld_f16, ld_f16_mask, fma512);
    avx512_kernel!(l2_f16_avx512, f16, ld_f16, ld_f16_mask, sq512);

    /// Generates an AVX2 kernel: 4 × 8-lane accumulators over 32 elements
    /// per step, 8-lane steps, scalar tail.
    macro_rules! avx2_kernel {
        ($name:ident, $bt:ty, $load_b:ident, $step:ident, $tail:expr) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn $name(a: &[f32], b: &[$bt]) -> f32 {
                // Every load below is at an index < n, so within both.
                let n = a.len().min(b.len());
                let pa = a.as_ptr();
                let pb = b.as_ptr();
                let mut acc0 = _mm256_setzero_ps();
                let mut acc1 = _mm256_setzero_ps();
                let mut acc2 = _mm256_setzero_ps();
                let mut acc3 = _mm256_setzero_ps();
                let mut i = 0;
                while i + 32 <= n {
                    acc0 = $step(acc0, _mm256_loadu_ps(pa.add(i)), $load_b(pb.add(i)));
                    acc1 = $step(acc1, _mm256_loadu_ps(pa.add(i + 8)), $load_b(pb.add(i + 8)));
                    acc2 = $step(
                        acc2,
                        _mm256_loadu_ps(pa.add(i + 16)),
                        $load_b(pb.add(i + 16)),
                    );
                    acc3 = $step(
                        acc3,
                        _mm256_loadu_ps(pa.add(i + 24)),
                        $load_b(pb.add(i + 24)),
                    );
                    i += 32;
                }
                while i + 8 <= n {
                    acc0 = $step(acc0, _mm256_loadu_ps(pa.add(i)), $load_b(pb.add(i)));
                    i += 8;
                }
                let s = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
                let mut total = hsum256(s);
                let tail: fn(f32, &$bt) -> f32 = $tail;
                while i < n {
                    total += tail(a[i], &b[i]);
                    i += 1;
                }
                total
            }
        };
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma256(acc: __m256, x: __m256, y: __m256) -> __m256 {
        _mm256_fmadd_ps(x, y, acc)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sq256(acc: __m256, x: __m256, y: __m256) -> __m256 {
        let d = _mm256_sub_ps(x, y);
        _mm256_fmadd_ps(d, d, acc)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn ld8_f32(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn ld8_f16(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    avx2_kernel!(dot_avx2, f32, ld8_f32, fma256, |x, y| x * *y);
    avx2_kernel!(l2_avx2, f32, ld8_f32, sq256, |x, y| (x - *y) * (x - *y));
    avx2_kernel!(dot_f16_avx2, f16, ld8_f16, fma256, |x, y| x * y.to_f32());
    avx2_kernel!(l2_f16_avx2, f16, ld8_f16, sq256, |x, y| {
        let d = x - y.to_f32();
        d * d
    });
}

/// Widens an f16 row into `out` (same length). Uses F16C when the CPU has it
/// (the `half` crate detects it at run time).
#[inline]
pub(crate) fn widen_f16(src: &[f16], out: &mut [f32]) {
    src.convert_to_f32_slice(out);
}

/// Narrows an f32 vector to f16 storage.
pub(crate) fn narrow_f16(src: &[f32]) -> Vec<f16> {
    let mut out = vec![f16::ZERO; src.len()];
    out.convert_from_f32_slice(src);
    out
}

/// Distance used by the HNSW graph for [`Metric::Cosine`]: `1 − a·b` on
/// unit vectors, clamped at 0 (hnsw_rs requires non-negative distances;
/// rounding can push `a·b` a hair above 1).
///
/// Crate-private so that hnsw_rs's `Distance` trait is not part of this
/// crate's API. Its path and name are written into saved graphs (hnsw_rs
/// checks them on reload): moving or renaming it breaks loading old saves.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HnswCosine;

impl hnsw_rs::prelude::Distance<f32> for HnswCosine {
    #[inline]
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        graph_distance(Metric::Cosine, va, vb)
    }
}

/// The distance the HNSW graph orders by: `1 − a·b` (clamped at 0) for
/// cosine on unit vectors, squared Euclidean for L2. hnsw_rs's build and
/// ragjet's own graph walk use this one function, so their scores agree.
/// Slices of different lengths are scored over their common prefix (the
/// kernels' rule); the index never passes such a pair.
#[inline]
pub(crate) fn graph_distance(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::L2 => (Fns::get().l2)(a, b),
        _ => (1.0 - (Fns::get().dot)(a, b)).max(0.0),
    }
}

/// Distance used by the HNSW graph for [`Metric::L2`]: squared Euclidean.
/// Crate-private, and its path is in saved graphs, as for [`HnswCosine`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HnswL2;

impl hnsw_rs::prelude::Distance<f32> for HnswL2 {
    #[inline]
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        graph_distance(Metric::L2, va, vb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    #[test]
    fn kernels_match_f64_reference_for_odd_lengths() {
        for n in [0usize, 1, 7, 15, 16, 17, 33, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 2.0).collect();
            assert!(
                (dot(&a, &b) as f64 - naive_dot(&a, &b)).abs() < 1e-3,
                "n={n}"
            );
            let l2: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum();
            assert!((l2_squared(&a, &b) as f64 - l2).abs() < 1e-3, "n={n}");
        }
    }

    /// Every kernel the CPU offers agrees with the portable one (to f32
    /// rounding: the summation orders differ), f32 and f16, all tail
    /// lengths.
    #[test]
    fn every_available_kernel_agrees_with_portable() {
        let kernels = Kernel::available();
        assert!(kernels.contains(&Kernel::Portable));
        assert!(kernels.contains(&Kernel::active()));
        for n in (0usize..70).chain([127, 128, 129, 384, 385, 1000]) {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 2.0).collect();
            let bh = narrow_f16(&b);
            let p = Kernel::Portable;
            let close = |x: f32, y: f32| (x - y).abs() <= 1e-5 * (1.0 + x.abs().max(y.abs()));
            for k in &kernels {
                assert!(close(k.dot(&a, &b), p.dot(&a, &b)), "{k:?} dot n={n}");
                assert!(
                    close(k.l2_squared(&a, &b), p.l2_squared(&a, &b)),
                    "{k:?} l2 n={n}"
                );
                assert!(
                    close(k.dot_f16(&a, &bh), p.dot_f16(&a, &bh)),
                    "{k:?} dot_f16 n={n}"
                );
                assert!(
                    close(k.l2_squared_f16(&a, &bh), p.l2_squared_f16(&a, &bh)),
                    "{k:?} l2_f16 n={n}"
                );
                let f = Fns::for_kernel(*k);
                assert_eq!((f.dot)(&a, &b).to_bits(), k.dot(&a, &b).to_bits());
                assert_eq!(
                    (f.l2_f16)(&a, &bh).to_bits(),
                    k.l2_squared_f16(&a, &bh).to_bits()
                );
            }
            let bu: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            let ai: Vec<i16> = (0..n).map(|i| ((i * 97) % 16_383) as i16 - 8000).collect();
            let naive: i64 = ai.iter().zip(&bu).map(|(x, y)| *x as i64 * *y as i64).sum();
            for k in &kernels {
                assert_eq!(k.dot_u8(&ai, &bu) as i64, naive, "{k:?} dot_u8 n={n}");
                // A shorter code row: only the common prefix is read.
                let half = &bu[..n / 2];
                assert_eq!(
                    k.dot_u8(&ai, half),
                    p.dot_u8(&ai[..n / 2], half),
                    "{k:?} dot_u8 prefix n={n}"
                );
            }
            let wa: Vec<u64> = (0..n as u64)
                .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .collect();
            let wb: Vec<u64> = (0..n as u64).map(|i| (i * 31).rotate_left(7)).collect();
            let naive: u32 = wa
                .iter()
                .zip(&wb)
                .map(|(x, y)| (0..64).filter(|bit| ((x ^ y) >> bit) & 1 == 1).count() as u32)
                .sum();
            for k in &kernels {
                assert_eq!(k.hamming(&wa, &wb), naive, "{k:?} hamming n={n}");
            }
            // The f16 kernels see exactly the widened row.
            let mut wide = vec![0.0; n];
            widen_f16(&bh, &mut wide);
            assert_eq!(p.dot_f16(&a, &bh).to_bits(), p.dot(&a, &wide).to_bits());
        }
    }

    /// The SIMD kernels used to read `b` up to `a.len()`, so the HNSW
    /// distance (which did not trim its slices) read past a shorter `b`:
    /// `HnswCosine.eval(&[0.0; 1024], &[0.0])` was undefined behaviour from
    /// safe code. Every entry now scores the common prefix. The short
    /// slices here are prefixes of NaN-filled buffers, so a kernel reading
    /// past them returns NaN instead of passing by luck.
    #[test]
    fn mismatched_lengths_score_the_common_prefix_in_every_kernel() {
        use hnsw_rs::prelude::Distance;
        let long: Vec<f32> = (0..1024).map(|i| ((i % 17) as f32 - 8.0) / 9.0).collect();
        let mut poisoned = vec![f32::NAN; 1024];
        let mut poisoned_h = vec![f16::NAN; 1024];
        for n in [0usize, 1, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 1023] {
            for (i, x) in long.iter().take(n).enumerate() {
                poisoned[i] = x * 0.5 + 0.25;
                poisoned_h[i] = f16::from_f32(poisoned[i]);
            }
            let short = &poisoned[..n];
            let short_h = &poisoned_h[..n];
            let want_dot = Kernel::Portable.dot(&long[..n], short);
            let want_l2 = Kernel::Portable.l2_squared(&long[..n], short);
            let close = |x: f32, y: f32| (x - y).abs() <= 1e-4 * (1.0 + y.abs());
            for k in Kernel::available() {
                let f = Fns::for_kernel(k);
                for (got, want, what) in [
                    ((f.dot)(&long, short), want_dot, "dot a>b"),
                    ((f.dot)(short, &long), want_dot, "dot a<b"),
                    ((f.l2)(&long, short), want_l2, "l2 a>b"),
                    ((f.l2)(short, &long), want_l2, "l2 a<b"),
                    (
                        (f.dot_f16)(&long, short_h),
                        Kernel::Portable.dot_f16(&long[..n], short_h),
                        "dot_f16",
                    ),
                    (
                        (f.l2_f16)(&long, short_h),
                        Kernel::Portable.l2_squared_f16(&long[..n], short_h),
                        "l2_f16",
                    ),
                ] {
                    assert!(close(got, want), "{k:?} {what} n={n}: {got} vs {want}");
                }
            }
            // The hnsw_rs-facing distances, as in the finding.
            let (c, l) = (HnswCosine.eval(&long, short), HnswL2.eval(&long, short));
            assert!(close(c, (1.0 - want_dot).max(0.0)), "cosine n={n}: {c}");
            assert!(close(l, want_l2), "l2 n={n}: {l}");
        }
        assert_eq!(HnswCosine.eval(&[0.0; 1024], &[0.0]), 1.0);
        assert_eq!(HnswL2.eval(&[0.0; 1024], &[0.0]), 0.0);
    }

    #[test]
    fn normalize_rejects_zero_and_scales_to_unit() {
        let mut z = vec![0.0f32; 5];
        assert!(matches!(normalize(&mut z), Err(RetrievalError::ZeroVector)));
        let mut v = vec![3.0f32, 4.0];
        normalize(&mut v).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn prepare_rejects_bad_vectors() {
        let mut v = vec![1.0f32, f32::NAN];
        assert!(matches!(
            Metric::Dot.prepare(&mut v, 2),
            Err(RetrievalError::NonFinite { index: 1 })
        ));
        let mut v = vec![1.0f32];
        assert!(matches!(
            Metric::L2.prepare(&mut v, 2),
            Err(RetrievalError::DimensionMismatch {
                expected: 2,
                got: 1
            })
        ));
    }

    #[test]
    fn f16_round_trip_is_close() {
        let v: Vec<f32> = (0..40).map(|i| i as f32 / 40.0).collect();
        let h = narrow_f16(&v);
        let mut back = vec![0.0; 40];
        widen_f16(&h, &mut back);
        for (a, b) in v.iter().zip(&back) {
            assert!((a - b).abs() < 1e-3);
        }
    }
}

/// Hamming distances of one bit-packed query (`q`, `w = q.len()` words) to
/// consecutive rows of `w` words each in `codes`: `out[i]` is the distance
/// to row `i`. The binary storage's scan calls this on blocks of rows, one
/// call per block rather than one indirect call per row, so the AVX-512
/// version can reduce eight rows at once. Only `min(out.len(),
/// codes.len() / w)` entries are written; an empty query writes none.
#[inline]
pub(crate) fn hamming_rows(q: &[u64], codes: &[u64], out: &mut [u32]) {
    static WIDE: OnceLock<bool> = OnceLock::new();
    hamming_rows_with(
        *WIDE.get_or_init(|| hamming_rows_wide(Kernel::active())),
        Fns::get().hamming,
        q,
        codes,
        out,
    )
}

/// Whether kernel `k` gets the AVX-512 `VPOPCNTDQ` block kernel: under
/// [`Kernel::Avx512`] where the CPU has the instruction (so
/// `RAGJET_SIMD` still reaches the per-row kernels).
fn hamming_rows_wide(k: Kernel) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        k == Kernel::Avx512 && k.is_available() && is_x86_feature_detected!("avx512vpopcntdq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = k;
        false
    }
}

/// The block kernel when `wide` (checked by [`hamming_rows_wide`]), else
/// `per_row` on each row.
#[inline]
fn hamming_rows_with(
    wide: bool,
    per_row: fn(&[u64], &[u64]) -> u32,
    q: &[u64],
    codes: &[u64],
    out: &mut [u32],
) {
    if q.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if wide {
        // SAFETY: `wide` comes from `hamming_rows_wide`, which detected
        // both target features; the kernel bounds every read by the
        // slices' lengths.
        return unsafe { hamming_x86::rows_avx512(q, codes, out) };
    }
    let _ = wide;
    for (o, row) in out.iter_mut().zip(codes.chunks_exact(q.len())) {
        *o = per_row(q, row);
    }
}

#[cfg(target_arch = "x86_64")]
mod hamming_x86 {
    use std::arch::x86_64::*;

    /// Eight rows per step: per row a masked 8-word load (masked lanes
    /// are not read, so the last row's block never reads past `codes`),
    /// XOR, `vpopcntq`, then one transpose-and-add tree sums the eight
    /// rows' lanes into one vector of eight distances.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    pub(super) unsafe fn rows_avx512(q: &[u64], codes: &[u64], out: &mut [u32]) {
        let w = q.len();
        if w == 0 {
            return;
        }
        let rows = out.len().min(codes.len() / w);
        let chunks = w.div_ceil(8);
        let mask = |c: usize| -> __mmask8 {
            let n = (w - 8 * c).min(8);
            (((1u16) << n) - 1) as __mmask8
        };
        let qv: Vec<__m512i> = (0..chunks)
            .map(|c| _mm512_maskz_loadu_epi64(mask(c), q.as_ptr().add(8 * c).cast()))
            .collect();
        let base = codes.as_ptr();
        let mut r = 0;
        while r + 8 <= rows {
            let mut p = [_mm512_setzero_si512(); 8];
            for (c, &qc) in qv.iter().enumerate() {
                let m = mask(c);
                for (i, acc) in p.iter_mut().enumerate() {
                    // In bounds: row r + i < rows, its chunk c lanes < w.
                    let x = _mm512_maskz_loadu_epi64(m, base.add((r + i) * w + 8 * c).cast());
                    *acc = _mm512_add_epi64(*acc, _mm512_popcnt_epi64(_mm512_xor_si512(x, qc)));
                }
            }
            let pair = |a: __m512i, b: __m512i| {
                _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
            };
            let quad = |a: __m512i, b: __m512i| {
                _mm512_add_epi64(
                    _mm512_shuffle_i64x2::<0x88>(a, b),
                    _mm512_shuffle_i64x2::<0xDD>(a, b),
                )
            };
            let v = quad(pair(p[0], p[1]), pair(p[2], p[3]));
            let u = quad(pair(p[4], p[5]), pair(p[6], p[7]));
            let sums = _mm512_cvtepi64_epi32(quad(v, u));
            _mm256_storeu_si256(out.as_mut_ptr().add(r).cast(), sums);
            r += 8;
        }
        while r < rows {
            let mut acc = _mm512_setzero_si512();
            for (c, &qc) in qv.iter().enumerate() {
                let x = _mm512_maskz_loadu_epi64(mask(c), base.add(r * w + 8 * c).cast());
                acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(x, qc)));
            }
            out[r] = _mm512_reduce_add_epi64(acc) as u32;
            r += 1;
        }
    }
}

#[cfg(test)]
mod hamming_rows_tests {
    use super::*;

    /// Every block kernel this CPU offers gives the portable per-row
    /// distances, for every word count 1..=19 (one and several masked
    /// chunks, every partial last chunk) and every row count 0..=20 (the
    /// eight-row steps and every tail), on random codes.
    #[test]
    fn block_kernels_match_the_portable_rows() {
        let mut s = 0x243F_6A88_85A3_08D3u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        type PerRow = fn(&[u64], &[u64]) -> u32;
        let kernels: Vec<(bool, PerRow)> = Kernel::available()
            .into_iter()
            .flat_map(|k| {
                let per_row = Fns::for_kernel(k).hamming;
                [(false, per_row), (hamming_rows_wide(k), per_row)]
            })
            .collect();
        for w in 1..=19usize {
            let q: Vec<u64> = (0..w).map(|_| next()).collect();
            for rows in 0..=20usize {
                let codes: Vec<u64> = (0..rows * w).map(|_| next()).collect();
                let want: Vec<u32> = codes
                    .chunks_exact(w)
                    .map(|r| q.iter().zip(r).map(|(a, b)| (a ^ b).count_ones()).sum())
                    .collect();
                for &(wide, per_row) in &kernels {
                    let mut out = vec![u32::MAX; rows + 1];
                    hamming_rows_with(wide, per_row, &q, &codes, &mut out);
                    assert_eq!(&out[..rows], &want[..], "w={w} rows={rows}");
                    assert_eq!(out[rows], u32::MAX, "wrote past the rows, w={w}");
                }
                let mut out = vec![0; rows];
                hamming_rows(&q, &codes, &mut out);
                assert_eq!(out, want);
            }
        }
    }
}
