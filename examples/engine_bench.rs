//! The engine end to end on the repository's fixture corpus: ingest (first,
//! then again with the embedding cache warm), query latency cold and warm,
//! and throughput of concurrent queries with and without the shared
//! micro-batching queue. Prints markdown tables (docs/performance.md).
//!
//! ```text
//! cargo run --release -p ragjet --example engine_bench -- \
//!     [--corpus fixtures/corpus.jsonl] [--queries fixtures/queries.jsonl] \
//!     [--concurrency 1,5,10,20] [--per-level 400] [--rounds 2] [--model DIR]
//! ```
//!
//! What each row measures:
//! - ingest 1: an empty store directory, nothing cached: every chunk is
//!   embedded. The engine is then saved and dropped.
//! - ingest 1, queue off: the same into another empty directory with
//!   `queue.enabled = false`.
//! - ingest 2: a new, empty engine over the same directory: the index is
//!   rebuilt, the vectors come from the embedding cache's disk tier.
//! - re-ingest: the saved engine opened, the same documents ingested
//!   again: they are unchanged, so nothing is chunked or embedded.
//! - query cold: each query's first run (every cache misses: the model
//!   embeds it, the index is searched); warm: the same queries again (the
//!   retrieval cache answers).
//! - throughput: `--per-level` queries split over N threads, caches
//!   bypassed (`no_cache`) so every query runs the model; "queue" is the
//!   engine as configured by default (one model, concurrent embeddings
//!   coalesced into batches), "direct" is `queue.enabled = false` (each
//!   thread runs the model itself). Both engines are open side by side over
//!   the saved store and alternate level by level, `--rounds` times; the
//!   median queries/s is shown.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ragjet::{CacheOutcome, Document, Engine, EngineBuilder, QueryOptions, SearchMode};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    corpus: PathBuf,
    queries: PathBuf,
    concurrency: Vec<usize>,
    per_level: usize,
    rounds: usize,
    model: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let mut args = Args {
        corpus: root.join("corpus.jsonl"),
        queries: root.join("queries.jsonl"),
        concurrency: vec![1, 5, 10, 20],
        per_level: 400,
        rounds: 2,
        model: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let count = |v: String| match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{flag}: expected a positive integer, got {v:?}")),
        };
        match flag.as_str() {
            "--corpus" => args.corpus = value()?.into(),
            "--queries" => args.queries = value()?.into(),
            "--concurrency" => {
                args.concurrency = value()?
                    .split(',')
                    .map(|s| count(s.trim().to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--per-level" => args.per_level = count(value()?)?,
            "--rounds" => args.rounds = count(value()?)?,
            "--model" => args.model = Some(value()?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// `(id, text)` of each line of a JSON-lines file.
fn read_jsonl(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}: {e}", at()))?;
        match (v["id"].as_str(), v["text"].as_str()) {
            (Some(id), Some(text)) => out.push((id.to_string(), text.to_string())),
            _ => return Err(format!("{}: needs \"id\" and \"text\" strings", at())),
        }
    }
    Ok(out)
}

fn builder(model: &Option<PathBuf>) -> EngineBuilder {
    let b = Engine::builder();
    match model {
        Some(m) => b.model_dir(m),
        None => b,
    }
}

/// Nearest-rank percentile of sorted milliseconds.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

struct LatencyRow {
    name: String,
    ms: Vec<f64>,
    embed_ms: f64,
    search_ms: f64,
    outcomes: String,
}

/// Runs every query once, in order; latencies are the engine's own
/// `timings.total`.
fn latency_pass(
    engine: &Engine,
    queries: &[(String, String)],
    options: &QueryOptions,
    name: &str,
) -> Result<LatencyRow, ragjet::Error> {
    let mut row = LatencyRow {
        name: name.to_string(),
        ms: Vec::with_capacity(queries.len()),
        embed_ms: 0.0,
        search_ms: 0.0,
        outcomes: String::new(),
    };
    let (mut miss, mut hit, mut semantic, mut bypassed) = (0, 0, 0, 0);
    for (_, text) in queries {
        let a = engine.query(text, options)?;
        row.ms.push(ms(a.timings.total));
        row.embed_ms += ms(a.timings.embed);
        row.search_ms += ms(a.timings.search);
        match a.cache {
            CacheOutcome::Miss => miss += 1,
            CacheOutcome::RetrievalHit => hit += 1,
            CacheOutcome::SemanticHit { .. } => semantic += 1,
            CacheOutcome::Bypassed => bypassed += 1,
        }
    }
    let n = queries.len() as f64;
    row.embed_ms /= n;
    row.search_ms /= n;
    row.ms.sort_by(f64::total_cmp);
    let mut parts = Vec::new();
    for (count, label) in [
        (miss, "miss"),
        (hit, "retrieval hit"),
        (semantic, "semantic hit"),
        (bypassed, "bypassed"),
    ] {
        if count > 0 {
            parts.push(format!("{count} {label}"));
        }
    }
    row.outcomes = parts.join(", ");
    Ok(row)
}

/// `total` queries over `threads` threads, each sending its next query when
/// the last one is answered; returns queries/s and the sorted per-call
/// milliseconds.
fn throughput(
    engine: &Arc<Engine>,
    queries: &Arc<Vec<(String, String)>>,
    threads: usize,
    total: usize,
) -> Result<(f64, Vec<f64>), String> {
    let per_thread = total.div_ceil(threads);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let engine = Arc::clone(engine);
            let queries = Arc::clone(queries);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || -> Result<Vec<f64>, String> {
                let options = QueryOptions::new().top_k(10).no_cache(true);
                barrier.wait();
                let mut lat = Vec::with_capacity(per_thread);
                for i in 0..per_thread {
                    // Threads start at different queries.
                    let (_, q) = &queries[(t * 37 + i) % queries.len()];
                    let start = Instant::now();
                    engine.query(q, &options).map_err(|e| e.to_string())?;
                    lat.push(ms(start.elapsed()));
                }
                Ok(lat)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::with_capacity(per_thread * threads);
    for h in handles {
        all.extend(h.join().map_err(|_| "a query thread panicked")??);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((all.len() as f64 / secs, all))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let corpus = read_jsonl(&args.corpus)?;
    let queries = read_jsonl(&args.queries)?;
    if corpus.is_empty() || queries.is_empty() {
        return Err("the corpus and the queries must not be empty".into());
    }
    let docs: Vec<Document> = corpus
        .iter()
        .map(|(id, text)| Document::new(id, text))
        .collect();
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");

    // Ingest 1: nothing cached.
    let engine = builder(&args.model).store_dir(&store).build()?;
    let embedder = engine.embedder();
    println!(
        "model {} ({} on {}, {} threads); corpus {} ({} passages), queries {} ({})\n",
        engine.model_name(),
        embedder.precision(),
        embedder.device_name(),
        embedder.num_threads(),
        args.corpus.display(),
        corpus.len(),
        args.queries.display(),
        queries.len()
    );
    let first = engine.ingest(docs.clone())?;
    let start = Instant::now();
    engine.save(&store)?;
    let save_secs = start.elapsed().as_secs_f64();
    drop(engine);

    // Ingest 2: a new engine, empty index, same directory (its embedding
    // cache file).
    let engine = builder(&args.model).store_dir(&store).build()?;
    let second = engine.ingest(docs.clone())?;
    drop(engine);

    // Ingest 1 again into another empty directory, the queue off: each
    // batch goes to the model directly.
    let engine = builder(&args.model)
        .store_dir(dir.path().join("store-direct"))
        .configure(|c| c.queue.enabled = false)
        .build()?;
    let first_direct = engine.ingest(docs.clone())?;
    drop(engine);

    // Re-ingest into the saved engine.
    let start = Instant::now();
    let engine = Engine::open(&store)?;
    let open_secs = start.elapsed().as_secs_f64();
    let again = engine.ingest(docs.clone())?;
    for r in [&first, &first_direct, &second, &again] {
        if let Some((id, e)) = r.failed.first() {
            return Err(format!("document {id:?} was not ingested: {e}").into());
        }
    }

    println!("| ingest ({} documents) | ms | documents/s | chunks written | embeddings computed | from cache | share of ingest 1 |", docs.len());
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [
        ("1: empty store, nothing cached", &first),
        (
            "1, queue off: another empty store, model called directly",
            &first_direct,
        ),
        (
            "2: new empty engine, same store dir (embedding cache on disk)",
            &second,
        ),
        ("re-ingest into the opened store (unchanged)", &again),
    ] {
        println!(
            "| {name} | {:.1} | {:.0} | {} | {} | {} | {:.1} % |",
            r.seconds * 1e3,
            docs.len() as f64 / r.seconds,
            r.chunks,
            r.embeddings_computed,
            r.embeddings_cached,
            100.0 * r.seconds / first.seconds
        );
    }
    println!("\nsave {save_secs:.3} s, open {open_secs:.3} s\n");

    // Query latency. The opened engine's caches are empty: pass 1 misses.
    let vector = QueryOptions::new().top_k(10);
    let rows = vec![
        latency_pass(&engine, &queries, &vector, "cold: first pass, vector")?,
        latency_pass(&engine, &queries, &vector, "warm: second pass, vector")?,
        latency_pass(
            &engine,
            &queries,
            &QueryOptions::new()
                .top_k(10)
                .mode(SearchMode::Hybrid { alpha: 0.5 })
                .no_cache(true),
            "cold: hybrid α=0.5, caches bypassed",
        )?,
        latency_pass(
            &engine,
            &queries,
            &QueryOptions::new()
                .top_k(10)
                .mode(SearchMode::Keyword)
                .no_cache(true),
            "cold: keyword (BM25), caches bypassed",
        )?,
    ];
    println!(
        "| query latency, top-10, {} queries one at a time (ms) | p50 | p95 | p99 | mean embed | mean search | cache |",
        queries.len()
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {} |",
            r.name,
            pct(&r.ms, 0.50),
            pct(&r.ms, 0.95),
            pct(&r.ms, 0.99),
            r.embed_ms,
            r.search_ms,
            r.outcomes
        );
    }
    drop(engine);

    // Throughput: both engines open side by side; the second's embedding
    // cache stays in memory (the first holds the disk file), which queries
    // with `no_cache` do not touch anyway.
    let queued = Arc::new(Engine::open(&store)?);
    let mut direct_cfg = queued.config().clone();
    direct_cfg.queue.enabled = false;
    direct_cfg.cache.embedding.disk = false;
    let mut b = Engine::builder().config(direct_cfg);
    if let Some(m) = &args.model {
        b = b.model_dir(m);
    }
    let direct = Arc::new(b.open(&store)?);
    let queries = Arc::new(queries);
    // Warm-up: first calls pay for lazily made kernels and pools.
    throughput(&queued, &queries, 2, 20)?;
    throughput(&direct, &queries, 2, 20)?;

    println!(
        "\n| concurrency (threads) | queue: queries/s | p50 ms | p95 ms | direct: queries/s | p50 ms | p95 ms | queue / direct |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &c in &args.concurrency {
        let (mut q_qps, mut d_qps) = (Vec::new(), Vec::new());
        let (mut q_lat, mut d_lat) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            // Alternate which goes first, so a change of load hits both.
            let order: [(&Arc<Engine>, bool); 2] = if round % 2 == 0 {
                [(&queued, true), (&direct, false)]
            } else {
                [(&direct, false), (&queued, true)]
            };
            for (engine, is_queue) in order {
                let (qps, lat) = throughput(engine, &queries, c, args.per_level)?;
                if is_queue {
                    q_qps.push(qps);
                    q_lat.extend(lat);
                } else {
                    d_qps.push(qps);
                    d_lat.extend(lat);
                }
            }
        }
        q_lat.sort_by(f64::total_cmp);
        d_lat.sort_by(f64::total_cmp);
        let (q, d) = (median(q_qps), median(d_qps));
        println!(
            "| {c} | {q:.1} | {:.2} | {:.2} | {d:.1} | {:.2} | {:.2} | {:.2}× |",
            pct(&q_lat, 0.5),
            pct(&q_lat, 0.95),
            pct(&d_lat, 0.5),
            pct(&d_lat, 0.95),
            q / d
        );
    }
    Ok(())
}
