//! The ragjet side of `benches/compare_quantized.py`: reads the data set
//! the script wrote (`base.f32`, `queries.f32`, `gt.i32` as for
//! `compare_search`), builds a `FlatIndex` per storage kind and prints one
//! JSON line per kind: bytes per vector (scanned codes, and the f32 rows
//! kept for the rescore), recall@10, batch queries/s (best of 3) and
//! single-query queries/s (200 queries one at a time).
//!
//! ```text
//! cargo run --release -p ragjet-retrieval --example quantized_search -- \
//!     DIR DIM INT8_DEPTH BINARY_DEPTH
//! ```
//! Depths are rescored rows per requested result (0: the defaults).

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use ragjet_retrieval::{Entry, FlatConfig, FlatIndex, Metric, Storage, VectorIndex};

fn read_le<T>(path: &Path, f: fn([u8; 4]) -> T) -> Vec<T> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    b.chunks_exact(4)
        .map(|c| f([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: quantized_search DIR DIM INT8_DEPTH BINARY_DEPTH");
        std::process::exit(2);
    }
    let dir = Path::new(&args[1]);
    let dim: usize = args[2].parse().expect("DIM");
    let depth8: usize = args[3].parse().expect("INT8_DEPTH");
    let depthb: usize = args[4].parse().expect("BINARY_DEPTH");
    let base = read_le(&dir.join("base.f32"), f32::from_le_bytes);
    let queries: Vec<Vec<f32>> = read_le(&dir.join("queries.f32"), f32::from_le_bytes)
        .chunks_exact(dim)
        .map(<[f32]>::to_vec)
        .collect();
    let gt = read_le(&dir.join("gt.i32"), i32::from_le_bytes);
    let n = base.len() / dim;
    for (storage, depth) in [
        (Storage::F32, 0),
        (Storage::F16, 0),
        (Storage::Int8, depth8),
        (Storage::Binary, depthb),
    ] {
        let cfg = FlatConfig::new(dim, Metric::Dot)
            .with_storage(storage)
            .with_rescore(depth);
        let mut idx = FlatIndex::new(cfg).expect("config");
        let t = Instant::now();
        idx.upsert(
            base.chunks_exact(dim)
                .enumerate()
                .map(|(i, v)| Entry::new(i.to_string(), v.to_vec()))
                .collect(),
        )
        .expect("upsert");
        let build = t.elapsed().as_secs_f64();
        let mut best = f64::INFINITY;
        let mut hits = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            hits = idx.search_batch(&queries, 10, None).expect("search");
            best = best.min(t.elapsed().as_secs_f64());
        }
        // Single queries, one at a time (rayon across rows inside each).
        let single = queries.len().min(200);
        let t = Instant::now();
        for q in &queries[..single] {
            std::hint::black_box(idx.search(q, 10, None).expect("search"));
        }
        let qps_single = single as f64 / t.elapsed().as_secs_f64();
        let mut found = 0usize;
        for (i, h) in hits.iter().enumerate() {
            let truth: HashSet<String> = gt[i * 10..(i + 1) * 10]
                .iter()
                .map(|x| x.to_string())
                .collect();
            found += h.iter().filter(|x| truth.contains(&x.id)).count();
        }
        let (scanned, rescore) = idx.vector_bytes();
        println!(
            "{{\"storage\":\"{storage:?}\",\"depth\":{},\"build_s\":{build:.3},\
             \"scan_bytes\":{:.1},\"rescore_bytes\":{:.1},\"recall\":{:.4},\"qps\":{:.1},\"qps_single\":{qps_single:.1}}}",
            if depth == 0 {
                storage.default_rescore()
            } else {
                depth
            },
            scanned as f64 / n as f64,
            rescore as f64 / n as f64,
            found as f64 / (10 * queries.len()) as f64,
            queries.len() as f64 / best,
        );
    }
}
