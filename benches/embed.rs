//! Criterion bench of embedding throughput and single-text latency with the
//! real all-MiniLM-L6-v2 model on the first passages of the fixture corpus.
//!
//! `cargo bench -p ragjet --bench embed` (needs the model, see
//! `ragjet::inference::locate_default_model`, and the fixture corpus of `fixtures.rs`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod fixtures;
use fixtures::{corpus, embedder};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let embedder = embedder();
    let texts = corpus(128);
    let mut group = c.benchmark_group("embed");
    group.sample_size(10);
    group.throughput(Throughput::Elements(texts.len() as u64));
    group.bench_function("corpus_128_passages", |b| {
        b.iter(|| embedder.embed(&texts).unwrap())
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_short_query", |b| {
        b.iter(|| embedder.embed_one("how do I reverse a list").unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
