//! `docs/spans.md` lists every pipeline span name and attribute key this crate defines, so a
//! span added here without its line in the reference fails the build.

use ragjet_telemetry::spans::{attr, names};

#[test]
fn the_span_reference_names_every_span_and_attribute() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/spans.md");
    let doc = std::fs::read_to_string(path).expect("docs/spans.md");
    let keys = [
        names::QUERY,
        names::EMBEDDING,
        names::RETRIEVAL,
        names::RERANK,
        names::CACHE,
        names::INDEX_UPDATE,
        attr::GEN_AI_OPERATION_NAME,
        attr::GEN_AI_REQUEST_MODEL,
        attr::GEN_AI_USAGE_INPUT_TOKENS,
        attr::GEN_AI_USAGE_OUTPUT_TOKENS,
        attr::GEN_AI_EMBEDDINGS_DIMENSION_COUNT,
        attr::DB_SYSTEM_NAME,
        attr::DB_OPERATION_NAME,
        attr::DB_COLLECTION_NAME,
        attr::DB_RESPONSE_RETURNED_ROWS,
        attr::ERROR_TYPE,
        attr::OTEL_STATUS_DESCRIPTION,
        attr::BATCH_SIZE,
        attr::TOP_K,
        attr::CANDIDATES,
        attr::CACHE_NAME,
        attr::CACHE_TIER,
        attr::CACHE_RESULT,
        attr::VECTORS,
    ];
    let missing: Vec<&str> = keys
        .into_iter()
        .filter(|key| !doc.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/spans.md does not name {missing:?}"
    );
}
