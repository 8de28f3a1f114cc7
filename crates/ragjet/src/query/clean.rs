//! Query cleaning: one spelling per query, so that caches hit and keyword
//! search matches regardless of stray spaces, full-width letters or
//! (optionally) case and punctuation.

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

use super::QueryError;

/// What [`QueryCleaner`] changes. Whitespace is always collapsed.
///
/// The defaults change only the form of the query, never its words: NFKC on,
/// case folding and punctuation stripping off, because a cased model reads
/// "US" and "us" differently and "C#" needs its "#".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanOptions {
    /// Unicode NFKC: full-width "ＡＢＣ" becomes "ABC", the ligature "ﬁ"
    /// "fi", a non-breaking space a space.
    pub nfkc: bool,
    /// Lowercase everything (Unicode rules: "İ" becomes "i̇").
    pub lowercase: bool,
    /// Replace punctuation by spaces, except where it belongs to a word or
    /// number: dashes, apostrophes, ".", "_", "/", "@" and "&" between two
    /// letters or digits ("state-of-the-art", "don't", "node.js", "AT&T"),
    /// "," and ":" between digits ("1,000", "10:30"), "#" after a letter or
    /// digit ("C#"), "%" after a digit, "-" starting a number ("-5").
    /// Symbols such as "+" and "$" are not punctuation and stay.
    pub strip_punctuation: bool,
}

impl Default for CleanOptions {
    fn default() -> Self {
        Self {
            nfkc: true,
            lowercase: false,
            strip_punctuation: false,
        }
    }
}

/// Cleans queries with fixed [`CleanOptions`].
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::query::{CleanOptions, QueryCleaner, QueryError};
///
/// // The defaults only normalise form: full-width letters and stray spaces.
/// let cleaner = QueryCleaner::new(CleanOptions::default());
/// assert_eq!(cleaner.clean("  ＲＵＳＴ   vs\u{200b} C# ")?, "RUST vs C#");
/// // Folding case and punctuation keeps words that need their symbols.
/// let strict = QueryCleaner::new(CleanOptions { lowercase: true, strip_punctuation: true, ..CleanOptions::default() });
/// assert_eq!(strict.clean("Node.js, C# & state-of-the-art?!")?, "node.js c# state-of-the-art");
/// assert!(matches!(strict.clean("?!"), Err(QueryError::EmptyAfterCleaning { .. })));
/// assert!(matches!(strict.clean(" "), Err(QueryError::Empty)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryCleaner {
    options: CleanOptions,
}

impl QueryCleaner {
    /// A cleaner applying `options`.
    pub fn new(options: CleanOptions) -> Self {
        Self { options }
    }

    /// The options it applies.
    pub fn options(&self) -> CleanOptions {
        self.options
    }

    /// The cleaned query: NFKC, lowercase, punctuation (as configured), then
    /// control characters, zero-width spaces and runs of whitespace become
    /// single spaces, trimmed at both ends.
    ///
    /// A query that is blank is [`QueryError::Empty`]; one that has text but
    /// cleans to nothing (only punctuation, say) is
    /// [`QueryError::EmptyAfterCleaning`], so a search never runs on "".
    pub fn clean(&self, query: &str) -> Result<String, QueryError> {
        if query.trim().is_empty() {
            return Err(QueryError::Empty);
        }
        let mut text: String = if self.options.nfkc {
            query.nfkc().map(|(c, _)| c).collect()
        } else {
            query.to_string()
        };
        if self.options.lowercase {
            text = text.to_lowercase();
        }
        if self.options.strip_punctuation {
            text = strip_punctuation(&text);
        }
        let cleaned = collapse_whitespace(&text);
        if cleaned.is_empty() {
            return Err(QueryError::EmptyAfterCleaning {
                original: query.to_string(),
            });
        }
        Ok(cleaned)
    }
}

/// Characters that separate words without being `char::is_whitespace`.
fn is_separator(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '\u{200b}' | '\u{2060}' | '\u{feff}')
}

fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(is_separator).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn strip_punctuation(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        if !c.is_punctuation() || keeps_punctuation(prev, c, next) {
            out.push(c);
        } else {
            out.push(' ');
        }
    }
    out
}

/// Whether punctuation `c` between `prev` and `next` is part of a word or
/// number, where removing it would change the query's meaning.
fn keeps_punctuation(prev: Option<char>, c: char, next: Option<char>) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let digit = |c: Option<char>| c.is_some_and(|c| c.is_numeric());
    match c {
        '\'' | '’' | '.' | '_' | '/' | '@' | '&' => alnum(prev) && alnum(next),
        _ if c.is_punctuation_dash() && alnum(prev) && alnum(next) => true,
        ',' | ':' => digit(prev) && digit(next),
        '#' => alnum(prev),
        '%' => digit(prev),
        '-' => !alnum(prev) && digit(next),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(options: CleanOptions, q: &str) -> Result<String, QueryError> {
        QueryCleaner::new(options).clean(q)
    }

    const ALL: CleanOptions = CleanOptions {
        nfkc: true,
        lowercase: true,
        strip_punctuation: true,
    };

    #[test]
    fn whitespace_is_collapsed_and_trimmed_by_default() {
        let d = CleanOptions::default();
        assert_eq!(
            clean(d, "  what\tis \n\n RAG?\u{200b} ").unwrap(),
            "what is RAG?"
        );
        assert_eq!(clean(d, "a\u{0}b\u{a0}c").unwrap(), "a b c");
    }

    #[test]
    fn nfkc_unifies_compatibility_forms() {
        let d = CleanOptions::default();
        assert_eq!(clean(d, "ＲＡＧ ﬁle ①").unwrap(), "RAG file 1");
        // Composed and decomposed "é" clean to the same string.
        assert_eq!(
            clean(d, "caf\u{e9}").unwrap(),
            clean(d, "cafe\u{301}").unwrap()
        );
        let off = CleanOptions { nfkc: false, ..d };
        assert_eq!(clean(off, "ＲＡＧ").unwrap(), "ＲＡＧ");
    }

    #[test]
    fn case_folding_is_an_option() {
        let d = CleanOptions::default();
        assert_eq!(clean(d, "What Is BM25").unwrap(), "What Is BM25");
        let lower = CleanOptions {
            lowercase: true,
            ..d
        };
        assert_eq!(
            clean(lower, "What Is BM25 İ").unwrap(),
            "what is bm25 i\u{307}"
        );
    }

    #[test]
    fn punctuation_goes_but_words_and_numbers_keep_theirs() {
        assert_eq!(
            clean(
                ALL,
                "What's state-of-the-art (2024)?? Compare C# vs. C++, node.js!"
            )
            .unwrap(),
            "what's state-of-the-art 2024 compare c# vs c++ node.js"
        );
        assert_eq!(
            clean(ALL, "pi = 3.14; 1,000 items; 50% off; -5 °C; $20").unwrap(),
            "pi = 3.14 1,000 items 50% off -5 °c $20"
        );
        // CJK punctuation is punctuation too, also between letters.
        assert_eq!(clean(ALL, "東京は？「天気」。").unwrap(), "東京は 天気");
        assert_eq!(clean(ALL, "東京、大阪").unwrap(), "東京 大阪");
        assert_eq!(
            clean(ALL, "AT&T at 10:30, a,b a;b x_y").unwrap(),
            "at&t at 10:30 a b a b x_y"
        );
        let keep = CleanOptions::default();
        assert_eq!(clean(keep, "what?!").unwrap(), "what?!");
    }

    #[test]
    fn queries_that_clean_to_nothing_are_errors() {
        assert!(matches!(clean(ALL, ""), Err(QueryError::Empty)));
        assert!(matches!(clean(ALL, " \n\t"), Err(QueryError::Empty)));
        match clean(ALL, " ?!... ") {
            Err(QueryError::EmptyAfterCleaning { original }) => assert_eq!(original, " ?!... "),
            other => panic!("expected EmptyAfterCleaning, got {other:?}"),
        }
        assert!(matches!(
            clean(CleanOptions::default(), "\u{200b}\u{feff}"),
            Err(QueryError::EmptyAfterCleaning { .. })
        ));
        // Without stripping, punctuation alone is a query.
        assert_eq!(clean(CleanOptions::default(), "?!").unwrap(), "?!");
    }
}
