//! [`Embedder`]: texts in, one contiguous matrix of sentence vectors out.

use std::path::{Path, PathBuf};

use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::encoder::{BertEncoder, PackedBatch};
use crate::error::{InferenceError, Result};
use crate::folder::FolderSettings;
use crate::pooling::{l2_normalize, pool_into, PoolingMode};

/// Texts are tokenised and sorted this many at a time, which bounds the
/// memory held by token ids when embedding millions of texts.
const CHUNK_TEXTS: usize = 8192;

/// Settings that override what the model folder says.
///
/// `None` means "as the folder says" (or the documented default).
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// Threads used for tokenisation and the forward pass; `None` = all cores.
    pub num_threads: Option<usize>,
    /// Most texts in one forward pass (default 32, as sentence-transformers).
    pub max_batch_size: usize,
    /// Most tokens in one forward pass (default 16384). Long texts then go
    /// in smaller batches, which bounds memory.
    pub max_batch_tokens: usize,
    /// Texts longer than this many tokens (special tokens included) are
    /// truncated; default from `sentence_bert_config.json`, capped at the
    /// model's position limit.
    pub max_seq_length: Option<usize>,
    /// Pooling modes; default from `1_Pooling/config.json`, else mean.
    pub pooling: Option<Vec<PoolingMode>>,
    /// L2-normalise outputs; default: whether `modules.json` has a Normalize module.
    pub normalize: Option<bool>,
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
        }
    }
}

/// Progress of a long `embed` call, reported after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Texts embedded so far.
    pub done: usize,
    /// Texts in the call.
    pub total: usize,
}

/// Sentence vectors for `rows()` texts, in input order, row-major in one
/// contiguous buffer (ready for an index or a numpy array without a copy).
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
pub struct Embedder {
    dir: PathBuf,
    encoder: BertEncoder,
    /// Truncates at `max_seq_length`, no padding: what the model sees.
    tokenizer: Tokenizer,
    /// No truncation, no padding: what `count_tokens` measures.
    counter: Tokenizer,
    pooling: Vec<PoolingMode>,
    normalize: bool,
    max_seq_length: usize,
    do_lower_case: bool,
    max_batch_size: usize,
    max_batch_tokens: usize,
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dir", &self.dir)
            .field("dim", &self.dim())
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

        let encoder = BertEncoder::load(&settings.bert, &settings.weights)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(num_threads)
            .thread_name(|i| format!("ragjet-embed-{i}"))
            .build()
            .map_err(|e| InferenceError::InvalidOption(format!("thread pool: {e}")))?;
        Ok(Self {
            dir: dir.to_owned(),
            encoder,
            tokenizer,
            counter,
            pooling,
            normalize: options.normalize.unwrap_or(settings.normalize),
            max_seq_length,
            do_lower_case: settings.do_lower_case,
            max_batch_size: options.max_batch_size,
            max_batch_tokens: options.max_batch_tokens,
            pool,
        })
    }

    /// The folder the model was loaded from.
    pub fn model_dir(&self) -> &Path {
        &self.dir
    }
    /// Width of the output vectors.
    pub fn dim(&self) -> usize {
        self.pooling.len() * self.encoder.hidden_size()
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
            .encode_fast(self.cased(text).as_ref(), false)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        Ok(enc.len())
    }

    /// The longest prefix of `text` that holds at most `max_tokens` tokens
    /// (as [`count_tokens`](Self::count_tokens) counts them), cut at a token
    /// boundary. Returns `text` itself when it already fits.
    pub fn truncate_to_tokens<'a>(&self, text: &'a str, max_tokens: usize) -> Result<&'a str> {
        // Lowercasing can change byte offsets, so offsets come from the
        // original text whenever the model is cased.
        let cased = self.cased(text);
        let enc = self
            .counter
            .encode(cased.as_ref(), false)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        if enc.len() <= max_tokens {
            return Ok(text);
        }
        if max_tokens == 0 {
            return Ok(&text[..0]);
        }
        let end = enc.get_offsets()[max_tokens - 1].1;
        if cased.as_ref().len() == text.len() && text.is_char_boundary(end) {
            Ok(&text[..end])
        } else {
            Err(InferenceError::Tokenizer(
                "cannot map token offsets back onto a text whose lowercase form has another length"
                    .into(),
            ))
        }
    }

    /// Embeds one text.
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>> {
        Ok(self.embed(&[text])?.into_vec())
    }

    /// Embeds `texts`; row `i` of the result is the vector of `texts[i]`.
    ///
    /// Texts are sorted by length and batched by a token budget so that
    /// little time goes into padding; the result does not depend on how
    /// texts were grouped.
    pub fn embed<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Embeddings> {
        self.embed_with_progress(texts, |_| {})
    }

    /// Like [`embed`](Self::embed), calling `progress` after every batch.
    pub fn embed_with_progress<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<Embeddings> {
        if texts.is_empty() {
            return Err(InferenceError::EmptyInput);
        }
        let dim = self.dim();
        let mut data = vec![0.0f32; texts.len() * dim];
        let total = texts.len();
        self.pool.install(|| {
            let mut done = 0;
            for (chunk_no, chunk) in texts.chunks(CHUNK_TEXTS).enumerate() {
                let out = &mut data[chunk_no * CHUNK_TEXTS * dim..][..chunk.len() * dim];
                self.embed_chunk(chunk, out, &mut |n| {
                    done += n;
                    progress(Progress { done, total });
                })?;
            }
            Ok::<_, InferenceError>(())
        })?;
        Ok(Embeddings { data, dim })
    }

    fn cased<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if self.do_lower_case {
            text.to_lowercase().into()
        } else {
            text.into()
        }
    }

    fn tokenize<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Encoding>> {
        let inputs: Vec<std::borrow::Cow<'_, str>> =
            texts.iter().map(|t| self.cased(t.as_ref())).collect();
        let inputs: Vec<&str> = inputs.iter().map(|t| t.as_ref()).collect();
        self.tokenizer
            .encode_batch_fast(inputs, true)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))
    }

    fn embed_chunk<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        out: &mut [f32],
        on_batch: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let encodings = self.tokenize(texts)?;
        let lens: Vec<usize> = encodings.iter().map(Encoding::len).collect();
        let hidden = self.encoder.hidden_size();
        let dim = self.dim();
        for batch in plan_batches(&lens, self.max_batch_size, self.max_batch_tokens) {
            let tokens = batch.iter().map(|&i| lens[i]).sum();
            let mut packed = PackedBatch::with_capacity(batch.len(), tokens);
            for &i in &batch {
                packed.push(encodings[i].get_ids(), encodings[i].get_type_ids());
            }
            let states = self.encoder.forward(&packed)?;
            for (row, &i) in batch.iter().enumerate() {
                let dst = &mut out[i * dim..(i + 1) * dim];
                let src = &states[packed.offsets[row] * hidden..packed.offsets[row + 1] * hidden];
                pool_into(src, lens[i], hidden, &self.pooling, dst);
                if self.normalize {
                    l2_normalize(dst);
                }
            }
            on_batch(batch.len());
        }
        Ok(())
    }
}

/// Groups text indices into batches: longest texts first (texts of similar
/// length share a batch, which balances attention work across threads), each
/// batch at most `max_rows` texts and `max_tokens` tokens (a text longer than
/// the budget still gets a batch of its own).
pub(crate) fn plan_batches(lens: &[usize], max_rows: usize, max_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    let mut batches: Vec<(Vec<usize>, usize)> = Vec::new();
    for i in order {
        match batches.last_mut() {
            Some((b, tokens)) if b.len() < max_rows && *tokens + lens[i] <= max_tokens => {
                b.push(i);
                *tokens += lens[i];
            }
            _ => batches.push((vec![i], lens[i])),
        }
    }
    batches.into_iter().map(|(b, _)| b).collect()
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
    fn oversized_text_gets_its_own_batch() {
        assert_eq!(plan_batches(&[300, 10], 32, 100), vec![vec![0], vec![1]]);
    }
}
