//! Distance kernels and metrics, shared by [`crate::FlatIndex`] and
//! [`crate::HnswIndex`].
//!
//! Every similarity computation in the crate goes through the functions in
//! this module, so a SIMD implementation (AVX-512 / AVX2 with a scalar
//! fallback) can replace [`dot`] and [`l2_squared`] here without touching
//! either index. The present kernels are plain chunked loops with 16
//! independent accumulators: that breaks the floating-point dependency chain
//! so the compiler auto-vectorises them, and keeps the summation order fixed
//! (the naive reference in the tests uses the same order, so exact-search
//! results can be compared bit for bit).

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
    /// for cosine). Higher is more similar.
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

/// Inner product of two f32 slices of equal length.
///
/// Only the common prefix is used if the lengths differ; callers check
/// dimensions before reaching the kernel.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
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

/// Squared Euclidean distance of two f32 slices of equal length.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
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

/// Widens an f16 row into `out` (same length). Uses F16C when the CPU has it
/// (the `half` crate detects it at run time).
#[inline]
pub fn widen_f16(src: &[f16], out: &mut [f32]) {
    src.convert_to_f32_slice(out);
}

/// Narrows an f32 vector to f16 storage.
pub fn narrow_f16(src: &[f32]) -> Vec<f16> {
    let mut out = vec![f16::ZERO; src.len()];
    out.convert_from_f32_slice(src);
    out
}

/// Distance used by the HNSW graph for [`Metric::Cosine`]: `1 − a·b` on
/// unit vectors, clamped at 0 (hnsw_rs requires non-negative distances;
/// rounding can push `a·b` a hair above 1).
#[derive(Debug, Clone, Copy, Default)]
pub struct HnswCosine;

impl hnsw_rs::prelude::Distance<f32> for HnswCosine {
    #[inline]
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        (1.0 - dot(va, vb)).max(0.0)
    }
}

/// Distance used by the HNSW graph for [`Metric::L2`]: squared Euclidean.
#[derive(Debug, Clone, Copy, Default)]
pub struct HnswL2;

impl hnsw_rs::prelude::Distance<f32> for HnswL2 {
    #[inline]
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        l2_squared(va, vb)
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
