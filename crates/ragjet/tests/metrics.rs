//! The engine records the documented metric catalogue itself, through the
//! recorder the application installs (here the global one, which is why
//! this test has a binary of its own): queries, latency, embedding batches
//! and tokens, index size and operations, cache requests per cache, the
//! queue. Every metric it emits is in the catalogue.

mod common;

use std::collections::BTreeSet;

use ragjet::{Document, QueryOptions, SearchMode};

#[test]
fn engine_records_the_metric_catalogue() {
    let (recorder, handle) = ragjet::telemetry::build_recorder().unwrap();
    metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
    let e = common::builder().build().unwrap();
    let docs: Vec<Document> = common::corpus()[..12].to_vec();
    e.ingest(docs.clone()).unwrap();
    let q = "which passage mentions the parents class";
    e.query(q, &QueryOptions::new().top_k(3)).unwrap();
    e.query(q, &QueryOptions::new().top_k(3)).unwrap();
    e.query(q, &QueryOptions::new().top_k(3).mode(SearchMode::Keyword))
        .unwrap();
    e.query("", &QueryOptions::new()).unwrap_err();
    e.delete(&docs[0].id).unwrap();

    let text = handle.render();
    for needle in [
        "ragjet_queries_total{status=\"ok\"} 3",
        "ragjet_queries_total{status=\"error\"} 1",
        "ragjet_query_duration_seconds_bucket{status=\"ok\"",
        "ragjet_embedding_batches_total{model=\"all-MiniLM-L6-v2\"}",
        "ragjet_embedding_batch_size_bucket{model=\"all-MiniLM-L6-v2\"",
        "ragjet_embedding_tokens_total{model=\"all-MiniLM-L6-v2\"}",
        "ragjet_index_size{namespace=\"default\"} 11",
        "ragjet_index_operations_total{namespace=\"default\",kind=\"add\"}",
        "ragjet_index_operations_total{namespace=\"default\",kind=\"search\"}",
        "ragjet_index_operations_total{namespace=\"default\",kind=\"delete\"}",
        "ragjet_cache_requests_total{cache=\"retrieval\",tier=\"l1\",result=\"hit\"} 1",
        "ragjet_cache_requests_total{cache=\"retrieval\",tier=\"l1\",result=\"miss\"}",
        "ragjet_cache_requests_total{cache=\"embedding\",tier=\"l1\",result=\"miss\"}",
        "ragjet_queue_batch_size_bucket{queue=\"embedding\"",
        "ragjet_queue_wait_seconds_bucket{queue=\"embedding\"",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    // Nothing of ragjet's outside the catalogue (docs/metrics.md).
    let names: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|n| n.starts_with("ragjet_"))
        .collect();
    for name in names {
        assert!(
            ragjet::telemetry::metrics::find(name).is_some(),
            "{name} is emitted but not in the catalogue"
        );
    }
}
