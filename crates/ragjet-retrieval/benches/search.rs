//! Criterion benches for the search hot paths (`cargo bench -p ragjet-retrieval`).
//! 20k × 384 random unit vectors, fixed seed.

use criterion::{criterion_group, criterion_main, Criterion};
use ragjet_retrieval::distance;
use ragjet_retrieval::{
    Entry, FlatConfig, FlatIndex, HnswConfig, HnswIndex, Metric, Storage, VectorIndex,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const N: usize = 20_000;
const DIM: usize = 384;

fn data(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut v: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
            distance::normalize(&mut v).expect("non-zero");
            v
        })
        .collect()
}

fn entries(d: &[Vec<f32>]) -> Vec<Entry> {
    d.iter()
        .enumerate()
        .map(|(i, v)| Entry::new(i.to_string(), v.clone()))
        .collect()
}

fn bench(c: &mut Criterion) {
    let base = data(N, 1);
    let queries = data(100, 2);
    let a = &queries[0];
    let b = &base[0];
    c.bench_function("kernel/dot_384", |bn| {
        bn.iter(|| distance::dot(std::hint::black_box(a), std::hint::black_box(b)))
    });
    c.bench_function("kernel/l2_384", |bn| {
        bn.iter(|| distance::l2_squared(std::hint::black_box(a), std::hint::black_box(b)))
    });
    for storage in [Storage::F32, Storage::F16] {
        let mut flat =
            FlatIndex::new(FlatConfig::new(DIM, Metric::Dot).with_storage(storage)).expect("flat");
        flat.upsert(entries(&base)).expect("upsert");
        c.bench_function(&format!("flat_{storage:?}/single_query_20k"), |bn| {
            bn.iter(|| flat.search(&queries[0], 10, None).expect("search"))
        });
        c.bench_function(&format!("flat_{storage:?}/batch_100_queries_20k"), |bn| {
            bn.iter(|| flat.search_batch(&queries, 10, None).expect("search"))
        });
    }
    let mut cfg = HnswConfig::new(DIM, Metric::Cosine);
    cfg.ef_construction = 100;
    cfg.capacity_hint = N;
    let mut hnsw = HnswIndex::new(cfg).expect("hnsw");
    hnsw.upsert(entries(&base)).expect("upsert");
    for ef in [32, 64, 128] {
        c.bench_function(&format!("hnsw/ef{ef}_query_20k"), |bn| {
            let mut i = 0;
            bn.iter(|| {
                i = (i + 1) % queries.len();
                hnsw.search_with_ef(&queries[i], 10, ef, None)
                    .expect("search")
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
