//! Loading an HNSW index must not leak: hnsw_rs ties a reloaded graph to
//! its loader (`HnswIo`), which the loader used to `Box::leak` on every
//! load. This binary counts live heap bytes with its own global allocator,
//! so it holds this one test only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use ragjet_retrieval::{Entry, HnswConfig, HnswIndex, Metric, VectorIndex};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::SeqCst);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn loading_an_hnsw_index_frees_everything_it_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hnsw");
    let mut idx = HnswIndex::new(HnswConfig::new(4, Metric::L2)).unwrap();
    idx.upsert(
        (0..50)
            .map(|i| Entry::new(format!("e{i}"), vec![i as f32, 1.0, (i % 7) as f32, 0.5]))
            .collect(),
    )
    .unwrap();
    idx.save(&dir).unwrap();
    drop(idx);
    // Warm-up: one-time, process-wide allocations (kernel table, thread
    // locals, lazily initialised statics) happen here.
    for _ in 0..3 {
        let idx = HnswIndex::load(&dir).unwrap();
        assert_eq!(idx.search(&[1.0, 1.0, 1.0, 0.5], 3, None).unwrap().len(), 3);
    }
    let before = LIVE.load(Ordering::SeqCst);
    let loads = 50;
    for _ in 0..loads {
        let idx = HnswIndex::load(&dir).unwrap();
        assert_eq!(idx.search(&[1.0, 1.0, 1.0, 0.5], 3, None).unwrap().len(), 3);
    }
    let grown = LIVE.load(Ordering::SeqCst) - before;
    // The leaked loader held its directory path, its base name, options
    // and a counter: well over 100 bytes a load, 5,000+ here.
    assert!(
        grown < 320,
        "{grown} bytes still allocated after {loads} loads and drops"
    );
}
