//! `rag`: a command-line tool over [`ragjet::Engine`]. `ingest` puts a
//! JSON-lines corpus into a store directory; `query` answers questions from
//! a JSON-lines file, or typed one per line.
//!
//! ```text
//! cargo run --release --example rag -- ingest --store DIR --input docs.jsonl
//!     [--namespace NS] [--model DIR]
//! cargo run --release --example rag -- query --store DIR
//!     [--input queries.jsonl [--output hits.jsonl]] [--top-k 10]
//!     [--mode vector|keyword|hybrid] [--alpha 0.5] [--rerank N --reranker DIR]
//!     [--filter JSON | --filter @filter.json] [--namespace NS] [--no-cache]
//! ```
//!
//! Documents are `{"id": "...", "text": "...", <any other key>: <metadata>}`
//! (metadata values: strings, numbers, booleans, null, lists of those);
//! queries are `{"id": "...", "text": "..."}`; each output line is
//! `{"id": query id, "hits": [{"id": chunk id, "doc_id", "score",
//! "metadata"}]}`. `--filter` takes LlamaIndex's `MetadataFilters` JSON,
//! e.g. `{"filters": [{"key": "year", "operator": ">=", "value": 2000}]}`.
//!
//! Exit status: 0 done; 1 an error (said on stderr: a bad input line with
//! its number, a missing store, an invalid filter...), nothing written;
//! 2 `ingest` refused some documents (listed with why), the others were
//! ingested and saved.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use ragjet::{
    Document, Engine, EngineHit, IngestOptions, IngestProgress, IngestStage, MetadataFilters,
    MetadataValue, QueryOptions, SearchMode,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage:
  rag ingest --store DIR --input docs.jsonl [--namespace NS] [--model DIR]
  rag query  --store DIR [--input queries.jsonl [--output hits.jsonl]] [--top-k N]
             [--mode vector|keyword|hybrid] [--alpha A] [--rerank N --reranker DIR]
             [--filter JSON|@FILE] [--namespace NS] [--no-cache]

ingest: one JSON object per line, \"id\" and \"text\" strings, every other key
        is metadata; the store is created or updated (upsert by id) and saved.
query:  lines {\"id\", \"text\"}; one output line per query (stdout without
        --output); without --input, questions are read one per line from the
        terminal and the hits printed.";

/// How `main` ends: an error stops everything; `Partial` is an ingest
/// that left some documents out.
enum Failure {
    Error(String),
    Partial,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Error(e.to_string())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Partial) => ExitCode::from(2),
        Err(Failure::Error(msg)) => {
            eprintln!("rag: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &[String]) -> Result<(), Failure> {
    let Some(command) = args.first() else {
        return Err(Failure::Error(format!("no command given\n{USAGE}")));
    };
    match command.as_str() {
        "ingest" => ingest(&Flags::parse(
            &args[1..],
            &["--store", "--input", "--namespace", "--model"],
            &[],
        )?),
        "query" => query(&Flags::parse(
            &args[1..],
            &[
                "--store",
                "--input",
                "--output",
                "--top-k",
                "--mode",
                "--alpha",
                "--rerank",
                "--reranker",
                "--filter",
                "--namespace",
            ],
            &["--no-cache"],
        )?),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(Failure::Error(format!(
            "unknown command {other:?} (expected `ingest` or `query`)\n{USAGE}"
        ))),
    }
}

/// `--flag value` / `--flag=value` options and bare switches, each given at
/// most once; anything else is an error naming it.
struct Flags {
    values: BTreeMap<String, String>,
    switches: Vec<String>,
}

impl Flags {
    fn parse(args: &[String], valued: &[&str], switches: &[&str]) -> Result<Flags, String> {
        let mut flags = Flags {
            values: BTreeMap::new(),
            switches: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if arg == "-h" || arg == "--help" {
                return Err(USAGE.to_string());
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            if switches.contains(&name) && inline.is_none() {
                if flags.switches.iter().any(|s| s == name) {
                    return Err(format!("{name} given twice"));
                }
                flags.switches.push(name.to_string());
            } else if valued.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("{name} needs a value"))?,
                };
                if flags.values.insert(name.to_string(), value).is_some() {
                    return Err(format!("{name} given twice"));
                }
            } else {
                return Err(format!("unexpected argument {arg:?}\n{USAGE}"));
            }
        }
        Ok(flags)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }

    fn required(&self, name: &str) -> Result<PathBuf, String> {
        self.path(name)
            .ok_or_else(|| format!("{name} is required\n{USAGE}"))
    }

    fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|v| v.parse::<T>().map_err(|e| format!("{name} {v:?}: {e}")))
            .transpose()
    }
}

type JsonObject = serde_json::Map<String, serde_json::Value>;

/// The non-blank lines of a JSON-lines file as (line number, object);
/// lines that are not JSON objects go into `errors`, by number, so that
/// every bad line is reported at once, before anything runs.
fn read_objects(
    path: &Path,
    errors: &mut Vec<(usize, String)>,
) -> Result<Vec<(usize, JsonObject)>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut objects = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let no = i + 1;
        let line = line.map_err(|e| format!("{}:{no}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(map)) => objects.push((no, map)),
            Ok(_) => errors.push((no, "not a JSON object".into())),
            Err(e) => errors.push((no, format!("invalid JSON: {e}"))),
        }
    }
    Ok(objects)
}

/// One error naming the file and its bad lines, if there are any.
fn check_lines(path: &Path, mut errors: Vec<(usize, String)>) -> Result<(), String> {
    if errors.is_empty() {
        return Ok(());
    }
    let shown = errors.len().min(20);
    let mut msg = format!("{}: {} bad line(s)", path.display(), errors.len());
    errors.sort_by_key(|(no, _)| *no);
    for (no, e) in &errors[..shown] {
        msg.push_str(&format!("\n  line {no}: {e}"));
    }
    if errors.len() > shown {
        msg.push_str(&format!("\n  ... and {} more", errors.len() - shown));
    }
    Err(msg)
}

/// The string field `key` of a line's object.
fn string_field(obj: &JsonObject, key: &str) -> Result<String, String> {
    match obj.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "\"{key}\" must be a string, got {}",
            json_type(other)
        )),
        None => Err(format!("no \"{key}\" field")),
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

fn read_documents(path: &Path) -> Result<Vec<Document>, String> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (no, obj) in read_objects(path, &mut errors)? {
        let doc = || -> Result<Document, String> {
            let mut doc = Document::new(string_field(&obj, "id")?, string_field(&obj, "text")?);
            for (key, value) in &obj {
                if key == "id" || key == "text" {
                    continue;
                }
                // MetadataValue is untagged: it reads plain JSON scalars and
                // lists, and refuses objects (no filter could test them).
                let value: MetadataValue = serde_json::from_value(value.clone()).map_err(|_| {
                    format!(
                        "metadata {key:?} is {}; metadata values are strings, \
                         numbers, booleans, null or lists of those",
                        json_type(value)
                    )
                })?;
                doc.metadata.insert(key.clone(), value);
            }
            Ok(doc)
        };
        match doc() {
            Ok(d) => docs.push(d),
            Err(e) => errors.push((no, e)),
        }
    }
    check_lines(path, errors)?;
    Ok(docs)
}

fn ingest(flags: &Flags) -> Result<(), Failure> {
    let store = flags.required("--store")?;
    let input = flags.required("--input")?;
    let namespace = flags.get("--namespace");
    let docs = read_documents(&input)?;
    if docs.is_empty() {
        return Err(format!("{}: no documents in the file", input.display()).into());
    }

    let start = Instant::now();
    let existed = Engine::exists(&store);
    let engine = if existed {
        open_store(&store, flags.path("--model").as_deref(), None)?
    } else {
        let mut builder = Engine::builder().store_dir(&store);
        if let Some(m) = flags.path("--model") {
            builder = builder.model_dir(m);
        }
        builder
            .build()
            .map_err(|e| format!("creating the store {}: {e}", store.display()))?
    };
    let open_secs = start.elapsed().as_secs_f64();
    let embedder = engine.embedder();
    eprintln!(
        "model {} ({} on {}, {} threads); store {} ({} documents) opened in {open_secs:.2} s",
        engine.model_name(),
        embedder.precision(),
        embedder.device_name(),
        embedder.num_threads(),
        store.display(),
        engine.num_documents(namespace.unwrap_or(ragjet::DEFAULT_NAMESPACE)),
    );

    let version_before = engine.version();
    let n_docs = docs.len();
    let bar = indicatif::ProgressBar::new(n_docs as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>9} [{bar:40}] {pos}/{len} {prefix} ({per_sec}, eta {eta})",
        )?
        .progress_chars("=> "),
    );
    // The stage last drawn: a new stage restarts the bar.
    let stage: Mutex<Option<IngestStage>> = Mutex::new(None);
    let progress = |p: IngestProgress| {
        let mut current = stage.lock().unwrap_or_else(|e| e.into_inner());
        if *current != Some(p.stage) {
            *current = Some(p.stage);
            let (name, unit) = match p.stage {
                IngestStage::Chunking => ("chunking", "documents"),
                IngestStage::Embedding => ("embedding", "chunks"),
                IngestStage::Indexing => ("indexing", "documents"),
            };
            bar.reset();
            bar.set_message(name);
            bar.set_prefix(unit);
        }
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    };
    let report = engine.ingest_with(
        docs,
        &IngestOptions {
            namespace,
            progress: Some(&progress),
        },
    )?;
    bar.finish_and_clear();

    // Saving rewrites the whole state: not worth it when nothing changed.
    let save = if !existed || engine.version() != version_before {
        let start = Instant::now();
        engine
            .save(&store)
            .map_err(|e| format!("saving the store {}: {e}", store.display()))?;
        format!("{:.2} save", start.elapsed().as_secs_f64())
    } else {
        "store unchanged, not saved".to_string()
    };

    let ns = namespace.unwrap_or(ragjet::DEFAULT_NAMESPACE);
    println!(
        "documents: {} read, {} ingested ({} unchanged), {} failed",
        n_docs,
        report.ingested.len(),
        report.unchanged,
        report.failed.len()
    );
    println!("chunks:    {} written", report.chunks);
    println!(
        "embeddings: {} computed, {} from the cache",
        report.embeddings_computed, report.embeddings_cached
    );
    println!(
        "seconds:   {:.2} ingest ({:.1} documents/s), {save}",
        report.seconds,
        n_docs as f64 / report.seconds.max(1e-9),
    );
    println!(
        "store:     {} now holds {} documents, {} chunks in namespace {ns:?}",
        store.display(),
        engine.num_documents(ns),
        engine.num_chunks(ns)
    );
    if report.failed.is_empty() {
        return Ok(());
    }
    eprintln!("failed documents:");
    for (id, err) in &report.failed {
        eprintln!("  {id:?}: {err}");
    }
    Err(Failure::Partial)
}

/// Opens a saved store, with another model folder or a reranker when
/// asked: the saved configuration is kept for everything else.
fn open_store(
    store: &Path,
    model: Option<&Path>,
    reranker: Option<&Path>,
) -> Result<Engine, String> {
    let opening = |e: ragjet::Error| format!("opening the store {}: {e}", store.display());
    let engine = Engine::open(store).map_err(opening)?;
    if model.is_none() && reranker.is_none() {
        return Ok(engine);
    }
    let config = engine.config().clone();
    // Let go of the store's cache file before opening it again.
    drop(engine);
    let mut builder = Engine::builder().config(config);
    if let Some(m) = model {
        builder = builder.model_dir(m);
    }
    if let Some(r) = reranker {
        builder = builder.reranker(r);
    }
    builder.open(store).map_err(opening)
}

/// `--filter JSON` or `--filter @FILE`.
fn parse_filter(arg: &str) -> Result<MetadataFilters, String> {
    let json = match arg.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file).map_err(|e| format!("--filter {file}: {e}"))?,
        None => arg.to_string(),
    };
    MetadataFilters::from_json(&json).map_err(|e| format!("--filter: {e}"))
}

fn query_options(flags: &Flags) -> Result<QueryOptions, String> {
    let mut options = QueryOptions::new()
        .top_k(flags.number("--top-k")?.unwrap_or(10))
        .no_cache(flags.switch("--no-cache"));
    let alpha: Option<f32> = flags.number("--alpha")?;
    match flags.get("--mode") {
        None | Some("vector") if alpha.is_some() => {
            return Err("--alpha needs --mode hybrid".into())
        }
        None => {}
        Some("vector") => options = options.mode(SearchMode::Vector),
        Some("keyword") if alpha.is_some() => return Err("--alpha needs --mode hybrid".into()),
        Some("keyword") => options = options.mode(SearchMode::Keyword),
        Some("hybrid") => {
            options = options.mode(SearchMode::Hybrid {
                alpha: alpha.unwrap_or(0.5),
            })
        }
        Some(other) => {
            return Err(format!(
                "--mode {other:?}: expected vector, keyword or hybrid"
            ))
        }
    }
    match (flags.number::<usize>("--rerank")?, flags.get("--reranker")) {
        (Some(n), Some(_)) => options = options.rerank(n),
        (Some(_), None) => {
            return Err("--rerank N needs --reranker DIR (a cross-encoder folder)".into())
        }
        (None, Some(_)) => return Err("--reranker DIR needs --rerank N".into()),
        (None, None) => {}
    }
    if let Some(f) = flags.get("--filter") {
        options = options.filters(parse_filter(f)?);
    }
    if let Some(ns) = flags.get("--namespace") {
        options = options.namespace(ns);
    }
    Ok(options)
}

fn query(flags: &Flags) -> Result<(), Failure> {
    let store = flags.required("--store")?;
    let input = flags.path("--input");
    let output = flags.path("--output");
    if output.is_some() && input.is_none() {
        return Err(
            "--output needs --input (questions typed at the terminal are answered on it)".into(),
        );
    }
    // Options and input are checked before the model is loaded.
    let options = query_options(flags)?;
    let queries = match &input {
        Some(path) => Some(read_queries(path)?),
        None => None,
    };
    if !Engine::exists(&store) {
        return Err(format!(
            "{}: no ragjet store there (create one with `rag ingest --store {} --input docs.jsonl`)",
            store.display(),
            store.display()
        )
        .into());
    }
    let engine = open_store(&store, None, flags.path("--reranker").as_deref())?;
    match queries {
        Some(queries) => answer_file(&engine, &options, &queries, output.as_deref()),
        None => answer_terminal(&engine, &options),
    }
}

/// (line number, id, text) of each query.
fn read_queries(path: &Path) -> Result<Vec<(usize, String, String)>, String> {
    let mut queries = Vec::new();
    let mut errors = Vec::new();
    for (no, obj) in read_objects(path, &mut errors)? {
        match (string_field(&obj, "id"), string_field(&obj, "text")) {
            (Ok(_), Ok(text)) if text.trim().is_empty() => {
                errors.push((no, "\"text\" is empty".into()))
            }
            (Ok(id), Ok(text)) => queries.push((no, id, text)),
            (Err(e), _) | (_, Err(e)) => errors.push((no, e)),
        }
    }
    check_lines(path, errors)?;
    if queries.is_empty() {
        return Err(format!("{}: no queries in the file", path.display()));
    }
    Ok(queries)
}

#[derive(serde::Serialize)]
struct OutHit<'a> {
    id: &'a str,
    doc_id: &'a str,
    score: f32,
    metadata: JsonObject,
}

/// Metadata as the input file had it: the index keeps every number as an
/// f64, so whole numbers are written back as integers (`2015`, not
/// `2015.0`).
fn metadata_json(metadata: &ragjet::Metadata) -> JsonObject {
    fn value(v: &MetadataValue) -> serde_json::Value {
        match v {
            MetadataValue::Number(x) if x.fract() == 0.0 && x.abs() < 9.007_199_254_740_992e15 => {
                serde_json::Value::from(*x as i64)
            }
            MetadataValue::List(items) => items.iter().map(value).collect(),
            other => serde_json::to_value(other).unwrap_or(serde_json::Value::Null),
        }
    }
    metadata
        .iter()
        .map(|(k, v)| (k.clone(), value(v)))
        .collect()
}

#[derive(serde::Serialize)]
struct OutLine<'a> {
    id: &'a str,
    hits: Vec<OutHit<'a>>,
}

/// Answers every query, then writes all lines: a failing query leaves no
/// half-written output.
fn answer_file(
    engine: &Engine,
    options: &QueryOptions,
    queries: &[(usize, String, String)],
    output: Option<&Path>,
) -> Result<(), Failure> {
    let start = Instant::now();
    let mut lines = Vec::with_capacity(queries.len());
    let mut latencies = Vec::with_capacity(queries.len());
    for (no, id, text) in queries {
        let answer = engine
            .query(text, options)
            .map_err(|e| format!("query {id:?} (line {no}): {e}"))?;
        latencies.push(answer.timings.total.as_secs_f64() * 1e3);
        let line = OutLine {
            id,
            hits: answer
                .hits
                .iter()
                .map(|h| OutHit {
                    id: &h.chunk_id,
                    doc_id: &h.doc_id,
                    score: h.score,
                    metadata: metadata_json(&h.metadata),
                })
                .collect(),
        };
        lines.push(serde_json::to_string(&line)?);
    }
    let secs = start.elapsed().as_secs_f64();
    match output {
        Some(path) => {
            let mut text = lines.join("\n");
            text.push('\n');
            std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for line in &lines {
                writeln!(out, "{line}")?;
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies[((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    eprintln!(
        "{} queries in {secs:.2} s ({:.1} queries/s); latency p50 {:.2} ms, p95 {:.2} ms{}",
        queries.len(),
        queries.len() as f64 / secs.max(1e-9),
        pct(0.50),
        pct(0.95),
        output.map_or(String::new(), |p| format!("; wrote {}", p.display()))
    );
    Ok(())
}

/// Questions typed one per line; hits printed with their timings. A
/// question the engine refuses is said and the next one read.
fn answer_terminal(engine: &Engine, options: &QueryOptions) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprintln!(
            "{} documents, {} chunks; type a question per line, Ctrl-D to end",
            engine.num_documents(
                options
                    .namespace
                    .as_deref()
                    .unwrap_or(ragjet::DEFAULT_NAMESPACE)
            ),
            engine.len()
        );
    }
    let mut failed = 0usize;
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush()?;
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let question = line.trim();
        if question.is_empty() {
            continue;
        }
        match engine.query(question, options) {
            Ok(answer) => {
                let t = answer.timings;
                let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
                println!(
                    "{question}  ({} hits; {:.1} ms: embed {:.1}, search {:.2}, rerank {:.1}; cache {:?})",
                    answer.hits.len(),
                    ms(t.total),
                    ms(t.embed),
                    ms(t.search),
                    ms(t.rerank),
                    answer.cache
                );
                for hit in &answer.hits {
                    println!("  {}", describe(hit));
                }
                println!();
            }
            Err(e) => {
                failed += 1;
                eprintln!("rag: {question:?}: {e}");
            }
        }
    }
    if failed > 0 && !interactive {
        return Err(format!("{failed} question(s) failed").into());
    }
    Ok(())
}

/// A hit on one line: score, chunk id, metadata, the start of the text.
fn describe(hit: &EngineHit) -> String {
    let text: String = hit.text.split_whitespace().collect::<Vec<_>>().join(" ");
    let snippet: String = text.chars().take(100).collect();
    let more = if snippet.len() < text.len() {
        "…"
    } else {
        ""
    };
    let meta = if hit.metadata.is_empty() {
        String::new()
    } else {
        format!(
            " {}",
            serde_json::Value::Object(metadata_json(&hit.metadata))
        )
    };
    format!("{:.4}  [{}]{meta} {snippet}{more}", hit.score, hit.chunk_id)
}
