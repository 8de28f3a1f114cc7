//! Helpers for the crate's unit tests.

/// A deterministic stream of values in [-1, 1) (a 64-bit LCG): test data
/// without a dependency on `rand`'s value stability.
pub(crate) fn uniform(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}
