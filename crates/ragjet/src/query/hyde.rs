//! HyDE (hypothetical document embeddings): embed a passage that answers the
//! query instead of the query itself. Questions and answers are worded
//! differently; a made-up answer, even a wrong one, lies closer to the real
//! answers in embedding space. Writing it needs a language model, which is
//! the caller's: ragjet only takes the function.

use std::error::Error;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::QueryError;

/// The caller's generator: query in, hypothetical passage out.
pub type HydeFn = Arc<dyn Fn(&str) -> Result<String, Box<dyn Error + Send + Sync>> + Send + Sync>;

/// What to do when the generator fails or writes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HydeFallback {
    /// Fail the query with [`QueryError::Hyde`]: the caller asked for HyDE
    /// and should learn that it did not happen.
    #[default]
    Fail,
    /// Embed the query itself; the result says so
    /// ([`EmbedSource::QueryAfterHydeError`]).
    UseQuery,
}

/// Where the text to embed came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedSource {
    /// The (cleaned) query: no HyDE configured.
    Query,
    /// The generator's passage.
    Hypothetical,
    /// The query, because the generator failed with this message and the
    /// fallback is [`HydeFallback::UseQuery`].
    QueryAfterHydeError(String),
}

/// The text to embed for a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedText {
    /// Text to embed.
    pub text: String,
    /// Where it came from.
    pub source: EmbedSource,
}

/// A HyDE hook: the caller's generator and what to do when it fails.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::query::{EmbedSource, Hyde, HydeFallback};
///
/// // In production the closure calls a language model.
/// let hyde = Hyde::from_fn(|query: &str| Ok(format!("{query} Paris is the capital of France.")));
/// let text = hyde.passage("capital of france?")?;
/// assert_eq!(text.source, EmbedSource::Hypothetical);
/// assert!(text.text.ends_with("Paris is the capital of France."));
///
/// // A failing generator fails the query, unless the caller prefers to embed the query.
/// let flaky = Hyde::from_fn(|_: &str| Err("LLM timed out".into()));
/// assert!(flaky.passage("q").is_err());
/// let tolerant = flaky.with_fallback(HydeFallback::UseQuery);
/// let text = tolerant.passage("q")?;
/// assert_eq!(text.text, "q");
/// assert!(matches!(text.source, EmbedSource::QueryAfterHydeError(msg) if msg.contains("timed out")));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Hyde {
    generate: HydeFn,
    fallback: HydeFallback,
}

impl std::fmt::Debug for Hyde {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hyde")
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

impl Hyde {
    /// A hook around `generate`, failing queries when it fails.
    pub fn new(generate: HydeFn) -> Self {
        Self {
            generate,
            fallback: HydeFallback::Fail,
        }
    }

    /// A hook around a closure.
    pub fn from_fn(
        generate: impl Fn(&str) -> Result<String, Box<dyn Error + Send + Sync>> + Send + Sync + 'static,
    ) -> Self {
        Self::new(Arc::new(generate))
    }

    /// This hook with `fallback` for failures.
    pub fn with_fallback(mut self, fallback: HydeFallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// The configured fallback.
    pub fn fallback(&self) -> HydeFallback {
        self.fallback
    }

    /// The passage to embed for `query`.
    ///
    /// A generator that errs, panics or returns a blank passage has failed:
    /// that is [`QueryError::Hyde`] unless the fallback is
    /// [`HydeFallback::UseQuery`]. A panic is caught because the generator
    /// is usually a network client, and one bad reply should fail one
    /// query, not the thread serving many.
    pub fn passage(&self, query: &str) -> Result<EmbedText, QueryError> {
        let outcome = catch_unwind(AssertUnwindSafe(|| (self.generate)(query)));
        let failure = match outcome {
            Ok(Ok(passage)) if !passage.trim().is_empty() => {
                return Ok(EmbedText {
                    text: passage,
                    source: EmbedSource::Hypothetical,
                })
            }
            Ok(Ok(_)) => QueryError::Hyde("the generator returned a blank passage".into()),
            Ok(Err(e)) => QueryError::Hyde(e),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                QueryError::Hyde(format!("the generator panicked: {message}").into())
            }
        };
        match self.fallback {
            HydeFallback::Fail => Err(failure),
            HydeFallback::UseQuery => {
                tracing::warn!(error = %failure, "HyDE failed; embedding the query itself");
                Ok(EmbedText {
                    text: query.to_string(),
                    source: EmbedSource::QueryAfterHydeError(failure.to_string()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_passage_replaces_the_query() {
        let hyde = Hyde::from_fn(|q| Ok(format!("A passage answering: {q}")));
        let out = hyde.passage("what is hnsw").unwrap();
        assert_eq!(out.text, "A passage answering: what is hnsw");
        assert_eq!(out.source, EmbedSource::Hypothetical);
    }

    #[test]
    fn failures_surface_by_default() {
        let err = Hyde::from_fn(|_| Err("LLM timed out".into()))
            .passage("q")
            .unwrap_err();
        assert!(matches!(err, QueryError::Hyde(_)));
        assert!(err.to_string().contains("LLM timed out"), "{err}");
        // The caller's error is the source, for callers that downcast.
        let source = std::error::Error::source(&err).unwrap();
        assert_eq!(source.to_string(), "LLM timed out");

        let err = Hyde::from_fn(|_| Ok(" \n".into()))
            .passage("q")
            .unwrap_err();
        assert!(err.to_string().contains("blank passage"), "{err}");

        let err = Hyde::from_fn(|_| panic!("client bug"))
            .passage("q")
            .unwrap_err();
        assert!(err.to_string().contains("panicked: client bug"), "{err}");
    }

    #[test]
    fn fallback_to_the_query_is_explicit_and_reported() {
        let hyde = Hyde::from_fn(|_| Err("quota".into())).with_fallback(HydeFallback::UseQuery);
        assert_eq!(hyde.fallback(), HydeFallback::UseQuery);
        let out = hyde.passage("what is hnsw").unwrap();
        assert_eq!(out.text, "what is hnsw");
        match out.source {
            EmbedSource::QueryAfterHydeError(message) => assert!(message.contains("quota")),
            other => panic!("expected a reported fallback, got {other:?}"),
        }
    }
}
