//! Serves `/metrics` while a synthetic query workload runs, so
//! `curl 127.0.0.1:9464/metrics` shows live figures without a model.
//!
//! ```text
//! cargo run -p ragjet-telemetry --example telemetry_metrics -- [PORT] [SECONDS]
//! ```
//! PORT defaults to 9464 (0 picks a free one); SECONDS to 0 (run forever).
//! Every few seconds it prints the SLO and cost reports.
//!
//! The facade's `serve_metrics` example runs the real model instead; this
//! one needs nothing but this crate and also exercises the cache, cost and
//! feedback metrics. Its name differs so that `cargo run --example
//! serve_metrics` at the workspace root has one target to run.

use ragjet_telemetry::metrics::{self as m, QueryStatus};
use ragjet_telemetry::{
    spans, Budgets, CostTracker, LatencyRecorder, ModelPrice, Outcome, SloReport, SloTargets,
    Telemetry, TelemetryConfig,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(9464);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(0);

    let telemetry = Telemetry::init(TelemetryConfig::default().with_metrics_port(port))?;
    let addr = telemetry.metrics_addr().ok_or("no metrics endpoint")?;
    println!("serving http://{addr}/metrics");

    let latency = LatencyRecorder::new(Duration::from_secs(60))?;
    let prices = HashMap::from([(
        "gpt-4o-mini".to_string(),
        ModelPrice {
            input_per_million: 0.15,
            output_per_million: 0.6,
        },
    )]);
    let costs = CostTracker::new(
        prices,
        Budgets {
            daily_usd: Some(5.0),
            monthly_usd: Some(100.0),
        },
    )?;
    costs.on_alert(|a| println!("budget alert: {a:?}"));

    let mut rng = StdRng::seed_from_u64(1);
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut docs = 0u64;
    while seconds == 0 || started.elapsed() < Duration::from_secs(seconds) {
        let t0 = Instant::now();
        let query = spans::query("docs", 5);
        let _enter = query.enter();

        // Embed the query (1 text) and now and then a batch of new passages.
        let batch = if rng.random_bool(0.1) {
            rng.random_range(8..64)
        } else {
            1
        };
        {
            let span = spans::embedding("all-MiniLM-L6-v2", batch);
            let tokens = batch as u64 * rng.random_range(12..140);
            spans::record_input_tokens(&span, tokens);
            m::record_embedding_batch("all-MiniLM-L6-v2", batch, tokens);
            std::thread::sleep(Duration::from_micros(300 * batch as u64));
        }
        if batch > 1 {
            docs += batch as u64;
            m::record_index_operation("docs", "add");
            m::set_index_size("docs", docs);
        }
        let hit = rng.random_bool(0.3);
        m::record_cache_request("embedding", "l1", if hit { "hit" } else { "miss" });
        {
            let span = spans::retrieval("docs", 5);
            m::record_index_operation("docs", "search");
            std::thread::sleep(Duration::from_micros(rng.random_range(200..3000)));
            spans::record_returned(&span, 5);
        }
        let failed = rng.random_bool(0.002);
        if failed {
            spans::record_error(&query, "Timeout", &"generation timed out");
        } else {
            costs.record(
                "gpt-4o-mini",
                rng.random_range(400..1600),
                rng.random_range(50..300),
            )?;
        }
        if rng.random_bool(0.05) {
            m::record_feedback(if rng.random_bool(0.8) { 1.0 } else { 0.0 });
        }
        let took = t0.elapsed();
        let status = if failed {
            QueryStatus::Error
        } else {
            QueryStatus::Ok
        };
        m::record_query(status, took);
        latency.record(took, if failed { Outcome::Error } else { Outcome::Ok });

        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            println!(
                "{}",
                SloReport::evaluate(&latency.snapshot(), &SloTargets::default())
            );
            println!("{}", costs.report());
        }
    }
    Ok(())
}
