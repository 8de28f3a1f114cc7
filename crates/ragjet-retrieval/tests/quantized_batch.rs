//! A batch search of int8 / binary storage scans every row per query (one
//! query per thread) where a single search splits the rows across threads
//! and merges the per-part candidates: both must keep the same candidates
//! and so return the same hits and scores, ties on approximate score
//! included.

mod common;

use ragjet_retrieval::distance::Metric;
use ragjet_retrieval::{
    Entry, FilterOperator, FlatConfig, FlatIndex, Hit, MetadataFilter, MetadataFilters, Storage,
    VectorIndex,
};

/// 5,000 rows of 48 dimensions (binary distances 0..=48: ties at every
/// cut-off), a shallow depth (so the tied rows at the cut-off decide the
/// candidates), row splitting forced on (`parallel_rows` 1, a 4-thread
/// pool: five parts of 1,024 rows), with and without a filter, after
/// deletes.
#[test]
fn batch_answers_equal_single_query_answers() {
    let rows = common::clustered(5000, 48, 20, 0.4, 9);
    let qs: Vec<Vec<f32>> = common::clustered(24, 48, 20, 0.4, 10);
    let filter = MetadataFilters::new(
        vec![MetadataFilter::new("tag", FilterOperator::Gte, 1i64)],
        Default::default(),
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    pool.install(|| {
        for storage in [Storage::Int8, Storage::Binary] {
            for metric in [Metric::Cosine, Metric::L2] {
                let mut cfg = FlatConfig::new(48, metric)
                    .with_storage(storage)
                    .with_rescore(3);
                cfg.parallel_rows = 1;
                let mut idx = FlatIndex::new(cfg).unwrap();
                idx.upsert(
                    rows.iter()
                        .enumerate()
                        .map(|(i, v)| {
                            Entry::new(format!("e{i}"), v.clone()).with_meta("tag", (i % 3) as i64)
                        })
                        .collect(),
                )
                .unwrap();
                let gone: Vec<String> = (0..5000).step_by(13).map(|i| format!("e{i}")).collect();
                let refs: Vec<&str> = gone.iter().map(String::as_str).collect();
                idx.delete(&refs);
                for f in [None, Some(&filter)] {
                    let batch = idx.search_batch(&qs, 10, f).unwrap();
                    for (q, b) in qs.iter().zip(&batch) {
                        let one = idx.search(q, 10, f).unwrap();
                        assert_eq!(one.len(), 10);
                        let key = |h: &[Hit]| -> Vec<(String, u32)> {
                            h.iter()
                                .map(|x| (x.id.clone(), x.score.to_bits()))
                                .collect()
                        };
                        assert_eq!(key(b), key(&one), "{storage:?} {metric:?}");
                    }
                }
            }
        }
    });
}
