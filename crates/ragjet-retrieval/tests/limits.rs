//! Sizes that come from callers: `k`, `ef`, capacity hints. None may size an
//! allocation by itself (a huge `k` used to abort the process in
//! `TopK::new`, the HNSW walk and BM25), and the rules are the same for
//! every index: `k` is capped at the number of live entries; `k == 0` is an
//! empty result, not an error.

mod common;

use ragjet_retrieval::{
    AnyIndex, Bm25Index, Entry, FlatConfig, FlatIndex, HnswConfig, HnswIndex, IndexSpec,
    MetadataFilters, Metric, RetrievalError, Storage, VectorIndex, VectorStore,
};

const HUGE: [usize; 3] = [usize::MAX, 1 << 40, usize::MAX / 2 + 1];

fn entries(data: &[Vec<f32>]) -> Vec<Entry> {
    data.iter()
        .enumerate()
        .map(|(i, v)| Entry::new(format!("e{i}"), v.clone()).with_meta("i", i as i64))
        .collect()
}

/// Every live entry once, best first; then `k == 0` is empty.
fn check_index(idx: &dyn VectorIndex, q: &[f32], what: &str) {
    let f =
        MetadataFilters::from_json(r#"{"filters": [{"key": "i", "operator": ">=", "value": 0}]}"#)
            .unwrap();
    for k in HUGE {
        for filter in [None, Some(&f)] {
            let hits = idx.search(q, k, filter).unwrap();
            assert_eq!(hits.len(), idx.len(), "{what}, k = {k}");
            assert!(hits.windows(2).all(|p| p[0].score >= p[1].score), "{what}");
        }
        let batch = idx.search_batch(&vec![q.to_vec(); 20], k, None).unwrap();
        assert!(
            batch.iter().all(|h| h.len() == idx.len()),
            "{what} batch, k = {k}"
        );
    }
    assert!(idx.search(q, 0, None).unwrap().is_empty(), "{what}");
    assert!(idx
        .search_batch(&[q.to_vec()], 0, None)
        .unwrap()
        .iter()
        .all(Vec::is_empty));
}

#[test]
fn huge_k_on_every_vector_index_returns_every_entry() {
    let data = common::clustered(120, 8, 3, 0.4, 3);
    let q = &data[5];
    for storage in [Storage::F32, Storage::F16] {
        let mut flat =
            FlatIndex::new(FlatConfig::new(8, Metric::Cosine).with_storage(storage)).unwrap();
        flat.upsert(entries(&data)).unwrap();
        check_index(&flat, q, "flat");
    }
    for metric in [Metric::Cosine, Metric::L2] {
        let mut hnsw = HnswIndex::new(HnswConfig::new(8, metric)).unwrap();
        hnsw.upsert(entries(&data)).unwrap();
        check_index(&hnsw, q, "hnsw");
        hnsw.delete(&["e1", "e2"]);
        check_index(&hnsw, q, "hnsw with tombstones");
        // ef is capped too: any ef, set or per search.
        for ef in HUGE {
            assert_eq!(hnsw.search_with_ef(q, 10, ef, None).unwrap().len(), 10);
            hnsw.set_ef_search(ef).unwrap();
            assert_eq!(hnsw.search(q, usize::MAX, None).unwrap().len(), hnsw.len());
        }
    }
    let mut store = VectorStore::new();
    store
        .create_namespace("n", IndexSpec::Flat(FlatConfig::new(8, Metric::Dot)))
        .unwrap();
    store.upsert("n", entries(&data)).unwrap();
    assert_eq!(store.search("n", q, usize::MAX, None).unwrap().len(), 120);
    let any = AnyIndex::new(IndexSpec::Hnsw(HnswConfig::new(8, Metric::L2))).unwrap();
    check_index(&any, q, "empty AnyIndex");
}

#[test]
fn huge_k_on_an_empty_index_is_an_empty_list() {
    let flat = FlatIndex::new(FlatConfig::new(4, Metric::L2)).unwrap();
    let hnsw = HnswIndex::new(HnswConfig::new(4, Metric::L2)).unwrap();
    for idx in [&flat as &dyn VectorIndex, &hnsw] {
        assert!(idx.search(&[1.0; 4], usize::MAX, None).unwrap().is_empty());
    }
    // The query is still checked first.
    assert!(matches!(
        flat.search(&[1.0; 3], usize::MAX, None),
        Err(RetrievalError::DimensionMismatch { .. })
    ));
}

#[test]
fn huge_k_on_bm25_returns_every_match() {
    let mut bm = Bm25Index::new(Default::default()).unwrap();
    for i in 0..30 {
        bm.upsert(&format!("d{i}"), &format!("alpha beta{} gamma", i % 4))
            .unwrap();
    }
    for k in HUGE {
        assert_eq!(bm.search("beta1 gamma", k).len(), 30);
        assert_eq!(bm.search("beta1", k).len(), 8);
        assert!(bm.search("nothing", k).is_empty());
    }
    assert!(bm.search("alpha", 0).is_empty());
}

#[test]
fn hnsw_build_sizes_are_bounded() {
    // A capacity hint is a hint: it used to pre-allocate its full size in
    // hnsw_rs (an abort for usize::MAX).
    let mut cfg = HnswConfig::new(4, Metric::L2);
    cfg.capacity_hint = usize::MAX;
    let mut idx = HnswIndex::new(cfg).unwrap();
    idx.upsert(vec![Entry::new("a", vec![1.0, 2.0, 3.0, 4.0])])
        .unwrap();
    assert_eq!(idx.search(&[1.0; 4], 1, None).unwrap()[0].id, "a");
    // ef_construction sizes hnsw_rs's heaps on every insert.
    let mut cfg = HnswConfig::new(4, Metric::L2);
    cfg.ef_construction = HnswConfig::MAX_EF_CONSTRUCTION + 1;
    assert!(matches!(
        HnswIndex::new(cfg),
        Err(RetrievalError::InvalidOption(_))
    ));
    // M is a byte in hnsw_rs: 256 would read back as 0 links.
    let mut cfg = HnswConfig::new(4, Metric::L2);
    cfg.m = 256;
    assert!(matches!(
        HnswIndex::new(cfg.clone()),
        Err(RetrievalError::InvalidOption(_))
    ));
    cfg.m = HnswConfig::MAX_M;
    assert!(HnswIndex::new(cfg).is_ok());
}
