//! Fixtures shared by the engine tests: the repository's 300-passage
//! corpus, its queries and the exact top-10 computed from
//! sentence-transformers embeddings (see `fixtures/README.md`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use ragjet::{Document, Engine, EngineBuilder};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn read_jsonl(name: &str) -> Vec<(String, String)> {
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} must exist (repository fixtures): {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("valid JSON line");
            (
                v["id"].as_str().expect("id").to_string(),
                v["text"].as_str().expect("text").to_string(),
            )
        })
        .collect()
}

/// The corpus as documents; `group` metadata = passage number mod 3, so
/// filters have something to select.
pub fn corpus() -> Vec<Document> {
    read_jsonl("corpus.jsonl")
        .into_iter()
        .enumerate()
        .map(|(i, (id, text))| {
            Document::new(id, text)
                .with_meta("group", (i % 3) as i64)
                .with_meta("source", "fixture")
        })
        .collect()
}

pub fn queries() -> Vec<(String, String)> {
    read_jsonl("queries.jsonl")
}

/// Query id → passage ids, best first.
pub fn exact_top10() -> BTreeMap<String, Vec<String>> {
    let path = fixtures().join("exact_top10.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} must exist: {e}", path.display()));
    serde_json::from_str(&text).expect("query id -> passage ids")
}

/// An engine on the real model in f32 (the reference embeddings are f32;
/// bf16 products move scores in the fifth decimal, enough to swap
/// near-ties), with a small thread count: tests run side by side. Queries
/// are lowercased when cleaned (the model is uncased, so this changes no
/// vector, only cache hits).
pub fn builder() -> EngineBuilder {
    Engine::builder()
        .precision(ragjet::inference::Precision::F32)
        .device(ragjet::inference::Device::Cpu)
        .num_threads(2)
        .configure(|c| c.query.lowercase = true)
}
