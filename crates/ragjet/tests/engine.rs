//! The engine end to end with the real model on the repository's fixture
//! corpus. One engine is shared by the tests of this file (the corpus is
//! embedded once); tests that mutate work in their own namespace, which
//! costs no embedding since the embedding cache already holds the corpus.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use ragjet::retrieval::{
    alpha_fusion, mmr, Bm25Index, Bm25Params, FilterCondition, FilterOperator, Hit, MetadataFilter,
    MetadataFilters, Metric,
};
use ragjet::{
    CacheOutcome, Document, Engine, Error, ErrorKind, IngestOptions, QueryOptions, SearchMode,
};

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let engine = common::builder().build().expect("engine builds");
        let report = engine.ingest(common::corpus()).expect("ingest");
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        engine
    })
}

/// A copy of the corpus in a fresh namespace of the shared engine.
fn namespace_with_corpus(ns: &str) -> usize {
    let report = engine()
        .ingest_with(
            common::corpus(),
            &IngestOptions {
                namespace: Some(ns),
                progress: None,
            },
        )
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    report.ingested.len()
}

fn ids(hits: &[ragjet::EngineHit]) -> Vec<String> {
    hits.iter().map(|h| h.doc_id.clone()).collect()
}

#[test]
fn every_fixture_passage_is_one_chunk() {
    let e = engine();
    let corpus = common::corpus();
    assert_eq!(e.num_documents("default"), corpus.len());
    assert_eq!(e.num_chunks("default"), corpus.len());
    // The chunk of a passage is the whole passage.
    let d = &corpus[7];
    let a = e
        .query(&d.text, &QueryOptions::new().top_k(1).no_cache(true))
        .unwrap();
    let hit = &a.hits[0];
    assert_eq!(hit.chunk_id, format!("{}#0", d.id));
    assert_eq!(hit.doc_id, d.id);
    assert_eq!(hit.span, 0..d.text.len());
    assert_eq!(hit.text, d.text);
    assert_eq!(hit.metadata, d.metadata);
    assert!(hit.score > 0.999, "{}", hit.score);
}

#[test]
fn vector_mode_returns_the_exact_top10() {
    let e = engine();
    let reference = common::exact_top10();
    let queries = common::queries();
    assert!(!queries.is_empty());
    let mut checked = 0;
    for (qid, text) in &queries {
        let Some(want) = reference.get(qid) else {
            continue;
        };
        let a = e
            .query(
                text,
                &QueryOptions::new()
                    .top_k(10)
                    .mode(SearchMode::Vector)
                    .no_cache(true),
            )
            .unwrap();
        assert_eq!(a.cache, CacheOutcome::Bypassed);
        assert_eq!(&ids(&a.hits), want, "query {qid} {text:?}");
        assert!(a.hits.windows(2).all(|w| w[0].score >= w[1].score));
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} queries had a reference");
}

/// Keyword mode is BM25 over the chunk texts: the same ranking as a BM25
/// index built here from the corpus.
#[test]
fn keyword_mode_is_bm25_over_the_chunks() {
    let e = engine();
    let mut bm25 = Bm25Index::new(Bm25Params::default()).unwrap();
    for d in common::corpus() {
        bm25.upsert(&format!("{}#0", d.id), &d.text).unwrap();
    }
    for (_, text) in common::queries().iter().take(10) {
        let a = e
            .query(
                text,
                &QueryOptions::new()
                    .top_k(10)
                    .mode(SearchMode::Keyword)
                    .no_cache(true),
            )
            .unwrap();
        let want = bm25.search(&a.query, 10);
        let got: Vec<(String, f32)> = a
            .hits
            .iter()
            .map(|h| (h.chunk_id.clone(), h.score))
            .collect();
        let want: Vec<(String, f32)> = want.into_iter().map(|h| (h.id, h.score)).collect();
        assert_eq!(got.len(), want.len(), "{text:?}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.0, w.0, "{text:?}");
            assert!((g.1 - w.1).abs() < 1e-5);
        }
    }
}

/// Hybrid is alpha fusion of the vector and keyword lists: alpha 1 is the
/// vector ranking, alpha 0 the keyword ranking, and in between exactly what
/// `alpha_fusion` makes of the two.
#[test]
fn hybrid_fuses_vector_and_keyword_by_alpha() {
    let e = engine();
    let opts = |mode| QueryOptions::new().top_k(10).mode(mode).no_cache(true);
    for (_, text) in common::queries().iter().take(8) {
        let vector = e.query(text, &opts(SearchMode::Vector)).unwrap();
        let keyword = e.query(text, &opts(SearchMode::Keyword)).unwrap();
        let all_vector = e
            .query(text, &opts(SearchMode::Hybrid { alpha: 1.0 }))
            .unwrap();
        let all_keyword = e
            .query(text, &opts(SearchMode::Hybrid { alpha: 0.0 }))
            .unwrap();
        assert_eq!(ids(&all_vector.hits), ids(&vector.hits), "{text:?}");
        assert_eq!(ids(&all_keyword.hits), ids(&keyword.hits), "{text:?}");

        let mixed = e
            .query(text, &opts(SearchMode::Hybrid { alpha: 0.5 }))
            .unwrap();
        let as_hits = |a: &ragjet::Answer| -> Vec<Hit> {
            a.hits
                .iter()
                .map(|h| Hit {
                    id: h.chunk_id.clone(),
                    score: h.score,
                })
                .collect()
        };
        let want = alpha_fusion(&as_hits(&vector), &as_hits(&keyword), 0.5, 10).unwrap();
        let got: Vec<&str> = mixed.hits.iter().map(|h| h.chunk_id.as_str()).collect();
        let want_ids: Vec<&str> = want.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(got, want_ids, "{text:?}");
        for (h, w) in mixed.hits.iter().zip(&want) {
            assert!((h.score - w.score).abs() < 1e-5);
            assert!((0.0..=1.0 + 1e-6).contains(&h.score));
        }
    }
}

/// MMR with lambda 1 is plain relevance; with a lower lambda it is the
/// greedy MMR selection over the vector candidates, which is less
/// redundant than the plain top-k.
#[test]
fn mmr_selects_diverse_hits_from_the_candidates() {
    let e = engine();
    let (_, text) = &common::queries()[3];
    let plain = e
        .query(text, &QueryOptions::new().top_k(5).no_cache(true))
        .unwrap();
    let relevance_only = e
        .query(text, &QueryOptions::new().top_k(5).mmr(1.0).no_cache(true))
        .unwrap();
    assert_eq!(ids(&relevance_only.hits), ids(&plain.hits));

    let diverse = e
        .query(text, &QueryOptions::new().top_k(5).mmr(0.3).no_cache(true))
        .unwrap();
    assert_eq!(diverse.hits.len(), 5);
    // The engine's candidates: the vector top 5 × candidate_factor.
    let factor = e.config().query.candidate_factor;
    let pool = e
        .query(text, &QueryOptions::new().top_k(5 * factor).no_cache(true))
        .unwrap();
    let texts: Vec<&str> = pool.hits.iter().map(|h| h.text.as_str()).collect();
    let vectors: Vec<Vec<f32>> = e
        .embedder()
        .embed(&texts)
        .unwrap()
        .iter()
        .map(<[f32]>::to_vec)
        .collect();
    let q = e.embedder().embed_one(&diverse.query).unwrap();
    let order = mmr(&q, &vectors, 0.3, 5, Metric::Cosine).unwrap();
    let want: Vec<String> = order.iter().map(|&i| pool.hits[i].doc_id.clone()).collect();
    assert_eq!(ids(&diverse.hits), want);

    let redundancy = |hit_ids: &[String]| -> f32 {
        let vs: Vec<&Vec<f32>> = hit_ids
            .iter()
            .map(|id| &vectors[pool.hits.iter().position(|h| &h.doc_id == id).unwrap()])
            .collect();
        let mut worst = f32::MIN;
        for i in 0..vs.len() {
            for j in 0..i {
                let d: f32 = vs[i].iter().zip(vs[j]).map(|(a, b)| a * b).sum();
                worst = worst.max(d);
            }
        }
        worst
    };
    assert!(redundancy(&ids(&diverse.hits)) <= redundancy(&ids(&plain.hits)) + 1e-6);
}

#[test]
fn second_identical_query_is_a_retrieval_cache_hit() {
    let e = engine();
    let q = "Indexes stdin at and the parents class";
    let opts = QueryOptions::new().top_k(7);
    let first = e.query(q, &opts).unwrap();
    assert_eq!(first.cache, CacheOutcome::Miss);
    let second = e.query(q, &opts).unwrap();
    assert_eq!(second.cache, CacheOutcome::RetrievalHit);
    assert_eq!(second.hits, first.hits);
    // The same query after cleaning (whitespace, case) is the same entry.
    let third = e
        .query("  indexes STDIN at   and the parents class ", &opts)
        .unwrap();
    assert_eq!(third.cache, CacheOutcome::RetrievalHit);
    assert_eq!(third.hits, first.hits);
    // Anything that changes the result is another entry.
    for other in [
        QueryOptions::new().top_k(8),
        QueryOptions::new().top_k(7).mode(SearchMode::Keyword),
        QueryOptions::new().top_k(7).mmr(0.5),
        QueryOptions::new().top_k(7).filters(MetadataFilters::new(
            vec![MetadataFilter::new("group", FilterOperator::Eq, 1i64)],
            FilterCondition::And,
        )),
        QueryOptions::new().top_k(7).filters(MetadataFilters::new(
            vec![MetadataFilter::new("group", FilterOperator::Ne, 1i64)],
            FilterCondition::And,
        )),
        QueryOptions::new().top_k(7).similarity_cutoff(0.1),
        QueryOptions::new().top_k(7).require("class"),
    ] {
        let a = e.query(q, &other).unwrap();
        assert_eq!(a.cache, CacheOutcome::Miss, "{other:?}");
    }
}

#[test]
fn filters_select_by_metadata() {
    let e = engine();
    let filter = MetadataFilters::new(
        vec![MetadataFilter::new("group", FilterOperator::Eq, 2i64)],
        FilterCondition::And,
    );
    let (_, text) = &common::queries()[5];
    for mode in [
        SearchMode::Vector,
        SearchMode::Keyword,
        SearchMode::Hybrid { alpha: 0.5 },
    ] {
        let a = e
            .query(
                text,
                &QueryOptions::new()
                    .top_k(10)
                    .mode(mode)
                    .filters(filter.clone())
                    .no_cache(true),
            )
            .unwrap();
        assert!(!a.hits.is_empty(), "{mode:?}");
        for h in &a.hits {
            assert_eq!(
                h.metadata["group"],
                ragjet::MetadataValue::Number(2.0),
                "{mode:?}"
            );
        }
    }
    // Vector + filter = the unfiltered ranking restricted to the group.
    let all = e
        .query(text, &QueryOptions::new().top_k(300).no_cache(true))
        .unwrap();
    let want: Vec<String> = all
        .hits
        .iter()
        .filter(|h| h.metadata["group"] == ragjet::MetadataValue::Number(2.0))
        .take(10)
        .map(|h| h.doc_id.clone())
        .collect();
    let got = e
        .query(
            text,
            &QueryOptions::new().top_k(10).filters(filter).no_cache(true),
        )
        .unwrap();
    assert_eq!(ids(&got.hits), want);
}

#[test]
fn keyword_rules_and_cutoff_drop_hits() {
    let e = engine();
    let (_, text) = &common::queries()[1];
    let plain = e
        .query(text, &QueryOptions::new().top_k(10).no_cache(true))
        .unwrap();
    let word = plain.hits[0]
        .text
        .split(|c: char| !c.is_alphanumeric())
        .find(|w| w.len() > 5)
        .unwrap()
        .to_lowercase();
    let has = |t: &str| ragjet::retrieval::bm25::tokenize(t).contains(&word);
    let required = e
        .query(
            text,
            &QueryOptions::new().top_k(10).require(&word).no_cache(true),
        )
        .unwrap();
    assert!(!required.hits.is_empty());
    assert!(required.hits.iter().all(|h| has(&h.text)));
    let excluded = e
        .query(
            text,
            &QueryOptions::new().top_k(10).exclude(&word).no_cache(true),
        )
        .unwrap();
    assert!(excluded.hits.iter().all(|h| !has(&h.text)));
    assert_eq!(excluded.hits.len(), 10, "more candidates refill the list");

    let cutoff = plain.hits[4].score;
    let cut = e
        .query(
            text,
            &QueryOptions::new()
                .top_k(10)
                .similarity_cutoff(cutoff)
                .no_cache(true),
        )
        .unwrap();
    assert!(cut.hits.iter().all(|h| h.score >= cutoff));
    assert_eq!(ids(&cut.hits), ids(&plain.hits[..cut.hits.len()]));
    assert!(cut.hits.len() >= 5 && cut.hits.len() < 10);
}

#[test]
fn context_packs_two_to_five_passages_within_the_budget() {
    let e = engine();
    let (_, text) = &common::queries()[2];
    for budget in [40, 120, 400, 4000] {
        let a = e
            .query(
                text,
                &QueryOptions::new()
                    .top_k(10)
                    .context_tokens(budget)
                    .no_cache(true),
            )
            .unwrap();
        let ctx = a.context.expect("context asked for");
        let tokens = e.embedder().count_tokens(&ctx).unwrap();
        assert!(tokens <= budget, "{tokens} tokens for a budget of {budget}");
        let parts: Vec<&str> = ctx.split("\n\n").collect();
        assert!((2..=5).contains(&parts.len()), "{} passages", parts.len());
        // Each part is (a prefix of) a hit, in hit order.
        for (p, h) in parts.iter().zip(&a.hits) {
            assert!(h.text.starts_with(p), "{p:?}");
        }
    }
}

#[test]
fn delete_removes_chunks_and_invalidates_cached_results() {
    let e = engine();
    let ns = "deleting";
    namespace_with_corpus(ns);
    let victim = common::corpus()[42].clone();
    let opts = QueryOptions::new().top_k(5).namespace(ns);
    let before = e.query(&victim.text, &opts).unwrap();
    assert_eq!(before.hits[0].doc_id, victim.id);
    assert_eq!(
        e.query(&victim.text, &opts).unwrap().cache,
        CacheOutcome::RetrievalHit
    );

    let chunks = e.num_chunks(ns);
    let version = e.version();
    assert!(e.delete_in(ns, &victim.id).unwrap());
    assert!(e.version() > version);
    assert_eq!(e.num_chunks(ns), chunks - 1);
    assert!(!e.document_ids(ns).contains(&victim.id));

    let after = e.query(&victim.text, &opts).unwrap();
    assert_eq!(
        after.cache,
        CacheOutcome::Miss,
        "the cached result must not be served"
    );
    assert!(after.hits.iter().all(|h| h.doc_id != victim.id));
    let kw = e
        .query(&victim.text, &opts.clone().mode(SearchMode::Keyword))
        .unwrap();
    assert!(
        kw.hits.iter().all(|h| h.doc_id != victim.id),
        "BM25 forgot it too"
    );
    assert!(!e.delete_in(ns, &victim.id).unwrap());
    // Other namespaces are untouched.
    assert_eq!(e.num_documents("default"), common::corpus().len());
}

#[test]
fn upsert_replaces_a_changed_document() {
    let e = engine();
    let ns = "upserting";
    let long: String = common::corpus()[..6]
        .iter()
        .map(|d| d.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let opts = IngestOptions {
        namespace: Some(ns),
        progress: None,
    };
    let r = e
        .ingest_with(vec![Document::new("doc", long.clone())], &opts)
        .unwrap();
    let many = r.chunks;
    assert!(many > 1, "a long document makes several chunks");
    assert_eq!(e.num_chunks(ns), many);
    let r = e
        .ingest_with(vec![Document::new("doc", "a short replacement")], &opts)
        .unwrap();
    assert_eq!(r.chunks, 1);
    assert_eq!(e.num_chunks(ns), 1, "the old chunks are gone");
    let a = e
        .query(
            "short replacement",
            &QueryOptions::new().namespace(ns).top_k(5),
        )
        .unwrap();
    assert_eq!(a.hits.len(), 1);
    assert_eq!(a.hits[0].text, "a short replacement");
    let r = e
        .ingest_with(vec![Document::new("doc", "a short replacement")], &opts)
        .unwrap();
    assert_eq!((r.unchanged, r.chunks, r.embeddings_computed), (1, 0, 0));
}

#[test]
fn chunks_of_a_long_document_quote_it() {
    let e = engine();
    let ns = "long";
    let text: String = common::corpus()[10..30]
        .iter()
        .map(|d| d.text.as_str())
        .collect::<Vec<_>>()
        .join("\n\n");
    let r = e
        .ingest_with(
            vec![Document::new("book", text.clone()).with_meta("kind", "book")],
            &IngestOptions {
                namespace: Some(ns),
                progress: None,
            },
        )
        .unwrap();
    assert!(r.chunks > 3);
    let a = e
        .query(
            &common::corpus()[20].text,
            &QueryOptions::new().namespace(ns).top_k(r.chunks),
        )
        .unwrap();
    assert_eq!(a.hits.len(), r.chunks);
    let limit = e.config().chunking.chunk_tokens;
    for h in &a.hits {
        assert_eq!(&text[h.span.clone()], h.text, "{}", h.chunk_id);
        assert!(e.embedder().count_tokens(&h.text).unwrap() <= limit);
        assert_eq!(h.metadata["kind"], ragjet::MetadataValue::from("book"));
    }
}

#[test]
fn eight_threads_query_while_one_ingests() {
    let e = engine();
    let ns = "concurrent";
    let corpus = common::corpus();
    let (first, rest) = corpus.split_at(150);
    let opts = |ns| IngestOptions {
        namespace: Some(ns),
        progress: None,
    };
    e.ingest_with(first.to_vec(), &opts(ns)).unwrap();
    let done = AtomicBool::new(false);
    let answered = AtomicUsize::new(0);
    let queries = common::queries();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (done, answered, queries) = (&done, &answered, &queries);
            s.spawn(move || {
                let mut i = t;
                while !done.load(Ordering::SeqCst) {
                    let (_, q) = &queries[i % queries.len()];
                    let mode = match i % 3 {
                        0 => SearchMode::Vector,
                        1 => SearchMode::Keyword,
                        _ => SearchMode::Hybrid { alpha: 0.5 },
                    };
                    let a = e
                        .query(q, &QueryOptions::new().namespace(ns).top_k(5).mode(mode))
                        .expect("queries never fail during an ingest");
                    for h in &a.hits {
                        assert!(!h.text.is_empty() && h.span.end > h.span.start, "{h:?}");
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                    i += 8;
                }
            });
        }
        for batch in rest.chunks(10) {
            let r = e.ingest_with(batch.to_vec(), &opts(ns)).unwrap();
            assert!(r.failed.is_empty(), "{:?}", r.failed);
        }
        done.store(true, Ordering::SeqCst);
    });
    assert!(answered.load(Ordering::SeqCst) > 8);
    let want: BTreeSet<String> = corpus.iter().map(|d| d.id.clone()).collect();
    let got: BTreeSet<String> = e.document_ids(ns).into_iter().collect();
    assert_eq!(got, want, "no document lost");
    assert_eq!(e.num_chunks(ns), corpus.len());
    // And every one is found by its own text.
    for d in corpus.iter().step_by(25) {
        let a = e
            .query(&d.text, &QueryOptions::new().namespace(ns).top_k(1))
            .unwrap();
        assert_eq!(a.hits[0].doc_id, d.id);
    }
}

#[test]
fn bad_documents_fail_alone_with_a_clear_error() {
    let e = engine();
    let ns = "bad-docs";
    let corpus = common::corpus();
    let docs = vec![
        Document::new("empty", ""),
        Document::new("blank", " \n\t "),
        Document::new("", "no id"),
        Document::new("dup", "first version of dup"),
        corpus[0].clone(),
        Document::new("dup", "second version of dup"),
    ];
    let r = e
        .ingest_with(
            docs,
            &IngestOptions {
                namespace: Some(ns),
                progress: None,
            },
        )
        .unwrap();
    let mut ingested = r.ingested.clone();
    ingested.sort();
    assert_eq!(ingested, vec!["dup".to_string(), corpus[0].id.clone()]);
    let failed: Vec<(&str, ErrorKind)> = r
        .failed
        .iter()
        .map(|(id, e)| (id.as_str(), e.kind()))
        .collect();
    assert_eq!(failed.len(), 4, "{:?}", r.failed);
    for id in ["empty", "blank", "", "dup"] {
        assert!(
            failed.contains(&(id, ErrorKind::InvalidInput)),
            "{id:?} in {:?}",
            r.failed
        );
    }
    let dup_err = r.failed.iter().find(|(id, _)| id == "dup").unwrap();
    assert!(dup_err.1.to_string().contains("later"), "{}", dup_err.1);
    // The last occurrence of a repeated id is the one kept.
    let a = e
        .query(
            "version of dup",
            &QueryOptions::new().namespace(ns).top_k(2),
        )
        .unwrap();
    let dup = a.hits.iter().find(|h| h.doc_id == "dup").unwrap();
    assert_eq!(dup.text, "second version of dup");
}

#[test]
fn a_megabyte_document_is_chunked() {
    let e = engine();
    let ns = "megabyte";
    let sentence = "The quick brown fox jumps over the lazy dog near the river bank. ";
    let text = sentence.repeat((1 << 20) / sentence.len() + 1);
    assert!(text.len() >= 1 << 20);
    let r = e
        .ingest_with(
            vec![Document::new("big", text.clone())],
            &IngestOptions {
                namespace: Some(ns),
                progress: None,
            },
        )
        .unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let tokens_per_sentence = e.embedder().count_tokens(sentence).unwrap();
    let min_chunks =
        (text.len() / sentence.len()) * tokens_per_sentence / e.config().chunking.chunk_tokens;
    assert!(r.chunks >= min_chunks, "{} chunks", r.chunks);
    // Repeated text embeds once per distinct chunk.
    assert!(r.embeddings_computed < 20, "{}", r.embeddings_computed);
    let a = e
        .query("a fox jumping", &QueryOptions::new().namespace(ns).top_k(3))
        .unwrap();
    assert_eq!(a.hits.len(), 3);
    for h in &a.hits {
        assert_eq!(&text[h.span.clone()], h.text);
    }
}

#[test]
fn bad_query_options_are_errors_not_panics() {
    let e = engine();
    let q = "some query";
    let invalid = |o: QueryOptions| {
        let err = e.query(q, &o).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{o:?}: {err}");
    };
    invalid(QueryOptions::new().top_k(0));
    invalid(QueryOptions::new().top_k(usize::MAX));
    invalid(QueryOptions::new().rerank(0));
    invalid(QueryOptions::new().mode(SearchMode::Hybrid { alpha: f32::NAN }));
    invalid(QueryOptions::new().mode(SearchMode::Hybrid { alpha: 1.5 }));
    invalid(QueryOptions::new().mmr(f32::NAN));
    invalid(QueryOptions::new().mmr(-0.1));
    invalid(QueryOptions::new().similarity_cutoff(f32::NAN));
    invalid(QueryOptions::new().similarity_cutoff(f32::INFINITY));
    invalid(QueryOptions::new().context_tokens(0));
    invalid(QueryOptions::new().require("!!!"));
    invalid(QueryOptions::new().namespace("no-such-namespace"));
    invalid(QueryOptions::new().namespace(""));
    // No filter is invalid for its values: as in llama-index-core, they
    // are judged against each chunk's metadata (`1 in 1` matches nothing).
    let none = e
        .query(
            q,
            &QueryOptions::new().filters(MetadataFilters::new(
                vec![MetadataFilter::new("group", FilterOperator::In, 1i64)],
                FilterCondition::And,
            )),
        )
        .unwrap();
    assert!(none.hits.is_empty());
    for empty in ["", "   ", "\n"] {
        let err = e.query(empty, &QueryOptions::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{empty:?}");
    }
    // Malformed filter JSON is refused where it is parsed.
    assert!(MetadataFilters::from_json("{\"filters\": [{\"key\": 1}]").is_err());
    // Features the engine lacks are configuration errors.
    let err = e.query(q, &QueryOptions::new().rerank(3)).unwrap_err();
    assert!(
        matches!(err, Error::Config { ref key, .. } if key == "rerank.model_dir"),
        "{err}"
    );
    let err = e.query(q, &QueryOptions::new().hyde(true)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    // A top_k above the corpus size but within the limit returns it all.
    let a = e
        .query(q, &QueryOptions::new().top_k(1000).no_cache(true))
        .unwrap();
    assert_eq!(a.hits.len(), common::corpus().len());
    let unique: HashSet<&str> = a.hits.iter().map(|h| h.chunk_id.as_str()).collect();
    assert_eq!(unique.len(), a.hits.len());
}

#[test]
fn ingest_reports_progress() {
    let e = engine();
    let seen = std::sync::Mutex::new(Vec::new());
    let progress = |p: ragjet::IngestProgress| seen.lock().unwrap().push(p);
    let docs: Vec<Document> = common::corpus()[..20].to_vec();
    e.ingest_with(
        docs,
        &IngestOptions {
            namespace: Some("progress"),
            progress: Some(&progress),
        },
    )
    .unwrap();
    let seen = seen.into_inner().unwrap();
    use ragjet::IngestStage::*;
    for stage in [Chunking, Indexing] {
        let last = seen.iter().rev().find(|p| p.stage == stage).unwrap();
        assert_eq!((last.done, last.total), (20, 20), "{stage:?}");
    }
}

/// Compile-time: the engine can be shared by threads (`Arc<Engine>`).
#[test]
fn engine_is_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Engine>();
    shareable::<ragjet::Answer>();
    shareable::<Error>();
}
