//! The fixture corpus and the embedder, shared by the embedding benches.

use std::io::BufRead;

use ragjet::inference::{locate_default_model, Embedder, EmbedderOptions};

/// The real model with the benches' settings: 2 threads, batch 32.
pub fn embedder() -> Embedder {
    Embedder::load_with(
        locate_default_model().expect("model"),
        EmbedderOptions {
            num_threads: Some(2),
            max_batch_size: 32,
            ..Default::default()
        },
    )
    .expect("model loads")
}

/// The first `n` passages of `../shared/fixtures/corpus.jsonl` (or of
/// `$RAGJET_FIXTURES/corpus.jsonl`).
pub fn corpus(n: usize) -> Vec<String> {
    let path = std::env::var("RAGJET_FIXTURES").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures").to_owned()
    });
    let file = std::fs::File::open(format!("{path}/corpus.jsonl")).expect("fixture corpus");
    std::io::BufReader::new(file)
        .lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
            v["text"].as_str().unwrap().to_owned()
        })
        .collect()
}
