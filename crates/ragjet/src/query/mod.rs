//! Query handling before search, as small parts that each can be left out:
//! [cleaning](QueryCleaner), [expansion](SynonymMap) from a synonym map,
//! rule-based [intent](Intent) choosing `top_k` and the search mode, and a
//! [HyDE](Hyde) hook. [`QueryProcessor`] runs them in that order.

mod clean;
mod expand;
mod hyde;
mod intent;

pub use clean::{CleanOptions, QueryCleaner};
pub use expand::{Expansion, SynonymMap};
pub use hyde::{EmbedSource, EmbedText, Hyde, HydeFallback, HydeFn};
pub use intent::{Intent, IntentPlan, IntentPolicy, SearchModeHint};

/// Why a query could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query is empty or only whitespace.
    #[error("the query is empty")]
    Empty,
    /// The query had text, but cleaning removed all of it.
    #[error("the query {original:?} is empty after cleaning")]
    EmptyAfterCleaning {
        /// The query as given.
        original: String,
    },
    /// A synonym map entry is unusable.
    #[error("invalid synonym map: {0}")]
    InvalidSynonym(String),
    /// An intent policy entry is unusable.
    #[error("invalid intent policy: {0}")]
    InvalidPolicy(String),
    /// The HyDE generator failed, panicked or wrote nothing.
    #[error("HyDE failed: {0}")]
    Hyde(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A query after [`QueryProcessor::process`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedQuery {
    /// The query as given.
    pub original: String,
    /// The cleaned query (the original, trimmed, without cleaning): what to
    /// embed and to key caches on.
    pub text: String,
    /// Text for keyword search: `text` plus synonyms when expansion is on.
    pub keyword_text: String,
    /// What expansion did, when it is on.
    pub expansion: Option<Expansion>,
    /// The query's intent and the plan for it, when intent is on; computed
    /// from `text`, not from the expansion, since synonyms are added for
    /// recall and do not change what was asked.
    pub intent: Option<(Intent, IntentPlan)>,
}

/// Cleaning, expansion, intent and HyDE, each optional, in that order.
///
/// HyDE is a separate step, [`embedding_text`](Self::embedding_text),
/// because it calls a language model: the engine runs it only after the
/// caches missed, where [`process`](Self::process) runs before them.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::query::{CleanOptions, EmbedSource, Hyde, Intent, IntentPolicy, QueryProcessor, SynonymMap};
/// use std::collections::HashMap;
///
/// let synonyms = SynonymMap::new(HashMap::from([("car".to_string(), vec!["automobile".to_string()])]))?;
/// let processor = QueryProcessor::new()
///     .with_cleaning(Some(CleanOptions { lowercase: true, ..CleanOptions::default() }))
///     .with_synonyms(Some(synonyms))
///     .with_intent(Some(IntentPolicy::default()))
///     .with_hyde(Some(Hyde::from_fn(|q: &str| Ok(format!("An answer to: {q}")))));
///
/// let q = processor.process("  What is the  fastest CAR? ")?;
/// assert_eq!(q.text, "what is the fastest car?"); // what gets embedded and cached
/// assert_eq!(q.keyword_text, "what is the fastest car? automobile"); // what BM25 sees
/// assert_eq!(q.intent.map(|(intent, _)| intent), Some(Intent::Factual));
/// // HyDE is a separate step: the engine calls it only after its caches missed.
/// let embed = processor.embedding_text(&q)?;
/// assert_eq!(embed.source, EmbedSource::Hypothetical);
/// assert!(processor.process("   ").is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct QueryProcessor {
    cleaner: Option<QueryCleaner>,
    synonyms: Option<SynonymMap>,
    intent: Option<IntentPolicy>,
    hyde: Option<Hyde>,
}

impl QueryProcessor {
    /// A processor that only cleans, with the default [`CleanOptions`].
    pub fn new() -> Self {
        Self {
            cleaner: Some(QueryCleaner::default()),
            ..Self::default()
        }
    }

    /// Cleaning with `options`, or none (the query is only trimmed).
    pub fn with_cleaning(mut self, options: Option<CleanOptions>) -> Self {
        self.cleaner = options.map(QueryCleaner::new);
        self
    }

    /// Expansion with `synonyms`, or none.
    pub fn with_synonyms(mut self, synonyms: Option<SynonymMap>) -> Self {
        self.synonyms = synonyms;
        self
    }

    /// Intent with `policy`, or none.
    pub fn with_intent(mut self, policy: Option<IntentPolicy>) -> Self {
        self.intent = policy;
        self
    }

    /// A HyDE hook, or none.
    pub fn with_hyde(mut self, hyde: Option<Hyde>) -> Self {
        self.hyde = hyde;
        self
    }

    /// The cleaning options, if cleaning is on.
    pub fn cleaning(&self) -> Option<CleanOptions> {
        self.cleaner.map(|c| c.options())
    }

    /// The synonym map, if expansion is on.
    pub fn synonyms(&self) -> Option<&SynonymMap> {
        self.synonyms.as_ref()
    }

    /// The intent policy, if intent is on.
    pub fn intent_policy(&self) -> Option<&IntentPolicy> {
        self.intent.as_ref()
    }

    /// The HyDE hook, if any.
    pub fn hyde(&self) -> Option<&Hyde> {
        self.hyde.as_ref()
    }

    /// Cleans, expands and classifies `query`. A blank query, or one that
    /// cleans to nothing, is an error whatever is switched on.
    pub fn process(&self, query: &str) -> Result<ProcessedQuery, QueryError> {
        let text = match &self.cleaner {
            Some(cleaner) => cleaner.clean(query)?,
            None if query.trim().is_empty() => return Err(QueryError::Empty),
            None => query.trim().to_string(),
        };
        let expansion = self.synonyms.as_ref().map(|s| s.expand(&text));
        let keyword_text = expansion
            .as_ref()
            .map_or_else(|| text.clone(), |e| e.text.clone());
        let intent = self.intent.as_ref().map(|policy| policy.decide(&text));
        Ok(ProcessedQuery {
            original: query.to_string(),
            text,
            keyword_text,
            expansion,
            intent,
        })
    }

    /// The text to embed for `query`: HyDE's passage when a hook is set,
    /// else the cleaned query.
    pub fn embedding_text(&self, query: &ProcessedQuery) -> Result<EmbedText, QueryError> {
        match &self.hyde {
            Some(hyde) => hyde.passage(&query.text),
            None => Ok(EmbedText {
                text: query.text.clone(),
                source: EmbedSource::Query,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn synonyms() -> SynonymMap {
        SynonymMap::new(HashMap::from([(
            "car".to_string(),
            vec!["automobile".to_string()],
        )]))
        .unwrap()
    }

    #[test]
    fn parts_run_in_order_clean_expand_intent() {
        let p = QueryProcessor::new()
            .with_cleaning(Some(CleanOptions {
                lowercase: true,
                strip_punctuation: true,
                ..CleanOptions::default()
            }))
            .with_synonyms(Some(synonyms()))
            .with_intent(Some(IntentPolicy::default()));
        let q = p.process("  What is a CAR?? ").unwrap();
        assert_eq!(q.original, "  What is a CAR?? ");
        assert_eq!(q.text, "what is a car");
        assert_eq!(q.keyword_text, "what is a car automobile");
        assert_eq!(q.expansion.as_ref().unwrap().added, ["automobile"]);
        let (intent, plan) = q.intent.unwrap();
        assert_eq!(intent, Intent::Factual);
        assert_eq!(plan, IntentPolicy::default().plan(Intent::Factual));
        // Expansion only feeds keyword search; the embedding text is clean.
        let e = p.embedding_text(&q).unwrap();
        assert_eq!(e.text, "what is a car");
        assert_eq!(e.source, EmbedSource::Query);
    }

    #[test]
    fn every_part_can_be_off() {
        let p = QueryProcessor::default();
        let q = p.process("  What is a CAR?? ").unwrap();
        assert_eq!(q.text, "What is a CAR??");
        assert_eq!(q.keyword_text, q.text);
        assert!(q.expansion.is_none() && q.intent.is_none());
        assert!(matches!(p.process(" \t"), Err(QueryError::Empty)));
        assert!(p.cleaning().is_none() && p.synonyms().is_none());
        assert!(p.intent_policy().is_none() && p.hyde().is_none());
    }

    #[test]
    fn cleaning_to_nothing_is_an_error_not_an_empty_search() {
        let p = QueryProcessor::new().with_cleaning(Some(CleanOptions {
            strip_punctuation: true,
            ..CleanOptions::default()
        }));
        assert!(matches!(
            p.process("?!"),
            Err(QueryError::EmptyAfterCleaning { .. })
        ));
    }

    #[test]
    fn hyde_runs_only_when_asked_for_the_embedding_text() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let p = QueryProcessor::new().with_hyde(Some(Hyde::from_fn(move |q| {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(format!("HNSW is a graph index. ({q})"))
        })));
        let q = p.process("what  is HNSW").unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let e = p.embedding_text(&q).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(e.text, "HNSW is a graph index. (what is HNSW)");
        assert_eq!(e.source, EmbedSource::Hypothetical);

        let failing = QueryProcessor::new().with_hyde(Some(Hyde::from_fn(|_| Err("down".into()))));
        let q = failing.process("x").unwrap();
        assert!(matches!(
            failing.embedding_text(&q),
            Err(QueryError::Hyde(_))
        ));
    }
}
