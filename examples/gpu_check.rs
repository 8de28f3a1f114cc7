//! Every GPU figure of issue #9 in one run: parity (f32, f16), throughput
//! (f16, batch 32 and 256), the out-of-memory back-off, GPU exact search
//! against the CPU flat index, and GPU memory. Run by
//! `scripts/gpu-check.sh`, which prepares the model and the
//! sentence-transformers reference and prints the ratios (docs/gpu.md).
//!
//! ```text
//! gpu_check --model DIR --corpus FILE.jsonl --reference REF.npy [--json-out FILE]
//!           [--device cuda:0|cpu] [--limit N] [--search-rows N] [--search-queries N]
//!           [--cpu-queries N] [--skip-real-oom]
//! ```
//!
//! Each figure is one JSON object a line on stdout (`{"check": ...}`), then
//! a readable table. `--device cpu` runs the same steps on the CPU (with
//! small `--limit` / `--search-rows`) to prove the plumbing on a machine
//! without a GPU. With `--device cuda:N` (the default) and no usable GPU it
//! stops with exit status 2 and one clear line, before any work.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use ragjet::inference::{Device, Embedder, EmbedderOptions, Precision};
use ragjet::retrieval::{
    CandleDevice, DeviceFlatIndex, Entry, FlatConfig, FlatIndex, Metric, Storage, VectorIndex,
};
use ragjet::telemetry::{LogFormat, Telemetry, TelemetryConfig};
use serde_json::{json, Value};

mod jsonl;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    model: PathBuf,
    corpus: PathBuf,
    reference: PathBuf,
    json_out: Option<PathBuf>,
    device: Device,
    limit: Option<usize>,
    search_rows: usize,
    search_queries: usize,
    cpu_queries: usize,
    real_oom: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        model: PathBuf::new(),
        corpus: PathBuf::new(),
        reference: PathBuf::new(),
        json_out: None,
        device: Device::Cuda(0),
        limit: None,
        search_rows: 1_000_000,
        search_queries: 10_000,
        cpu_queries: 1_000,
        real_oom: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--model" => a.model = value()?.into(),
            "--corpus" => a.corpus = value()?.into(),
            "--reference" => a.reference = value()?.into(),
            "--json-out" => a.json_out = Some(value()?.into()),
            "--device" => a.device = value()?.parse().map_err(|e| format!("--device: {e}"))?,
            "--limit" => a.limit = Some(num(value()?)?),
            "--search-rows" => a.search_rows = num(value()?)?,
            "--search-queries" => a.search_queries = num(value()?)?,
            "--cpu-queries" => a.cpu_queries = num(value()?)?,
            "--skip-real-oom" => a.real_oom = false,
            other => return Err(format!("unknown argument {other} (see the file's header)")),
        }
    }
    for (name, p) in [
        ("--model", &a.model),
        ("--corpus", &a.corpus),
        ("--reference", &a.reference),
    ] {
        if p.as_os_str().is_empty() {
            return Err(format!("{name} is required"));
        }
    }
    if a.device == Device::Auto {
        return Err(
            "--device must be cpu or cuda:N, not auto (the figures must say where they ran)".into(),
        );
    }
    Ok(a)
}

/// Collects the figures: JSON lines on stdout (and in `--json-out`), rows
/// of the final table.
struct Report {
    lines: Vec<Value>,
    table: Vec<(String, String)>,
}

impl Report {
    fn emit(&mut self, v: Value, label: String, shown: String) {
        println!("{v}");
        self.lines.push(v);
        self.table.push((label, shown));
    }
}

/// The "short passages" of the throughput target: the first 12 words of
/// each corpus passage, the corpus 8 times over (scripts/gpu_check/st_reference.py
/// builds the same list).
fn short_passages(texts: &[String]) -> Vec<String> {
    let short: Vec<String> = texts
        .iter()
        .map(|t| t.split_whitespace().take(12).collect::<Vec<_>>().join(" "))
        .collect();
    (0..8).flat_map(|_| short.iter().cloned()).collect()
}

fn read_npy(path: &PathBuf) -> Res<(Vec<f32>, usize)> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..])?;
    let shape = npy.shape().to_vec();
    if shape.len() != 2 {
        return Err(format!(
            "{}: expected a 2-d array, got shape {shape:?}",
            path.display()
        )
        .into());
    }
    let dim = shape[1] as usize;
    Ok((npy.into_vec::<f32>()?, dim))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        ab += (*x as f64) * (*y as f64);
        aa += (*x as f64) * (*x as f64);
        bb += (*y as f64) * (*y as f64);
    }
    (ab / (aa.sqrt() * bb.sqrt()).max(1e-30)) as f32
}

/// Every row of `rows` minus `mean`.
fn centred(rows: &[f32], mean: &[f32]) -> Vec<f32> {
    rows.chunks_exact(mean.len())
        .flat_map(|r| r.iter().zip(mean).map(|(x, m)| x - m))
        .collect()
}

/// Min and mean row cosine of two row-major matrices of `dim` columns.
fn row_cosines(a: &[f32], b: &[f32], dim: usize) -> (f32, f32) {
    let cs: Vec<f32> = a
        .chunks_exact(dim)
        .zip(b.chunks_exact(dim))
        .map(|(x, y)| cosine(x, y))
        .collect();
    let min = cs.iter().copied().fold(f32::INFINITY, f32::min);
    (min, cs.iter().sum::<f32>() / cs.len().max(1) as f32)
}

fn load(
    args: &Args,
    precision: Precision,
    batch: usize,
    tokens: usize,
    oom_above: Option<usize>,
) -> Res<Embedder> {
    let opts = EmbedderOptions {
        device: args.device,
        precision: Some(precision),
        max_batch_size: batch,
        max_batch_tokens: tokens,
        simulate_oom_above_tokens: oom_above,
        ..EmbedderOptions::default()
    };
    Ok(Embedder::load_with(&args.model, opts)?)
}

/// Passages/s of one timed pass after a warm-up pass over the first 512.
fn throughput(e: &Embedder, texts: &[String]) -> Res<f64> {
    e.embed(&texts[..texts.len().min(512)])?;
    let t = Instant::now();
    let out = e.embed(texts)?;
    let secs = t.elapsed().as_secs_f64();
    if out.rows() != texts.len() {
        return Err(format!("{} texts in, {} vectors out", texts.len(), out.rows()).into());
    }
    Ok(texts.len() as f64 / secs)
}

/// Random unit-length-to-be vectors (the index normalises them), from a
/// fixed seed, filled on all cores.
fn random_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rows = vec![0.0f32; n * dim];
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let chunk = n.div_ceil(threads).max(1) * dim;
    std::thread::scope(|s| {
        for (ci, part) in rows.chunks_mut(chunk).enumerate() {
            s.spawn(move || {
                let mut state = seed ^ (ci as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                for x in part.iter_mut() {
                    // splitmix64
                    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    *x = ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                }
            });
        }
    });
    rows
}

/// The search index's device. By now the embedder has loaded on
/// `args.device`, which is the driver probe, so opening the GPU is safe.
fn search_device(args: &Args) -> Res<CandleDevice> {
    Ok(match args.device {
        Device::Cuda(n) => CandleDevice::new_cuda(n)?,
        _ => CandleDevice::Cpu,
    })
}

fn recall(got: &[Vec<ragjet::retrieval::Hit>], want: &[Vec<ragjet::retrieval::Hit>]) -> f64 {
    let mut found = 0usize;
    let mut total = 0usize;
    for (g, w) in got.iter().zip(want) {
        total += w.len();
        found += g.iter().filter(|h| w.iter().any(|x| x.id == h.id)).count();
    }
    found as f64 / total.max(1) as f64
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gpu_check: {e}");
            std::process::exit(64);
        }
    };
    // Logs as JSON lines on stderr (the OOM back-off's warnings carry each
    // halved limit); metrics kept in-process and printed at the end.
    let telemetry = Telemetry::init(TelemetryConfig {
        log_format: LogFormat::Json,
        log_filter: Some("warn,ragjet_inference=info,ragjet_retrieval=info".into()),
        metrics_addr: None,
        ..TelemetryConfig::default()
    });
    // Fail fast and clearly when the GPU is not there: loading the model
    // on `cuda:N` is the probe.
    let probe = match load(&args, Precision::F32, 32, 16_384, None) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("gpu_check: cannot run on {}: {e}", args.device);
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args, probe, telemetry.as_ref().ok()) {
        eprintln!("gpu_check: {e}");
        std::process::exit(1);
    }
}

fn run(
    args: &Args,
    probe: Embedder,
    telemetry: Option<&ragjet::telemetry::TelemetryGuard>,
) -> Res<()> {
    let device_name = probe.device_name();
    let mut rep = Report {
        lines: Vec::new(),
        table: Vec::new(),
    };
    rep.emit(
        json!({"check": "device", "device": device_name}),
        "device".into(),
        device_name.clone(),
    );

    let texts = jsonl::read_texts(&args.corpus, args.limit)?;
    let (reference, dim) = read_npy(&args.reference)?;
    if reference.len() < texts.len() * dim {
        return Err(format!(
            "reference has {} rows, corpus {}",
            reference.len() / dim,
            texts.len()
        )
        .into());
    }
    let reference = &reference[..texts.len() * dim];

    // Parity against the sentence-transformers f32 CPU reference. The
    // centred cosine (both sides minus the reference's mean embedding) is
    // the stricter figure: a random-weight model's embeddings share a
    // common direction that inflates the plain cosine.
    let mut ref_mean = vec![0.0f32; dim];
    for row in reference.chunks_exact(dim) {
        ref_mean
            .iter_mut()
            .zip(row)
            .for_each(|(m, x)| *m += x / texts.len() as f32);
    }
    let ref_centred = centred(reference, &ref_mean);
    let mut f16_vectors = Vec::new();
    for (precision, target) in [(Precision::F32, 0.9999f64), (Precision::F16, 0.999)] {
        let e = load(args, precision, 32, 16_384, None)?;
        let out = e.embed(&texts)?;
        if out.dim() != dim {
            return Err(format!("model dim {} != reference dim {dim}", out.dim()).into());
        }
        let (min, mean) = row_cosines(out.as_slice(), reference, dim);
        let (cmin, _) = row_cosines(&centred(out.as_slice(), &ref_mean), &ref_centred, dim);
        rep.emit(
            json!({"check": "parity", "precision": precision.to_string(), "passages": texts.len(),
                   "min_cosine": min, "mean_cosine": mean, "min_centred_cosine": cmin,
                   "target": target, "pass": f64::from(min) >= target}),
            format!("parity {precision} (min / mean cosine, target >= {target})"),
            format!(
                "{min:.6} / {mean:.6} {}",
                if f64::from(min) >= target {
                    "PASS"
                } else {
                    "FAIL"
                }
            ),
        );
        if precision == Precision::F16 {
            f16_vectors = out.into_vec();
        }
    }

    // Throughput, f16, batch 32 and 256, corpus and short passages.
    let short = short_passages(&texts);
    for batch in [32usize, 256] {
        let e = load(args, Precision::F16, batch, batch * 256, None)?;
        for (set, list) in [("corpus", &texts), ("short", &short)] {
            let pps = throughput(&e, list)?;
            rep.emit(
                json!({"check": "throughput", "precision": "f16", "batch": batch, "set": set,
                       "passages": list.len(), "passages_per_s": pps}),
                format!("ragjet f16 batch {batch}, {set} ({} passages)", list.len()),
                format!("{pps:.0} passages/s"),
            );
        }
    }

    // OOM back-off, simulated: any pass above 4096 real tokens fails as an
    // out-of-memory error would.
    {
        let start = 65_536;
        // Marks where this phase's warnings start in the JSON log on stderr
        // (scripts/gpu_check/report.py lists each phase's halvings).
        eprintln!("{}", json!({"gpu_check_phase": "oom_simulated"}));
        let e = load(args, Precision::F16, 256, start, Some(4096))?;
        let out = e.embed(&texts)?;
        let (min, _) = row_cosines(out.as_slice(), &f16_vectors, dim);
        let limit = e.batch_token_limit();
        let ok = out.rows() == texts.len() && limit <= 4096 && min >= 0.999;
        rep.emit(
            json!({"check": "oom_simulated", "start_limit": start, "final_limit": limit,
                   "rows_in": texts.len(),
                   "rows_out": out.rows(), "min_cosine_vs_plain_f16": min, "pass": ok}),
            "OOM back-off, simulated above 4096 tokens".into(),
            format!(
                "limit {start} -> {limit}, {}/{} rows back {}",
                out.rows(),
                texts.len(),
                if ok { "PASS" } else { "FAIL" }
            ),
        );
    }
    drop(probe);

    // Exact search: random vectors, GPU (f16 and f32) vs the CPU flat index.
    let sdim = 384;
    let (n, nq) = (args.search_rows, args.search_queries);
    let t = Instant::now();
    let rows = random_rows(n, sdim, 1);
    let queries = random_rows(nq, sdim, 2);
    let ids: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    eprintln!(
        "gpu_check: {n} x {sdim} random vectors in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let ncpu = args.cpu_queries.min(nq);
    let qv: Vec<Vec<f32>> = queries
        .chunks_exact(sdim)
        .take(ncpu)
        .map(<[f32]>::to_vec)
        .collect();
    let mut cpu = FlatIndex::new(FlatConfig::new(sdim, Metric::Cosine))?;
    cpu.upsert(
        ids.iter()
            .zip(rows.chunks_exact(sdim))
            .map(|(id, v)| Entry::new(id.clone(), v.to_vec()))
            .collect(),
    )?;
    cpu.search_batch(&qv[..ncpu.min(16)], 10, None)?; // warm-up
    let t = Instant::now();
    let cpu_hits = cpu.search_batch(&qv, 10, None)?;
    let cpu_qps = ncpu as f64 / t.elapsed().as_secs_f64();
    drop(cpu);
    rep.emit(
        json!({"check": "search_cpu", "rows": n, "dim": sdim, "queries": ncpu, "k": 10,
               "threads": std::thread::available_parallelism().map_or(1, |t| t.get()), "queries_per_s": cpu_qps}),
        format!("CPU FlatIndex batch search, {n} x {sdim}, {ncpu} queries"),
        format!("{cpu_qps:.0} queries/s"),
    );
    let device = search_device(args)?;
    for storage in [Storage::F16, Storage::F32] {
        let t = Instant::now();
        let gpu =
            DeviceFlatIndex::from_rows(ids.clone(), &rows, sdim, Metric::Cosine, storage, &device)?;
        let build = t.elapsed().as_secs_f64();
        gpu.search_batch(&queries[..sdim * nq.min(256)], 10)?; // warm-up (kernels load)
        let t = Instant::now();
        let hits = gpu.search_batch(&queries, 10)?;
        let qps = nq as f64 / t.elapsed().as_secs_f64();
        let r = recall(&hits[..ncpu], &cpu_hits);
        let st = format!("{storage:?}").to_lowercase();
        rep.emit(
            json!({"check": "search_device", "device": gpu.device_name(), "storage": st, "rows": n,
                   "dim": sdim, "queries": nq, "k": 10, "build_s": build, "queries_per_s": qps,
                   "speedup_vs_cpu": qps / cpu_qps, "recall_at_10_vs_cpu": r}),
            format!("{} exact search {st}, {nq} queries", gpu.device_name()),
            format!(
                "{qps:.0} queries/s ({:.1}x CPU), recall@10 vs CPU {r:.4}",
                qps / cpu_qps
            ),
        );
    }

    // OOM back-off, real: the whole corpus 16 times over in one batch
    // (~100 GB of f16 attention scores on the padded path) must not fit.
    if args.real_oom {
        // Last, and non-fatal: an allocation failure that the back-off does
        // not recognise must not cost the other figures.
        let result = (|| -> Res<()> {
            let big: Vec<String> = (0..16).flat_map(|_| texts.iter().cloned()).collect();
            let start = big.len() * 256;
            eprintln!("{}", json!({"gpu_check_phase": "oom_real"}));
            let e = load(args, Precision::F16, big.len(), start, None)?;
            let t = Instant::now();
            let out = e.embed(&big)?;
            let secs = t.elapsed().as_secs_f64();
            let limit = e.batch_token_limit();
            let copies: Vec<f32> = (0..16).flat_map(|_| f16_vectors.iter().copied()).collect();
            let (min, _) = row_cosines(out.as_slice(), &copies, dim);
            let ok = out.rows() == big.len() && limit < start && min >= 0.999;
            rep.emit(
                json!({"check": "oom_real", "start_limit": start, "final_limit": limit,
                       "rows_in": big.len(), "rows_out": out.rows(), "seconds": secs,
                       "min_cosine_vs_plain_f16": min, "pass": ok}),
                format!("OOM back-off, real ({} passages in one batch)", big.len()),
                format!(
                    "limit {start} -> {limit}, {}/{} rows back in {secs:.1} s {}",
                    out.rows(),
                    big.len(),
                    if ok { "PASS" } else { "FAIL" }
                ),
            );
            Ok(())
        })();
        if let Err(e) = result {
            rep.emit(
                json!({"check": "oom_real", "error": e.to_string(), "pass": false}),
                "OOM back-off, real".into(),
                format!("FAIL: {e}"),
            );
        }
    }

    // GPU memory, directly and as exported through ragjet-telemetry.
    #[cfg(feature = "cuda")]
    if let Device::Cuda(ord) = args.device {
        let (used, total) = ragjet::inference::gpu_memory(ord)?;
        rep.emit(
            json!({"check": "gpu_memory", "used_bytes": used, "total_bytes": total}),
            "GPU memory used / total".into(),
            format!(
                "{:.2} / {:.2} GiB",
                used as f64 / (1u64 << 30) as f64,
                total as f64 / (1u64 << 30) as f64
            ),
        );
    }
    if let Some(handle) = telemetry.and_then(|t| t.metrics()) {
        let text = handle.render();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("ragjet_gpu_memory")
                    || l.starts_with("ragjet_embedding_batch_token_limit")
            })
            .collect();
        rep.emit(
            json!({"check": "telemetry", "lines": lines}),
            "telemetry gauges".into(),
            if lines.is_empty() {
                "(none exported)".into()
            } else {
                lines.join("; ")
            },
        );
    }

    if let Some(path) = &args.json_out {
        let mut f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for l in &rep.lines {
            writeln!(f, "{l}")?;
        }
    }
    let w = rep.table.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    println!("\n{:<w$}  result", "ragjet gpu_check");
    println!("{}", "-".repeat(w + 40));
    for (label, shown) in &rep.table {
        println!("{label:<w$}  {shown}");
    }
    Ok(())
}
