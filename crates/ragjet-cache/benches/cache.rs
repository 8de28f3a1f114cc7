//! Criterion benches: L1 hit, L2 hit, EmbeddingCache batch with 90 % hits,
//! semantic lookup at 10k (exact scan) and 100k (HNSW) entries, p50/p99
//! and near-duplicate recall printed separately.
//!
//! Run: `cargo bench -p ragjet-cache --bench cache`
//!
//! The semantic cache holds query embeddings, which cluster by topic: its
//! entries are drawn around 4,000 topic centres (the MiniLM embeddings of
//! `../shared/fixtures` when present, else random unit vectors), 25 per
//! topic on average, as in `benches/compare_search.py`.
//! `RAGJET_BENCH_UNIFORM=1` draws them uniformly at random instead: no
//! structure for a graph to follow, the worst case for HNSW (and not what
//! a cache of real queries looks like).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ragjet_cache::*;
use rand::{Rng, SeedableRng};

const DIM: usize = 384;

fn vector(r: &mut impl Rng) -> Vec<f32> {
    (0..DIM).map(|_| r.random::<f32>() - 0.5).collect()
}

/// Where semantic-cache entries come from (see the module docs).
struct Topics {
    centres: Vec<Vec<f32>>,
}

impl Topics {
    fn new(r: &mut impl Rng) -> Self {
        if std::env::var_os("RAGJET_BENCH_UNIFORM").is_some() {
            return Topics {
                centres: Vec::new(),
            };
        }
        // The 4,000 reference embeddings beside the repository when present,
        // else the 300 the repository carries.
        let shared = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/minilm_reference.npy"
        );
        let bundled = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/minilm_reference.npy"
        );
        let centres = read_npy_f32(shared)
            .or_else(|| {
                eprintln!("{shared} not found: topic centres from {bundled}");
                read_npy_f32(bundled)
            })
            .unwrap_or_else(|| {
                eprintln!("no reference embeddings found: random topic centres");
                (0..4000)
                    .map(|_| unit((0..DIM).map(|_| normal(r)).collect()))
                    .collect()
            });
        Topics { centres }
    }

    fn draw(&self, r: &mut impl Rng) -> Vec<f32> {
        if self.centres.is_empty() {
            return vector(r);
        }
        let c = &self.centres[r.random_range(0..self.centres.len())];
        let spread = 0.6 / (DIM as f32).sqrt();
        unit(c.iter().map(|x| x + spread * normal(r)).collect())
    }
}

fn normal(r: &mut impl Rng) -> f32 {
    let (u, v): (f32, f32) = (r.random::<f32>().max(1e-12), r.random());
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Rows of a little-endian float32 `.npy` matrix of width `DIM`.
fn read_npy_f32(path: &str) -> Option<Vec<Vec<f32>>> {
    let b = std::fs::read(path).ok()?;
    let header_len = u16::from_le_bytes([*b.get(8)?, *b.get(9)?]) as usize;
    let header = std::str::from_utf8(b.get(10..10 + header_len)?).ok()?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return None;
    }
    let data: Vec<f32> = b[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (data.len().is_multiple_of(DIM) && !data.is_empty())
        .then(|| data.chunks_exact(DIM).map(<[f32]>::to_vec).collect())
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

/// A cache holding `n` entries in one scope (default config, so
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
    let topics = Topics::new(&mut r);
    let mut stored = Vec::new();
    let t0 = Instant::now();
    for chunk in 0..n.div_ceil(10_000) {
        let lo = chunk * 10_000;
        let hi = (lo + 10_000).min(n);
        let items: Vec<(Vec<f32>, u64)> =
            (lo..hi).map(|i| (topics.draw(&mut r), i as u64)).collect();
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
            queries.push((topics.draw(&mut r), None));
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
