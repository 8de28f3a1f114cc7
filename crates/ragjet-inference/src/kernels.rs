//! Element-wise CPU kernels of the encoder, fused so that each pass over the
//! activations does all the work it can: bias + activation, bias + residual
//! + layer norm, row softmax.
//!
//! Each kernel is written once as plain loops that auto-vectorise, and
//! compiled three times: for AVX-512, for AVX2 + FMA, and for the baseline
//! target. [`Kernels::detect`] picks the widest one the CPU runs; a test
//! checks every compiled variant against the portable one. A [`Kernels`]
//! can only come from that CPU check (or be the portable variant).

/// Activation functions of BERT-family feed-forward layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// Exact GELU, `x · Φ(x)` with the error function (PyTorch's default).
    Gelu,
    /// GELU's tanh approximation.
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
}

/// `e^x` for f32 without a libm call, so that loops over it vectorise.
/// Cephes' polynomial; relative error below 2e-7 over the whole range, which
/// is at the level of f32 rounding itself.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5·2²³
    let x = x.clamp(-87.3, 88.7);
    // Round x·log2(e) to nearest with the 1.5·2²³ trick (no floor() call):
    // `t`'s low mantissa bits then hold n itself.
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    // 2ⁿ from t's bits, not from `n as i32`: Rust's saturating float-to-int
    // cast does not vectorise, and it made every loop calling exp scalar.
    let two_n = f32::from_bits(t.to_bits().wrapping_sub(SHIFT.to_bits() - 127) << 23);
    y * two_n
}

/// The error function (Abramowitz & Stegun 7.1.26, absolute error < 1.5e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    let e = exp(-2.0 * x.abs());
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

#[inline(always)]
fn bias_act_body(rows: &mut [f32], bias: &[f32], act: Activation) {
    for row in rows.chunks_exact_mut(bias.len()) {
        match act {
            Activation::Gelu => {
                for (x, b) in row.iter_mut().zip(bias) {
                    let v = *x + b;
                    *x = 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
                }
            }
            Activation::GeluTanh => {
                for (x, b) in row.iter_mut().zip(bias) {
                    let v = *x + b;
                    let inner = 0.797_884_6 * (v + 0.044_715 * v * v * v);
                    *x = 0.5 * v * (1.0 + tanh(inner));
                }
            }
            Activation::Relu => {
                for (x, b) in row.iter_mut().zip(bias) {
                    *x = (*x + b).max(0.0);
                }
            }
        }
    }
}

#[inline(always)]
fn bias_add_body(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x += b;
        }
    }
}

/// `x = LayerNorm(x + bias + residual)`, row by row.
#[inline(always)]
fn residual_layer_norm_body(
    rows: &mut [f32],
    residual: &[f32],
    bias: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let h = gamma.len();
    for (row, res) in rows.chunks_exact_mut(h).zip(residual.chunks_exact(h)) {
        prefetch_next_rows(row, res);
        for ((x, r), b) in row.iter_mut().zip(res).zip(bias) {
            *x += r + b;
        }
        let mean = reduce_lanes(row, 0.0, |s, x| s + x, |a, b| a + b) / h as f32;
        row.iter_mut().for_each(|x| *x -= mean);
        let var = reduce_lanes(row, 0.0, |s, x| s + x * x, |a, b| a + b);
        let inv = 1.0 / (var / h as f32 + eps).sqrt();
        for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *x = *x * inv * g + b;
        }
    }
}

/// Requests the rows after `row` and `res` (as wide) from memory, so that
/// they arrive while this one is normalised: the encoder's rows were often
/// written by the other core or long before, and each row's first pass
/// waited on them.
#[inline(always)]
fn prefetch_next_rows(row: &[f32], res: &[f32]) {
    prefetch(row.as_ptr().wrapping_add(row.len()), row.len());
    prefetch(res.as_ptr().wrapping_add(res.len()), res.len());
}

/// Asks for the cache lines of `len` values from `start` into L1, without
/// waiting for them: for rows a kernel will read next. Any address will
/// do (a prefetch reads nothing and does not fault); a no-op off x86-64.
#[inline(always)]
pub(crate) fn prefetch(start: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for v in (0..len).step_by(16) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch reads nothing and does not fault, past a
        // slice's end or anywhere.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(v).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

/// Softmax of each row of `scores` in place.
#[inline(always)]
fn softmax_rows_body(scores: &mut [f32], width: usize) {
    for row in scores.chunks_exact_mut(width) {
        let max = reduce_lanes(row, f32::NEG_INFINITY, f32::max, f32::max);
        row.iter_mut().for_each(|x| *x = exp(*x - max));
        let inv = 1.0 / reduce_lanes(row, 0.0, |s, x| s + x, |a, b| a + b);
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Partial results kept per lane by [`reduce_lanes`].
const LANES: usize = 16;

/// Folds `xs` with `step` into [`LANES`] independent partial results, then
/// combines those with `merge`. A single running f32 sum or max is a serial
/// dependency chain the compiler may not reorder, so such a loop runs one
/// element at a time (softmax was 17 % of the encoder's time that way);
/// per-lane partials vectorise.
#[inline(always)]
fn reduce_lanes(
    xs: &[f32],
    init: f32,
    step: impl Fn(f32, f32) -> f32,
    merge: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut acc = [init; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = step(*a, x);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, &x| step(a, x));
    acc.into_iter().fold(tail, merge)
}

macro_rules! variant {
    ($module:ident, $($feature:literal),*) => {
        #[cfg(target_arch = "x86_64")]
        mod $module {
            use super::*;
            $(#[target_feature(enable = $feature)])*
            pub unsafe fn bias_act(rows: &mut [f32], bias: &[f32], act: Activation) {
                bias_act_body(rows, bias, act)
            }
            $(#[target_feature(enable = $feature)])*
            pub unsafe fn bias_add(rows: &mut [f32], bias: &[f32]) {
                bias_add_body(rows, bias)
            }
            $(#[target_feature(enable = $feature)])*
            pub unsafe fn residual_layer_norm(
                rows: &mut [f32], residual: &[f32], bias: &[f32], gamma: &[f32], beta: &[f32], eps: f32,
            ) {
                residual_layer_norm_body(rows, residual, bias, gamma, beta, eps)
            }
            $(#[target_feature(enable = $feature)])*
            pub unsafe fn softmax_rows(scores: &mut [f32], width: usize) {
                softmax_rows_body(scores, width)
            }

        }
    };
}

variant!(avx512, "avx512f", "avx512vl", "avx512bw", "avx2", "fma");
variant!(avx2, "avx2", "fma");

/// Kernels written with AVX-512 intrinsics, where the compiled loops above
/// leave speed behind: without fused multiply-adds (Rust does not contract
/// `a * b + c`) and with a division per value.
#[cfg(target_arch = "x86_64")]
pub(crate) mod vector {
    use std::arch::x86_64::*;

    /// The first `n` lanes of a 16-lane register (all for `n ≥ 16`): the
    /// mask of a row's tail.
    pub fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            (1u16 << n) - 1
        }
    }

    /// `e^x` per lane: the polynomial of the scalar [`exp`](super::exp)
    /// (Cephes), with fused multiply-adds, which round less, and 2ⁿ by
    /// `vscalefps`, which overflows to infinity by itself (the softmax
    /// only passes x ≤ 0). Below −87.3 it gives e^−87.3, as the scalar one.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub fn exp(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.3));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_add_ps(
            _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
            _mm512_set1_ps(1.0),
        );
        _mm512_scalef_ps(y, n)
    }

    /// `GELU(x + bias)` in place, row by row, with erf as a rational
    /// function (Eigen's and TensorFlow's float erf: odd degree 13 over
    /// even degree 8, the argument clamped to ±4, where erf rounds to ±1 in
    /// f32) and the division as `vrcp14ps` plus one Newton step. That is
    /// 22 vector operations a value, where the portable kernel's formula
    /// (A&S 7.1.26, which needs an `exp`) took 36: the GELU was a tenth of
    /// the int8 encoder's time. Its erf is as accurate (2.6e-7 against
    /// 1.5e-7 plus rounding), tested against f64.
    #[target_feature(enable = "avx512f")]
    pub fn bias_gelu(rows: &mut [f32], bias: &[f32]) {
        let h = bias.len();
        for row in rows.chunks_exact_mut(h) {
            for (x, b) in row.chunks_mut(16).zip(bias.chunks(16)) {
                let keep = lanes(x.len());
                // SAFETY: `keep` limits the loads and the store to the
                // chunk's own values.
                unsafe {
                    let v = _mm512_add_ps(
                        _mm512_maskz_loadu_ps(keep, x.as_ptr()),
                        _mm512_maskz_loadu_ps(keep, b.as_ptr()),
                    );
                    _mm512_mask_storeu_ps(x.as_mut_ptr(), keep, gelu(v));
                }
            }
        }
    }

    /// `0.5 · v · (1 + erf(v / √2))`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn gelu(v: __m512) -> __m512 {
        const NUMERATOR: [f32; 7] = [
            -2.726_142_3e-10,
            2.770_681_4e-8,
            -2.101_024e-6,
            -5.692_506_4e-5,
            -7.349_906_3e-4,
            -2.954_6e-3,
            -1.609_603_3e-2,
        ];
        const DENOMINATOR: [f32; 5] = [
            -1.456_607_2e-5,
            -2.133_740_6e-4,
            -1.682_827e-3,
            -7.373_329e-3,
            -1.426_473_9e-2,
        ];
        let one = _mm512_set1_ps(1.0);
        let z = _mm512_mul_ps(v, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        // `max(lo, z)` then `min(hi, z)` keep a NaN `z`, so NaN stays NaN.
        let z = _mm512_min_ps(_mm512_set1_ps(4.0), _mm512_max_ps(_mm512_set1_ps(-4.0), z));
        let z2 = _mm512_mul_ps(z, z);
        let horner = |coefficients: &[f32]| {
            let mut p = _mm512_set1_ps(coefficients[0]);
            for &c in &coefficients[1..] {
                p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(c));
            }
            p
        };
        let (p, q) = (horner(&NUMERATOR), horner(&DENOMINATOR));
        // 1/q to f32 precision (q ≤ −0.0142, never near 0).
        let r = _mm512_rcp14_ps(q);
        let r = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(q, r, one), r);
        let erf = _mm512_mul_ps(_mm512_mul_ps(p, z), r);
        let half = _mm512_mul_ps(v, _mm512_set1_ps(0.5));
        _mm512_fmadd_ps(half, erf, half)
    }
}

pub(crate) use checked::Kernels;

/// The choice of variant, in a module of its own so that its constructor
/// is private: the `unsafe` calls into `#[target_feature]` code below are
/// sound only because the CPU was checked, and outside this module no code
/// can name a variant, so none can make a [`Kernels`] that skipped the check.
mod checked {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Variant {
        Portable,
        #[cfg(target_arch = "x86_64")]
        Avx2,
        #[cfg(target_arch = "x86_64")]
        Avx512,
    }

    /// Which compiled variant of the kernels runs: the result of a CPU
    /// check ([`Kernels::detect`]), or the portable one.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Kernels(Variant);

    impl std::fmt::Debug for Kernels {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            std::fmt::Debug::fmt(&self.0, f)
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn cpu_has_avx2() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    #[cfg(target_arch = "x86_64")]
    fn cpu_has_avx512() -> bool {
        cpu_has_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bw")
    }

    impl Kernels {
        /// The widest variant this CPU supports.
        pub fn detect() -> Self {
            #[cfg(target_arch = "x86_64")]
            {
                if cpu_has_avx512() {
                    return Kernels(Variant::Avx512);
                }
                if cpu_has_avx2() {
                    return Kernels(Variant::Avx2);
                }
            }
            Self::portable()
        }

        /// The baseline-target variant, which runs on every CPU.
        pub fn portable() -> Self {
            Kernels(Variant::Portable)
        }

        /// Whether this is the AVX-512 variant (the CPU has AVX-512F, VL and BW).
        pub fn has_avx512(self) -> bool {
            #[cfg(target_arch = "x86_64")]
            return self.0 == Variant::Avx512;
            #[cfg(not(target_arch = "x86_64"))]
            false
        }

        /// Every variant this CPU can run (for tests). The ones it cannot
        /// are printed, so that a run on an older CPU says what it did not
        /// check instead of passing quietly.
        #[cfg(test)]
        pub fn available() -> Vec<Self> {
            let mut all = vec![Self::portable()];
            #[cfg(target_arch = "x86_64")]
            {
                if cpu_has_avx2() {
                    all.push(Kernels(Variant::Avx2));
                } else {
                    eprintln!("SKIPPED: the AVX2 kernels (this CPU lacks AVX2 + FMA)");
                }
                if cpu_has_avx512() {
                    all.push(Kernels(Variant::Avx512));
                } else {
                    eprintln!("SKIPPED: the AVX-512 kernels (this CPU lacks AVX-512F + VL + BW)");
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            eprintln!("SKIPPED: the AVX2 and AVX-512 kernels (not an x86-64 CPU)");
            all
        }

        pub fn bias_act(self, rows: &mut [f32], bias: &[f32], act: Activation) {
            match self.0 {
                Variant::Portable => bias_act_body(rows, bias, act),
                // SAFETY: a `Kernels` holds a variant only after `detect` or
                // `available` checked the CPU features it was compiled for.
                #[cfg(target_arch = "x86_64")]
                Variant::Avx2 => unsafe { avx2::bias_act(rows, bias, act) },
                #[cfg(target_arch = "x86_64")]
                Variant::Avx512 if act == Activation::Gelu => unsafe {
                    vector::bias_gelu(rows, bias)
                },
                #[cfg(target_arch = "x86_64")]
                Variant::Avx512 => unsafe { avx512::bias_act(rows, bias, act) },
            }
        }

        pub fn bias_add(self, rows: &mut [f32], bias: &[f32]) {
            match self.0 {
                Variant::Portable => bias_add_body(rows, bias),
                // SAFETY: as in `bias_act`.
                #[cfg(target_arch = "x86_64")]
                Variant::Avx2 => unsafe { avx2::bias_add(rows, bias) },
                #[cfg(target_arch = "x86_64")]
                Variant::Avx512 => unsafe { avx512::bias_add(rows, bias) },
            }
        }

        pub fn residual_layer_norm(
            self,
            rows: &mut [f32],
            residual: &[f32],
            bias: &[f32],
            gamma: &[f32],
            beta: &[f32],
            eps: f32,
        ) {
            match self.0 {
                Variant::Portable => {
                    residual_layer_norm_body(rows, residual, bias, gamma, beta, eps)
                }
                // SAFETY: as in `bias_act`.
                #[cfg(target_arch = "x86_64")]
                Variant::Avx2 => unsafe {
                    avx2::residual_layer_norm(rows, residual, bias, gamma, beta, eps)
                },
                #[cfg(target_arch = "x86_64")]
                Variant::Avx512 => unsafe {
                    avx512::residual_layer_norm(rows, residual, bias, gamma, beta, eps)
                },
            }
        }

        /// Softmax of each `width`-wide row of `scores`; nothing for a
        /// width of 0 (a text of no tokens has no scores).
        pub fn softmax_rows(self, scores: &mut [f32], width: usize) {
            if width == 0 {
                return;
            }
            match self.0 {
                Variant::Portable => softmax_rows_body(scores, width),
                // SAFETY: as in `bias_act`.
                #[cfg(target_arch = "x86_64")]
                Variant::Avx2 => unsafe { avx2::softmax_rows(scores, width) },
                #[cfg(target_arch = "x86_64")]
                Variant::Avx512 => unsafe { avx512::softmax_rows(scores, width) },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_ref(x: f64) -> f64 {
        // High-precision series/continued fraction is overkill here: use the
        // identity with a 1e-12-accurate numerical integral.
        let n = 20_000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -800..=800 {
            let x = i as f32 * 0.1;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        for i in -60..=60 {
            let x = i as f32 * 0.1;
            let got = erf(x) as f64;
            let want = erf_ref(x as f64);
            assert!((got - want).abs() < 3e-7, "erf({x}) = {got}, want {want}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_is_accurate() {
        use std::arch::x86_64::*;
        if !Kernels::detect().has_avx512() {
            eprintln!("SKIPPED: no AVX-512 (the vector exp)");
            return;
        }
        let xs: Vec<f32> = (-8730..=8870).map(|i| i as f32 * 0.01).collect();
        for chunk in xs.chunks(16) {
            let mut x = [0.0f32; 16];
            x[..chunk.len()].copy_from_slice(chunk);
            let mut y = [0.0f32; 16];
            // SAFETY: the CPU has AVX-512F (checked above); both arrays
            // hold 16 values.
            unsafe { _mm512_storeu_ps(y.as_mut_ptr(), vector::exp(_mm512_loadu_ps(x.as_ptr()))) };
            for (&x, &y) in x.iter().zip(&y) {
                let want = (x as f64).exp();
                assert!(
                    ((y as f64 - want) / want).abs() < 3e-7,
                    "exp({x}) = {y}, want {want}"
                );
            }
        }
        // Below the clamp: a tiny positive value, as the scalar exp gives.
        let mut y = [0.0f32; 16];
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(y.as_mut_ptr(), vector::exp(_mm512_set1_ps(-1e4))) };
        assert!(y.iter().all(|&y| y > 0.0 && y < 1e-37), "{y:?}");
    }

    /// The AVX-512 GELU against GELU in f64 (with the f64 erf of the test
    /// above), over the range where it is neither 0 nor the identity.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_gelu_is_accurate() {
        if !Kernels::detect().has_avx512() {
            eprintln!("SKIPPED: no AVX-512 (the vector GELU)");
            return;
        }
        let xs: Vec<f32> = (-1200..=1200).map(|i| i as f32 * 0.01).collect();
        let mut ys = xs.clone();
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { vector::bias_gelu(&mut ys, &[0.0; 7]) };
        for (&x, &y) in xs.iter().zip(&ys) {
            let x64 = x as f64;
            let want = 0.5 * x64 * (1.0 + erf_ref(x64 / std::f64::consts::SQRT_2));
            let bound = 4e-7 * x64.abs().max(1.0);
            assert!(
                (y as f64 - want).abs() <= bound,
                "gelu({x}) = {y}, want {want}"
            );
        }
        // The clamp of the erf's argument keeps NaN.
        let mut nan = [f32::NAN; 3];
        // SAFETY: as above.
        unsafe { vector::bias_gelu(&mut nan, &[0.0; 3]) };
        assert!(nan.iter().all(|y| y.is_nan()), "{nan:?}");
    }

    fn data(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 125.0 - 4.0)
            .collect()
    }

    #[test]
    fn every_variant_agrees_with_the_portable_one() {
        // Rows of whole vectors, and rows with a tail.
        for h in [48, 37] {
            every_variant_agrees_at_width(h);
        }
    }

    fn every_variant_agrees_at_width(h: usize) {
        let bias = data(h);
        let gamma: Vec<f32> = data(h).iter().map(|x| 1.0 + x / 10.0).collect();
        let residual = data(5 * h);
        for kernels in Kernels::available() {
            for act in [Activation::Gelu, Activation::GeluTanh, Activation::Relu] {
                let (mut a, mut b) = (data(5 * h), data(5 * h));
                Kernels::portable().bias_act(&mut a, &bias, act);
                kernels.bias_act(&mut b, &bias, act);
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() <= 1e-6, "{kernels:?} {act:?}: {x} vs {y}");
                }
            }
            let (mut a, mut b) = (data(5 * h), data(5 * h));
            Kernels::portable().residual_layer_norm(&mut a, &residual, &bias, &gamma, &bias, 1e-12);
            kernels.residual_layer_norm(&mut b, &residual, &bias, &gamma, &bias, 1e-12);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-5, "{kernels:?} layer norm: {x} vs {y}");
            }
            let (mut a, mut b) = (data(5 * h), data(5 * h));
            Kernels::portable().softmax_rows(&mut a, h);
            kernels.softmax_rows(&mut b, h);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-6, "{kernels:?} softmax: {x} vs {y}");
            }
        }
    }

    /// A text of no tokens gives attention a 0 × 0 score matrix: nothing to
    /// do, and no panic (`chunks_exact_mut(0)` panicked).
    #[test]
    fn softmax_of_no_columns_is_a_no_op() {
        for kernels in Kernels::available() {
            let mut none: [f32; 0] = [];
            kernels.softmax_rows(&mut none, 0);
        }
    }

    #[test]
    fn gelu_matches_its_definition() {
        let bias = vec![0.0; 4];
        let mut x = vec![-3.0, -0.5, 0.7, 2.5];
        let want: Vec<f64> = x
            .iter()
            .map(|&v: &f32| {
                let v = v as f64;
                0.5 * v * (1.0 + erf_ref(v / std::f64::consts::SQRT_2))
            })
            .collect();
        Kernels::detect().bias_act(&mut x, &bias, Activation::Gelu);
        for (g, w) in x.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn layer_norm_and_softmax_match_definitions() {
        let mut row = vec![1.0f32, 2.0, 3.0, 6.0];
        let zeros = vec![0.0; 4];
        let ones = vec![1.0; 4];
        Kernels::detect().residual_layer_norm(&mut row, &zeros, &zeros, &ones, &zeros, 0.0);
        let (mean, var) = (3.0f32, 3.5f32);
        for (got, x) in row.iter().zip([1.0f32, 2.0, 3.0, 6.0]) {
            assert!((got - (x - mean) / var.sqrt()).abs() < 1e-6);
        }
        let mut s = vec![1.0f32, 2.0, 3.0];
        Kernels::detect().softmax_rows(&mut s, 3);
        let z: f32 = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        for (got, v) in s.iter().zip([1.0f32, 2.0, 3.0]) {
            assert!((got - v.exp() / z).abs() < 1e-6);
        }

        // Rows longer than the reductions' lanes (two full chunks and a
        // tail), against f64 definitions, on every variant.
        let x = data(37);
        let (mean, var) = {
            let m = x.iter().map(|&v| v as f64).sum::<f64>() / 37.0;
            (
                m,
                x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / 37.0,
            )
        };
        let z: f64 = x.iter().map(|&v| (v as f64).exp()).sum();
        let (zeros, ones) = (vec![0.0; 37], vec![1.0; 37]);
        for k in Kernels::available() {
            let mut row = x.clone();
            k.residual_layer_norm(&mut row, &zeros, &zeros, &ones, &zeros, 0.0);
            for (got, &v) in row.iter().zip(&x) {
                let want = (v as f64 - mean) / var.sqrt();
                assert!(
                    (*got as f64 - want).abs() < 1e-5,
                    "{k:?} layer norm: {got} vs {want}"
                );
            }
            let mut row = x.clone();
            k.softmax_rows(&mut row, 37);
            for (got, &v) in row.iter().zip(&x) {
                let want = (v as f64).exp() / z;
                assert!(
                    (*got as f64 - want).abs() < 1e-6,
                    "{k:?} softmax: {got} vs {want}"
                );
            }
        }
    }
}
