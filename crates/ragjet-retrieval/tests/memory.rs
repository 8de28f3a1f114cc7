//! Heap bytes an index keeps per entry, by part, counted by a global
//! allocator that tracks live bytes (requested sizes: the allocator's own
//! rounding and page slack are not in these figures; `benches/compare_search.py`
//! measures resident memory).
//!
//! The parts: the row (`dim` f32), HNSW layer 0 (`2M + 1` u32), the
//! record (an arena offset and an extras pointer per slot, plus the id's
//! bytes in the arena), the id → slot table,
//! levels / upper layers / locks, and what metadata and `ref_doc_id` add.
//! Everything in one `#[test]`: a parallel test would allocate into the
//! same counter.
//!
//! `cargo test -p ragjet-retrieval --test memory -- --nocapture` prints the
//! breakdown.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use ragjet_retrieval::{
    Entry, FlatConfig, FlatIndex, HnswConfig, HnswIndex, Metric, Storage, VectorIndex,
};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counter is
// only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 3_300;
const DIM: usize = 32;
const M: usize = 8;
/// Arena bytes of one id below (`e00000`): its length byte and the id.
const ID_BYTES: usize = 7;
/// What a slot's record costs besides its id: the entry's offset in the
/// arena (u64) and the byte after the id that says it has no text /
/// metadata / `ref_doc_id` entry.
const RECORD: usize = 9;

fn vector(i: usize) -> Vec<f32> {
    (0..DIM)
        .map(|j| {
            (((i * 31 + j * 17) % 97) as f32 - 48.0) / 97.0 + if j == i % DIM { 1.0 } else { 0.0 }
        })
        .collect()
}

#[derive(Clone, Copy)]
struct Shape {
    meta: bool,
    ref_doc: bool,
    batch: usize,
}

fn entries(range: std::ops::Range<usize>, shape: Shape) -> Vec<Entry> {
    range
        .map(|i| {
            let mut e = Entry::new(format!("e{i:05}"), vector(i));
            if shape.meta {
                e = e.with_meta("bucket", (i % 10) as i64);
            }
            if shape.ref_doc {
                // Eight chunks per source document, as a chunked corpus.
                e = e.with_ref_doc_id(format!("doc{}", i / 8));
            }
            e
        })
        .collect()
}

fn hnsw() -> HnswIndex {
    let mut cfg = HnswConfig::new(DIM, Metric::Cosine);
    cfg.m = M;
    cfg.ef_construction = 24;
    cfg.capacity_hint = N;
    HnswIndex::new(cfg).unwrap()
}

/// Live heap bytes per entry of an index built as `shape` says, from before
/// its entries exist (so ids and metadata count, as in the benchmark).
fn per_entry<I: VectorIndex>(mut index: I, shape: Shape) -> (f64, I) {
    let before = LIVE.load(Ordering::SeqCst);
    let mut at = 0;
    while at < N {
        let end = (at + shape.batch).min(N);
        index.upsert(entries(at..end, shape)).unwrap();
        at = end;
    }
    let after = LIVE.load(Ordering::SeqCst);
    assert_eq!(index.len(), N);
    ((after - before) as f64 / N as f64, index)
}

#[test]
fn bytes_per_entry_by_part() {
    // Warm-up at full size: the rayon pool and the per-thread search
    // scratch (visited marks, 2 B per slot per thread, shared by every
    // index of the process) exist before anything is measured.
    let _ = per_entry(
        hnsw(),
        Shape {
            meta: false,
            ref_doc: false,
            batch: N,
        },
    );

    let row = (DIM * 4) as f64;
    let layer0 = ((2 * M + 1) * 4) as f64;
    let record = RECORD as f64;
    let one = Shape {
        meta: false,
        ref_doc: false,
        batch: N,
    };

    let (plain, idx) = per_entry(hnsw(), one);
    drop(idx);
    let rest = plain - row - layer0 - record - ID_BYTES as f64;
    eprintln!(
        "HNSW, one batch of {N}: {plain:.1} B/entry = row {row} + layer 0 {layer0} + \
         record {record} + id {ID_BYTES} + {rest:.1} (id table, level, upper layers, lock)"
    );
    // id table ≈ 5 B × buckets / entries (≤ 12 at this n), level 1 +
    // upper offset 4 + lock 1, upper layers (M + 1) × 4 B × 1/M ≈ 4.5.
    // A `HashMap<String, u32>` alone (33 B per bucket plus a second copy
    // of each id) would exceed it.
    assert!(
        rest <= 28.0,
        "{rest:.1} B/entry beyond row, layer 0, record and id"
    );

    let (meta, idx) = per_entry(hnsw(), Shape { meta: true, ..one });
    drop(idx);
    let meta_cost = meta - plain;
    eprintln!(
        "one metadata key adds {meta_cost:.1} B/entry (an extras entry, one sorted pair, the key)"
    );
    // An extras entry (48 B, in a table grown by an eighth), the pair (16 B
    // key pointer + 32 B value) and the key's bytes; a `BTreeMap` leaf of
    // eleven slots alone was ≈ 640.
    assert!(
        meta_cost <= 140.0,
        "one metadata key costs {meta_cost:.1} B/entry"
    );

    let (refd, idx) = per_entry(
        hnsw(),
        Shape {
            ref_doc: true,
            ..one
        },
    );
    drop(idx);
    let ref_cost = refd - plain;
    eprintln!("ref_doc_id (8 entries per document) adds {ref_cost:.1} B/entry");
    // The extras entry (48 B: text, metadata and `ref_doc_id` headers) that
    // an entry without any of them does not have, the `ref_doc_id` string
    // ("doc123", 6-7 B), and a share of the document's map entry and slot
    // list; a copy of each id in a per-document set would add about 50.
    assert!(ref_cost <= 100.0, "ref_doc_id costs {ref_cost:.1} B/entry");

    // Growing in batches leaves at most an eighth of the rows unused (not
    // the up-to-half of doubling).
    let (batched, idx) = per_entry(hnsw(), Shape { batch: 100, ..one });
    drop(idx);
    eprintln!("HNSW in batches of 100: {batched:.1} B/entry");
    assert!(
        batched <= plain + (row + layer0 + record) / 8.0 + 4.0,
        "{batched:.1} vs {plain:.1} in one batch"
    );

    let flat = || FlatIndex::new(FlatConfig::new(DIM, Metric::Cosine)).unwrap();
    let (flat_one, idx) = per_entry(flat(), one);
    drop(idx);
    let (flat_batched, idx) = per_entry(flat(), Shape { batch: 100, ..one });
    drop(idx);
    eprintln!("flat f32: {flat_one:.1} B/entry in one batch, {flat_batched:.1} in batches of 100");
    assert!(
        flat_one <= row + record + ID_BYTES as f64 + 16.0,
        "flat: {flat_one:.1} B/entry"
    );
    assert!(
        flat_batched <= flat_one + (row + record) / 8.0 + 4.0,
        "flat: {flat_batched:.1} vs {flat_one:.1}"
    );

    // Int8 / binary with a rows directory: the full rows are in a mapped
    // file, so the heap holds the codes (int8: `dim` bytes + a 4-byte
    // norm; binary: one u64 per 64 dimensions), the record and the id.
    let spill = tempfile::tempdir().unwrap();
    for (storage, codes) in [
        (Storage::Int8, DIM + 4),
        (Storage::Binary, DIM.div_ceil(64) * 8),
    ] {
        let cfg = FlatConfig::new(DIM, Metric::Cosine).with_storage(storage);
        let (in_ram, idx) = per_entry(FlatIndex::new(cfg.clone()).unwrap(), one);
        drop(idx);
        let (mapped, idx) = per_entry(
            FlatIndex::new(cfg.with_rows_dir(spill.path())).unwrap(),
            Shape { batch: 100, ..one },
        );
        drop(idx);
        eprintln!(
            "flat {storage:?}: {in_ram:.1} B/entry with the rows in RAM, {mapped:.1} with \
             them in a mapped file (batches of 100)"
        );
        let budget = codes as f64 * 9.0 / 8.0 + record * 9.0 / 8.0 + ID_BYTES as f64 + 16.0;
        assert!(
            mapped <= budget,
            "{storage:?}: {mapped:.1} B/entry > {budget:.1}"
        );
    }
}
