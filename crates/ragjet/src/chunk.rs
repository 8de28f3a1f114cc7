//! Token-aware chunking: documents cut into passages that fit the model.
//!
//! Sizes are counted in the engine's own tokens, because a passage longer
//! than the model's `max_seq_length` is silently truncated when embedded and
//! its tail is then unsearchable. Cuts prefer sentence ends, then word
//! boundaries, and only then fall inside a word, so that a passage reads as
//! text and re-tokenises to the tokens it was counted with.
//!
//! The chunker works on byte ranges of tokens from any [`TokenSpans`]
//! provider: the [`Embedder`] in the engine, [`WhitespaceTokens`] where no
//! model is involved (and in tests).

use std::ops::Range;

use ragjet_inference::{Embedder, InferenceError};
use unicode_segmentation::UnicodeSegmentation;

/// Why a chunker could not be built or could not chunk a text.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::chunk::{ChunkError, Chunker, ChunkerConfig};
///
/// let chunker = Chunker::new(ChunkerConfig::default())?;
/// // Spans that run past the text are a provider bug, reported rather than sliced.
/// let err = chunker.chunk("short", &[0..3, 2..99]).unwrap_err();
/// assert!(matches!(err, ChunkError::InvalidSpan { index: 1, .. }));
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The chunk size or overlap cannot work.
    #[error("invalid chunker config: {0}")]
    InvalidConfig(String),
    /// A token span provider returned ranges that do not describe the text.
    #[error("invalid token span {index} ({span:?}) for a text of {len} bytes: {reason}")]
    InvalidSpan {
        /// Position of the offending span in the list.
        index: usize,
        /// The span itself.
        span: Range<usize>,
        /// Length of the text, in bytes.
        len: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The token span provider failed.
    #[error("tokenizing the text failed: {0}")]
    Tokenizer(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Chunk size and overlap, in tokens.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::chunk::ChunkerConfig;
///
/// let config = ChunkerConfig::default();
/// config.validate_for_model(256)?; // all-MiniLM-L6-v2: 200 + [CLS] + [SEP] fits
/// // Chunks the model would truncate, or an overlap that never advances, are refused.
/// assert!(config.validate_for_model(128).is_err());
/// assert!(ChunkerConfig { chunk_tokens: 10, overlap_tokens: 10 }.validate().is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    /// Most tokens in one chunk.
    ///
    /// The default, 200, is for all-MiniLM-L6-v2, whose `max_seq_length` is
    /// 256 including `[CLS]` and `[SEP]`: 254 would fit exactly, but a chunk
    /// cut inside a word re-tokenises into a few more tokens than it was
    /// counted with, and shorter passages also rank more precisely.
    pub chunk_tokens: usize,
    /// Tokens repeated from the end of one chunk at the start of the next,
    /// so that a fact spanning a cut is whole in at least one chunk. The
    /// default, 32, is 16 % of a default chunk: about one sentence.
    pub overlap_tokens: usize,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self {
            chunk_tokens: 200,
            overlap_tokens: 32,
        }
    }
}

impl ChunkerConfig {
    /// Checks that chunks can make progress: at least one token each, and
    /// an overlap smaller than a chunk.
    pub fn validate(&self) -> Result<(), ChunkError> {
        if self.chunk_tokens == 0 {
            return Err(ChunkError::InvalidConfig(
                "chunk_tokens must be at least 1".into(),
            ));
        }
        if self.overlap_tokens >= self.chunk_tokens {
            return Err(ChunkError::InvalidConfig(format!(
                "overlap_tokens ({}) must be smaller than chunk_tokens ({})",
                self.overlap_tokens, self.chunk_tokens
            )));
        }
        Ok(())
    }

    /// Checks that a chunk plus `[CLS]` and `[SEP]` fits a model that reads
    /// `max_seq_length` tokens, so that no chunk is truncated when embedded.
    pub fn validate_for_model(&self, max_seq_length: usize) -> Result<(), ChunkError> {
        self.validate()?;
        if self.chunk_tokens.saturating_add(2) > max_seq_length {
            return Err(ChunkError::InvalidConfig(format!(
                "chunk_tokens ({}) plus [CLS] and [SEP] exceeds the model's max_seq_length ({max_seq_length}); \
                 the end of every full chunk would be cut off when embedded",
                self.chunk_tokens
            )));
        }
        Ok(())
    }
}

/// One passage of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position of the chunk in its document, from 0.
    pub index: usize,
    /// The passage: exactly `document[span]`, never empty, without leading
    /// or trailing whitespace.
    pub text: String,
    /// Byte range of the passage in the document.
    pub span: Range<usize>,
    /// The document's tokens this chunk holds, as indices into the
    /// provider's token list; `tokens.len()` is at most `chunk_tokens`.
    pub tokens: Range<usize>,
}

/// Something that can say where each token of a text lies.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::chunk::{Chunker, ChunkerConfig, TokenSpans};
/// use std::ops::Range;
///
/// // Chunk by characters, e.g. for a model that reads bytes or CJK text without spaces.
/// struct Chars;
/// impl TokenSpans for Chars {
///     type Error = std::convert::Infallible;
///     fn token_spans(&self, text: &str) -> Result<Vec<Range<usize>>, Self::Error> {
///         Ok(text.char_indices().map(|(i, c)| i..i + c.len_utf8()).collect())
///     }
/// }
/// let text = "東京は日本の首都です。大阪は第二の都市です。";
/// let spans = Chars.token_spans(text)?;
/// let chunks = Chunker::new(ChunkerConfig { chunk_tokens: 12, overlap_tokens: 0 })?.chunk(text, &spans)?;
/// assert!(chunks.len() >= 2);
/// assert!(chunks.iter().all(|c| c.text.chars().count() <= 12));
/// # Ok(()) }
/// ```
pub trait TokenSpans {
    /// Why tokenizing failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The byte range in `text` of every token, in order: ranges on char
    /// boundaries, with starts and ends each non-decreasing.
    fn token_spans(&self, text: &str) -> Result<Vec<Range<usize>>, Self::Error>;
}

impl TokenSpans for Embedder {
    type Error = InferenceError;

    fn token_spans(&self, text: &str) -> Result<Vec<Range<usize>>, InferenceError> {
        Embedder::token_spans(self, text)
    }
}

/// Tokens are runs of non-whitespace characters: for chunking without a
/// model, where sizes in words are good enough.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhitespaceTokens;

impl TokenSpans for WhitespaceTokens {
    type Error = std::convert::Infallible;

    fn token_spans(&self, text: &str) -> Result<Vec<Range<usize>>, Self::Error> {
        let mut spans = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices() {
            match (c.is_whitespace(), start) {
                (true, Some(s)) => {
                    spans.push(s..i);
                    start = None;
                }
                (false, None) => start = Some(i),
                _ => {}
            }
        }
        if let Some(s) = start {
            spans.push(s..text.len());
        }
        Ok(spans)
    }
}

/// Cuts documents into overlapping chunks of at most `chunk_tokens` tokens.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::chunk::{Chunker, ChunkerConfig, TokenSpans, WhitespaceTokens};
///
/// let text = "Rust is fast. Rust is safe. Rust has no garbage collector. It compiles to native code.";
/// let chunker = Chunker::new(ChunkerConfig { chunk_tokens: 8, overlap_tokens: 3 })?;
/// // Word tokens here; the engine passes its Embedder, so sizes are model tokens.
/// let spans = WhitespaceTokens.token_spans(text)?;
/// let chunks = chunker.chunk(text, &spans)?;
/// assert!(chunks.len() > 1);
/// for (i, chunk) in chunks.iter().enumerate() {
///     assert_eq!(chunk.index, i);
///     assert!(chunk.tokens.len() <= 8);
///     assert_eq!(&text[chunk.span.clone()], chunk.text); // quotes the document exactly
/// }
/// // Cuts prefer sentence ends, and every token lands in some chunk.
/// assert_eq!(chunks[0].text, "Rust is fast. Rust is safe.");
/// assert_eq!(chunks.last().unwrap().tokens.end, spans.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Chunker {
    config: ChunkerConfig,
}

/// How good a place between two tokens is for a cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Inside a word: the pieces may re-tokenise differently.
    Token,
    /// Between words (whitespace or punctuation between the tokens).
    Word,
    /// At a sentence or paragraph start, at this byte offset.
    Sentence(usize),
}

impl Chunker {
    /// A chunker with `config`, once it is [valid](ChunkerConfig::validate).
    pub fn new(config: ChunkerConfig) -> Result<Self, ChunkError> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The chunk size and overlap.
    pub fn config(&self) -> ChunkerConfig {
        self.config
    }

    /// Chunks `text` with the tokens `tokenizer` finds in it.
    pub fn chunk_with<T: TokenSpans + ?Sized>(
        &self,
        text: &str,
        tokenizer: &T,
    ) -> Result<Vec<Chunk>, ChunkError> {
        let spans = tokenizer
            .token_spans(text)
            .map_err(|e| ChunkError::Tokenizer(Box::new(e)))?;
        self.chunk(text, &spans)
    }

    /// Chunks `text`, whose tokens lie at `spans` (as [`TokenSpans`]
    /// returns them).
    ///
    /// A text with no tokens has no chunks; one with at most `chunk_tokens`
    /// tokens is one chunk, the whole text trimmed. Otherwise each chunk ends
    /// at the last sentence start in the second half of its window, else at
    /// the last word boundary there, else after exactly `chunk_tokens`
    /// tokens; the next one starts up to `overlap_tokens` earlier, at the
    /// earliest sentence start (else word boundary) in that range, so the
    /// overlap carries whole sentences where it can. Every token is in at
    /// least one chunk.
    pub fn chunk(&self, text: &str, spans: &[Range<usize>]) -> Result<Vec<Chunk>, ChunkError> {
        check_spans(text, spans)?;
        let n = spans.len();
        let ChunkerConfig {
            chunk_tokens,
            overlap_tokens,
        } = self.config;
        if n == 0 {
            return Ok(Vec::new());
        }
        let sentence_cuts = sentence_cuts(text, spans);
        let cut_at = |k: usize| -> Cut {
            if let Ok(i) = sentence_cuts.binary_search_by_key(&k, |&(k, _)| k) {
                return Cut::Sentence(sentence_cuts[i].1);
            }
            let (prev, next) = (&spans[k - 1], &spans[k]);
            if prev.end > next.start {
                // Tokens made from one character: no place for a cut.
                return Cut::Token;
            }
            if prev.end < next.start {
                return Cut::Word;
            }
            let before = text[..next.start].chars().next_back();
            let after = text[next.start..].chars().next();
            match (before, after) {
                (Some(b), Some(a)) if b.is_alphanumeric() && a.is_alphanumeric() => Cut::Token,
                _ => Cut::Word,
            }
        };
        // Byte offset where a cut before token `k` falls: a sentence start
        // if there is one, else the token's start (whatever lies between the
        // tokens stays with the chunk before, and is trimmed if whitespace).
        let cut_offset = |k: usize| -> usize {
            if k == 0 {
                return 0;
            }
            if k == n {
                return text.len();
            }
            match cut_at(k) {
                Cut::Sentence(at) => at,
                _ => spans[k].start,
            }
        };

        let mut chunks = Vec::new();
        let mut start = 0;
        let mut covered = 0;
        loop {
            let end = if n - start <= chunk_tokens {
                n
            } else {
                let last = start + chunk_tokens;
                let first = (start + chunk_tokens.div_ceil(2)).max(covered + 1);
                best_cut(first..=last, &cut_at, true).unwrap_or(last)
            };
            let tokens = start..end;
            let from = cut_offset(start).min(spans[start].start);
            let to = cut_offset(end).max(spans[end - 1].end);
            let span = trim(text, from..to, spans[start].start..spans[end - 1].end);
            if !span.is_empty() {
                chunks.push(Chunk {
                    index: chunks.len(),
                    text: text[span.clone()].to_string(),
                    span,
                    tokens,
                });
            }
            if end == n {
                break;
            }
            covered = end;
            start = if overlap_tokens == 0 {
                end
            } else {
                let first = end.saturating_sub(overlap_tokens).max(start + 1);
                best_cut(first..=end - 1, &cut_at, false).unwrap_or(first)
            };
        }
        Ok(chunks)
    }
}

/// The best cut in `range` (token indices, all ≥ 1): sentence over word,
/// then the last one if `latest`, else the first; `None` if only cuts
/// inside words are there.
fn best_cut(
    range: std::ops::RangeInclusive<usize>,
    cut_at: &impl Fn(usize) -> Cut,
    latest: bool,
) -> Option<usize> {
    let mut word = None;
    let mut scan = |k: usize| -> Option<usize> {
        match cut_at(k) {
            Cut::Sentence(_) => return Some(k),
            Cut::Word if word.is_none() => word = Some(k),
            _ => {}
        }
        None
    };
    let sentence = if latest {
        range.rev().find_map(&mut scan)
    } else {
        range.into_iter().find_map(&mut scan)
    };
    sentence.or(word)
}

/// `span` without leading or trailing whitespace, but never cutting into
/// `keep` (the chunk's own tokens).
fn trim(text: &str, span: Range<usize>, keep: Range<usize>) -> Range<usize> {
    let inner = &text[span.clone()];
    let start = span.start + (inner.len() - inner.trim_start().len());
    let end = span.start + inner.trim_end().len();
    let start = start.min(keep.start);
    let end = end.max(keep.end);
    if start >= end {
        start..start
    } else {
        start..end
    }
}

/// Token indices `k` (1 ≤ k < n) where a sentence starts between token
/// `k − 1` and token `k`, with that sentence's byte offset; sorted by `k`.
fn sentence_cuts(text: &str, spans: &[Range<usize>]) -> Vec<(usize, usize)> {
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for (at, _) in text.split_sentence_bound_indices() {
        if at == 0 {
            continue;
        }
        let k = spans.partition_point(|s| s.start < at);
        if k == 0 || k == spans.len() || spans[k - 1].end > at {
            continue;
        }
        if cuts.last().is_none_or(|&(last, _)| last != k) {
            cuts.push((k, at));
        }
    }
    cuts
}

/// Refuses spans that would make the chunks wrong or panic when sliced.
fn check_spans(text: &str, spans: &[Range<usize>]) -> Result<(), ChunkError> {
    let bad = |index: usize, reason| ChunkError::InvalidSpan {
        index,
        span: spans[index].clone(),
        len: text.len(),
        reason,
    };
    for (i, s) in spans.iter().enumerate() {
        if s.start > s.end || s.end > text.len() {
            return Err(bad(i, "out of the text or reversed"));
        }
        if !text.is_char_boundary(s.start) || !text.is_char_boundary(s.end) {
            return Err(bad(i, "not on a char boundary"));
        }
        if i > 0 && (s.start < spans[i - 1].start || s.end < spans[i - 1].end) {
            return Err(bad(i, "out of order"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunker(chunk_tokens: usize, overlap_tokens: usize) -> Chunker {
        Chunker::new(ChunkerConfig {
            chunk_tokens,
            overlap_tokens,
        })
        .unwrap()
    }

    fn texts(chunks: &[Chunk]) -> Vec<&str> {
        chunks.iter().map(|c| c.text.as_str()).collect()
    }

    #[test]
    fn config_is_validated() {
        let err = |chunk_tokens, overlap_tokens| {
            Chunker::new(ChunkerConfig {
                chunk_tokens,
                overlap_tokens,
            })
            .unwrap_err()
            .to_string()
        };
        assert!(err(0, 0).contains("chunk_tokens must be at least 1"));
        assert!(err(10, 10).contains("overlap_tokens (10) must be smaller"));
        assert!(Chunker::new(ChunkerConfig::default()).is_ok());
        let c = ChunkerConfig::default();
        assert!(c.validate_for_model(256).is_ok());
        assert!(c
            .validate_for_model(201)
            .unwrap_err()
            .to_string()
            .contains("max_seq_length (201)"));
        assert!(c.validate_for_model(202).is_ok());
    }

    #[test]
    fn short_text_is_one_trimmed_chunk_and_blank_text_none() {
        let c = chunker(10, 2);
        let text = "  \n Hello there. Bye.\n\n";
        let chunks = c.chunk_with(text, &WhitespaceTokens).unwrap();
        assert_eq!(texts(&chunks), ["Hello there. Bye."]);
        assert_eq!(chunks[0].span, 4..21);
        assert_eq!(chunks[0].tokens, 0..3);
        assert!(c
            .chunk_with(" \t\n ", &WhitespaceTokens)
            .unwrap()
            .is_empty());
        assert!(c.chunk_with("", &WhitespaceTokens).unwrap().is_empty());
    }

    #[test]
    fn cuts_at_the_last_sentence_end_in_the_window() {
        let c = chunker(8, 0);
        let text = "One two three. Four five six seven. Eight nine ten eleven twelve.";
        let chunks = c.chunk_with(text, &WhitespaceTokens).unwrap();
        // The window of 8 tokens ends at "eight"; the last sentence start
        // in its second half is before "Eight" (token 7).
        assert_eq!(
            texts(&chunks),
            [
                "One two three. Four five six seven.",
                "Eight nine ten eleven twelve."
            ]
        );
        for ch in &chunks {
            assert_eq!(&text[ch.span.clone()], ch.text);
        }
    }

    #[test]
    fn newlines_and_paragraphs_are_sentence_boundaries() {
        let c = chunker(6, 0);
        let text = "alpha beta gamma\ndelta epsilon zeta eta theta";
        let chunks = c.chunk_with(text, &WhitespaceTokens).unwrap();
        assert_eq!(texts(&chunks)[0], "alpha beta gamma");
        assert_eq!(texts(&chunks)[1], "delta epsilon zeta eta theta");
    }

    #[test]
    fn without_a_sentence_end_in_the_second_half_it_cuts_at_tokens() {
        let c = chunker(4, 0);
        // The only sentence start is before token 1: too early in the window.
        let text = "A. B c d e f g h i";
        let chunks = c.chunk_with(text, &WhitespaceTokens).unwrap();
        assert_eq!(texts(&chunks), ["A. B c d", "e f g h", "i"]);
        assert!(chunks.iter().all(|ch| ch.tokens.len() <= 4));
    }

    #[test]
    fn overlap_carries_whole_sentences_when_they_fit() {
        let c = chunker(10, 4);
        let text = "A b c d e. F g. H i j k l m n o p.";
        let chunks = c.chunk_with(text, &WhitespaceTokens).unwrap();
        // Window A..j (10 tokens): the last sentence start in its second
        // half is before "H" (token 7). Of the ≤ 4 tokens before it, the
        // earliest sentence start is before "F" (token 5): the overlap is
        // the whole sentence "F g.". The second window (F..o) has no
        // sentence start in its second half and ends at a word; its overlap
        // is 4 tokens.
        assert_eq!(
            texts(&chunks),
            ["A b c d e. F g.", "F g. H i j k l m n o", "l m n o p."]
        );
        let tokens: Vec<_> = chunks.iter().map(|c| c.tokens.clone()).collect();
        assert_eq!(tokens, [0..7, 5..15, 11..16]);
    }

    #[test]
    fn overlap_falls_back_to_tokens_without_sentences() {
        let c = chunker(5, 2);
        let text = "t0 t1 t2 t3 t4 t5 t6 t7";
        let chunks = c.chunk_with(text, &WhitespaceTokens).unwrap();
        assert_eq!(texts(&chunks), ["t0 t1 t2 t3 t4", "t3 t4 t5 t6 t7"]);
        assert_eq!(chunks[1].tokens, 3..8);
    }

    #[test]
    fn cuts_prefer_word_boundaries_over_inside_words() {
        let c = chunker(4, 0);
        // Sub-word tokens: "unbelievable" is three tokens with no gap.
        let text = "so unbelievable it is";
        let spans = [0..2, 3..5, 5..10, 10..15, 16..18, 19..21];
        let chunks = c.chunk(text, &spans).unwrap();
        // Window 0..4 ends at a word boundary (before "it").
        assert_eq!(texts(&chunks), ["so unbelievable", "it is"]);
        // Window 0..3 ends inside the word and its second half (tokens 2
        // and 3) has no word boundary: the cut falls inside the word.
        let chunks = chunker(3, 0).chunk(text, &spans).unwrap();
        assert_eq!(texts(&chunks), ["so unbelie", "vable it is"]);
        // With a word boundary in the second half, the cut moves back to it.
        let text = "a b unbelievable";
        let spans = [0..1, 2..3, 4..6, 6..11, 11..16];
        let chunks = chunker(3, 0).chunk(text, &spans).unwrap();
        assert_eq!(texts(&chunks), ["a b", "unbelievable"]);
    }

    #[test]
    fn shared_spans_of_one_character_stay_together_or_overlap() {
        // Two tokens made from one character share its range.
        let text = "İİ x y";
        let spans = [0..2, 0..2, 2..4, 5..6, 7..8];
        let chunks = chunker(2, 0).chunk(text, &spans).unwrap();
        // The cut between the two tokens of the first "İ" is inside a
        // character, so the first window ends at its hard limit instead.
        assert_eq!(texts(&chunks), ["İ", "İ x", "y"]);
        let tokens: Vec<_> = chunks.iter().map(|c| c.tokens.clone()).collect();
        assert_eq!(tokens, [0..2, 2..4, 4..5]);
    }

    #[test]
    fn bad_spans_are_errors_not_panics() {
        let c = chunker(4, 1);
        let text = "héllo world";
        let e = c
            .chunk(text, std::slice::from_ref(&(0..2)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("char boundary"), "{e}");
        let e = c.chunk(text, &[0..5, 3..40]).unwrap_err().to_string();
        assert!(e.contains("out of the text"), "{e}");
        let e = c.chunk(text, &[7..12, 0..6]).unwrap_err().to_string();
        assert!(e.contains("out of order"), "{e}");
        #[allow(clippy::reversed_empty_ranges)]
        let e = c
            .chunk(text, std::slice::from_ref(&(6..3)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("reversed"), "{e}");
    }

    #[test]
    fn whitespace_tokens_are_non_whitespace_runs() {
        let text = " a  bc\u{3000}d\té ";
        let spans = WhitespaceTokens.token_spans(text).unwrap();
        let words: Vec<&str> = spans.into_iter().map(|s| &text[s]).collect();
        assert_eq!(words, ["a", "bc", "d", "é"]);
    }
}
