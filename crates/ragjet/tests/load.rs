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
//!
//! The mix itself is `tests/load_mix/mod.rs`, shared with the Redis outage
//! run (`tests/load_outage.rs`).

#[path = "load_mix/mod.rs"]
mod load_mix;

use std::sync::atomic::Ordering;

use ragjet::Engine;

use load_mix::*;

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
    let (models, took) = run(&engine, ops, &counts);
    let docs = check_final(&engine, &models);
    println!("load: {}", summary(&counts, ops, took.as_secs_f64(), docs));
    assert!(
        counts.cache_hits.load(Ordering::Relaxed) > 0,
        "the mix exercised the retrieval cache"
    );
}
