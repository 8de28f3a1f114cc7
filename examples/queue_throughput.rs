//! Many callers, one model: total throughput of concurrent single-query
//! embedding, each thread calling the embedder directly versus all of them
//! going through a micro-batching queue (`ragjet::queue::embedding_queue`).
//!
//! ```text
//! cargo run --release -p ragjet --example queue_throughput -- \
//!     [--threads 16] [--per-thread 100] [--max-wait-ms 0] [--rounds 3] [--precision f32|bf16]
//!     [--backend packed|padded] [--model DIR]
//! ```
//!
//! Every thread embeds its own short queries one at a time and waits for
//! each vector before sending the next, as request handlers do. The two
//! ways alternate for `--rounds` rounds (so that a change in the machine's
//! load hits both alike); each round prints queries/s and per-call latency
//! (p50, p95), and the last line the median queries/s of each way. The
//! queue's vectors are checked to equal the direct ones.

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ragjet::inference::{locate_default_model, BackendKind, Embedder, EmbedderOptions, Precision};
use ragjet::queue::embedding_queue;
use ragjet::{Priority, QueueOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOPICS: &[&str] = &[
    "retrieval-augmented generation",
    "vector databases",
    "the capital of France",
    "HNSW graph search",
    "sentence embeddings",
    "BM25 keyword ranking",
    "cross-encoder reranking",
    "cache invalidation",
    "GPU memory limits",
    "tokenizer vocabularies",
    "photosynthesis in plants",
    "the history of the printing press",
];
const FORMS: &[&str] = &[
    "what is {}?",
    "how does {} work",
    "explain {} in simple terms",
    "best practices for {}",
    "{} compared with the alternatives",
    "why does {} matter",
];

struct Args {
    threads: usize,
    per_thread: usize,
    max_wait: Duration,
    rounds: usize,
    precision: Option<Precision>,
    backend: Option<BackendKind>,
    model: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        threads: 16,
        per_thread: 100,
        max_wait: Duration::ZERO,
        rounds: 3,
        precision: None,
        backend: None,
        model: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--threads" => args.threads = number(value()?)?.max(1) as usize,
            "--per-thread" => args.per_thread = number(value()?)?.max(1) as usize,
            "--max-wait-ms" => args.max_wait = Duration::from_millis(number(value()?)?),
            "--rounds" => args.rounds = number(value()?)?.max(1) as usize,
            "--precision" => {
                args.precision = Some(match value()?.as_str() {
                    "f32" => Precision::F32,
                    "bf16" => Precision::Bf16,
                    other => return Err(format!("--precision f32|bf16, not {other}")),
                })
            }
            "--backend" => {
                args.backend = Some(match value()?.as_str() {
                    "packed" => BackendKind::Packed,
                    "padded" => BackendKind::Padded,
                    other => return Err(format!("--backend packed|padded, not {other}")),
                })
            }
            "--model" => args.model = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(args)
}

fn query(thread: usize, i: usize) -> String {
    let topic = TOPICS[(thread * 7 + i) % TOPICS.len()];
    let form = FORMS[(thread + i * 5) % FORMS.len()];
    format!("{} ({})", form.replace("{}", topic), thread * 1000 + i)
}

struct Run {
    seconds: f64,
    latencies: Vec<Duration>,
    vectors: Vec<(String, Vec<f32>)>,
}

/// `threads` threads, started together, each calling `embed` on its own
/// queries one after another.
fn run<F>(threads: usize, per_thread: usize, embed: Arc<F>) -> Run
where
    F: Fn(&str) -> Vec<f32> + Send + Sync + 'static,
{
    let start = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (start, embed) = (Arc::clone(&start), Arc::clone(&embed));
            thread::spawn(move || {
                start.wait();
                let mut latencies = Vec::with_capacity(per_thread);
                let mut first = None;
                for i in 0..per_thread {
                    let q = query(t, i);
                    let t0 = Instant::now();
                    let v = embed(&q);
                    latencies.push(t0.elapsed());
                    if i == 0 {
                        first = Some((q, v));
                    }
                }
                (latencies, first)
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let mut latencies = Vec::new();
    let mut vectors = Vec::new();
    for h in handles {
        let (l, first) = h.join().expect("worker thread");
        latencies.extend(l);
        vectors.extend(first);
    }
    let seconds = t0.elapsed().as_secs_f64();
    latencies.sort();
    Run {
        seconds,
        latencies,
        vectors,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn report(name: &str, r: &Run, total: usize) -> f64 {
    let qps = total as f64 / r.seconds;
    println!(
        "  {name:<8} {total:>6} queries in {:>6.2} s  {qps:>8.1} queries/s  latency p50 {:>6.2} ms  p95 {:>6.2} ms",
        r.seconds,
        percentile(&r.latencies, 0.5),
        percentile(&r.latencies, 0.95),
    );
    qps
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let dir = match args.model {
        Some(d) => d,
        None => locate_default_model()?,
    };
    let embedder = Arc::new(Embedder::load_with(
        &dir,
        EmbedderOptions {
            precision: args.precision,
            backend: args.backend,
            ..Default::default()
        },
    )?);
    println!(
        "model {} on {} ({}, {} backend, {} threads); {} caller threads × {} single queries each",
        dir.display(),
        embedder.device_name(),
        embedder.precision(),
        embedder.backend(),
        embedder.num_threads(),
        args.threads,
        args.per_thread
    );
    // Warm-up: page in the weights, grow the allocator's pools.
    for i in 0..20 {
        embedder.embed_one(&query(99, i))?;
    }
    let total = args.threads * args.per_thread;
    let queue = Arc::new(embedding_queue(
        Arc::clone(&embedder),
        QueueOptions {
            name: "embed".into(),
            max_wait: args.max_wait,
            ..Default::default()
        },
    )?);
    let direct_embed = {
        let embedder = Arc::clone(&embedder);
        Arc::new(move |q: &str| embedder.embed_one(q).expect("embed"))
    };
    let queued_embed = {
        let queue = Arc::clone(&queue);
        Arc::new(move |text: &str| {
            queue
                .submit(text.to_owned(), Priority::Interactive)
                .expect("queued embed")
        })
    };
    let (mut direct_qps, mut queue_qps) = (Vec::new(), Vec::new());
    let (mut direct, mut queued) = (None, None);
    for round in 1..=args.rounds {
        println!("round {round}");
        let d = run(args.threads, args.per_thread, Arc::clone(&direct_embed));
        direct_qps.push(report("direct", &d, total));
        let q = run(args.threads, args.per_thread, Arc::clone(&queued_embed));
        queue_qps.push(report("queue", &q, total));
        (direct, queued) = (Some(d), Some(q));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (d, q) = (median(&mut direct_qps), median(&mut queue_qps));
    println!(
        "median of {} rounds: direct {d:.1} queries/s, queue {q:.1} queries/s, queue / direct {:.2}×",
        args.rounds,
        q / d
    );
    let (direct, queued) = (direct.expect("one round"), queued.expect("one round"));

    // Same vectors either way (up to float summation order).
    let mut worst = 0.0f32;
    for ((qa, a), (qb, b)) in direct.vectors.iter().zip(&queued.vectors) {
        assert_eq!(qa, qb);
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    println!("largest difference between direct and queued vectors: {worst:.2e}");
    if worst > 1e-3 {
        return Err(format!("queued vectors differ from direct ones by {worst}").into());
    }
    Ok(())
}
