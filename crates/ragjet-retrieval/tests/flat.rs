mod common;

use std::collections::HashMap;

use proptest::prelude::*;
use ragjet_retrieval::distance::{self, Metric};
use ragjet_retrieval::{
    Entry, FilterOperator, FlatConfig, FlatIndex, MetadataFilter, MetadataFilters, RetrievalError,
    Storage, VectorIndex,
};

/// Naive reference: every live entry scored with the same kernel, sorted.
fn naive(
    model: &HashMap<String, (Vec<f32>, i64)>,
    q: &[f32],
    k: usize,
    metric: Metric,
    min_tag: Option<i64>,
) -> Vec<(String, f32)> {
    let mut qv = q.to_vec();
    if metric == Metric::Cosine {
        distance::normalize(&mut qv).unwrap();
    }
    let mut all: Vec<(String, f32)> = model
        .iter()
        .filter(|(_, (_, tag))| min_tag.is_none_or(|m| *tag >= m))
        .map(|(id, (v, _))| {
            let mut v = v.clone();
            if metric == Metric::Cosine {
                distance::normalize(&mut v).unwrap();
            }
            (id.clone(), metric.score(&qv, &v))
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    all.truncate(k);
    all
}

fn metric_strategy() -> impl Strategy<Value = Metric> {
    prop_oneof![Just(Metric::Dot), Just(Metric::Cosine), Just(Metric::L2)]
}

#[derive(Debug, Clone)]
enum Op {
    Upsert(u8, Vec<f32>, i64),
    Delete(u8),
    DeleteRef(u8),
}

fn vec_strategy(dim: usize) -> impl Strategy<Value = Vec<f32>> {
    // Non-zero first component keeps cosine defined.
    (0.5f32..2.0, prop::collection::vec(-2.0f32..2.0, dim - 1)).prop_map(|(a, mut rest)| {
        rest.insert(0, a);
        rest
    })
}

fn op_strategy(dim: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..40, vec_strategy(dim), 0i64..5).prop_map(|(i, v, t)| Op::Upsert(i, v, t)),
        2 => (0u8..40).prop_map(Op::Delete),
        1 => (0u8..4).prop_map(Op::DeleteRef),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// After any sequence of upserts and deletes, search equals the naive
    /// reference exactly (same scores, same ids up to exact ties), with and
    /// without a filter, single and batched, and never returns a deleted id.
    #[test]
    fn flat_matches_naive_reference(
        metric in metric_strategy(),
        ops in prop::collection::vec(op_strategy(19), 1..80),
        queries in prop::collection::vec(vec_strategy(19), 1..20),
        k in 0usize..12,
        parallel in any::<bool>(),
    ) {
        let mut cfg = FlatConfig::new(19, metric);
        if parallel { cfg.parallel_rows = 1; }
        let mut idx = FlatIndex::new(cfg).unwrap();
        let mut model: HashMap<String, (Vec<f32>, i64)> = HashMap::new();
        let mut refs: HashMap<String, u8> = HashMap::new();
        for op in ops {
            match op {
                Op::Upsert(i, v, tag) => {
                    let id = format!("n{i}");
                    let r = i % 4;
                    idx.upsert(vec![Entry::new(&id, v.clone()).with_meta("tag", tag).with_ref_doc_id(format!("d{r}"))]).unwrap();
                    model.insert(id.clone(), (v, tag));
                    refs.insert(id, r);
                }
                Op::Delete(i) => {
                    let id = format!("n{i}");
                    let n = idx.delete(&[&id]);
                    prop_assert_eq!(n, usize::from(model.remove(&id).is_some()));
                }
                Op::DeleteRef(r) => {
                    let n = idx.delete_ref_doc(&format!("d{r}"));
                    let gone: Vec<String> = model.keys().filter(|id| refs[*id] == r).cloned().collect();
                    prop_assert_eq!(n, gone.len());
                    for id in gone { model.remove(&id); }
                }
            }
            prop_assert_eq!(idx.len(), model.len());
        }
        let filter = MetadataFilters::new(vec![MetadataFilter::new("tag", FilterOperator::Gte, 2i64)], Default::default());
        let mut listed = idx.ids_matching(Some(&filter)).unwrap();
        listed.sort();
        let mut want: Vec<String> = model.iter().filter(|(_, (_, t))| *t >= 2).map(|(id, _)| id.clone()).collect();
        want.sort();
        prop_assert_eq!(listed, want);
        let batch = idx.search_batch(&queries, k, None).unwrap();
        for (qi, q) in queries.iter().enumerate() {
            for (f, min_tag) in [(None, None), (Some(&filter), Some(2))] {
                let got = idx.search(q, k, f).unwrap();
                let want = naive(&model, q, k, metric, min_tag);
                prop_assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    prop_assert_eq!(g.score.to_bits(), w.1.to_bits());
                    let mut v = model[&g.id].0.clone();
                    if metric == Metric::Cosine { distance::normalize(&mut v).unwrap(); }
                    let mut qv = q.clone();
                    if metric == Metric::Cosine { distance::normalize(&mut qv).unwrap(); }
                    prop_assert_eq!(metric.score(&qv, &v).to_bits(), g.score.to_bits());
                    if let Some(m) = min_tag { prop_assert!(model[&g.id].1 >= m); }
                }
            }
            let single = idx.search(q, k, None).unwrap();
            prop_assert_eq!(&batch[qi], &single);
        }
    }
}

#[test]
fn batch_path_matches_single_queries_for_many_queries() {
    let data = common::clustered(3000, 48, 20, 0.3, 7);
    let queries = common::clustered(40, 48, 20, 0.3, 8);
    for storage in [Storage::F32, Storage::F16] {
        let mut idx =
            FlatIndex::new(FlatConfig::new(48, Metric::Cosine).with_storage(storage)).unwrap();
        idx.upsert(
            data.iter()
                .enumerate()
                .map(|(i, v)| Entry::new(format!("p{i}"), v.clone()))
                .collect(),
        )
        .unwrap();
        let batch = idx.search_batch(&queries, 10, None).unwrap();
        for (q, b) in queries.iter().zip(&batch) {
            assert_eq!(&idx.search(q, 10, None).unwrap(), b);
        }
    }
}

#[test]
fn f16_storage_ranks_like_f32() {
    let data = common::clustered(2000, 64, 10, 0.5, 3);
    let queries = common::clustered(20, 64, 10, 0.5, 4);
    let build = |s| {
        let mut idx = FlatIndex::new(FlatConfig::new(64, Metric::L2).with_storage(s)).unwrap();
        idx.upsert(
            data.iter()
                .enumerate()
                .map(|(i, v)| Entry::new(format!("p{i}"), v.clone()))
                .collect(),
        )
        .unwrap();
        idx
    };
    let (a, b) = (build(Storage::F32), build(Storage::F16));
    let mut overlap = 0;
    for q in &queries {
        let ra: Vec<String> = a
            .search(q, 10, None)
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        let rb = b.search(q, 10, None).unwrap();
        overlap += rb.iter().filter(|h| ra.contains(&h.id)).count();
        // f16 scores are close to exact ones.
        for h in rb {
            let exact = -distance::l2_squared(q, &a.vector(&h.id).unwrap());
            assert!(
                (h.score - exact).abs() <= 1e-2 * exact.abs().max(1.0),
                "{} vs {exact}",
                h.score
            );
        }
    }
    assert!(overlap >= 190, "f16 top-10 overlap {overlap}/200");
}

#[test]
fn upsert_replaces_text_metadata_and_vector() {
    let mut idx = FlatIndex::new(FlatConfig::new(2, Metric::Dot)).unwrap();
    idx.upsert(vec![Entry::new("a", vec![1.0, 0.0])
        .with_text("old")
        .with_meta("v", 1i64)])
        .unwrap();
    idx.upsert(vec![Entry::new("a", vec![0.0, 1.0])
        .with_text("new")
        .with_meta("v", 2i64)])
        .unwrap();
    assert_eq!(idx.len(), 1);
    let r = idx.get("a").unwrap();
    assert_eq!(r.text, "new");
    assert_eq!(r.metadata.get("v"), Some(&2i64.into()));
    let hits = idx.search(&[0.0, 1.0], 5, None).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].score, 1.0);
}

#[test]
fn bad_input_is_a_defined_error_or_result() {
    let mut idx = FlatIndex::new(FlatConfig::new(3, Metric::Cosine)).unwrap();
    assert!(FlatIndex::new(FlatConfig::new(0, Metric::Dot)).is_err());
    // Empty index, k = 0: empty results.
    assert!(idx.search(&[1.0, 0.0, 0.0], 5, None).unwrap().is_empty());
    idx.upsert(vec![Entry::new("a", vec![1.0, 2.0, 3.0])])
        .unwrap();
    assert!(idx.search(&[1.0, 0.0, 0.0], 0, None).unwrap().is_empty());
    assert!(matches!(
        idx.search(&[1.0, 0.0], 1, None),
        Err(RetrievalError::DimensionMismatch {
            expected: 3,
            got: 2
        })
    ));
    assert!(matches!(
        idx.search(&[f32::INFINITY, 0.0, 0.0], 1, None),
        Err(RetrievalError::NonFinite { index: 0 })
    ));
    assert!(matches!(
        idx.search(&[0.0; 3], 1, None),
        Err(RetrievalError::ZeroVector)
    ));
    // A bad batch changes nothing (all-or-nothing).
    let r = idx.upsert(vec![
        Entry::new("b", vec![1.0, 1.0, 1.0]),
        Entry::new("c", vec![f32::NAN, 0.0, 1.0]),
    ]);
    assert!(matches!(r, Err(RetrievalError::NonFinite { index: 0 })));
    assert!(idx.get("b").is_none());
    assert!(matches!(
        idx.upsert(vec![Entry::new("", vec![1.0, 1.0, 1.0])]),
        Err(RetrievalError::InvalidId(_))
    ));
    assert!(matches!(
        idx.upsert(vec![
            Entry::new("x", vec![1.0, 1.0, 1.0]),
            Entry::new("x", vec![1.0, 0.0, 1.0])
        ]),
        Err(RetrievalError::InvalidId(_))
    ));
    assert!(matches!(
        idx.upsert(vec![Entry::new("z", vec![0.0; 3])]),
        Err(RetrievalError::ZeroVector)
    ));
    // k larger than the index returns everything.
    assert_eq!(idx.search(&[1.0, 0.0, 0.0], 100, None).unwrap().len(), 1);
}

/// As in llama-index-core, a filter is judged against data: `in` with a
/// string value is Python's substring test, and an entry on which Python
/// would raise (`3 in "x"`) does not match rather than failing the search.
#[test]
fn a_filter_that_cannot_apply_to_a_value_is_a_no_match_not_an_error() {
    let mut idx = FlatIndex::new(FlatConfig::new(2, Metric::Dot)).unwrap();
    idx.upsert(vec![
        Entry::new("a", vec![1.0, 0.0]).with_meta("k", 3i64),
        Entry::new("b", vec![1.0, 0.0]).with_meta("k", "x"),
    ])
    .unwrap();
    let f = MetadataFilters::new(
        vec![MetadataFilter::new("k", FilterOperator::In, "xyz")],
        Default::default(),
    );
    let hits = idx.search(&[1.0, 0.0], 2, Some(&f)).unwrap();
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
}
