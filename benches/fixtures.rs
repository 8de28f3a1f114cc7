//! The fixture corpus, shared by the embedding benches.

use std::io::BufRead;

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
