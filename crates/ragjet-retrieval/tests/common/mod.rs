#![allow(dead_code)]
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Standard normal sample (Box–Muller), so the tests need no extra crate.
pub fn normal(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// `n` points around `clusters` random centres (fixed seed), each
/// component of the noise with standard deviation `spread`.
pub fn clustered(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| normal(&mut rng)).collect())
        .collect();
    (0..n)
        .map(|_| {
            let c = &centres[rng.random_range(0..clusters)];
            c.iter().map(|x| x + spread * normal(&mut rng)).collect()
        })
        .collect()
}
