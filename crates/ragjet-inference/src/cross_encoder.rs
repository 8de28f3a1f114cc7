//! [`CrossEncoder`]: a BERT sequence-classification model that reads a query
//! and a passage together and scores how well the passage answers it, for
//! reranking the candidates a vector or keyword search found.
//!
//! The encoder underneath is an [`Embedder`] with CLS pooling and no
//! normalisation: the same weights loader, both forward-pass backends,
//! devices, precisions, token-budget batch planner and out-of-memory
//! back-off. This file adds only what a cross-encoder has on top: pair
//! tokenisation with segment ids, BERT's pooler (`tanh(W·h_CLS + b)`) and
//! the classification layer, whose outputs are the scores.

use std::path::Path;

use candle_core::{DType, Device as CandleDevice};
use candle_nn::VarBuilder;
use serde_json::Value;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::backend::BackendKind;
use crate::device::{Device, Precision};
use crate::embedder::{Embedder, EmbedderOptions};
use crate::error::{invalid, InferenceError, Result};
use crate::pooling::PoolingMode;

/// Pairs are tokenised this many at a time, which bounds the memory held
/// by token ids when scoring very many pairs (as the embedder does).
const CHUNK_PAIRS: usize = 8192;

/// What is applied to the classifier's logits to make scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScoreActivation {
    /// The raw logits.
    Identity,
    /// `1 / (1 + e^-logit)`, in 0..=1: comparable across queries, which
    /// makes a fixed relevance cut-off meaningful.
    Sigmoid,
}

/// Settings that override what the model folder says.
///
/// `None` means "as the folder says" (or the documented default).
#[derive(Debug, Clone)]
pub struct CrossEncoderOptions {
    /// Threads used for tokenisation and the forward pass; `None` = all cores.
    pub num_threads: Option<usize>,
    /// Most pairs in one forward pass (default 32).
    pub max_batch_size: usize,
    /// Most tokens in one forward pass (default 16384), counted as
    /// [`EmbedderOptions::max_batch_tokens`] counts them.
    pub max_batch_tokens: usize,
    /// Pairs longer than this many tokens (special tokens included) are
    /// truncated, longest side first as Hugging Face tokenizers do.
    /// Default: `model_max_length` of `tokenizer_config.json` (what
    /// sentence-transformers' `CrossEncoder` uses), capped at the model's
    /// position limit; the position limit when that file has none.
    pub max_length: Option<usize>,
    /// What turns logits into scores. Default as sentence-transformers'
    /// `CrossEncoder`: the activation the folder's `config.json` names
    /// (`sentence_transformers.activation_fn`, or
    /// `sbert_ce_default_activation_function` of older versions), else
    /// [`ScoreActivation::Sigmoid`] for a one-label model and
    /// [`ScoreActivation::Identity`] for more labels.
    pub activation: Option<ScoreActivation>,
    /// Where the model runs, as for the [`Embedder`].
    pub device: Device,
    /// Format of weights and activations, as for the [`Embedder`]
    /// ([`Precision::cpu_default`] on the CPU, f16 on CUDA). The pooler and
    /// classifier always run in f32.
    pub precision: Option<Precision>,
    /// Forward-pass implementation, as for the [`Embedder`].
    pub backend: Option<BackendKind>,
}

impl Default for CrossEncoderOptions {
    fn default() -> Self {
        Self {
            num_threads: None,
            max_batch_size: 32,
            max_batch_tokens: 16384,
            max_length: None,
            activation: None,
            device: Device::Auto,
            precision: None,
            backend: None,
        }
    }
}

/// A cross-encoder reranker (BERT `…ForSequenceClassification`) loaded
/// from a Hugging Face / sentence-transformers folder.
///
/// Meant for the BERT cross-encoders trained on MS MARCO, such as
/// `cross-encoder/ms-marco-MiniLM-L-6-v2` (also `-L-4-`, `-L-12-`,
/// `ms-marco-TinyBERT-L-2-v2`): scores equal sentence-transformers'
/// `CrossEncoder.predict` (tested to 1e-4 in f32 against transformers on a
/// small random model). `BAAI/bge-reranker-base` and `-large` are
/// XLM-RoBERTa models, which this loader refuses with
/// [`InferenceError::Unsupported`]: only BERT encoders are implemented.
///
/// The folder needs `config.json`, `model.safetensors` (tensor names as
/// Hugging Face saves them, with or without the `bert.` prefix, plus
/// `bert.pooler.dense.*` and `classifier.*`) and `tokenizer.json`. A
/// checkpoint that only has `pytorch_model.bin` must be converted to
/// safetensors first.
///
/// A pair is encoded as `[CLS] query [SEP] passage [SEP]` with segment ids
/// 0 for the first part and 1 for the second, truncated longest side first
/// to [`max_length`](Self::max_length), and pairs are batched by the same
/// token-budget planner as the [`Embedder`]'s texts. (As the embedder does,
/// the loader sets `ragjet_embedding_batch_token_limit{device}` while it
/// runs.)
///
/// `CrossEncoder` is `Send + Sync`; share it behind an `Arc`.
///
/// # Examples
///
/// The tiny random cross-encoder of the test fixtures runs in milliseconds;
/// its scores are those transformers computed for the same pairs (in
/// `reference.json` next to it). A real reranker such as
/// `cross-encoder/ms-marco-MiniLM-L-6-v2` loads the same way from its folder.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_inference::{CrossEncoder, CrossEncoderOptions, Device, Precision, ScoreActivation};
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-cross-encoder");
/// let options = CrossEncoderOptions { device: Device::Cpu, precision: Some(Precision::F32), ..Default::default() };
/// let reranker = CrossEncoder::load_with(dir, options)?;
/// assert_eq!(reranker.num_labels(), 1);
/// assert_eq!(reranker.activation(), ScoreActivation::Sigmoid); // one label: scores in 0..=1
///
/// let scores = reranker.predict(&[("what is the capital of france", "paris is the capital of france")])?;
/// assert!((scores[0] - 0.300_755_6).abs() < 1e-4); // transformers' score for this pair
///
/// let passages = ["paris is the capital of france", "bananas are yellow", "the louvre is in paris"];
/// let ranked = reranker.rerank("what is the capital of france", &passages, 2)?;
/// // The best two of `predict`'s scores, highest first, as (passage index, score).
/// let pairs: Vec<_> = passages.iter().map(|p| ("what is the capital of france", *p)).collect();
/// let all = reranker.predict(&pairs)?;
/// let mut order: Vec<usize> = (0..passages.len()).collect();
/// order.sort_by(|&a, &b| all[b].total_cmp(&all[a]));
/// assert_eq!(ranked, vec![(order[0], all[order[0]]), (order[1], all[order[1]])]);
/// assert!(reranker.rerank("q", &[] as &[&str], 5)?.is_empty());
/// # Ok(()) }
/// ```
pub struct CrossEncoder {
    /// CLS pooling, no normalisation: the last hidden state of `[CLS]`.
    encoder: Embedder,
    /// Pairs, truncated longest-first at `max_length`, no padding.
    tokenizer: Tokenizer,
    /// `[hidden, hidden]`, PyTorch's `[out, in]`.
    pooler_w: Vec<f32>,
    pooler_b: Vec<f32>,
    /// `[labels, hidden]`.
    classifier_w: Vec<f32>,
    classifier_b: Vec<f32>,
    labels: Vec<String>,
    activation: ScoreActivation,
    max_length: usize,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("dir", &self.encoder.model_dir())
            .field("labels", &self.labels)
            .field("activation", &self.activation)
            .field("max_length", &self.max_length)
            .field("device", &self.encoder.device_name())
            .field("precision", &self.encoder.precision())
            .field("backend", &self.encoder.backend())
            .finish()
    }
}

/// What `config.json` says beyond the encoder's own settings.
struct HeadConfig {
    max_positions: usize,
    /// Label names by id, when the file names them.
    labels: Option<Vec<String>>,
    /// `num_labels` when the file states it.
    num_labels: Option<usize>,
    /// The activation's class path, when the file names one.
    activation: Option<String>,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| InferenceError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| invalid(path, e))
}

/// The activation a sentence-transformers class path names
/// (`torch.nn.modules.activation.Sigmoid`, `…linear.Identity`).
fn parse_activation(path: &Path, name: &str) -> Result<ScoreActivation> {
    match name.rsplit('.').next().unwrap_or_default() {
        "Sigmoid" => Ok(ScoreActivation::Sigmoid),
        "Identity" => Ok(ScoreActivation::Identity),
        _ => Err(InferenceError::Unsupported(format!(
            "score activation {name:?} in {}; set CrossEncoderOptions::activation to override it",
            path.display()
        ))),
    }
}

fn head_config(dir: &Path) -> Result<HeadConfig> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(InferenceError::MissingFile { path });
    }
    let raw = read_json(&path)?;
    let model_type = raw.get("model_type").and_then(Value::as_str);
    match model_type {
        Some("bert") | None => {}
        Some(t @ ("xlm-roberta" | "roberta")) => {
            return Err(InferenceError::Unsupported(format!(
                "cross-encoder of model_type {t:?} (RoBERTa family, e.g. BAAI/bge-reranker-base): \
                 only BERT cross-encoders such as cross-encoder/ms-marco-MiniLM-L-6-v2 are supported"
            )))
        }
        Some(t) => {
            return Err(InferenceError::Unsupported(format!(
                "cross-encoder of model_type {t:?}: only BERT cross-encoders are supported"
            )))
        }
    }
    let max_positions =
        raw.get("max_position_embeddings")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid(&path, "max_position_embeddings is missing"))? as usize;
    let labels = match raw.get("id2label") {
        Some(Value::Object(map)) => {
            let mut by_id = Vec::with_capacity(map.len());
            for (id, name) in map {
                let id: usize = id
                    .parse()
                    .map_err(|_| invalid(&path, format!("id2label key {id:?} is not a number")))?;
                by_id.push((id, name.as_str().unwrap_or_default().to_owned()));
            }
            by_id.sort();
            if by_id.iter().enumerate().any(|(i, (id, _))| *id != i) {
                return Err(invalid(&path, "id2label ids are not 0..num_labels"));
            }
            Some(by_id.into_iter().map(|(_, name)| name).collect())
        }
        _ => None,
    };
    let num_labels = raw
        .get("num_labels")
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    let activation = raw
        .get("sentence_transformers")
        .and_then(|st| st.get("activation_fn"))
        .or_else(|| raw.get("sbert_ce_default_activation_function"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(HeadConfig {
        max_positions,
        labels,
        num_labels,
        activation,
    })
}

/// `model_max_length` of `tokenizer_config.json`, when it is a real limit
/// (Hugging Face writes 1e30 for "none").
fn tokenizer_max_length(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    Ok(read_json(&path)?
        .get("model_max_length")
        .and_then(Value::as_u64)
        .map(|n| n as usize))
}

/// `[rows, cols]` f32 from the checkpoint, trying each name in turn.
fn tensor(vb: &VarBuilder, path: &Path, names: &[&str], shape: &[usize]) -> Result<Vec<f32>> {
    let Some(name) = names.iter().find(|n| vb.contains_tensor(n)) else {
        return Err(invalid(
            path,
            format!(
                "no tensor {}: not a sequence-classification checkpoint",
                names.join(" or ")
            ),
        ));
    };
    let t = vb
        .get(shape, name)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| invalid(path, format!("{name}: {e}")))?;
    Ok(t)
}

/// The number of rows of the classifier, read from its shape.
fn classifier_rows(vb: &VarBuilder, path: &Path, hidden: usize) -> Result<usize> {
    let t = vb.get_unchecked("classifier.weight").map_err(|e| {
        invalid(
            path,
            format!("no classifier.weight ({e}): not a sequence-classification checkpoint"),
        )
    })?;
    match t.dims() {
        &[rows, cols] if cols == hidden && rows > 0 => Ok(rows),
        dims => Err(invalid(
            path,
            format!("classifier.weight has shape {dims:?}, expected [num_labels, {hidden}]"),
        )),
    }
}

impl CrossEncoder {
    /// Loads the model in `dir` with the folder's own settings.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir, CrossEncoderOptions::default())
    }

    /// Loads the model in `dir`, with `options` overriding the folder.
    pub fn load_with(dir: impl AsRef<Path>, options: CrossEncoderOptions) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(InferenceError::ModelNotFound(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        // Before the encoder loads: its error for an XLM-RoBERTa folder
        // would not say that this is a reranker limitation.
        let head = head_config(dir)?;
        let max_length = match options.max_length {
            Some(n) => n,
            None => tokenizer_max_length(dir)?
                .unwrap_or(head.max_positions)
                .min(head.max_positions),
        };
        if max_length < 3 {
            return Err(InferenceError::InvalidOption(format!(
                "max_length {max_length} cannot hold a pair's three special tokens"
            )));
        }
        let encoder = Embedder::load_with(
            dir,
            EmbedderOptions {
                num_threads: options.num_threads,
                max_batch_size: options.max_batch_size,
                max_batch_tokens: options.max_batch_tokens,
                max_seq_length: Some(max_length),
                pooling: Some(vec![PoolingMode::Cls]),
                normalize: Some(false),
                device: options.device,
                precision: options.precision,
                backend: options.backend,
                simulate_oom_above_tokens: None,
                // Pairs are tokenised here, never through a text prompt.
                prompts: Some(Default::default()),
                default_prompt_name: None,
            },
        )?;
        let hidden = encoder.dim();

        let weights_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights_path).map_err(|source| InferenceError::Io {
            path: weights_path.clone(),
            source,
        })?;
        let vb = VarBuilder::from_slice_safetensors(&bytes, DType::F32, &CandleDevice::Cpu)
            .map_err(|e| invalid(&weights_path, e))?;
        let pooler_w = tensor(
            &vb,
            &weights_path,
            &["bert.pooler.dense.weight", "pooler.dense.weight"],
            &[hidden, hidden],
        )?;
        let pooler_b = tensor(
            &vb,
            &weights_path,
            &["bert.pooler.dense.bias", "pooler.dense.bias"],
            &[hidden],
        )?;
        let rows = classifier_rows(&vb, &weights_path, hidden)?;
        let classifier_w = tensor(&vb, &weights_path, &["classifier.weight"], &[rows, hidden])?;
        let classifier_b = tensor(&vb, &weights_path, &["classifier.bias"], &[rows])?;
        let config_path = dir.join("config.json");
        for (what, n) in [
            ("num_labels", head.num_labels),
            ("id2label", head.labels.as_ref().map(Vec::len)),
        ] {
            if let Some(n) = n {
                if n != rows {
                    return Err(invalid(
                        &config_path,
                        format!("{what} says {n} labels but classifier.weight has {rows} rows"),
                    ));
                }
            }
        }
        let labels = head
            .labels
            .unwrap_or_else(|| (0..rows).map(|i| format!("LABEL_{i}")).collect());
        // The folder's choice is read only when the caller made none, so an
        // option can override a name this crate does not know.
        let activation = match (options.activation, &head.activation) {
            (Some(a), _) => a,
            (None, Some(name)) => parse_activation(&config_path, name)?,
            (None, None) if rows == 1 => ScoreActivation::Sigmoid,
            (None, None) => ScoreActivation::Identity,
        };

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| invalid(&tokenizer_path, e))?;
        // tokenizer.json may carry its own padding and truncation (often
        // 512); sentence-transformers overrides both per call.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        tracing::debug!(dir = %dir.display(), labels = rows, ?activation, max_length, "cross-encoder loaded");
        Ok(Self {
            encoder,
            tokenizer,
            pooler_w,
            pooler_b,
            classifier_w,
            classifier_b,
            labels,
            activation,
            max_length,
        })
    }

    /// The folder the model was loaded from.
    pub fn model_dir(&self) -> &Path {
        self.encoder.model_dir()
    }
    /// How many logits the classifier gives per pair.
    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }
    /// The labels' names by id (`id2label`; `LABEL_i` when absent).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }
    /// What turns logits into scores.
    pub fn activation(&self) -> ScoreActivation {
        self.activation
    }
    /// Token limit per pair, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }
    /// The device the model runs on: `"cpu"` or `"cuda:N"`.
    pub fn device_name(&self) -> String {
        self.encoder.device_name()
    }
    /// Format of the encoder's weights and activations.
    pub fn precision(&self) -> Precision {
        self.encoder.precision()
    }

    /// One score per `(query, passage)` pair, in input order: the logit of
    /// a one-label model after [`activation`](Self::activation). An empty
    /// list gives an empty result. A model with several labels is an
    /// [`InferenceError::InvalidOption`]: use
    /// [`predict_labels`](Self::predict_labels).
    pub fn predict<Q, P>(&self, pairs: &[(Q, P)]) -> Result<Vec<f32>>
    where
        Q: AsRef<str> + Sync,
        P: AsRef<str> + Sync,
    {
        if self.num_labels() != 1 {
            return Err(InferenceError::InvalidOption(format!(
                "predict gives one score per pair, but this model has {} labels: use predict_labels",
                self.num_labels()
            )));
        }
        self.scores(pairs)
    }

    /// Every label's score for every pair (`result[pair][label]`), after
    /// [`activation`](Self::activation), for models with several labels.
    pub fn predict_labels<Q, P>(&self, pairs: &[(Q, P)]) -> Result<Vec<Vec<f32>>>
    where
        Q: AsRef<str> + Sync,
        P: AsRef<str> + Sync,
    {
        let flat = self.scores(pairs)?;
        Ok(flat
            .chunks_exact(self.num_labels())
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Scores `query` against every passage and returns the best `top_n`
    /// as `(index into passages, score)`, highest score first (equal
    /// scores in input order). No passages give an empty list.
    pub fn rerank<S: AsRef<str> + Sync>(
        &self,
        query: &str,
        passages: &[S],
        top_n: usize,
    ) -> Result<Vec<(usize, f32)>> {
        let pairs: Vec<(&str, &str)> = passages.iter().map(|p| (query, p.as_ref())).collect();
        let scores = self.predict(&pairs)?;
        let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(top_n);
        Ok(ranked)
    }

    /// Activated scores, row-major `pairs × labels`.
    fn scores<Q, P>(&self, pairs: &[(Q, P)]) -> Result<Vec<f32>>
    where
        Q: AsRef<str> + Sync,
        P: AsRef<str> + Sync,
    {
        let hidden = self.encoder.dim();
        let labels = self.num_labels();
        let mut out = Vec::with_capacity(pairs.len() * labels);
        let mut cls = Vec::new();
        for chunk in pairs.chunks(CHUNK_PAIRS) {
            cls.clear();
            cls.resize(chunk.len() * hidden, 0.0);
            self.encoder.install(|| {
                let inputs: Vec<(&str, &str)> = chunk
                    .iter()
                    .map(|(q, p)| (q.as_ref(), p.as_ref()))
                    .collect();
                let encodings = self
                    .tokenizer
                    .encode_batch_fast(inputs, true)
                    .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
                self.encoder
                    .embed_encodings(&encodings, &mut cls, &mut |_| {})
            })?;
            for h in cls.chunks_exact(hidden) {
                self.head(h, &mut out);
            }
        }
        Ok(out)
    }

    /// BERT's pooler and classifier on one `[CLS]` state; pushes the
    /// activated logits.
    fn head(&self, cls: &[f32], out: &mut Vec<f32>) {
        let pooled: Vec<f32> = self
            .pooler_w
            .chunks_exact(cls.len())
            .zip(&self.pooler_b)
            .map(|(w, b)| (dot(w, cls) + b).tanh())
            .collect();
        for (w, b) in self
            .classifier_w
            .chunks_exact(pooled.len())
            .zip(&self.classifier_b)
        {
            let logit = dot(w, &pooled) + b;
            out.push(match self.activation {
                ScoreActivation::Identity => logit,
                ScoreActivation::Sigmoid => 1.0 / (1.0 + (-logit).exp()),
            });
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
