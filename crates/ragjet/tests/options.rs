//! Engine options that need their own engine: the semantic cache, the
//! reranker, HyDE, intent and synonyms.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use ragjet::inference::{CrossEncoder, CrossEncoderOptions, Device, Precision};
use ragjet::query::Hyde;
use ragjet::{CacheOutcome, Document, Error, ErrorKind, QueryOptions, SearchMode};

fn small_corpus() -> Vec<Document> {
    common::corpus()[200..240].to_vec()
}

#[test]
fn a_near_identical_query_is_a_semantic_cache_hit() {
    let e = common::builder().semantic_cache(Some(0.9)).build().unwrap();
    e.ingest(small_corpus()).unwrap();
    let q = "how do i print the arguments of a function";
    let first = e.query(q, &QueryOptions::new().top_k(5)).unwrap();
    assert_eq!(first.cache, CacheOutcome::Miss);
    // Another wording: different text (a retrieval-cache miss), nearly
    // the same embedding.
    let near = "how can i print the arguments of a function";
    let v1 = e.embedder().embed_one(q).unwrap();
    let v2 = e.embedder().embed_one(near).unwrap();
    let cos: f32 = v1.iter().zip(&v2).map(|(a, b)| a * b).sum();
    assert!(
        cos >= 0.9,
        "the test needs a paraphrase above the threshold: {cos}"
    );
    let second = e.query(near, &QueryOptions::new().top_k(5)).unwrap();
    match second.cache {
        CacheOutcome::SemanticHit { similarity } => {
            assert!((similarity - cos).abs() < 1e-3, "{similarity} vs {cos}");
        }
        other => panic!("expected a semantic hit, got {other:?}"),
    }
    assert_eq!(second.hits, first.hits);
    // Other options, another partition.
    let other = e.query(near, &QueryOptions::new().top_k(6)).unwrap();
    assert_eq!(other.cache, CacheOutcome::Miss);
    // An unrelated query misses.
    let far = e
        .query(
            "zero division raised by the integer tuple",
            &QueryOptions::new().top_k(5),
        )
        .unwrap();
    assert_eq!(far.cache, CacheOutcome::Miss);
    // After a mutation no earlier result is served.
    e.ingest(vec![Document::new("new", "printing function arguments")])
        .unwrap();
    let after = e.query(near, &QueryOptions::new().top_k(5)).unwrap();
    assert_eq!(after.cache, CacheOutcome::Miss);
    assert!(after.hits.iter().any(|h| h.doc_id == "new"));
}

fn tiny_cross_encoder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ragjet-inference/tests/fixtures/tiny-cross-encoder")
}

/// Reranking orders the retrieved hits by the cross-encoder's scores and
/// keeps `top_n`: exactly what the cross-encoder says about those
/// passages when called directly.
#[test]
fn rerank_orders_hits_by_the_cross_encoder() {
    let e = common::builder()
        .reranker(tiny_cross_encoder())
        .build()
        .unwrap();
    e.ingest(small_corpus()).unwrap();
    let q = "return the integer value of the string";
    let plain = e
        .query(q, &QueryOptions::new().top_k(8).no_cache(true))
        .unwrap();
    let reranked = e.query(q, &QueryOptions::new().top_k(8).rerank(3)).unwrap();
    assert_eq!(reranked.hits.len(), 3);
    assert!(reranked.timings.rerank > std::time::Duration::ZERO);
    let ce = CrossEncoder::load_with(
        tiny_cross_encoder(),
        CrossEncoderOptions {
            device: Device::Cpu,
            precision: Some(Precision::F32),
            num_threads: Some(2),
            ..CrossEncoderOptions::default()
        },
    )
    .unwrap();
    let texts: Vec<&str> = plain.hits.iter().map(|h| h.text.as_str()).collect();
    let want = ce.rerank(&plain.query, &texts, 3).unwrap();
    for (h, (i, score)) in reranked.hits.iter().zip(&want) {
        assert_eq!(h.chunk_id, plain.hits[*i].chunk_id);
        assert!((h.score - score).abs() < 1e-5, "{} vs {score}", h.score);
    }
    // The reranked result is cached like any other.
    let again = e.query(q, &QueryOptions::new().top_k(8).rerank(3)).unwrap();
    assert_eq!(again.cache, CacheOutcome::RetrievalHit);
    assert_eq!(again.hits, reranked.hits);
}

/// HyDE embeds the hook's passage instead of the query; a failing hook
/// fails the query.
#[test]
fn hyde_embeds_the_hooks_passage() {
    let corpus = small_corpus();
    let target = corpus[11].clone();
    let passage = target.text.clone();
    let e = common::builder()
        .hyde(Hyde::from_fn(move |q| {
            if q.contains("fail") {
                Err("the language model is down".into())
            } else {
                Ok(passage.clone())
            }
        }))
        .build()
        .unwrap();
    e.ingest(corpus).unwrap();
    let q = "completely unrelated words about zebras";
    let a = e.query(q, &QueryOptions::new().top_k(1)).unwrap();
    assert_eq!(a.hits[0].doc_id, target.id);
    assert!(a.hits[0].score > 0.999);
    let off = e
        .query(q, &QueryOptions::new().top_k(1).hyde(false))
        .unwrap();
    assert_eq!(
        off.cache,
        CacheOutcome::Miss,
        "HyDE on or off are two cache entries"
    );
    let err = e.query("please fail", &QueryOptions::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(err.to_string().contains("down"), "{err}");
}

/// With intent on, the query's intent picks `top_k` and the mode unless
/// the caller sets them.
#[test]
fn intent_chooses_top_k_and_mode() {
    let e = common::builder()
        .configure(|c| c.query.intent = true)
        .build()
        .unwrap();
    e.ingest(small_corpus()).unwrap();
    let plan = ragjet::query::IntentPolicy::default();
    let (intent, p) = plan.decide("what is an iterable tuple");
    assert_eq!(intent, ragjet::query::Intent::Factual);
    let a = e
        .query("what is an iterable tuple", &QueryOptions::new())
        .unwrap();
    assert_eq!(a.top_k, p.top_k);
    assert_eq!(a.hits.len(), p.top_k);
    assert!(matches!(a.mode, SearchMode::Hybrid { .. }), "{:?}", a.mode);
    let explicit = e
        .query(
            "what is an iterable tuple",
            &QueryOptions::new().top_k(2).mode(SearchMode::Vector),
        )
        .unwrap();
    assert_eq!((explicit.top_k, explicit.mode), (2, SearchMode::Vector));
    assert_eq!(explicit.hits.len(), 2);
}

/// Synonyms reach keyword search: a query word absent from the corpus
/// finds the passages holding its synonym.
#[test]
fn synonyms_expand_keyword_queries() {
    let docs = vec![
        Document::new("a", "the automobile was parked outside"),
        Document::new("b", "a bicycle leaned on the wall"),
    ];
    let keyword = QueryOptions::new().top_k(2).mode(SearchMode::Keyword);
    let plain = common::builder().build().unwrap();
    plain.ingest(docs.clone()).unwrap();
    assert!(plain.query("car", &keyword).unwrap().hits.is_empty());
    let e = common::builder()
        .synonyms(BTreeMap::from([(
            "car".to_string(),
            vec!["automobile".to_string()],
        )]))
        .build()
        .unwrap();
    e.ingest(docs).unwrap();
    let a = e.query("car", &keyword).unwrap();
    assert_eq!(a.hits.len(), 1);
    assert_eq!(a.hits[0].doc_id, "a");
}

/// Queries wait for the shared model at most `queue.timeout_ms`; past it
/// they fail at once as overloaded (and count as unavailable), while
/// ingest, which has no deadline, still goes through.
#[test]
fn a_query_past_its_queue_deadline_is_overloaded() {
    let e = common::builder()
        .configure(|c| {
            c.queue.timeout_ms = Some(1);
            // A lone request waits this long for company: longer than its
            // deadline, so the deadline always passes first.
            c.queue.max_wait_ms = 50;
        })
        .build()
        .unwrap();
    let r = e.ingest(small_corpus()[..5].to_vec()).unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(r.chunks, 5);
    let err = e
        .query("anything at all", &QueryOptions::new().no_cache(true))
        .unwrap_err();
    assert!(matches!(err, Error::Overloaded(_)), "{err}");
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert_eq!(e.slo_report().window.unavailable, 1);
    // Keyword search needs no embedding, so it is still served.
    let kw = e
        .query(
            "anything at all",
            &QueryOptions::new().mode(SearchMode::Keyword).no_cache(true),
        )
        .unwrap();
    assert_eq!(kw.cache, CacheOutcome::Bypassed);
}
