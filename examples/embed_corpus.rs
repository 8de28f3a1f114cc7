//! Embeds a JSON-lines corpus into a `.npy` matrix.
//!
//! ```text
//! cargo run --release --example embed_corpus -- \
//!     --model DIR --input FILE.jsonl --output OUT.npy [--threads N] [--batch-size N] [--precision f32|bf16]
//! ```
//!
//! Each input line is a JSON object with a `"text"` field. The output is a
//! float32 array of shape `(lines, dim)` in input order. Passages/s and
//! tokens/s go to stdout, a progress bar to stderr. `--model` defaults to
//! the bundled all-MiniLM-L6-v2 (see `ragjet::inference::locate_default_model`).

use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use npyz::WriterBuilder;

mod jsonl;
use ragjet::inference::{locate_default_model, Embedder, EmbedderOptions, Precision};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    model: Option<PathBuf>,
    input: PathBuf,
    output: PathBuf,
    threads: Option<usize>,
    batch_size: usize,
    precision: Option<Precision>,
}

fn parse_args() -> Result<Args, String> {
    let mut model = None;
    let mut input = None;
    let mut output = None;
    let mut threads = None;
    let mut batch_size = EmbedderOptions::default().max_batch_size;
    let mut precision = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--input" => input = Some(PathBuf::from(value()?)),
            "--output" => output = Some(PathBuf::from(value()?)),
            "--threads" => threads = Some(value()?.parse().map_err(|e| format!("--threads: {e}"))?),
            "--batch-size" => {
                batch_size = value()?.parse().map_err(|e| format!("--batch-size: {e}"))?
            }
            "--precision" => precision = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        model,
        input: input.ok_or("--input is required")?,
        output: output.ok_or("--output is required")?,
        threads,
        batch_size,
        precision,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}\nusage: embed_corpus --model DIR --input FILE.jsonl --output OUT.npy [--threads N] [--batch-size N] [--precision f32|bf16]");
            std::process::exit(2);
        }
    };
    let model = match args.model {
        Some(dir) => dir,
        None => locate_default_model()?,
    };
    let embedder = Embedder::load_with(
        &model,
        EmbedderOptions {
            num_threads: args.threads,
            max_batch_size: args.batch_size,
            precision: args.precision,
            ..Default::default()
        },
    )?;
    let texts = jsonl::read_texts(&args.input, None)?;
    if texts.is_empty() {
        return Err(format!("{} holds no texts", args.input.display()).into());
    }
    let tokens: usize = texts
        .iter()
        .map(|t| {
            embedder
                .count_tokens(t)
                .map(|n| (n + 2).min(embedder.max_seq_length()))
        })
        .sum::<Result<usize, _>>()?;

    let bar = indicatif::ProgressBar::new(texts.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} passages ({per_sec}, eta {eta})",
        )?,
    );
    let start = Instant::now();
    let vectors = embedder.embed_with_progress(&texts, |p| bar.set_position(p.done as u64))?;
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let file = std::fs::File::create(&args.output)
        .map_err(|e| format!("{}: {e}", args.output.display()))?;
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[vectors.rows() as u64, vectors.dim() as u64])
        .writer(BufWriter::new(file))
        .begin_nd()?;
    writer.extend(vectors.as_slice().iter().copied())?;
    writer.finish()?;

    println!(
        "embedded {} passages ({} tokens) with {} threads in {}, {:.2} s: {:.1} passages/s, {:.0} tokens/s",
        vectors.rows(),
        tokens,
        embedder.num_threads(),
        embedder.precision(),
        secs,
        vectors.rows() as f64 / secs,
        tokens as f64 / secs
    );
    println!(
        "wrote {} ({} × {} float32)",
        args.output.display(),
        vectors.rows(),
        vectors.dim()
    );
    Ok(())
}
