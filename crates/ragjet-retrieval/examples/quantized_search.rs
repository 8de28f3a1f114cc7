//! The ragjet side of `benches/compare_quantized.py`: reads the data set
//! the script wrote (`base.f32`, `queries.f32`, `gt.i32` as for
//! `compare_search`), builds a `FlatIndex` per storage kind and prints one
//! JSON line per kind: bytes per vector (scanned codes, and the f32 rows
//! kept for the rescore), recall@10, batch queries/s (best of 3) and
//! single-query queries/s (200 queries one at a time, best of 3), and resident
//! memory per vector: the growth of `VmRSS` over the build (from before the
//! entries exist, so ids and records count) and of `RssAnon` (private
//! memory, not page cache) after the queries. Int8 and binary keep their
//! full rows in a mapped file in `DIR` (`FlatConfig::with_rows_dir`; the
//! file is unlinked, nothing is left behind).
//!
//! ```text
//! cargo run --release -p ragjet-retrieval --example quantized_search -- \
//!     DIR DIM INT8_DEPTH BINARY_DEPTH [STORAGES]
//! ```
//! Depths are rescored rows per requested result (0: the defaults);
//! `STORAGES` (comma-separated, e.g. `binary`) limits the run to those
//! kinds, for profiling one of them. `hnsw_f32`, `hnsw_int8` and
//! `hnsw_binary` (only when named in `STORAGES`: the builds take minutes)
//! measure an `HnswIndex` (cosine, M 16, ef_construction 200, ef_search
//! 64; the data are unit vectors, so the ranking is the inner product's)
//! the same way; its batch figure is queries answered one after another
//! (HNSW has no batched path), and its resident memory includes the graph.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use ragjet_retrieval::{
    Entry, FlatConfig, FlatIndex, HnswConfig, HnswIndex, Metric, Storage, VectorIndex,
};

fn read_le<T>(path: &Path, f: fn([u8; 4]) -> T) -> Vec<T> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    b.chunks_exact(4)
        .map(|c| f([c[0], c[1], c[2], c[3]]))
        .collect()
}

// An application embedding ragjet sets a fast allocator, as
// `compare_search` does. It matters for resident memory too: with glibc's
// malloc the freed input vectors leave 1.5 KB holes between the live id
// strings allocated next to them, which no trim can return, and the
// measured growth would carry a second copy of the rows.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's collection of unused memory (`force`: purge it to the OS).
    fn mi_collect(force: bool);
}

/// A `/proc/self/status` field in bytes (Linux), after handing freed
/// memory back, so one index's freed memory does not hide the next one's
/// growth.
fn status_bytes(field: &str) -> u64 {
    // SAFETY: mimalloc's own function, linked in by the global allocator
    // above; it only frees and purges unused memory.
    unsafe { mi_collect(true) };
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(5..=6).contains(&args.len()) {
        eprintln!("usage: quantized_search DIR DIM INT8_DEPTH BINARY_DEPTH [STORAGES]");
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
    let only: Option<Vec<String>> = args
        .get(5)
        .map(|s| s.split(',').map(str::to_lowercase).collect());
    let kinds = [
        (false, Storage::F32, 0),
        (false, Storage::F16, 0),
        (false, Storage::Int8, depth8),
        (false, Storage::Binary, depthb),
        (true, Storage::F32, 0),
        (true, Storage::Int8, depth8),
        (true, Storage::Binary, depthb),
    ];
    for (hnsw, storage, depth) in kinds {
        let mut name = format!("{storage:?}").to_lowercase();
        if hnsw {
            name = format!("hnsw_{name}");
            if !only.as_ref().is_some_and(|o| o.contains(&name)) {
                continue;
            }
        }
        if only.as_ref().is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        let quantized = matches!(storage, Storage::Int8 | Storage::Binary);
        let (rss0, anon0) = (status_bytes("VmRSS:"), status_bytes("RssAnon:"));
        let mut idx: Box<dyn Measured> = if hnsw {
            let mut cfg = HnswConfig::new(dim, Metric::Cosine)
                .with_storage(storage)
                .with_rescore(depth);
            cfg.capacity_hint = n;
            if quantized {
                cfg = cfg.with_rows_dir(dir);
            }
            Box::new(HnswIndex::new(cfg).expect("config"))
        } else {
            let mut cfg = FlatConfig::new(dim, Metric::Dot)
                .with_storage(storage)
                .with_rescore(depth);
            if quantized {
                cfg = cfg.with_rows_dir(dir);
            }
            Box::new(FlatIndex::new(cfg).expect("config"))
        };
        let t = Instant::now();
        idx.upsert(
            base.chunks_exact(dim)
                .enumerate()
                .map(|(i, v)| Entry::new(i.to_string(), v.to_vec()))
                .collect(),
        )
        .expect("upsert");
        let build = t.elapsed().as_secs_f64();
        let rss = status_bytes("VmRSS:").saturating_sub(rss0) as f64 / n as f64;
        let mut best = f64::INFINITY;
        let mut hits = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            hits = idx.search_batch(&queries, 10, None).expect("search");
            best = best.min(t.elapsed().as_secs_f64());
        }
        // Single queries, one at a time (rayon across rows inside each),
        // best of 3 rounds as the batch: on a shared machine one round
        // can land on a burst of other work.
        let single = queries.len().min(200);
        let mut best_single = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            for q in &queries[..single] {
                std::hint::black_box(idx.search(q, 10, None).expect("search"));
            }
            best_single = best_single.min(t.elapsed().as_secs_f64());
        }
        let qps_single = single as f64 / best_single;
        let kind = storage;
        let mut found = 0usize;
        for (i, h) in hits.iter().enumerate() {
            let truth: HashSet<String> = gt[i * 10..(i + 1) * 10]
                .iter()
                .map(|x| x.to_string())
                .collect();
            found += h.iter().filter(|x| truth.contains(&x.id)).count();
        }
        let anon = status_bytes("RssAnon:").saturating_sub(anon0) as f64 / n as f64;
        let (scanned, rescore) = idx.vector_bytes();
        let storage = if hnsw {
            format!("Hnsw{storage:?}")
        } else {
            format!("{storage:?}")
        };
        println!(
            "{{\"storage\":\"{storage}\",\"depth\":{},\"build_s\":{build:.3},\
             \"scan_bytes\":{:.1},\"rescore_bytes\":{:.1},\"recall\":{:.4},\"qps\":{:.1},\"qps_single\":{qps_single:.1},\"rss_bytes\":{rss:.1},\"anon_bytes\":{anon:.1}}}",
            if depth == 0 {
                kind.default_rescore()
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

/// The two index types measured, behind one interface.
trait Measured: VectorIndex {
    fn vector_bytes(&self) -> (usize, usize);
}

impl Measured for FlatIndex {
    fn vector_bytes(&self) -> (usize, usize) {
        FlatIndex::vector_bytes(self)
    }
}

impl Measured for HnswIndex {
    fn vector_bytes(&self) -> (usize, usize) {
        HnswIndex::vector_bytes(self)
    }
}
