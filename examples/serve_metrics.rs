//! Serves Prometheus metrics while a real embed + search workload runs, so
//! `curl 127.0.0.1:9464/metrics` shows live figures.
//!
//! ```text
//! cargo run --release -p ragjet --example serve_metrics -- [PORT] [SECONDS]
//! ```
//!
//! PORT defaults to 9464 (0 picks a free one), SECONDS to 60. The example
//! embeds the bundled Jargon File sample (`examples/data/jargon.jsonl`) once
//! into an exact index, then answers a few queries in a loop: each query is
//! a `ragjet.query` span holding a `ragjet.embedding` and a
//! `ragjet.retrieval` span, records embedding batch and token metrics, and
//! ends with `ragjet_queries_total` / `ragjet_query_duration_seconds`. The
//! index records its own size and operations (`ragjet_index_*`). Every five
//! seconds it prints the SLO report (against the default targets) and the
//! cost report (embedding tokens priced at an illustrative API rate).
//!
//! The model is found by `ragjet::inference::locate_default_model`.

use std::collections::HashMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

use ragjet::inference::{locate_default_model, Embedder, EmbedderOptions};
use ragjet::retrieval::{Entry, FlatConfig, FlatIndex, Metric, VectorIndex};
use ragjet::telemetry::metrics::{self as m, QueryStatus};
use ragjet::telemetry::{
    spans, Budgets, CostTracker, LatencyRecorder, ModelPrice, Outcome, SloReport, SloTargets,
    Telemetry, TelemetryConfig,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/data/jargon.jsonl"
);
const MODEL: &str = "all-MiniLM-L6-v2";
const NAMESPACE: &str = "jargon";
const TOP_K: usize = 3;
const QUERIES: &[&str] = &[
    "a program that is badly designed and hard to maintain",
    "someone who spends all night writing code",
    "an error caused by cosmic rays flipping a bit in memory",
    "sending the same advertisement to thousands of newsgroups",
    "a joke version of a trademark sign",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(9464);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(60);

    let telemetry = Telemetry::init(TelemetryConfig::default().with_metrics_port(port))?;
    let addr = telemetry.metrics_addr().ok_or("no metrics endpoint")?;
    println!("serving http://{addr}/metrics for {seconds} s");

    let embedder = Embedder::load_with(
        locate_default_model()?,
        EmbedderOptions {
            num_threads: Some(2),
            ..Default::default()
        },
    )?;

    // Index the corpus once: one embedding batch, one index update.
    let mut ids = Vec::new();
    let mut texts = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(CORPUS)?).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        ids.push(v["id"].as_str().ok_or("entry without id")?.to_owned());
        texts.push(v["text"].as_str().ok_or("entry without text")?.to_owned());
    }
    let t0 = Instant::now();
    let vectors = {
        let span = spans::embedding(MODEL, texts.len());
        let _in = span.enter();
        let tokens = count_tokens(&embedder, &texts)?;
        spans::record_input_tokens(&span, tokens);
        m::record_embedding_batch(MODEL, texts.len(), tokens);
        embedder.embed(&texts)?
    };
    let mut index = FlatIndex::new(FlatConfig::new(embedder.dim(), Metric::Cosine))?;
    index.set_namespace(NAMESPACE);
    {
        let _span = spans::index_update(NAMESPACE, "add", texts.len()).entered();
        let entries = ids
            .iter()
            .zip(&texts)
            .zip(vectors.iter())
            .map(|((id, text), v)| Entry::new(id.clone(), v.to_vec()).with_text(text.clone()))
            .collect();
        index.upsert(entries)?;
    }
    println!(
        "indexed {} passages in {:.1} s",
        index.len(),
        t0.elapsed().as_secs_f64()
    );

    let latency = LatencyRecorder::new(Duration::from_secs(60))?;
    // An illustrative hosted-embedding price, so the cost report has figures.
    let costs = CostTracker::new(
        HashMap::from([(
            MODEL.to_string(),
            ModelPrice {
                input_per_million: 0.02,
                output_per_million: 0.0,
            },
        )]),
        Budgets {
            daily_usd: Some(1.0),
            monthly_usd: Some(20.0),
        },
    )?;
    costs.on_alert(|a| println!("budget alert: {a:?}"));

    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        let q = QUERIES[n % QUERIES.len()];
        n += 1;
        let t0 = Instant::now();
        let result = answer(&embedder, &index, &costs, q);
        let took = t0.elapsed();
        let (status, outcome) = match &result {
            Ok(_) => (QueryStatus::Ok, Outcome::Ok),
            Err(_) => (QueryStatus::Error, Outcome::Error),
        };
        m::record_query(status, took);
        latency.record(took, outcome);
        match result {
            Ok(best) if n <= QUERIES.len() => println!("{q:?} -> {best}"),
            Ok(_) => {}
            Err(e) => eprintln!("query {q:?} failed: {e}"),
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            println!(
                "{}",
                SloReport::evaluate(&latency.snapshot(), &SloTargets::default())
            );
            println!("{}", costs.report());
        }
    }
    println!("{n} queries answered");
    Ok(())
}

fn count_tokens(embedder: &Embedder, texts: &[String]) -> Result<u64, Box<dyn std::error::Error>> {
    let mut n = 0u64;
    for t in texts {
        n += embedder.count_tokens(t)? as u64;
    }
    Ok(n)
}

/// One query: embed it, search the index; returns the best passage's id.
fn answer(
    embedder: &Embedder,
    index: &FlatIndex,
    costs: &CostTracker,
    q: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let query = spans::query(NAMESPACE, TOP_K);
    let _q = query.enter();
    let v = {
        let span = spans::embedding(MODEL, 1);
        let _in = span.enter();
        let tokens = embedder.count_tokens(q)? as u64;
        spans::record_input_tokens(&span, tokens);
        m::record_embedding_batch(MODEL, 1, tokens);
        costs.record(MODEL, tokens, 0)?;
        match embedder.embed_one(q) {
            Ok(v) => v,
            Err(e) => {
                spans::record_error(&span, &spans::error_kind(&e), &e);
                spans::record_error(&query, &spans::error_kind(&e), &e);
                return Err(e.into());
            }
        }
    };
    let hits = {
        let span = spans::retrieval(NAMESPACE, TOP_K);
        let _in = span.enter();
        match index.search(&v, TOP_K, None) {
            Ok(h) => {
                spans::record_returned(&span, h.len());
                h
            }
            Err(e) => {
                spans::record_error(&span, &spans::error_kind(&e), &e);
                spans::record_error(&query, &spans::error_kind(&e), &e);
                return Err(e.into());
            }
        }
    };
    spans::record_returned(&query, hits.len());
    Ok(hits.first().map(|h| h.id.clone()).unwrap_or_default())
}
