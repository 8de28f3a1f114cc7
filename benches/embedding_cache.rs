//! Criterion bench of `EmbeddingCache::get_or_compute_many` with the real
//! all-MiniLM-L6-v2 embedder: a batch of fixture passages of which 90 % are
//! already cached, against embedding the whole batch again.
//!
//! `cargo bench -p ragjet --bench embedding_cache` (needs the model, see
//! `ragjet::inference::locate_default_model`, and the fixture corpus of `fixtures.rs`).
//! The batch is 1000 passages; `RAGJET_BENCH_BATCH=N` shrinks it (the
//! embedder does ~30–40 passages/s on 2 cores, and criterion takes at least
//! 11 runs of each function, so a full run takes several minutes).
//!
//! Cached values are written before each timed run, so every run sees the
//! same 90 % hits and 10 % misses; the misses are embedded for real and
//! stored, exactly as in production.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use ragjet::cache::{CacheKey, EmbeddingCache, Scope, TierKind};
use ragjet::inference::Embedder;

mod fixtures;
use fixtures::{corpus, embedder};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BenchError = Box<dyn std::error::Error + Send + Sync>;

fn embed_all(embedder: &Embedder, texts: &[&str]) -> Result<Vec<Vec<f32>>, BenchError> {
    let e = embedder.embed(texts)?;
    Ok(e.iter().map(<[f32]>::to_vec).collect())
}

fn bench(c: &mut Criterion) {
    let batch: usize = std::env::var("RAGJET_BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let embedder = embedder();
    let texts = corpus(batch);
    assert_eq!(texts.len(), batch, "the fixture corpus is too short");
    let hits = batch * 9 / 10;
    let scope = Scope::tenant("bench");
    let dir = tempfile::tempdir().unwrap();
    let cache = EmbeddingCache::open(
        dir.path().join("embeddings.redb"),
        "all-MiniLM-L6-v2",
        "bench",
    )
    .unwrap();
    // Cached values are real embeddings of the first passages, reused: a
    // hit costs the same whatever vector it returns, and embedding all 900
    // once would add half a minute to the run.
    let sample = embed_all(
        &embedder,
        &texts[..32.min(hits)]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .expect("embedding works");
    let cached: Vec<(CacheKey, Vec<f32>)> = texts[..hits]
        .iter()
        .enumerate()
        .map(|(i, t)| (cache.key(&scope, t), sample[i % sample.len()].clone()))
        .collect();

    let mut group = c.benchmark_group(format!("embedding_cache_{batch}"));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(1));
    group.bench_function("get_or_compute_many_90pct_hits", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                cache.cache().clear(TierKind::L2).unwrap();
                cache.cache().put_many(&cached).unwrap();
                let t0 = Instant::now();
                let out = cache
                    .get_or_compute_many(&scope, &texts, |miss| embed_all(&embedder, miss))
                    .unwrap();
                total += t0.elapsed();
                assert_eq!(out.len(), batch);
            }
            total
        })
    });
    group.bench_function("recompute_all", |b| {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        b.iter(|| embed_all(&embedder, &refs).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
