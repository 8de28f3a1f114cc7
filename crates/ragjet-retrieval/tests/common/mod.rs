#![allow(dead_code)]
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fs;
use std::path::{Path, PathBuf};

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

/// Queries near stored rows (a row plus noise), as retrieval queries are
/// near their answers rather than uniform.
pub fn queries_near(rows: &[Vec<f32>], n: usize, noise: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let r = &rows[rng.random_range(0..rows.len())];
            r.iter().map(|x| x + noise * normal(&mut rng)).collect()
        })
        .collect()
}

/// The current generation directory of `dir`.
pub fn generation(dir: &Path) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with("gen-"))
        .unwrap()
}

/// Writes `bytes` to `file` (inside the current generation of `dir`) and
/// updates the manifest and CURRENT so that every checksum matches again.
pub fn write_with_valid_checksums(dir: &Path, file: &Path, bytes: &[u8]) {
    fs::write(file, bytes).unwrap();
    let gen = generation(dir);
    let rel = file
        .strip_prefix(&gen)
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/");
    let mpath = gen.join("MANIFEST.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&mpath).unwrap()).unwrap();
    for f in manifest["files"].as_array_mut().unwrap() {
        if f["name"] == rel.as_str() {
            f["len"] = bytes.len().into();
            f["crc32"] = crc32(bytes).into();
        }
    }
    let m = serde_json::to_vec(&manifest).unwrap();
    fs::write(&mpath, &m).unwrap();
    let current = serde_json::json!({
        "generation": gen.file_name().unwrap().to_string_lossy(),
        "manifest_crc32": crc32(&m),
    });
    fs::write(dir.join("CURRENT"), current.to_string()).unwrap();
}

/// Bitwise CRC-32 (IEEE), independent of the crate under test.
pub fn crc32(b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &x in b {
        crc ^= x as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
