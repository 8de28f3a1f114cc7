//! kill -9 crash trials: a child process writes and acknowledges, the parent
//! SIGKILLs it at a random moment, reopens what it left and checks that the
//! store opens and holds every acknowledged write.
//!
//! ```text
//! cargo run --release --example crash_trials -- engine --trials 100 [--seed N]
//! cargo run --release --example crash_trials -- cache  --trials 100 [--seed N]
//! ```
//!
//! * `engine`: the child opens (or creates) an engine store on the tiny test
//!   model and runs rounds: ingest three documents (every third round
//!   re-ingests an older one with new text, every fourth deletes one), then
//!   `Engine::save`, then prints `ACK <round>`. After the kill the store
//!   must open and its documents and their texts must equal the sequential
//!   model after the last acknowledged round, or after the next one (a save
//!   that completed but was killed before its acknowledgement).
//! * `cache`: the child puts values of 10 B..40 KB (lz4 above 256 B) into a
//!   `TieredCache` with only the durable redb disk tier, printing `ACK <i>`
//!   after each `put` returns. After the kill the file must open, every
//!   acknowledged value must read back equal, and the unacknowledged next
//!   one must be absent or equal.
//!
//! `--ack-early` makes the child acknowledge each write *before* making it:
//! the trials must then fail, which shows that the checks can catch a lost
//! acknowledged write.
//!
//! Each trial continues the store of the previous one, so later trials kill
//! saves that replace older states. A quarter of the kills land while the
//! child is still opening the store. Exit status 1 when any trial fails.
//! `scripts/test.sh` runs 5 trials of each; the figures of the long runs are
//! in `docs/reliability.md`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ragjet::cache::{DiskConfig, Scope, TieredCache};
use ragjet::{Document, Engine, QueryOptions, DEFAULT_NAMESPACE};

const TINY_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../ragjet-inference/tests/fixtures/tiny-cross-encoder"
);

type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("crash_trials: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<bool, Failure> {
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match args.first().map(String::as_str) {
        Some(child @ ("child-engine" | "child-cache")) => {
            let (dir, from) = (Path::new(&args[1]), args[2].parse()?);
            let early = args.get(3).is_some_and(|a| a == "--ack-early");
            match child {
                "child-engine" => child_engine(dir, from, early)?,
                _ => child_cache(dir, from, early)?,
            }
            Ok(true)
        }
        Some(kind @ ("engine" | "cache")) => {
            let trials: usize = flag("--trials").map_or(Ok(100), |s| s.parse())?;
            let seed: u64 = match flag("--seed") {
                Some(s) => s.parse()?,
                None => SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64,
            };
            let dir = tempfile::tempdir()?;
            let ack_early = args.iter().any(|a| a == "--ack-early");
            parent(kind, dir.path(), trials, seed, ack_early)
        }
        _ => Err("usage: crash_trials engine|cache [--trials N] [--seed N]".into()),
    }
}

/// xorshift64*: the kill times only need to be spread and reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ---- the engine's sequential model -------------------------------------

/// The documents after round `r`'s ingest/delete: id → text.
fn engine_ops(round: u64, docs: &mut BTreeMap<String, String>) -> (Vec<Document>, Option<String>) {
    let mut batch: Vec<Document> = (0..3)
        .map(|j| {
            let id = format!("d{}", round * 3 + j);
            Document::new(
                &id,
                format!("round {round} document {id} about caches and indexes"),
            )
        })
        .collect();
    if round % 3 == 2 {
        // Re-ingest an older document with new text (an upsert).
        let id = format!("d{}", round);
        batch.push(Document::new(
            &id,
            format!("rewritten in round {round}: {id} changed"),
        ));
    }
    let delete = (round % 4 == 3).then(|| format!("d{}", round * 3 - 5));
    for d in &batch {
        docs.insert(d.id.clone(), d.text.clone());
    }
    if let Some(id) = &delete {
        docs.remove(id);
    }
    (batch, delete)
}

fn engine_model(rounds: u64) -> BTreeMap<String, String> {
    let mut docs = BTreeMap::new();
    for r in 0..rounds {
        engine_ops(r, &mut docs);
    }
    docs
}

fn tiny_builder() -> ragjet::EngineBuilder {
    Engine::builder()
        .model_dir(TINY_MODEL)
        .num_threads(1)
        .chunking(48, 8)
}

/// Runs rounds `from..` forever (until killed), acknowledging each after
/// its save returned.
fn child_engine(dir: &Path, from: u64, ack_early: bool) -> Result<(), Failure> {
    let engine = if Engine::exists(dir) {
        tiny_builder().open(dir)?
    } else {
        tiny_builder().store_dir(dir).build()?
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY")?;
    out.flush()?;
    let mut docs = engine_model(from);
    for round in from.. {
        let (batch, delete) = engine_ops(round, &mut docs);
        if ack_early {
            writeln!(out, "ACK {round}")?;
            out.flush()?;
        }
        let report = engine.ingest(batch)?;
        if !report.failed.is_empty() {
            return Err(format!("round {round}: ingest refused {:?}", report.failed).into());
        }
        if let Some(id) = delete {
            engine.delete(&id)?;
        }
        engine.save(dir)?;
        if !ack_early {
            writeln!(out, "ACK {round}")?;
            out.flush()?;
        }
    }
    Ok(())
}

/// The documents (id → full text) of the engine saved in `dir`.
fn engine_state(dir: &Path) -> Result<BTreeMap<String, String>, Failure> {
    let engine = tiny_builder().open(dir)?;
    // A store that opened must serve.
    engine.query("caches and indexes", &QueryOptions::new().top_k(3))?;
    let mut state = BTreeMap::new();
    for id in engine.document_ids(DEFAULT_NAMESPACE) {
        state.insert(id, String::new());
    }
    // Texts through the query path would depend on ranking; the document
    // count and ids are checked exactly, and each text by a keyword query.
    for (id, text) in state.iter_mut() {
        let hits = engine
            .query(
                id,
                &QueryOptions::new()
                    .top_k(50)
                    .mode(ragjet::SearchMode::Keyword),
            )?
            .hits;
        if let Some(h) = hits.iter().find(|h| &h.doc_id == id) {
            *text = h.text.clone();
        }
    }
    Ok(state)
}

// ---- the cache -----------------------------------------------------------

fn cache_value(i: u64) -> String {
    // 10 B .. ~40 KB, repetitive enough for lz4 past 256 B.
    let len = [10usize, 300, 4_000, 40_000][(i % 4) as usize];
    let unit = format!("value {i};");
    unit.repeat(len / unit.len() + 1)[..len].to_string()
}

fn cache_key(i: u64) -> ragjet::cache::CacheKey {
    Scope::tenant("crash").key("trial").u64(i).finish()
}

fn open_cache(path: &Path) -> Result<TieredCache, Failure> {
    Ok(TieredCache::builder()
        .disk(DiskConfig::new(path))
        .default_ttl(None)
        .build()?)
}

fn child_cache(path: &Path, from: u64, ack_early: bool) -> Result<(), Failure> {
    let cache = open_cache(path)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY")?;
    out.flush()?;
    for i in from.. {
        if ack_early {
            writeln!(out, "ACK {i}")?;
            out.flush()?;
        }
        cache.put(&cache_key(i), &cache_value(i))?;
        if !ack_early {
            writeln!(out, "ACK {i}")?;
            out.flush()?;
        }
    }
    Ok(())
}

// ---- the parent ----------------------------------------------------------

struct Child {
    lines: Arc<Mutex<Vec<String>>>,
    proc: std::process::Child,
    reader: std::thread::JoinHandle<()>,
}

fn spawn(kind: &str, path: &Path, from: u64, ack_early: bool) -> Result<Child, Failure> {
    let mut proc = Command::new(std::env::current_exe()?)
        .arg(format!("child-{kind}"))
        .arg(path)
        .arg(from.to_string())
        .args(ack_early.then_some("--ack-early"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = proc.stdout.take().ok_or("no stdout")?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    Ok(Child {
        lines,
        proc,
        reader,
    })
}

fn is_ready(c: &Child) -> bool {
    c.lines
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|l| l == "READY")
}

fn wait_ready(c: &Child, limit: Duration) -> bool {
    let t = Instant::now();
    while !is_ready(c) {
        if t.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// SIGKILLs the child and returns the last acknowledged number, if any.
fn kill(mut c: Child) -> Result<Option<u64>, Failure> {
    c.proc.kill()?; // SIGKILL on Unix
    c.proc.wait()?;
    c.reader.join().map_err(|_| "reader thread panicked")?;
    let lines = c.lines.lock().unwrap_or_else(|p| p.into_inner());
    Ok(lines
        .iter()
        .filter_map(|l| l.strip_prefix("ACK ")?.parse::<u64>().ok())
        .next_back())
}

fn parent(
    kind: &str,
    dir: &Path,
    trials: usize,
    seed: u64,
    ack_early: bool,
) -> Result<bool, Failure> {
    println!(
        "crash_trials {kind}: {trials} trials, seed {seed}, store under {}",
        dir.display()
    );
    let mut rng = Rng(seed | 1);
    let path: PathBuf = match kind {
        "engine" => dir.join("store"),
        _ => dir.join("cache.redb"),
    };
    // Rounds (engine) or values (cache) the store holds for sure.
    let mut done = 0u64;
    let (mut failures, mut during_open, mut unacked_landed, mut acked_total) = (0, 0, 0, 0u64);
    // Milliseconds one acknowledged step takes, to spread kills over a few.
    let mut step_ms = if kind == "engine" { 60.0f64 } else { 5.0 };
    let started = Instant::now();
    let mut ran = 0;
    for trial in 0..trials {
        ran += 1;
        let c = spawn(kind, &path, done, ack_early)?;
        let early = rng.below(4) == 0;
        let t0 = Instant::now();
        if early {
            std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        } else {
            if !wait_ready(&c, Duration::from_secs(60)) {
                return Err(format!("trial {trial}: the child never became ready").into());
            }
            let window = (step_ms * 6.0).max(5.0) as u64;
            std::thread::sleep(Duration::from_micros(rng.below(window * 1000)));
        }
        let ready = is_ready(&c);
        let elapsed = t0.elapsed();
        let last = kill(c)?;
        if !ready {
            during_open += 1;
        }
        let acked = last.map_or(done, |l| l + 1);
        acked_total += acked - done;
        if acked > done && !early {
            let per = elapsed.as_secs_f64() * 1000.0 / (acked - done) as f64;
            step_ms = 0.7 * step_ms + 0.3 * per;
        }
        let verdict = match kind {
            "engine" => check_engine(&path, acked),
            _ => check_cache(&path, acked),
        };
        match verdict {
            Ok(landed) => {
                if landed {
                    unacked_landed += 1;
                }
                done = acked + u64::from(landed);
            }
            Err(e) => {
                failures += 1;
                println!("trial {trial}: FAILED after {acked} acknowledged: {e}");
                // Later trials would only repeat the damage.
                break;
            }
        }
    }
    println!(
        "crash_trials {kind}: {ran} trials in {:.1} s, {failures} failed; {acked_total} \
         acknowledged writes checked after kills ({done} in the store at the end), \
         {during_open} kills while opening, {unacked_landed} unacknowledged last write(s) \
         found complete",
        started.elapsed().as_secs_f64()
    );
    Ok(failures == 0)
}

/// `Ok(true)` when the round after the acknowledged ones landed too.
fn check_engine(path: &Path, acked: u64) -> Result<bool, Failure> {
    if acked == 0 && !Engine::exists(path) {
        return Ok(false);
    }
    let state = engine_state(path)?;
    let ids = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
    let (want, next) = (engine_model(acked), engine_model(acked + 1));
    let landed = if ids(&state) == ids(&want) {
        false
    } else if ids(&state) == ids(&next) {
        true
    } else {
        return Err(format!(
            "documents {:?}, expected after round {} {:?} or one round later",
            ids(&state),
            acked as i64 - 1,
            ids(&want)
        )
        .into());
    };
    let model = if landed { next } else { want };
    for (id, text) in &state {
        // A keyword query may miss a document (ranking); a text it returns
        // must be part of the document's expected text.
        if !text.is_empty() && !model[id].contains(text.as_str()) {
            return Err(format!("{id}: text {text:?}, expected {:?}", model[id]).into());
        }
    }
    Ok(landed)
}

fn check_cache(path: &Path, acked: u64) -> Result<bool, Failure> {
    let cache = open_cache(path)?;
    for i in 0..acked {
        match cache.get::<String>(&cache_key(i)) {
            Some(v) if v == cache_value(i) => {}
            Some(_) => return Err(format!("value {i} reads back different").into()),
            None => return Err(format!("acknowledged value {i} is missing").into()),
        }
    }
    match cache.get::<String>(&cache_key(acked)) {
        None => Ok(false),
        Some(v) if v == cache_value(acked) => Ok(true),
        Some(_) => Err(format!("unacknowledged value {acked} reads back different").into()),
    }
}
