mod common;

use std::collections::HashSet;

use ragjet_retrieval::{
    Entry, FilterOperator, FlatConfig, FlatIndex, HnswConfig, HnswIndex, MetadataFilter,
    MetadataFilters, Metric, RetrievalError, VectorIndex,
};

fn entries(data: &[Vec<f32>]) -> Vec<Entry> {
    data.iter()
        .enumerate()
        .map(|(i, v)| Entry::new(format!("p{i}"), v.clone()).with_meta("group", (i % 5) as i64))
        .collect()
}

fn recall(
    exact: &FlatIndex,
    approx: &HnswIndex,
    queries: &[Vec<f32>],
    filter: Option<&MetadataFilters>,
) -> f64 {
    let mut found = 0usize;
    let mut total = 0usize;
    for q in queries {
        let truth: HashSet<String> = exact
            .search(q, 10, filter)
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        let got = approx.search(q, 10, filter).unwrap();
        total += truth.len();
        found += got.iter().filter(|h| truth.contains(&h.id)).count();
    }
    found as f64 / total as f64
}

/// Recall@10 against exact search on 10k clustered vectors (dim 16, 100
/// clusters, 200 held-out queries drawn from the same clusters), M = 16,
/// ef_construction = 48, ef_search = 64; noise
/// of the same scale as the centres, so clusters overlap and recall is not trivially 1: must reach 0.95.
#[test]
fn recall_at_10_on_10k_clustered_vectors() {
    let all = common::clustered(10_200, 16, 100, 0.7, 42);
    let (data, queries) = all.split_at(10_000);
    let mut exact = FlatIndex::new(FlatConfig::new(16, Metric::Cosine)).unwrap();
    exact.upsert(entries(data)).unwrap();
    let mut cfg = HnswConfig::new(16, Metric::Cosine);
    cfg.ef_construction = 48;
    cfg.capacity_hint = 10_000;
    let mut hnsw = HnswIndex::new(cfg).unwrap();
    hnsw.upsert(entries(data)).unwrap();
    assert_eq!(hnsw.len(), 10_000);
    let r = recall(&exact, &hnsw, queries, None);
    eprintln!("recall@10 = {r:.4}");
    assert!(r >= 0.95, "recall@10 = {r}");

    // The walk reads cosine rows as f16; what it returns is rescored in
    // f32, so a hit found by both indexes has the exact index's score and
    // the hits are in score order.
    for q in &queries[..50] {
        let truth = exact.search(q, 10, None).unwrap();
        let got = hnsw.search(q, 10, None).unwrap();
        assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
        for h in &got {
            if let Some(t) = truth.iter().find(|t| t.id == h.id) {
                assert!(
                    (t.score - h.score).abs() < 1e-6,
                    "{} vs {}",
                    t.score,
                    h.score
                );
            }
        }
    }

    // Filtered during the walk: every hit passes, and recall stays high.
    let f = MetadataFilters::new(
        vec![MetadataFilter::new("group", FilterOperator::Eq, 2i64)],
        Default::default(),
    );
    for q in &queries[..50] {
        for h in hnsw.search(q, 10, Some(&f)).unwrap() {
            assert_eq!(hnsw.get(&h.id).unwrap().metadata["group"], 2i64.into());
        }
    }
    let rf = recall(&exact, &hnsw, &queries[..50], Some(&f));
    eprintln!("filtered recall@10 = {rf:.4}");
    assert!(rf >= 0.9, "filtered recall@10 = {rf}");
}

/// Deletes are tombstones that never come back in results; compaction
/// drops them and keeps search exact-quality (smaller set: compaction
/// rebuilds the graph).
#[test]
fn deletes_never_return_and_compaction_keeps_recall() {
    let all = common::clustered(3_100, 16, 30, 0.7, 43);
    let (data, queries) = all.split_at(3_000);
    let mut exact = FlatIndex::new(FlatConfig::new(16, Metric::Cosine)).unwrap();
    exact.upsert(entries(data)).unwrap();
    let mut cfg = HnswConfig::new(16, Metric::Cosine);
    cfg.ef_construction = 48;
    let mut hnsw = HnswIndex::new(cfg).unwrap();
    hnsw.upsert(entries(data)).unwrap();
    // Delete a third: deleted ids never come back; compaction keeps results valid.
    let doomed: Vec<String> = (0..3_000)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("p{i}"))
        .collect();
    let refs: Vec<&str> = doomed.iter().map(String::as_str).collect();
    assert_eq!(hnsw.delete(&refs), doomed.len());
    exact.delete(&refs);
    let dead: HashSet<&str> = refs.iter().copied().collect();
    for q in queries {
        for h in hnsw.search(q, 10, None).unwrap() {
            assert!(!dead.contains(h.id.as_str()));
        }
    }
    assert_eq!(hnsw.tombstones(), doomed.len());
    assert_eq!(hnsw.compact(), doomed.len());
    assert_eq!(hnsw.tombstones(), 0);
    assert_eq!(hnsw.len(), 3_000 - doomed.len());
    let r2 = recall(&exact, &hnsw, queries, None);
    eprintln!("recall@10 after delete + compact = {r2:.4}");
    assert!(r2 >= 0.95, "recall after compaction {r2}");
}

#[test]
fn upsert_replaces_and_ref_doc_delete_works() {
    let mut idx = HnswIndex::new(HnswConfig::new(3, Metric::L2)).unwrap();
    idx.upsert(vec![
        Entry::new("a", vec![0.0, 0.0, 0.0]).with_ref_doc_id("doc1"),
        Entry::new("b", vec![1.0, 0.0, 0.0]).with_ref_doc_id("doc1"),
        Entry::new("c", vec![5.0, 5.0, 5.0]).with_ref_doc_id("doc2"),
    ])
    .unwrap();
    idx.upsert(vec![Entry::new("c", vec![0.1, 0.0, 0.0]).with_text("moved")])
        .unwrap();
    assert_eq!(idx.len(), 3);
    let hits = idx.search(&[0.1, 0.0, 0.0], 1, None).unwrap();
    assert_eq!(hits[0].id, "c");
    assert!(hits[0].score.abs() < 1e-6);
    assert_eq!(idx.delete_ref_doc("doc1"), 2);
    let ids: Vec<String> = idx
        .search(&[0.0; 3], 10, None)
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(ids, vec!["c".to_string()]);
    // The replaced c no longer belongs to doc2.
    assert_eq!(idx.delete_ref_doc("doc2"), 0);
    assert_eq!(idx.ids_matching(None).unwrap(), vec!["c".to_string()]);
}

#[test]
fn bad_configs_and_inputs() {
    assert!(matches!(
        HnswIndex::new(HnswConfig::new(4, Metric::Dot)),
        Err(RetrievalError::Unsupported(_))
    ));
    let mut c = HnswConfig::new(4, Metric::Cosine);
    c.m = 300;
    assert!(matches!(
        HnswIndex::new(c),
        Err(RetrievalError::InvalidOption(_))
    ));
    let mut idx = HnswIndex::new(HnswConfig::new(4, Metric::Cosine)).unwrap();
    assert!(idx
        .search(&[1.0, 0.0, 0.0, 0.0], 3, None)
        .unwrap()
        .is_empty());
    idx.upsert(vec![Entry::new("a", vec![1.0, 0.0, 0.0, 0.0])])
        .unwrap();
    assert!(idx
        .search(&[1.0, 0.0, 0.0, 0.0], 0, None)
        .unwrap()
        .is_empty());
    assert!(matches!(
        idx.search(&[0.0; 4], 1, None),
        Err(RetrievalError::ZeroVector)
    ));
    assert!(matches!(
        idx.search(&[1.0; 3], 1, None),
        Err(RetrievalError::DimensionMismatch { .. })
    ));
    assert!(idx.set_ef_search(0).is_err());
}

#[test]
fn filters_excluding_everything_and_tiny_graphs_are_fine() {
    let mut idx = HnswIndex::new(HnswConfig::new(3, Metric::Cosine)).unwrap();
    idx.upsert(vec![
        Entry::new("only", vec![1.0, 2.0, 3.0]).with_meta("k", "v")
    ])
    .unwrap();
    assert_eq!(idx.search(&[1.0, 0.0, 0.0], 10, None).unwrap().len(), 1);
    let none = MetadataFilters::new(
        vec![MetadataFilter::new("k", FilterOperator::Eq, "other")],
        Default::default(),
    );
    assert!(idx
        .search(&[1.0, 0.0, 0.0], 10, Some(&none))
        .unwrap()
        .is_empty());
    idx.upsert(
        (0..200)
            .map(|i| {
                Entry::new(format!("e{i}"), vec![1.0, i as f32 / 50.0, 0.5]).with_meta("k", "w")
            })
            .collect(),
    )
    .unwrap();
    assert!(idx
        .search(&[1.0, 0.0, 0.0], 10, Some(&none))
        .unwrap()
        .is_empty());
    let only = MetadataFilters::new(
        vec![MetadataFilter::new("k", FilterOperator::Eq, "v")],
        Default::default(),
    );
    let hits = idx.search(&[1.0, 0.0, 0.0], 10, Some(&only)).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "only");
    // Delete everything: searches return nothing, compaction empties the graph.
    let ids = idx.ids_matching(None).unwrap();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(idx.delete(&refs), 201);
    assert!(idx.search(&[1.0, 0.0, 0.0], 10, None).unwrap().is_empty());
    assert_eq!(idx.compact(), 201);
    assert!(idx.is_empty());
    idx.upsert(vec![Entry::new("back", vec![0.0, 0.0, 1.0])])
        .unwrap();
    assert_eq!(idx.search(&[0.0, 0.0, 1.0], 3, None).unwrap()[0].id, "back");
}

/// The filter evaluation is cached per filter; every mutation (upsert,
/// metadata change, delete, compaction) must invalidate it. Small subsets
/// are answered exactly (brute force over the passing rows), so the filtered
/// answer equals the flat index's.
#[test]
fn cached_filter_selection_follows_mutations() {
    let data = common::clustered(600, 16, 6, 0.3, 11);
    let mut idx = HnswIndex::new(HnswConfig::new(16, Metric::Cosine)).unwrap();
    let mut flat = FlatIndex::new(FlatConfig::new(16, Metric::Cosine)).unwrap();
    idx.upsert(entries(&data)).unwrap();
    flat.upsert(entries(&data)).unwrap();
    let g1 = MetadataFilters::new(
        vec![MetadataFilter::new("group", FilterOperator::Eq, 1i64)],
        Default::default(),
    );
    let q = data[7].clone();
    let ids = |hits: Vec<ragjet_retrieval::Hit>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
    let exact = ids(flat.search(&q, 5, Some(&g1)).unwrap());
    assert_eq!(ids(idx.search(&q, 5, Some(&g1)).unwrap()), exact);
    // A new entry identical to the query, in group 1: must now come first.
    let newcomer = Entry::new("new", q.clone()).with_meta("group", 1i64);
    idx.upsert(vec![newcomer.clone()]).unwrap();
    assert_eq!(idx.search(&q, 5, Some(&g1)).unwrap()[0].id, "new");
    // Moved to group 2 (upsert replaces metadata): gone from group 1.
    idx.upsert(vec![Entry::new("new", q.clone()).with_meta("group", 2i64)])
        .unwrap();
    assert_eq!(ids(idx.search(&q, 5, Some(&g1)).unwrap()), exact);
    // Delete the best group-1 hit: it must not come back.
    assert_eq!(idx.delete(&[exact[0].as_str()]), 1);
    let after = ids(idx.search(&q, 5, Some(&g1)).unwrap());
    assert!(!after.contains(&exact[0]));
    assert_eq!(after[..4], exact[1..]);
    idx.compact();
    let compacted = ids(idx.search(&q, 5, Some(&g1)).unwrap());
    assert_eq!(compacted[..4], exact[1..]);
}

/// Entries added in small batches, cluster after cluster (the data order
/// that ruins an HNSW graph built in input order), are linked into the
/// graph by each `upsert`: each new entry is its own nearest neighbour
/// right after its `upsert`, and
/// recall@10 at the end is as high as for one bulk insert.
#[test]
fn small_batches_in_cluster_order_stay_searchable() {
    let mut all = common::clustered(4_100, 16, 40, 0.5, 7);
    let queries = all.split_off(4_000);
    let mut data = all;
    // Cluster order: sort by the nearest of a few reference directions.
    data.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let mut exact = FlatIndex::new(FlatConfig::new(16, Metric::Cosine)).unwrap();
    exact.upsert(entries(&data)).unwrap();
    let mut cfg = HnswConfig::new(16, Metric::Cosine);
    cfg.ef_construction = 48;
    let mut hnsw = HnswIndex::new(cfg).unwrap();
    let all_entries = entries(&data);
    for (b, batch) in all_entries.chunks(50).enumerate() {
        hnsw.upsert(batch.to_vec()).unwrap();
        let last = &data[b * 50 + batch.len() - 1];
        let top = hnsw.search(last, 1, None).unwrap();
        assert_eq!(top[0].id, batch.last().unwrap().id, "batch {b}");
    }
    assert_eq!(hnsw.len(), 4_000);
    let r = recall(&exact, &hnsw, &queries, None);
    eprintln!("recall@10 after 80 batches = {r:.4}");
    assert!(r >= 0.95, "recall@10 = {r}");
}

/// A filter passing more rows than the exact-search cut-off (20,000) is
/// applied during the graph walk: every hit passes and recall stays high.
#[test]
fn broad_filters_are_applied_during_the_walk() {
    let all = common::clustered(30_100, 8, 60, 0.6, 9);
    let (data, queries) = all.split_at(30_000);
    let mut exact = FlatIndex::new(FlatConfig::new(8, Metric::Cosine)).unwrap();
    exact.upsert(entries(data)).unwrap();
    let mut cfg = HnswConfig::new(8, Metric::Cosine);
    cfg.ef_construction = 32;
    cfg.capacity_hint = 30_000;
    let mut hnsw = HnswIndex::new(cfg).unwrap();
    hnsw.upsert(entries(data)).unwrap();
    let f = MetadataFilters::new(
        vec![MetadataFilter::new("group", FilterOperator::Ne, 0i64)],
        Default::default(),
    );
    for q in queries {
        for h in hnsw.search(q, 10, Some(&f)).unwrap() {
            assert_ne!(hnsw.get(&h.id).unwrap().metadata["group"], 0i64.into());
        }
    }
    let r = recall(&exact, &hnsw, queries, Some(&f));
    eprintln!("filtered (80 %) recall@10 = {r:.4}");
    assert!(r >= 0.9, "filtered recall@10 = {r}");
}

/// The filter mask is cached per filter. It used to be keyed by the
/// filter's JSON, where +inf and NaN are both `null`: `x < inf` (every
/// row) and `x < NaN` (no row) shared a cache entry, so the second search
/// returned the first one's rows.
#[test]
fn cached_filter_masks_tell_infinity_from_nan() {
    let data = common::clustered(300, 8, 4, 0.3, 21);
    let mut idx = HnswIndex::new(HnswConfig::new(8, Metric::Cosine)).unwrap();
    idx.upsert(
        data.iter()
            .enumerate()
            .map(|(i, v)| Entry::new(format!("p{i}"), v.clone()).with_meta("x", i as f64))
            .collect(),
    )
    .unwrap();
    let lt = |x: f64| {
        MetadataFilters::new(
            vec![MetadataFilter::new("x", FilterOperator::Lt, x)],
            Default::default(),
        )
    };
    let q = &data[0];
    assert_eq!(idx.search(q, 5, Some(&lt(f64::INFINITY))).unwrap().len(), 5);
    assert!(idx.search(q, 5, Some(&lt(f64::NAN))).unwrap().is_empty());
    assert_eq!(idx.search(q, 5, Some(&lt(f64::INFINITY))).unwrap().len(), 5);
    assert!(idx
        .search(q, 5, Some(&lt(f64::NEG_INFINITY)))
        .unwrap()
        .is_empty());
}

/// Compacting every entry away used to keep the old search snapshot (the
/// new, empty graph has none), so entries added afterwards were scored
/// against the old rows of their slot numbers.
#[test]
fn entries_added_after_compacting_everything_away_score_right() {
    let data = common::clustered(300, 8, 3, 0.4, 23);
    let mut idx = HnswIndex::new(HnswConfig::new(8, Metric::Cosine)).unwrap();
    idx.upsert(entries(&data)).unwrap();
    let ids = idx.ids_matching(None).unwrap();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    idx.delete(&refs);
    assert_eq!(idx.compact(), 300);
    let v = vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
    idx.upsert(vec![Entry::new("back", v.clone())]).unwrap();
    let hits = idx.search(&v, 5, None).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "back");
    assert!(
        (hits[0].score - 1.0).abs() < 1e-5,
        "score {}",
        hits[0].score
    );
}
