//! The seeded operation mix of the load tests (`tests/load.rs`,
//! `tests/load_outage.rs`), with its sequential model and the final check.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use ragjet::retrieval::{FilterCondition, FilterOperator, MetadataFilter};
use ragjet::{
    CacheOutcome, Document, Engine, MetadataFilters, QueryOptions, SearchMode, DEFAULT_NAMESPACE,
};

pub const THREADS: usize = 8;
/// Documents per thread.
pub const DOCS: u64 = 24;

pub fn tiny_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ragjet-inference/tests/fixtures/tiny-cross-encoder")
}

pub fn ops_per_thread() -> usize {
    std::env::var("RAGJET_LOAD_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// The token that names version `v` of document `id` (alphanumeric, so
/// BM25 keeps it whole).
pub fn token(id: &str, v: u64) -> String {
    format!("zz{}v{v}", id.replace('-', "x"))
}

pub fn text(id: &str, v: u64) -> String {
    format!(
        "shared words about caches and {} in this passage",
        token(id, v)
    )
}

pub fn doc(id: &str, v: u64, thread: usize) -> Document {
    Document::new(id, text(id, v)).with_meta("thread", thread as i64)
}

/// xorshift64*, seeded per thread: the mix is reproducible.
pub struct Rng(u64);
impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[derive(Default)]
pub struct Counts {
    pub ingest: AtomicU64,
    pub reingest: AtomicU64,
    pub delete: AtomicU64,
    pub query: AtomicU64,
    pub cache_hits: AtomicU64,
    /// Operations begun, all threads together.
    pub begun: AtomicU64,
}

pub fn keyword() -> QueryOptions {
    QueryOptions::new().top_k(5).mode(SearchMode::Keyword)
}

/// One thread's operations; returns its model (id → current version).
pub fn run_thread(engine: &Engine, t: usize, ops: usize, counts: &Counts) -> BTreeMap<String, u64> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) * 0x1000_0001));
    let mut model: BTreeMap<String, u64> = BTreeMap::new();
    let mut next_version = 0u64;
    let mine = MetadataFilters::new(
        vec![MetadataFilter::new("thread", FilterOperator::Eq, t as i64)],
        FilterCondition::And,
    );
    for op in 0..ops {
        counts.begun.fetch_add(1, Ordering::Relaxed);
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

/// Runs the mix on `THREADS` threads, `ops` operations each, started
/// together; returns each thread's model and the time taken.
pub fn run(engine: &Engine, ops: usize, counts: &Counts) -> (Vec<BTreeMap<String, u64>>, Duration) {
    let barrier = Barrier::new(THREADS);
    let t0 = Instant::now();
    let models = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    run_thread(engine, t, ops, counts)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (models, t0.elapsed())
}

/// The engine's final documents equal the union of the sequential models
/// (the threads' documents are disjoint, so any interleaving gives that),
/// and each holds its last version. Returns how many documents.
pub fn check_final(engine: &Engine, models: &[BTreeMap<String, u64>]) -> usize {
    let mut want: Vec<String> = models.iter().flat_map(|m| m.keys().cloned()).collect();
    want.sort();
    let mut got = engine.document_ids(DEFAULT_NAMESPACE);
    got.sort();
    assert_eq!(got, want, "documents after the run");
    for model in models {
        for (id, &v) in model {
            let a = engine.query(&token(id, v), &keyword()).unwrap();
            let hit = a.hits.iter().find(|h| &h.doc_id == id);
            assert!(
                hit.is_some_and(|h| h.text == text(id, v)),
                "{id}: last version v{v} not what the engine holds"
            );
        }
    }
    got.len()
}

/// One line of figures for the run.
pub fn summary(counts: &Counts, ops: usize, secs: f64, docs: usize) -> String {
    let total = THREADS * ops;
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    format!(
        "{THREADS} threads x {ops} ops = {total} in {secs:.1} s ({:.0} ops/s): \
         {} ingests, {} unchanged re-ingests, {} deletes, {} queries ({} retrieval cache \
         hits); final {docs} documents = the sequential model",
        total as f64 / secs,
        c(&counts.ingest),
        c(&counts.reingest),
        c(&counts.delete),
        c(&counts.query),
        c(&counts.cache_hits),
    )
}
