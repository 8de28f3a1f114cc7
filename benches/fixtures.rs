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

/// The first `n` passages of `$RAGJET_FIXTURES/corpus.jsonl`, else of
/// `../shared/fixtures/corpus.jsonl` (4,000 passages) beside the repository,
/// else of the repository's own `fixtures/corpus.jsonl` (300).
pub fn corpus(n: usize) -> Vec<String> {
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures");
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");
    let dir = std::env::var("RAGJET_FIXTURES").unwrap_or_else(|_| {
        if std::path::Path::new(shared).join("corpus.jsonl").is_file() {
            shared.to_owned()
        } else {
            eprintln!("{shared} not found: using the repository's {bundled} (300 passages)");
            bundled.to_owned()
        }
    });
    let path = format!("{dir}/corpus.jsonl");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    std::io::BufReader::new(file)
        .lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
            v["text"].as_str().unwrap().to_owned()
        })
        .collect()
}
