//! Concurrent load against one `Engine`, checked against a sequential model.
//!
//! 8 threads each run a seeded mix of operations on documents of their own
//! (`t{thread}-d{k}`): ingest a new version, re-ingest the current version
//! unchanged (the embedding cache and the unchanged-document skip), delete,
//! a keyword query for a document's current version token (it must be found
//! while the document exists and not after a delete: no stale answer from
//! the retrieval cache), the same query again (a retrieval cache hit) and a
//! vector query with a filter. Each thread applies the same operations to a
//! plain map, in order; since the threads' documents are disjoint, the
//! engine's final documents must equal the union of the maps whatever the
//! interleaving, and every document's last version must be the one found.
//!
//! `RAGJET_LOAD_OPS` sets the operations per thread (default 1000, what CI
//! runs); the figure in `docs/reliability.md` is
//!
//! ```text
//! RAGJET_LOAD_OPS=10000 cargo test -p ragjet --test load -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::Instant;

use ragjet::retrieval::{FilterCondition, FilterOperator, MetadataFilter};
use ragjet::{
    CacheOutcome, Document, Engine, MetadataFilters, QueryOptions, SearchMode, DEFAULT_NAMESPACE,
};

const THREADS: usize = 8;
/// Documents per thread.
const DOCS: u64 = 24;

fn tiny_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ragjet-inference/tests/fixtures/tiny-cross-encoder")
}

fn ops_per_thread() -> usize {
    std::env::var("RAGJET_LOAD_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// The token that names version `v` of document `id` (alphanumeric, so
/// BM25 keeps it whole).
fn token(id: &str, v: u64) -> String {
    format!("zz{}v{v}", id.replace('-', "x"))
}

fn text(id: &str, v: u64) -> String {
    format!(
        "shared words about caches and {} in this passage",
        token(id, v)
    )
}

fn doc(id: &str, v: u64, thread: usize) -> Document {
    Document::new(id, text(id, v)).with_meta("thread", thread as i64)
}

/// xorshift64*, seeded per thread: the mix is reproducible.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[derive(Default)]
struct Counts {
    ingest: AtomicU64,
    reingest: AtomicU64,
    delete: AtomicU64,
    query: AtomicU64,
    cache_hits: AtomicU64,
}

fn keyword() -> QueryOptions {
    QueryOptions::new().top_k(5).mode(SearchMode::Keyword)
}

/// One thread's operations; returns its model (id → current version).
fn run_thread(engine: &Engine, t: usize, ops: usize, counts: &Counts) -> BTreeMap<String, u64> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) * 0x1000_0001));
    let mut model: BTreeMap<String, u64> = BTreeMap::new();
    let mut next_version = 0u64;
    let mine = MetadataFilters::new(
        vec![MetadataFilter::new("thread", FilterOperator::Eq, t as i64)],
        FilterCondition::And,
    );
    for op in 0..ops {
        let id = format!("t{t}-d{}", rng.below(DOCS));
        match rng.below(10) {
            0 | 1 => {
                next_version += 1;
                let r = engine.ingest(vec![doc(&id, next_version, t)]).unwrap();
                assert_eq!(r.ingested, vec![id.clone()], "op {op}: {:?}", r.failed);
                model.insert(id, next_version);
                counts.ingest.fetch_add(1, Ordering::Relaxed);
            }
            2 => {
                if let Some(&v) = model.get(&id) {
                    let r = engine.ingest(vec![doc(&id, v, t)]).unwrap();
                    assert_eq!(r.unchanged, 1, "op {op}: {id} v{v} is unchanged");
                    counts.reingest.fetch_add(1, Ordering::Relaxed);
                }
            }
            3 => {
                let existed = engine.delete(&id).unwrap();
                assert_eq!(existed, model.remove(&id).is_some(), "op {op}: delete {id}");
                counts.delete.fetch_add(1, Ordering::Relaxed);
            }
            4..=6 => {
                // Read your own writes through every cache, twice.
                let Some(&v) = model.get(&id) else { continue };
                for _ in 0..2 {
                    let a = engine.query(&token(&id, v), &keyword()).unwrap();
                    assert!(
                        a.hits.iter().any(|h| h.doc_id == id),
                        "op {op}: {id} v{v} not found by its token ({:?})",
                        a.hits.iter().map(|h| &h.doc_id).collect::<Vec<_>>()
                    );
                    if a.cache == CacheOutcome::RetrievalHit {
                        counts.cache_hits.fetch_add(1, Ordering::Relaxed);
                    }
                    counts.query.fetch_add(1, Ordering::Relaxed);
                }
                // An older version's token finds nothing of this document.
                if v > 1 {
                    let a = engine.query(&token(&id, v - 1), &keyword()).unwrap();
                    assert!(
                        !a.hits
                            .iter()
                            .any(|h| h.doc_id == id && h.text.contains(&token(&id, v - 1))),
                        "op {op}: a stale version of {id} was served"
                    );
                    counts.query.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                let a = engine
                    .query(
                        "shared words about caches",
                        &QueryOptions::new().top_k(5).filters(mine.clone()),
                    )
                    .unwrap();
                assert!(
                    a.hits
                        .iter()
                        .all(|h| h.doc_id.starts_with(&format!("t{t}-"))),
                    "op {op}: the filter let another thread's document through"
                );
                if a.cache == CacheOutcome::RetrievalHit {
                    counts.cache_hits.fetch_add(1, Ordering::Relaxed);
                }
                counts.query.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    model
}

#[test]
fn eight_threads_match_the_sequential_model() {
    let ops = ops_per_thread();
    let engine = Engine::builder()
        .model_dir(tiny_model())
        .num_threads(1)
        .chunking(48, 8)
        .build()
        .unwrap();
    let counts = Counts::default();
    let barrier = Barrier::new(THREADS);
    let t0 = Instant::now();
    let models: Vec<BTreeMap<String, u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (engine, counts, barrier) = (&engine, &counts, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    run_thread(engine, t, ops, counts)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = t0.elapsed().as_secs_f64();

    // The final state equals the union of the sequential models.
    let mut want: Vec<String> = models.iter().flat_map(|m| m.keys().cloned()).collect();
    want.sort();
    let mut got = engine.document_ids(DEFAULT_NAMESPACE);
    got.sort();
    assert_eq!(got, want, "documents after the run");
    for model in &models {
        for (id, &v) in model {
            let a = engine.query(&token(id, v), &keyword()).unwrap();
            let hit = a.hits.iter().find(|h| &h.doc_id == id);
            assert!(
                hit.is_some_and(|h| h.text == text(id, v)),
                "{id}: last version v{v} not what the engine holds"
            );
        }
    }
    let total = THREADS * ops;
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "load: {THREADS} threads x {ops} ops = {total} in {secs:.1} s ({:.0} ops/s): \
         {} ingests, {} unchanged re-ingests, {} deletes, {} queries ({} retrieval cache \
         hits); final {} documents = the sequential model",
        total as f64 / secs,
        c(&counts.ingest),
        c(&counts.reingest),
        c(&counts.delete),
        c(&counts.query),
        c(&counts.cache_hits),
        got.len()
    );
    assert!(
        c(&counts.cache_hits) > 0,
        "the mix exercised the retrieval cache"
    );
}
