//! [`Embedder`]: texts in, one contiguous matrix of sentence vectors out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::adaptive::{is_oom, AdaptiveBudget, GROW_MIN_FREE};
use crate::backend::{Backend, BackendKind, PackedBackend};
use crate::device::{resolve, Device, Precision};
use crate::encoder::{BertEncoder, PackedBatch};
use crate::error::{InferenceError, Result};
use crate::folder::FolderSettings;
use crate::linear::Products;
use crate::metrics::{
    labels, EMBEDDING_BATCH_TOKEN_LIMIT, GPU_MEMORY_TOTAL_BYTES, GPU_MEMORY_USED_BYTES,
};
use crate::padded::PaddedBert;
use crate::pooling::{l2_normalize, PoolingMode};

/// Texts are tokenised and sorted this many at a time, which bounds the
/// memory held by token ids when embedding millions of texts.
const CHUNK_TEXTS: usize = 8192;

/// What an int8 model runs once at load to find its layers' outlier
/// channels ([`BertEncoder::calibrate_int8`]): a few sentences of the kinds
/// it will see (prose, a question, numbers, code, a list). Outlier
/// channels ("massive activations") belong to the model, not to the text,
/// so a handful of short texts finds them; built in, so that loading reads
/// nothing else and gives the same channels every time.
const CALIBRATION_TEXTS: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Machine learning models need careful evaluation on held-out data.",
    "def add(a, b): return a + b",
    "In 1969, astronauts landed on the Moon for the first time.",
    "Please send the invoice by Friday, thanks!",
    "Water boils at 100 degrees Celsius at sea level.",
    "Retrieval-augmented generation combines search with a language model.",
    "Ingredients: 2 eggs, 200 g flour, a pinch of salt.",
    "Error 404: the page you requested could not be found.",
];

/// Chooses `encoder`'s int8 outlier channels on [`CALIBRATION_TEXTS`];
/// returns how many layers got one.
fn calibrate_int8(
    encoder: &mut BertEncoder,
    tokenizer: &Tokenizer,
    do_lower_case: bool,
) -> Result<usize> {
    let encodings = tokenize(tokenizer, do_lower_case, CALIBRATION_TEXTS)?;
    let encodings: Vec<&Encoding> = encodings.iter().collect();
    encoder.calibrate_int8(&PackedBatch::from_encodings(&encodings))
}

/// `text` as the tokenizer is to see it: lowercased for uncased models.
fn cased(do_lower_case: bool, text: &str) -> std::borrow::Cow<'_, str> {
    if do_lower_case {
        text.to_lowercase().into()
    } else {
        text.into()
    }
}

/// `texts` tokenized for the model, with special tokens and truncation.
fn tokenize<S: AsRef<str>>(
    tokenizer: &Tokenizer,
    do_lower_case: bool,
    texts: &[S],
) -> Result<Vec<Encoding>> {
    let inputs: Vec<std::borrow::Cow<'_, str>> = texts
        .iter()
        .map(|t| cased(do_lower_case, t.as_ref()))
        .collect();
    let inputs: Vec<&str> = inputs.iter().map(|t| t.as_ref()).collect();
    tokenizer
        .encode_batch_fast(inputs, true)
        .map_err(|e| InferenceError::Tokenizer(e.to_string()))
}

/// Settings that override what the model folder says.
///
/// `None` means "as the folder says" (or the documented default).
///
/// # Examples
///
/// Adaptive batching can be watched on the CPU: a simulated out-of-memory
/// limit makes the embedder halve its token budget and retry, with the same
/// vectors as a run that never failed.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_inference::{Device, Embedder, EmbedderOptions, Precision};
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-cross-encoder");
/// let texts: Vec<String> = (0..16).map(|i| format!("passage number {i} about retrieval")).collect();
/// let plain = Embedder::load_with(dir, EmbedderOptions { device: Device::Cpu, precision: Some(Precision::F32), ..Default::default() })?;
/// let squeezed = Embedder::load_with(dir, EmbedderOptions {
///     device: Device::Cpu,
///     precision: Some(Precision::F32),
///     max_batch_tokens: 1024,
///     simulate_oom_above_tokens: Some(40), // "out of memory" above 40 real tokens
///     ..Default::default()
/// })?;
/// let a = plain.embed(&texts)?;
/// let b = squeezed.embed(&texts)?;
/// assert!(squeezed.batch_token_limit() < 1024); // the budget came down and stays down
/// assert!(a.as_slice().iter().zip(b.as_slice()).all(|(x, y)| (x - y).abs() < 1e-4));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// Threads used for tokenisation and the forward pass; `None` = all cores.
    pub num_threads: Option<usize>,
    /// Most texts in one forward pass (default 32, as sentence-transformers).
    pub max_batch_size: usize,
    /// Most tokens in one forward pass (default 16384). Long texts then go
    /// in smaller batches, which bounds memory. With the padded backend
    /// (GPU, f16/bf16) a batch counts `texts × longest text` tokens, its
    /// padded size. This is where the adaptive budget starts (see
    /// [`Embedder::batch_token_limit`]).
    pub max_batch_tokens: usize,
    /// Texts longer than this many tokens (special tokens included) are
    /// truncated; default from `sentence_bert_config.json`, capped at the
    /// model's position limit.
    pub max_seq_length: Option<usize>,
    /// Pooling modes; default from `1_Pooling/config.json`, else mean.
    pub pooling: Option<Vec<PoolingMode>>,
    /// L2-normalise outputs; default: whether `modules.json` has a Normalize module.
    pub normalize: Option<bool>,
    /// Where the model runs (default [`Device::Auto`]: GPU 0 when built
    /// with `cuda` and one answers, else the CPU).
    pub device: Device,
    /// Format of weights and activations; `None` = f16 on CUDA,
    /// [`Precision::cpu_default`] on the CPU. Pooling and normalisation are
    /// f32 regardless.
    pub precision: Option<Precision>,
    /// Forward-pass implementation; `None` = [`BackendKind::Packed`] for
    /// f32 or bf16 on the CPU, [`BackendKind::Padded`] otherwise (the only
    /// one that runs on CUDA or in f16).
    pub backend: Option<BackendKind>,
    /// Testing aid: any forward pass with more real tokens than this fails
    /// as an out-of-memory error would (its message says
    /// `CUDA_ERROR_OUT_OF_MEMORY`), so the halving back-off can be shown on
    /// the CPU and forced on a GPU. `None` (the default) in production.
    pub simulate_oom_above_tokens: Option<usize>,
    /// Named prompts (`{"query": "query: ", …}`), replacing the folder's
    /// `config_sentence_transformers.json` ones as sentence-transformers'
    /// `prompts=` argument does; `None` = the folder's (often none: E5
    /// folders ship without, so pass them here).
    pub prompts: Option<BTreeMap<String, String>>,
    /// The prompt applied when a call names none (must be a key of the
    /// prompts); `None` = the folder's `default_prompt_name`.
    pub default_prompt_name: Option<String>,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        Self {
            num_threads: None,
            max_batch_size: 32,
            max_batch_tokens: 16384,
            max_seq_length: None,
            pooling: None,
            normalize: None,
            device: Device::Auto,
            precision: None,
            backend: None,
            simulate_oom_above_tokens: None,
            prompts: None,
            default_prompt_name: None,
        }
    }
}

/// Which prompt an [`Embedder::embed_with`] call prepends to every text,
/// as sentence-transformers' `encode(prompt_name=…, prompt=…)` does.
///
/// The prompt is part of the text the model reads: its tokens count
/// against `max_seq_length` and are pooled with the text's (the Pooling
/// module's `include_prompt: true`, the default; a folder that sets it to
/// false is refused for prompted calls).
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_inference::{Device, Embedder, EmbedderOptions, Prompt};
/// use std::collections::BTreeMap;
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-cross-encoder");
/// // E5-style models want "query: " / "passage: " and ship no prompts: give them here.
/// let embedder = Embedder::load_with(dir, EmbedderOptions {
///     device: Device::Cpu,
///     prompts: Some(BTreeMap::from([
///         ("query".to_string(), "query: ".to_string()),
///         ("passage".to_string(), "passage: ".to_string()),
///     ])),
///     default_prompt_name: Some("passage".to_string()),
///     ..Default::default()
/// })?;
/// assert_eq!(embedder.default_prompt_name(), Some("passage"));
/// assert_eq!(embedder.resolve_prompt(Prompt::Default)?, Some("passage: "));
/// assert_eq!(embedder.resolve_prompt(Prompt::Named("query"))?, Some("query: "));
/// assert_eq!(embedder.resolve_prompt(Prompt::None)?, None);
/// assert!(embedder.resolve_prompt(Prompt::Named("summary")).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Prompt<'a> {
    /// The model's default prompt, if it names one; none otherwise. What
    /// [`Embedder::embed`] does.
    #[default]
    Default,
    /// No prompt, even where the model has a default one.
    None,
    /// The prompt of this name (`"query"`, `"passage"`, …); an unknown name
    /// is an [`InferenceError::InvalidOption`] listing the known ones.
    Named(&'a str),
    /// This text, as given.
    Text(&'a str),
}

/// Per-call settings of [`Embedder::embed_with`]; the default is what
/// [`Embedder::embed`] does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmbedCall<'a> {
    /// The prompt prepended to every text.
    pub prompt: Prompt<'a>,
    /// Most texts in one forward pass for this call (sentence-transformers'
    /// `batch_size`); `None` = [`EmbedderOptions::max_batch_size`]. The
    /// token budget still applies.
    pub max_batch_size: Option<usize>,
}

impl<'a> EmbedCall<'a> {
    /// This call with `prompt`.
    pub fn prompt(mut self, prompt: Prompt<'a>) -> Self {
        self.prompt = prompt;
        self
    }
    /// This call with at most `rows` texts per forward pass.
    pub fn max_batch_size(mut self, rows: usize) -> Self {
        self.max_batch_size = Some(rows);
        self
    }
}

/// Progress of a long `embed` call, reported after each batch.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_inference::{Device, EmbedCall, Embedder, EmbedderOptions};
/// use std::sync::Mutex;
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-cross-encoder");
/// let embedder = Embedder::load_with(dir, EmbedderOptions { device: Device::Cpu, max_batch_size: 4, ..Default::default() })?;
/// let texts: Vec<String> = (0..10).map(|i| format!("text {i}")).collect();
/// let seen = Mutex::new(Vec::new());
/// embedder.embed_with_progress(&texts, |p| seen.lock().unwrap().push((p.done, p.total)))?;
/// let seen = seen.into_inner().unwrap();
/// assert_eq!(seen.last(), Some(&(10, 10))); // reported after every batch of at most 4
/// assert!(seen.len() >= 3);
/// // A per-call batch size overrides the option for that call only.
/// let call = EmbedCall::default().max_batch_size(2);
/// assert_eq!(embedder.embed_with(&texts, &call)?.rows(), 10);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Texts embedded so far.
    pub done: usize,
    /// Texts in the call.
    pub total: usize,
}

/// Sentence vectors for `rows()` texts, in input order, row-major in one
/// contiguous buffer (ready for an index or a numpy array without a copy).
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_inference::{Device, Embedder, EmbedderOptions};
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-cross-encoder");
/// let embedder = Embedder::load_with(dir, EmbedderOptions { device: Device::Cpu, ..Default::default() })?;
/// let vectors = embedder.embed(&["first", "second"])?;
/// let dim = vectors.dim();
/// assert_eq!(vectors.iter().count(), 2);
/// assert_eq!(vectors.row(1), &vectors.as_slice()[dim..2 * dim]);
/// // One contiguous row-major buffer, handed over without copying.
/// let flat: Vec<f32> = vectors.into_vec();
/// assert_eq!(flat.len(), 2 * dim);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    data: Vec<f32>,
    dim: usize,
}

impl Embeddings {
    /// Number of vectors.
    pub fn rows(&self) -> usize {
        self.data.len() / self.dim
    }
    /// Width of each vector.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// The `i`-th vector. Panics if `i >= rows()`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
    /// Iterates over the vectors in input order.
    pub fn iter(&self) -> std::slice::ChunksExact<'_, f32> {
        self.data.chunks_exact(self.dim)
    }
    /// All values, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
    /// The buffer itself, row-major `rows × dim`.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}

/// A sentence-embedding model (BERT family) loaded from a folder.
///
/// Embeds like sentence-transformers' `encode`: same tokenisation, same
/// truncation (`max_seq_length`), same pooling and normalisation, so vectors
/// are interchangeable with those it produced. An empty string is embedded
/// as sentence-transformers does it: as `[CLS] [SEP]`.
///
/// `Embedder` is `Send + Sync`; share it behind an `Arc`.
///
/// # Batching and out-of-memory back-off
///
/// Texts are sorted by length and grouped into forward passes of at most
/// `max_batch_size` texts and [`batch_token_limit`](Self::batch_token_limit)
/// tokens. That budget starts at `max_batch_tokens` and adapts: when a
/// forward pass runs out of device memory, the budget drops to half the
/// failed batch's cost, the remaining texts (the failed ones first) are
/// re-planned and retried — no text is ever dropped — and the failed cost is
/// remembered as a ceiling. On a GPU the budget also grows by a quarter after
/// a few successful batches it limited, while a quarter of the device memory
/// is free, up to 8 × `max_batch_tokens` and ¾ of the ceiling. A single text
/// that runs out of memory on its own is an [`InferenceError::OutOfMemory`];
/// other errors propagate at once. The budget is exported as the gauge
/// `ragjet_embedding_batch_token_limit{device}`, and on CUDA the device memory
/// as `ragjet_gpu_memory_{used,total}_bytes{device}` after every batch (see
/// [`crate::metrics`]).
///
/// # Examples
///
/// A tiny 32-dimensional BERT from the test fixtures stands in for a real
/// model so the example runs in milliseconds; a real program passes
/// [`locate_default_model`](crate::locate_default_model)`()?` or its own folder.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_inference::{Device, EmbedCall, Embedder, EmbedderOptions, Prompt};
/// use std::collections::BTreeMap;
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-cross-encoder");
/// let options = EmbedderOptions {
///     device: Device::Cpu,
///     normalize: Some(true),
///     prompts: Some(BTreeMap::from([("query".to_string(), "query: ".to_string())])),
///     ..EmbedderOptions::default()
/// };
/// let embedder = Embedder::load_with(dir, options)?;
/// let texts = ["a short passage", "a somewhat longer passage about caching", ""];
/// let vectors = embedder.embed(&texts)?;
/// assert_eq!((vectors.rows(), vectors.dim()), (3, embedder.dim()));
/// // Normalised rows: unit length, so a dot product is the cosine.
/// let norm: f32 = vectors.row(1).iter().map(|x| x * x).sum::<f32>().sqrt();
/// assert!((norm - 1.0).abs() < 1e-4);
/// // Batching never changes a vector: one text alone gives the same row.
/// let alone = embedder.embed_one(texts[1])?;
/// assert!(alone.iter().zip(vectors.row(1)).all(|(a, b)| (a - b).abs() < 1e-4));
///
/// // A named prompt for this call only: the vector of "query: " + text.
/// let q = embedder.embed_with(&["caching"], &EmbedCall::default().prompt(Prompt::Named("query")))?;
/// let same = embedder.embed_with(&["query: caching"], &EmbedCall::default().prompt(Prompt::None))?;
/// assert!(q.row(0).iter().zip(same.row(0)).all(|(a, b)| (a - b).abs() < 1e-4));
///
/// // Token counting and cutting for chunkers and prompt budgets.
/// let text = "one two three four five";
/// assert_eq!(embedder.count_tokens(text)?, embedder.token_spans(text)?.len());
/// let cut = embedder.truncate_to_tokens(text, 2)?;
/// assert!(embedder.count_tokens(cut)? <= 2 && text.starts_with(cut));
/// # Ok(()) }
/// ```
pub struct Embedder {
    dir: PathBuf,
    backend: Box<dyn Backend>,
    backend_kind: BackendKind,
    device_name: String,
    gpu_ordinal: Option<usize>,
    precision: Precision,
    budget: Mutex<AdaptiveBudget>,
    simulate_oom: Option<usize>,
    /// Truncates at `max_seq_length`, no padding: what the model sees.
    tokenizer: Tokenizer,
    /// No truncation, no padding: what `count_tokens` measures.
    counter: Tokenizer,
    pooling: Vec<PoolingMode>,
    normalize: bool,
    max_seq_length: usize,
    do_lower_case: bool,
    max_batch_size: usize,
    pool: rayon::ThreadPool,
    prompts: BTreeMap<String, String>,
    default_prompt_name: Option<String>,
    pooling_includes_prompt: bool,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dir", &self.dir)
            .field("dim", &self.dim())
            .field("device", &self.device_name)
            .field("precision", &self.precision)
            .field("backend", &self.backend_kind)
            .field("batch_token_limit", &self.batch_token_limit())
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .field("max_seq_length", &self.max_seq_length)
            .field("num_threads", &self.num_threads())
            .finish()
    }
}

impl Embedder {
    /// Loads the model in `dir` with the folder's own settings.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir, EmbedderOptions::default())
    }

    /// Loads the model in `dir`, with `options` overriding the folder.
    pub fn load_with(dir: impl AsRef<Path>, options: EmbedderOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let settings = FolderSettings::read(dir)?;
        let (prompts, default_prompt_name) = match options.prompts {
            // Options replace the folder's prompts, as sentence-transformers'
            // constructor arguments do.
            Some(prompts) => (prompts, options.default_prompt_name),
            None => (
                settings.prompts.clone(),
                options
                    .default_prompt_name
                    .or_else(|| settings.default_prompt_name.clone()),
            ),
        };
        if let Some(name) = &default_prompt_name {
            if !prompts.contains_key(name) {
                return Err(InferenceError::InvalidOption(format!(
                    "default_prompt_name {name:?} is not one of the prompts {:?}",
                    prompts.keys().collect::<Vec<_>>()
                )));
            }
            if !settings.pooling_includes_prompt {
                return Err(InferenceError::Unsupported(
                    "a default prompt with a Pooling module that excludes prompt tokens (include_prompt: false)".into(),
                ));
            }
        }
        if options.max_batch_size == 0 || options.max_batch_tokens == 0 {
            return Err(InferenceError::InvalidOption(
                "max_batch_size and max_batch_tokens must be at least 1".into(),
            ));
        }
        let max_positions = settings.bert.max_position_embeddings;
        let max_seq_length = options.max_seq_length.unwrap_or(settings.max_seq_length);
        if !(2..=max_positions).contains(&max_seq_length) {
            return Err(InferenceError::InvalidOption(format!(
                "max_seq_length {max_seq_length} is outside 2..={max_positions}"
            )));
        }
        let pooling = match options.pooling {
            Some(mut modes) => {
                PoolingMode::canonical_order(&mut modes);
                if modes.is_empty() {
                    return Err(InferenceError::InvalidOption(
                        "pooling needs at least one mode".into(),
                    ));
                }
                modes
            }
            None => settings.pooling,
        };
        let num_threads = match options.num_threads {
            Some(0) => {
                return Err(InferenceError::InvalidOption(
                    "num_threads must be at least 1".into(),
                ))
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };

        let mut counter = Tokenizer::from_file(&settings.tokenizer)
            .map_err(|e| crate::error::invalid(&settings.tokenizer, e))?;
        // tokenizer.json files often ship with fixed padding/truncation
        // (all-MiniLM-L6-v2: 128); sentence-transformers overrides both.
        counter.with_padding(None);
        counter
            .with_truncation(None)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        let mut tokenizer = counter.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;

        let device = resolve(options.device)?;
        let precision = options.precision.unwrap_or(if device.ordinal.is_some() {
            Precision::F16
        } else {
            Precision::cpu_default()
        });
        let products = match precision {
            Precision::F32 => Some(Products::F32),
            Precision::Bf16 => Some(Products::Bf16),
            Precision::Int8 => Some(Products::Int8),
            Precision::F16 => None,
        };
        let backend_kind = options.backend.unwrap_or(match (device.ordinal, products) {
            (None, Some(_)) => BackendKind::Packed,
            _ => BackendKind::Padded,
        });
        let backend: Box<dyn Backend> = match backend_kind {
            BackendKind::Packed => {
                let (None, Some(products)) = (device.ordinal, products) else {
                    return Err(InferenceError::InvalidOption(format!(
                        "the packed backend runs in f32, bf16 or int8 on the CPU only, not {precision} on {}",
                        device.name()
                    )));
                };
                let mut encoder = BertEncoder::load(&settings.bert, &settings.weights, products)?;
                if products == Products::Int8 {
                    let chosen = calibrate_int8(&mut encoder, &tokenizer, settings.do_lower_case)?;
                    tracing::debug!(layers = chosen, "int8 outlier channels chosen");
                }
                Box::new(PackedBackend(encoder))
            }
            BackendKind::Padded => {
                let Some(dtype) = precision.dtype() else {
                    return Err(InferenceError::InvalidOption(format!(
                        "{precision} runs on the packed backend on the CPU only, not the padded backend on {}",
                        device.name()
                    )));
                };
                Box::new(PaddedBert::load(
                    &settings.bert,
                    &settings.weights,
                    dtype,
                    &device.candle,
                )?)
            }
        };
        let device_name = device.name();
        tracing::debug!(device = %device_name, %precision, backend = %backend_kind, "embedder loaded");
        let budget = AdaptiveBudget::new(options.max_batch_tokens, device.ordinal.is_some());
        ::metrics::gauge!(EMBEDDING_BATCH_TOKEN_LIMIT, labels::DEVICE => device_name.clone())
            .set(budget.limit() as f64);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(num_threads)
            .thread_name(|i| format!("ragjet-embed-{i}"))
            .build()
            .map_err(|e| InferenceError::InvalidOption(format!("thread pool: {e}")))?;
        Ok(Self {
            dir: dir.to_owned(),
            backend,
            backend_kind,
            device_name,
            gpu_ordinal: device.ordinal,
            precision,
            budget: Mutex::new(budget),
            simulate_oom: options.simulate_oom_above_tokens,
            tokenizer,
            counter,
            pooling,
            normalize: options.normalize.unwrap_or(settings.normalize),
            max_seq_length,
            do_lower_case: settings.do_lower_case,
            max_batch_size: options.max_batch_size,
            pool,
            prompts,
            default_prompt_name,
            pooling_includes_prompt: settings.pooling_includes_prompt,
        })
    }

    /// The folder the model was loaded from.
    pub fn model_dir(&self) -> &Path {
        &self.dir
    }
    /// Width of the output vectors.
    pub fn dim(&self) -> usize {
        self.pooling.len() * self.backend.hidden_size()
    }
    /// The device the model runs on: `"cpu"` or `"cuda:N"`.
    pub fn device_name(&self) -> String {
        self.device_name.clone()
    }
    /// Format of the forward pass's weights and activations.
    pub fn precision(&self) -> Precision {
        self.precision
    }
    /// Which forward-pass implementation runs.
    pub fn backend(&self) -> BackendKind {
        self.backend_kind
    }
    /// The token budget of one forward pass found so far: `max_batch_tokens`
    /// until an out-of-memory error halves it (or, on a GPU, successful
    /// batches grow it). See the type's documentation.
    pub fn batch_token_limit(&self) -> usize {
        self.budget().limit()
    }
    /// Token limit per text, special tokens included.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }
    /// Active pooling modes, in output order.
    pub fn pooling(&self) -> &[PoolingMode] {
        &self.pooling
    }
    /// Whether outputs are L2-normalised.
    pub fn normalize(&self) -> bool {
        self.normalize
    }
    /// Threads used by this embedder.
    pub fn num_threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Number of tokens in `text`, without special tokens and without
    /// truncation: the measure for chunking and prompt budgets.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let enc = self
            .counter
            .encode_fast(cased(self.do_lower_case, text).as_ref(), false)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        Ok(enc.len())
    }

    /// The longest prefix of `text` that holds at most `max_tokens` tokens
    /// (as [`count_tokens`](Self::count_tokens) counts them), cut at a token
    /// boundary. Returns `text` itself when it already fits.
    pub fn truncate_to_tokens<'a>(&self, text: &'a str, max_tokens: usize) -> Result<&'a str> {
        // Token ends as byte offsets into `text`, also where lowercasing
        // here changes byte lengths ("İ", 2 bytes, lowercases to "i̇", 3).
        let spans = self.token_spans(text)?;
        if spans.len() <= max_tokens {
            return Ok(text);
        }
        if max_tokens > 0
            && !self.do_lower_case
            && spans[max_tokens].start >= spans[max_tokens - 1].end
        {
            // The tokenizer saw `text` itself and the cut splits no
            // character: the prefix is exactly the first `max_tokens` tokens.
            return Ok(&text[..spans[max_tokens - 1].end]);
        }
        // A character that became several tokens is kept or dropped whole,
        // and a lowercased prefix can differ from the whole text's prefix
        // (a final sigma): count, and step back a token until it fits.
        for t in (0..max_tokens).rev() {
            let prefix = &text[..spans[t].end];
            if self.count_tokens(prefix)? <= max_tokens {
                return Ok(prefix);
            }
        }
        Ok(&text[..0])
    }

    /// The byte range in `text` of every token that
    /// [`count_tokens`](Self::count_tokens) counts, in order (same number,
    /// no special tokens, no truncation): a chunker cuts documents at these
    /// boundaries and still quotes the original text. Ranges lie on char
    /// boundaries of `text`; tokens made from one character share its range.
    pub fn token_spans(&self, text: &str) -> Result<Vec<std::ops::Range<usize>>> {
        let input = cased(self.do_lower_case, text);
        let enc = self
            .counter
            .encode(input.as_ref(), false)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        // Offsets refer to `input`. When the model lowercases here, before
        // the tokenizer, `input` can be longer than `text` ("İ" is 2 bytes,
        // its lowercase "i̇" 3), so offsets go back through the characters
        // whose lowercase form has another length: (input range, text range).
        let mut resized: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> = Vec::new();
        if input.as_ref() != text {
            let (mut at_input, mut at_text) = (0, 0);
            for c in text.chars() {
                let lower: usize = c.to_lowercase().map(char::len_utf8).sum();
                if lower != c.len_utf8() {
                    resized.push((at_input..at_input + lower, at_text..at_text + c.len_utf8()));
                }
                at_input += lower;
                at_text += c.len_utf8();
            }
            if at_input != input.len() {
                return Err(InferenceError::Tokenizer(
                    "the lowercase form of the text does not follow its characters".into(),
                ));
            }
        }
        // `round_up` says which side of a resized character an offset inside
        // it goes to: a token's end takes the whole character, its start too.
        let to_text = |at: usize, round_up: bool| -> usize {
            let i = resized.partition_point(|(lower, _)| lower.end <= at);
            let mapped = match resized.get(i) {
                Some((lower, orig)) if lower.start < at => {
                    if round_up {
                        orig.end
                    } else {
                        orig.start
                    }
                }
                _ => match i.checked_sub(1).map(|j| &resized[j]) {
                    Some((lower, orig)) => orig.end + (at - lower.end),
                    None => at,
                },
            };
            let mut mapped = mapped.min(text.len());
            while !text.is_char_boundary(mapped) {
                if round_up {
                    mapped += 1;
                } else {
                    mapped -= 1;
                }
            }
            mapped
        };
        Ok(enc
            .get_offsets()
            .iter()
            .map(|&(start, end)| {
                let start = to_text(start, false);
                start..to_text(end, true).max(start)
            })
            .collect())
    }

    /// Embeds one text.
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>> {
        Ok(self.embed(&[text])?.into_vec())
    }

    /// Embeds `texts`; row `i` of the result is the vector of `texts[i]`.
    ///
    /// Texts are sorted by length and batched by a token budget so that
    /// little time goes into padding; the result does not depend on how
    /// texts were grouped. A model whose folder names a default prompt gets
    /// it prepended, as sentence-transformers' `encode` does (see
    /// [`embed_with`](Self::embed_with)).
    pub fn embed<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Embeddings> {
        self.embed_with_progress(texts, |_| {})
    }

    /// Like [`embed`](Self::embed), with a prompt or batch size for this
    /// call only: `embed_with(&queries, &EmbedCall::default().prompt(Prompt::Named("query")))`
    /// gives the vectors of `prompts()["query"] + text`.
    pub fn embed_with<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        call: &EmbedCall<'_>,
    ) -> Result<Embeddings> {
        self.embed_call(texts, call, |_| {})
    }

    /// Like [`embed`](Self::embed), calling `progress` after every batch.
    pub fn embed_with_progress<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        progress: impl FnMut(Progress) + Send,
    ) -> Result<Embeddings> {
        self.embed_call(texts, &EmbedCall::default(), progress)
    }

    /// Named prompts, from the folder's `config_sentence_transformers.json`
    /// or [`EmbedderOptions::prompts`].
    pub fn prompts(&self) -> &BTreeMap<String, String> {
        &self.prompts
    }

    /// The prompt applied when a call names none, if any.
    pub fn default_prompt_name(&self) -> Option<&str> {
        self.default_prompt_name.as_deref()
    }

    /// The text `prompt` stands for (`None`: no prompt).
    pub fn resolve_prompt<'a>(&'a self, prompt: Prompt<'a>) -> Result<Option<&'a str>> {
        let text = match prompt {
            Prompt::Default => self
                .default_prompt_name
                .as_ref()
                .and_then(|name| self.prompts.get(name))
                .map(String::as_str),
            Prompt::None => None,
            Prompt::Named(name) => {
                Some(self.prompts.get(name).map(String::as_str).ok_or_else(|| {
                    InferenceError::InvalidOption(format!(
                        "unknown prompt name {name:?}; this model's prompts: {:?}",
                        self.prompts.keys().collect::<Vec<_>>()
                    ))
                })?)
            }
            Prompt::Text(text) => Some(text),
        };
        // An empty prompt changes no text (sentence-transformers' `prompt=""`).
        let text = text.filter(|t| !t.is_empty());
        if text.is_some() && !self.pooling_includes_prompt {
            return Err(InferenceError::Unsupported(
                "prompts with a Pooling module that excludes prompt tokens (include_prompt: false)"
                    .into(),
            ));
        }
        Ok(text)
    }

    fn embed_call<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        call: &EmbedCall<'_>,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<Embeddings> {
        if texts.is_empty() {
            return Err(InferenceError::EmptyInput);
        }
        let prompt = self.resolve_prompt(call.prompt)?;
        let max_rows = call.max_batch_size.unwrap_or(self.max_batch_size);
        if max_rows == 0 {
            return Err(InferenceError::InvalidOption(
                "max_batch_size must be at least 1".into(),
            ));
        }
        let dim = self.dim();
        let mut data = vec![0.0f32; texts.len() * dim];
        let total = texts.len();
        self.pool.install(|| {
            let mut done = 0;
            for (chunk_no, chunk) in texts.chunks(CHUNK_TEXTS).enumerate() {
                let out = &mut data[chunk_no * CHUNK_TEXTS * dim..][..chunk.len() * dim];
                let mut on_batch = |n| {
                    done += n;
                    progress(Progress { done, total });
                };
                match prompt {
                    // Prompted copies are made a chunk at a time, like the
                    // token ids, to bound memory.
                    Some(prompt) => {
                        let prompted: Vec<String> = chunk
                            .iter()
                            .map(|t| [prompt, t.as_ref()].concat())
                            .collect();
                        self.embed_chunk(&prompted, out, max_rows, &mut on_batch)?;
                    }
                    None => self.embed_chunk(chunk, out, max_rows, &mut on_batch)?,
                }
            }
            Ok::<_, InferenceError>(())
        })?;
        Ok(Embeddings { data, dim })
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, AdaptiveBudget> {
        // The budget is plain numbers, valid whatever a panicking holder did.
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_limit_gauge(&self, limit: usize) {
        ::metrics::gauge!(EMBEDDING_BATCH_TOKEN_LIMIT, labels::DEVICE => self.device_name.clone())
            .set(limit as f64);
    }

    /// Whether the device has room for bigger batches (GPU only).
    fn memory_allows_growth(&self) -> bool {
        self.backend.memory().is_some_and(|(used, total)| {
            (total - used.min(total)) as f64 >= GROW_MIN_FREE * total as f64
        })
    }

    fn embed_chunk<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        out: &mut [f32],
        max_rows: usize,
        on_batch: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let encodings = tokenize(&self.tokenizer, self.do_lower_case, texts)?;
        self.embed_encodings_in_batches_of(&encodings, out, max_rows, on_batch)
    }

    /// Runs `f` on this embedder's thread pool, where
    /// [`embed_encodings`](Self::embed_encodings) must run.
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Batching, out-of-memory back-off and pooling for inputs tokenised
    /// elsewhere: the cross-encoder's (query, passage) pairs share this
    /// loop, so they get the same budget planner and back-off as texts.
    pub(crate) fn embed_encodings(
        &self,
        encodings: &[Encoding],
        out: &mut [f32],
        on_batch: &mut dyn FnMut(usize),
    ) -> Result<()> {
        self.embed_encodings_in_batches_of(encodings, out, self.max_batch_size, on_batch)
    }

    /// [`embed_encodings`](Self::embed_encodings) with at most `max_rows`
    /// texts per forward pass (a call's own batch size).
    fn embed_encodings_in_batches_of(
        &self,
        encodings: &[Encoding],
        out: &mut [f32],
        max_rows: usize,
        on_batch: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let lens: Vec<usize> = encodings.iter().map(Encoding::len).collect();
        let pads = self.backend.pads();
        let mut remaining = longest_first(&lens);
        // A text of no tokens (possible with a tokenizer that adds no
        // special tokens) has nothing to attend over or pool: it gets a zero
        // vector, as sentence-transformers' mean pooling gives it, without
        // a forward pass (where it made a softmax over no columns panic).
        let empty = remaining.partition_point(|&i| lens[i] > 0);
        if empty < remaining.len() {
            let dim = self.dim();
            for &i in &remaining[empty..] {
                out[i * dim..(i + 1) * dim].fill(0.0);
            }
            on_batch(remaining.len() - empty);
            remaining.truncate(empty);
        }
        let mut pooled = Vec::new();
        while !remaining.is_empty() {
            let limit = self.budget().limit();
            let mut done = 0;
            for batch in plan_sorted(&remaining, &lens, max_rows, limit, pads) {
                let cost = batch_cost(&batch, &lens, pads);
                match self.run_batch(&batch, encodings, &lens, out, &mut pooled) {
                    Ok(()) => {
                        done += batch.len();
                        on_batch(batch.len());
                        if let Some(ordinal) = self.gpu_ordinal {
                            if let Some((used, total)) = self.backend.memory() {
                                let d = ordinal.to_string();
                                ::metrics::gauge!(GPU_MEMORY_USED_BYTES, labels::DEVICE => d.clone())
                                    .set(used as f64);
                                ::metrics::gauge!(GPU_MEMORY_TOTAL_BYTES, labels::DEVICE => d)
                                    .set(total as f64);
                            }
                        }
                        let grown = self
                            .budget()
                            .on_success(cost, || self.memory_allows_growth());
                        if let Some(limit) = grown {
                            tracing::debug!(device = %self.device_name, limit, "batch token budget grown");
                            self.set_limit_gauge(limit);
                            break; // re-plan the rest with the larger budget
                        }
                    }
                    Err(err) if is_oom(&err) => {
                        if batch.len() == 1 {
                            return Err(InferenceError::OutOfMemory {
                                device: self.device_name.clone(),
                                tokens: lens[batch[0]],
                                message: err.to_string(),
                            });
                        }
                        let limit = self.budget().on_oom(cost);
                        tracing::warn!(
                            device = %self.device_name,
                            texts = batch.len(),
                            tokens = cost,
                            limit,
                            "out of memory: halving the batch token budget and retrying"
                        );
                        self.set_limit_gauge(limit);
                        break; // re-plan from the failed batch on
                    }
                    Err(err) => return Err(err),
                }
            }
            remaining.drain(..done);
        }
        Ok(())
    }

    /// Runs one batch and writes its (normalised) vectors into their rows
    /// of `out`.
    fn run_batch(
        &self,
        batch: &[usize],
        encodings: &[Encoding],
        lens: &[usize],
        out: &mut [f32],
        pooled: &mut Vec<f32>,
    ) -> Result<()> {
        if let Some(max) = self.simulate_oom {
            let real: usize = batch.iter().map(|&i| lens[i]).sum();
            if real > max {
                return Err(InferenceError::Tensor(format!(
                    "simulated out of memory (CUDA_ERROR_OUT_OF_MEMORY): {real} tokens > simulate_oom_above_tokens = {max}"
                )));
            }
        }
        let dim = self.dim();
        let encs: Vec<&Encoding> = batch.iter().map(|&i| &encodings[i]).collect();
        pooled.clear();
        pooled.resize(batch.len() * dim, 0.0);
        self.backend.embed_batch(&encs, &self.pooling, pooled)?;
        for (src, &i) in pooled.chunks_exact(dim).zip(batch) {
            let dst = &mut out[i * dim..(i + 1) * dim];
            dst.copy_from_slice(src);
            if self.normalize {
                l2_normalize(dst);
            }
        }
        Ok(())
    }
}

/// Text indices, longest first (ties in input order): texts of similar
/// length then share a batch, which balances attention work across threads
/// and keeps padding small.
fn longest_first(lens: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    order
}

/// What a batch costs against the token budget: its real tokens, or with a
/// padded backend `texts × longest` (the batch is sorted, longest first).
fn batch_cost(batch: &[usize], lens: &[usize], pads: bool) -> usize {
    if pads {
        batch.len() * batch.first().map_or(0, |&i| lens[i])
    } else {
        batch.iter().map(|&i| lens[i]).sum()
    }
}

/// Groups `order` (longest first) into consecutive batches of at most
/// `max_rows` texts and `max_tokens` cost (see [`batch_cost`]); a text over
/// the budget still gets a batch of its own.
fn plan_sorted(
    order: &[usize],
    lens: &[usize],
    max_rows: usize,
    max_tokens: usize,
    pads: bool,
) -> Vec<Vec<usize>> {
    let mut batches: Vec<(Vec<usize>, usize)> = Vec::new();
    for &i in order {
        match batches.last_mut() {
            Some((b, tokens)) if b.len() < max_rows => {
                let cost = if pads {
                    (b.len() + 1) * lens[b[0]]
                } else {
                    *tokens + lens[i]
                };
                if cost <= max_tokens {
                    b.push(i);
                    *tokens = cost;
                } else {
                    batches.push((vec![i], lens[i]));
                }
            }
            _ => batches.push((vec![i], lens[i])),
        }
    }
    batches.into_iter().map(|(b, _)| b).collect()
}

/// [`plan_sorted`] on all texts, packed cost: the unit tests' shorthand.
#[cfg(test)]
pub(crate) fn plan_batches(lens: &[usize], max_rows: usize, max_tokens: usize) -> Vec<Vec<usize>> {
    plan_sorted(&longest_first(lens), lens, max_rows, max_tokens, false)
}

#[cfg(test)]
mod tests {
    use super::plan_batches;

    #[test]
    fn batches_respect_row_and_token_budgets() {
        let lens = [5, 100, 7, 100, 3, 50, 2];
        let batches = plan_batches(&lens, 3, 210);
        // Longest first; 100 + 100 fits 210 but 100 + 100 + 50 does not.
        assert_eq!(batches[0], vec![1, 3]);
        assert_eq!(batches[1], vec![5, 2, 0]);
        assert_eq!(batches[2], vec![4, 6]);
        // The token budget counts real tokens, not rows × longest.
        assert_eq!(
            plan_batches(&[100, 10, 10, 10], 8, 130),
            vec![vec![0, 1, 2, 3]]
        );
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        assert_eq!(all, (0..lens.len()).collect::<Vec<_>>());
    }

    #[test]
    fn padded_batches_count_rows_times_the_longest() {
        let lens = [10, 4, 4, 4, 3];
        let order = super::longest_first(&lens);
        // Padded: 10 + 10 + 10 = 30 ≤ 30, a fourth row would be 40.
        assert_eq!(
            super::plan_sorted(&order, &lens, 8, 30, true),
            vec![vec![0, 1, 2], vec![3, 4]]
        );
        assert_eq!(super::batch_cost(&[0, 1, 2], &lens, true), 30);
        assert_eq!(super::batch_cost(&[0, 1, 2], &lens, false), 18);
        // Packed: all 25 real tokens fit.
        assert_eq!(
            super::plan_sorted(&order, &lens, 8, 30, false),
            vec![vec![0, 1, 2, 3, 4]]
        );
    }

    #[test]
    fn oversized_text_gets_its_own_batch() {
        assert_eq!(plan_batches(&[300, 10], 32, 100), vec![vec![0], vec![1]]);
    }
}
