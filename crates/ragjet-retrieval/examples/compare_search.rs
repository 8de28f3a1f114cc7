//! The ragjet side of `benches/compare_search.py`: reads the data set the
//! script wrote, builds a `FlatIndex` and an `HnswIndex`, and prints one
//! JSON object with build time, recall@10 and queries/s.
//!
//! ```text
//! cargo run --release -p ragjet-retrieval --example compare_search -- \
//!     DIR DIM M EF_CONSTRUCTION EF1,EF2,...
//! ```
//! `DIR` holds `base.f32`, `queries.f32` (raw little-endian f32, row-major)
//! and `gt.i32` (10 exact neighbour rows per query). With
//! `RAGJET_BENCH_MEMORY=1` it only measures the HNSW index's resident
//! memory per vector, with and without the one metadata key per entry
//! (`=meta` or `=plain`: only that one, the clean figure of a fresh
//! process).

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use ragjet_retrieval::{
    Entry, FilterOperator, FlatConfig, FlatIndex, Hit, HnswConfig, HnswIndex, MetadataFilter,
    MetadataFilters, Metric, VectorIndex,
};

// An application embedding ragjet sets a fast allocator (records and
// metadata are many small allocations), so the bench does too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn read_f32(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn read_i32(path: &Path) -> Vec<i32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

extern "C" {
    /// mimalloc's collection of unused memory (`force`: purge it to the OS).
    fn mi_collect(force: bool);
}

/// mimalloc's collection on every rayon worker and the calling thread:
/// `mi_collect` purges only the caller's heap, and the pages a worker
/// freed during a build stay in its heap until it runs it. The first call
/// starts the pool, which then exists before any measurement, as a
/// serving process's does. (Pages mimalloc keeps for its purge delay are
/// not returned by a collection: `MIMALLOC_PURGE_DELAY=0` returns them at
/// once, ~70 B per vector of freed input at 100k × 384.)
fn collect_all() {
    // SAFETY: `mi_collect` is mimalloc's own, linked in by the global
    // allocator above; it only frees and purges unused memory.
    rayon::broadcast(|_| unsafe { mi_collect(true) });
    // SAFETY: as above.
    unsafe { mi_collect(true) };
}

/// Resident set size (Linux), to compare index memory with the peers'.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The ids of a search's hits, best first.
fn ids(hits: Vec<Hit>) -> Vec<String> {
    hits.into_iter().map(|h| h.id).collect()
}

fn recall(hits: &[Vec<String>], gt: &[i32]) -> f64 {
    let mut found = 0;
    for (i, h) in hits.iter().enumerate() {
        let truth: HashSet<String> = gt[i * 10..(i + 1) * 10]
            .iter()
            .map(|x| x.to_string())
            .collect();
        found += h.iter().filter(|id| truth.contains(*id)).count();
    }
    found as f64 / (hits.len() * 10) as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: compare_search DIR DIM M EF_CONSTRUCTION EF1,EF2,...");
        std::process::exit(2);
    }
    let dir = Path::new(&args[1]);
    let dim: usize = args[2].parse().expect("DIM");
    let m: usize = args[3].parse().expect("M");
    let efc: usize = args[4].parse().expect("EF_CONSTRUCTION");
    let efs: Vec<usize> = args[5].split(',').map(|s| s.parse().expect("EF")).collect();
    let base = read_f32(&dir.join("base.f32"));
    let queries = read_f32(&dir.join("queries.f32"));
    let gt = read_i32(&dir.join("gt.i32"));
    let n = base.len() / dim;
    let nq = queries.len() / dim;
    let qs: Vec<Vec<f32>> = queries.chunks_exact(dim).map(|q| q.to_vec()).collect();
    let entries_with = |meta: bool| -> Vec<Entry> {
        base.chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| {
                let e = Entry::new(i.to_string(), v.to_vec());
                if meta {
                    e.with_meta("bucket", (i % 10) as i64)
                } else {
                    e
                }
            })
            .collect()
    };
    let entries = || entries_with(true);
    let hnsw_cfg = || {
        let mut cfg = HnswConfig::new(dim, Metric::Cosine);
        cfg.m = m;
        cfg.ef_construction = efc;
        cfg.capacity_hint = n;
        cfg
    };

    // RAGJET_BENCH_MEMORY=1: only the HNSW index's resident memory per
    // vector, with the benchmark's one metadata key per entry and without
    // metadata (the peers store none), then exit.
    if let Some(which) = std::env::var_os("RAGJET_BENCH_MEMORY") {
        // `meta` / `plain`: one build per process, so what the allocator
        // kept of the first build cannot lower the second's figure.
        let shapes: &[bool] = match which.to_str() {
            Some("meta") => &[true],
            Some("plain") => &[false],
            _ => &[true, false],
        };
        let mut per = Vec::new();
        for &meta in shapes {
            collect_all();
            let rss0 = rss_bytes();
            let mut h = HnswIndex::new(hnsw_cfg()).expect("hnsw");
            h.upsert(entries_with(meta)).expect("hnsw upsert");
            collect_all();
            per.push(rss_bytes().saturating_sub(rss0) as f64 / n as f64);
            drop(h);
        }
        let field = |meta: bool| {
            let name = if meta {
                "hnsw_rss_per_vector"
            } else {
                "hnsw_rss_per_vector_no_metadata"
            };
            let at = shapes.iter().position(|&m| m == meta)?;
            Some(format!("\"{name}\": {:.1}", per[at]))
        };
        let fields: Vec<String> = [true, false].into_iter().filter_map(field).collect();
        println!("{{\"n\": {n}, \"dim\": {dim}, {}}}", fields.join(", "));
        return;
    }

    // Exact search (vectors are unit length; dot = cosine).
    let t = Instant::now();
    let mut flat = FlatIndex::new(FlatConfig::new(dim, Metric::Dot)).expect("flat");
    flat.upsert(entries()).expect("flat upsert");
    let flat_build = t.elapsed().as_secs_f64();
    let single_n = nq.min(200);
    let t = Instant::now();
    let mut flat_hits = Vec::new();
    for q in &qs[..single_n] {
        flat_hits.push(flat.search(q, 10, None).map(ids).expect("search"));
    }
    let flat_single_s = t.elapsed().as_secs_f64();
    let batch_n = nq.min(1000);
    // Best of 3 calls, as the script does for faiss.
    let mut flat_batch_s = f64::INFINITY;
    let mut batch = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        batch = flat.search_batch(&qs[..batch_n], 10, None).expect("batch");
        flat_batch_s = flat_batch_s.min(t.elapsed().as_secs_f64());
    }
    let batch_ids: Vec<Vec<String>> = batch
        .into_iter()
        .map(|h| h.into_iter().map(|h| h.id).collect())
        .collect();

    // Exact search on f16 storage (half the bytes per scan).
    let mut flat16 = FlatIndex::new(
        FlatConfig::new(dim, Metric::Dot).with_storage(ragjet_retrieval::Storage::F16),
    )
    .expect("flat16");
    flat16.upsert(entries()).expect("flat16 upsert");
    let t = Instant::now();
    let mut flat16_hits = Vec::new();
    for q in &qs[..single_n] {
        flat16_hits.push(flat16.search(q, 10, None).map(ids).expect("search"));
    }
    let flat16_single_s = t.elapsed().as_secs_f64();
    drop(flat16);

    // HNSW.
    let cfg = hnsw_cfg();
    // Measured from before the entries exist: the index's memory per
    // vector includes the vectors (as the peers' figures do), the records
    // and their metadata.
    // mimalloc keeps the pages of the flat indexes dropped above: hand
    // them back first, or the build reuses them and its growth reads 0.
    collect_all();
    let rss0 = rss_bytes();
    let hnsw_entries = entries();
    let t = Instant::now();
    // A developer iterating on search sets RAGJET_BENCH_HNSW_CACHE=DIR: the
    // first run saves the graph there, later runs load it instead of
    // spending a minute rebuilding it (build time is then printed as 0).
    let cache = std::env::var_os("RAGJET_BENCH_HNSW_CACHE").map(std::path::PathBuf::from);
    let (hnsw, hnsw_build) = match &cache {
        Some(dir) if dir.exists() => (HnswIndex::load(dir).expect("load cached index"), 0.0),
        _ => {
            let mut h = HnswIndex::new(cfg).expect("hnsw");
            h.upsert(hnsw_entries).expect("hnsw upsert");
            let build = t.elapsed().as_secs_f64();
            if let Some(dir) = &cache {
                h.save(dir).expect("save cached index");
            }
            (h, build)
        }
    };
    // The same after the build: what stays resident, not the freed input.
    collect_all();
    let hnsw_rss_per_vector = (rss_bytes().saturating_sub(rss0)) as f64 / n as f64;
    let mut per_ef = Vec::new();
    for &ef in &efs {
        let t = Instant::now();
        let hits: Vec<Vec<String>> = qs
            .iter()
            .map(|q| {
                hnsw.search_with_ef(q, 10, ef, None)
                    .map(ids)
                    .expect("search")
            })
            .collect();
        let s = t.elapsed().as_secs_f64();
        per_ef.push(format!(
            "{{\"ef\": {ef}, \"recall\": {:.4}, \"qps\": {:.1}}}",
            recall(&hits, &gt),
            nq as f64 / s
        ));
    }
    // Filtered search: `bucket == 3` passes 10 % of the points; ground
    // truth is the exact filtered top-10 from the flat index.
    let filter = MetadataFilters::new(
        vec![MetadataFilter::new("bucket", FilterOperator::Eq, 3i64)],
        Default::default(),
    );
    let fq = &qs[..nq.min(200)];
    let ftruth: Vec<Vec<String>> = fq
        .iter()
        .map(|q| flat.search(q, 10, Some(&filter)).map(ids).expect("search"))
        .collect();
    let mut per_ef_filtered = Vec::new();
    for &ef in &efs {
        let t = Instant::now();
        let hits: Vec<Vec<String>> = fq
            .iter()
            .map(|q| {
                hnsw.search_with_ef(q, 10, ef, Some(&filter))
                    .map(ids)
                    .expect("search")
            })
            .collect();
        let s = t.elapsed().as_secs_f64();
        let found: usize = hits
            .iter()
            .zip(&ftruth)
            .map(|(h, t)| h.iter().filter(|id| t.contains(id)).count())
            .sum();
        per_ef_filtered.push(format!(
            "{{\"ef\": {ef}, \"recall\": {:.4}, \"qps\": {:.1}}}",
            found as f64 / (fq.len() * 10) as f64,
            fq.len() as f64 / s
        ));
    }
    // Save and reload the graph (no rebuild) and check the answers agree.
    let save_dir =
        std::env::temp_dir().join(format!("ragjet_compare_search_{}", std::process::id()));
    let t = Instant::now();
    hnsw.save(&save_dir).expect("save");
    let save_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let back = HnswIndex::load(&save_dir).expect("load");
    let load_s = t.elapsed().as_secs_f64();
    let same = qs.iter().take(100).all(|q| {
        back.search(q, 10, None).expect("search") == hnsw.search(q, 10, None).expect("search")
    });
    let _ = std::fs::remove_dir_all(&save_dir);
    println!(
        "{{\"n\": {n}, \"dim\": {dim}, \"threads\": {}, \"flat_build_s\": {flat_build:.3}, \
         \"flat_single_qps\": {:.1}, \"flat_single_recall\": {:.4}, \"flat_batch_qps\": {:.1}, \
         \"flat_batch_recall\": {:.4}, \"flat16_single_qps\": {:.1}, \"flat16_single_recall\": {:.4}, \"hnsw_build_s\": {hnsw_build:.3}, \"hnsw_rss_per_vector\": {hnsw_rss_per_vector:.1}, \"hnsw_save_s\": {save_s:.3}, \"hnsw_load_s\": {load_s:.3}, \"reload_identical\": {same}, \"hnsw\": [{}], \"hnsw_filtered_10pct\": [{}]}}",
        rayon::current_num_threads(),
        single_n as f64 / flat_single_s,
        recall(&flat_hits, &gt),
        batch_n as f64 / flat_batch_s,
        recall(&batch_ids, &gt),
        single_n as f64 / flat16_single_s,
        recall(&flat16_hits, &gt),
        per_ef.join(", "),
        per_ef_filtered.join(", ")
    );
}
