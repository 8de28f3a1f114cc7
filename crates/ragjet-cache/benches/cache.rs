//! Criterion benches: L1 hit, L2 hit, EmbeddingCache batch with 90 % hits,
//! semantic lookup at 10k (exact scan) and 100k (HNSW) entries, p50/p99
//! and near-duplicate recall printed separately.
//!
//! Run: `cargo bench -p ragjet-cache --bench cache`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ragjet_cache::*;
use rand::{Rng, SeedableRng};

const DIM: usize = 384;

fn vector(r: &mut impl Rng) -> Vec<f32> {
    (0..DIM).map(|_| r.random::<f32>() - 0.5).collect()
}

fn bench_tiers(c: &mut Criterion) {
    let s = Scope::tenant("bench");
    let l1 = TieredCache::builder()
        .memory(MemoryConfig::default())
        .build()
        .unwrap();
    let mut r = rand::rngs::StdRng::seed_from_u64(1);
    let keys: Vec<CacheKey> = (0..1000).map(|i| s.key("b").u64(i).finish()).collect();
    for k in &keys {
        l1.put(
            k,
            &"a short cached answer of about fifty bytes......".to_string(),
        )
        .unwrap();
    }
    let mut i = 0;
    c.bench_function("l1_hit_string_48B", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(l1.get::<String>(&keys[i]))
        })
    });
    let vkeys: Vec<CacheKey> = (0..1000).map(|i| s.key("v").u64(i).finish()).collect();
    for k in &vkeys {
        l1.put(k, &vector(&mut r)).unwrap();
    }
    c.bench_function("l1_hit_f32x384", |b| {
        b.iter(|| {
            i = (i + 1) % vkeys.len();
            black_box(l1.get::<Vec<f32>>(&vkeys[i]))
        })
    });

    let dir = tempfile::tempdir().unwrap();
    let l2 = TieredCache::builder()
        .disk(DiskConfig::new(dir.path().join("bench.redb")))
        .build()
        .unwrap();
    let items: Vec<(CacheKey, Vec<f32>)> = vkeys.iter().map(|k| (*k, vector(&mut r))).collect();
    l2.put_many(&items).unwrap();
    c.bench_function("l2_hit_f32x384", |b| {
        b.iter(|| {
            i = (i + 1) % vkeys.len();
            black_box(l2.get::<Vec<f32>>(&vkeys[i]))
        })
    });
}

fn bench_embedding_batch(c: &mut Criterion) {
    // 1000 texts, 900 cached: measures the cache's own cost of a batch
    // (lookups + computing 100 misses with a trivial function + storing
    // them). The real-embedder ratio is worked out from embedder throughput.
    let s = Scope::tenant("bench");
    let dir = tempfile::tempdir().unwrap();
    let ec = EmbeddingCache::open(dir.path().join("emb.redb"), "minilm", "r1").unwrap();
    let texts: Vec<String> = (0..1000)
        .map(|i| format!("passage number {i} about caching in retrieval systems"))
        .collect();
    let mut r = rand::rngs::StdRng::seed_from_u64(2);
    for t in &texts[..900] {
        ec.put(&s, t, &vector(&mut r)).unwrap();
    }
    let fresh = vector(&mut r);
    c.bench_function("embedding_batch_1000_90pct_hits", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                ec.cache().clear(TierKind::L2).unwrap();
                let items: Vec<(CacheKey, Vec<f32>)> = texts[..900]
                    .iter()
                    .map(|t| (ec.key(&s, t), fresh.clone()))
                    .collect();
                ec.cache().put_many(&items).unwrap();
                let t0 = Instant::now();
                let out = ec
                    .get_or_compute_many::<_, CacheError, _>(&s, &texts, |batch| {
                        Ok(batch.iter().map(|_| fresh.clone()).collect())
                    })
                    .unwrap();
                total += t0.elapsed();
                black_box(out);
            }
            total
        })
    });
}

/// A cache holding `n` random entries in one scope (default config, so
/// 10k is searched exactly and 100k through HNSW), the vectors of 100 of
/// them, and queries: each of the 100 slightly perturbed (should hit) and
/// 50 random ones (should miss).
/// Query vectors with the value each should find (`None`: should miss).
type Queries = Vec<(Vec<f32>, Option<u64>)>;

fn semantic(n: usize) -> (SemanticCache<u64>, Queries) {
    let mut cfg = SemanticConfig::new(DIM);
    cfg.max_entries_per_scope = n;
    cfg.ttl = None;
    let sc = SemanticCache::new(cfg).unwrap();
    let s = Scope::tenant("bench");
    let mut r = rand::rngs::StdRng::seed_from_u64(3);
    let mut stored = Vec::new();
    let t0 = Instant::now();
    for chunk in 0..n.div_ceil(10_000) {
        let lo = chunk * 10_000;
        let hi = (lo + 10_000).min(n);
        let items: Vec<(Vec<f32>, u64)> = (lo..hi).map(|i| (vector(&mut r), i as u64)).collect();
        for (v, i) in &items {
            if (*i as usize).is_multiple_of(n / 100) {
                stored.push((v.clone(), *i));
            }
        }
        sc.insert_many(&s, items).unwrap();
    }
    eprintln!(
        "semantic_{n}: filled in {:?}, {:?}",
        t0.elapsed(),
        sc.stats()
    );
    let mut queries = Vec::new();
    for (j, (v, i)) in stored.iter().enumerate() {
        let q: Vec<f32> = v
            .iter()
            .map(|x| x + (r.random::<f32>() - 0.5) * 0.01)
            .collect();
        queries.push((q, Some(*i)));
        if j % 2 == 0 {
            queries.push((vector(&mut r), None));
        }
    }
    (sc, queries)
}

fn percentiles(name: &str, sc: &SemanticCache<u64>, queries: &Queries) {
    let s = Scope::tenant("bench");
    let mut lat = Vec::new();
    let (mut expected, mut found) = (0, 0);
    for round in 0..10 {
        for (q, want) in queries {
            let t0 = Instant::now();
            let got = black_box(sc.lookup(&s, q).unwrap());
            if round > 0 {
                lat.push(t0.elapsed());
            } else if want.is_some() {
                expected += 1;
                found += usize::from(got.map(|h| h.value) == *want);
            }
        }
    }
    lat.sort();
    let p = |f: f64| lat[((lat.len() as f64 * f) as usize).min(lat.len() - 1)];
    eprintln!(
        "{name}: {} lookups, p50 {:?}, p99 {:?}, max {:?}; near-duplicate queries answered with their entry: {found}/{expected}",
        lat.len(),
        p(0.50),
        p(0.99),
        lat[lat.len() - 1],
    );
}

fn bench_semantic(c: &mut Criterion) {
    for n in [10_000usize, 100_000] {
        let (sc, queries) = semantic(n);
        percentiles(&format!("semantic_lookup_{n}"), &sc, &queries);
        let s = Scope::tenant("bench");
        let mut i = 0;
        c.bench_function(&format!("semantic_lookup_{n}"), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                black_box(sc.lookup(&s, &queries[i].0).unwrap())
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = bench_tiers, bench_embedding_batch, bench_semantic
}
criterion_main!(benches);
