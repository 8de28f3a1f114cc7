//! Rule-based query intent, and the retrieval settings each intent gets.
//!
//! Different questions need different retrieval: a factual question names
//! the thing it asks about, so exact keywords help and a few passages
//! suffice; a comparison needs evidence on both sides; an open question is
//! best served by meaning rather than words. Rules on the question's form
//! are cheap, predictable and good enough to pick those settings; a caller
//! who disagrees sets the policy or turns intent off.

use super::QueryError;

/// What kind of question a query is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intent {
    /// Asks for a fact: "what is", "who", "when", "where", "which", "how
    /// many", "define".
    Factual,
    /// Sets things against each other: "vs", "versus", "compare",
    /// "difference between".
    Comparison,
    /// Asks how to do something: "how to", "how do I", "steps", "tutorial".
    Procedural,
    /// Anything else: open questions, topics, "why", "explain".
    Exploratory,
}

impl Intent {
    /// Classifies `query` by its form. Case and punctuation do not matter.
    ///
    /// Rules, first match wins: a procedural question form at the start
    /// ("how to compare…" is procedural); a comparison marker anywhere
    /// ("what is the difference between…" is a comparison); a procedural
    /// marker anywhere; a factual question form at the start; else
    /// exploratory.
    pub fn classify(query: &str) -> Intent {
        let words = words(query);
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        if starts_with_any(&w, PROCEDURAL_STARTS) {
            Intent::Procedural
        } else if w.iter().any(|x| COMPARISON_WORDS.contains(x))
            || contains_any(&w, COMPARISON_PHRASES)
        {
            Intent::Comparison
        } else if w.iter().any(|x| PROCEDURAL_WORDS.contains(x))
            || contains_any(&w, PROCEDURAL_PHRASES)
        {
            Intent::Procedural
        } else if starts_with_any(&w, FACTUAL_STARTS) {
            Intent::Factual
        } else {
            Intent::Exploratory
        }
    }
}

const PROCEDURAL_STARTS: &[&[&str]] = &[
    &["how", "to"],
    &["how", "do", "i"],
    &["how", "do", "you"],
    &["how", "do", "we"],
    &["how", "can", "i"],
    &["how", "can", "you"],
    &["how", "can", "we"],
    &["how", "should", "i"],
    &["how", "would", "i"],
];
const COMPARISON_WORDS: &[&str] = &[
    "vs",
    "versus",
    "compare",
    "compared",
    "compares",
    "comparing",
    "comparison",
];
const COMPARISON_PHRASES: &[&[&str]] = &[
    &["difference", "between"],
    &["differences", "between"],
    &["differ", "from"],
    &["similarities", "between"],
    &["better", "than"],
    &["pros", "and", "cons"],
];
const PROCEDURAL_WORDS: &[&str] = &["steps", "tutorial", "instructions", "step-by-step"];
const PROCEDURAL_PHRASES: &[&[&str]] = &[&["how", "to"], &["step", "by", "step"]];
const FACTUAL_STARTS: &[&[&str]] = &[
    &["what", "is"],
    &["what", "are"],
    &["what", "was"],
    &["what", "were"],
    &["what's"],
    &["who"],
    &["who's"],
    &["whom"],
    &["whose"],
    &["when"],
    &["where"],
    &["which"],
    &["how", "many"],
    &["how", "much"],
    &["define"],
    &["definition", "of"],
];

/// Lowercase words with punctuation trimmed at their ends ("vs." is "vs").
fn words(text: &str) -> Vec<String> {
    use unicode_categories::UnicodeCategories;
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| c.is_punctuation())
                .replace('’', "'")
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

fn starts_with_any(words: &[&str], phrases: &[&[&str]]) -> bool {
    phrases.iter().any(|p| words.starts_with(p))
}

fn contains_any(words: &[&str], phrases: &[&[&str]]) -> bool {
    phrases
        .iter()
        .any(|p| words.windows(p.len()).any(|w| w == *p))
}

/// How to search, as intent suggests it. Mirrors the engine's modes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SearchModeHint {
    /// Embedding similarity only.
    Vector,
    /// BM25 only.
    Keyword,
    /// Both, fused as `alpha · vector + (1 − alpha) · keyword`
    /// ([`alpha_fusion`](ragjet_retrieval::alpha_fusion)).
    Hybrid {
        /// Weight of the vector scores, in [0, 1].
        alpha: f32,
    },
}

/// Retrieval settings for one intent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntentPlan {
    /// Hits to retrieve.
    pub top_k: usize,
    /// How to search.
    pub mode: SearchModeHint,
}

impl IntentPlan {
    fn validate(&self, intent: Intent) -> Result<(), QueryError> {
        if self.top_k == 0 {
            return Err(QueryError::InvalidPolicy(format!(
                "{intent:?}: top_k must be at least 1"
            )));
        }
        if let SearchModeHint::Hybrid { alpha } = self.mode {
            if !(0.0..=1.0).contains(&alpha) {
                return Err(QueryError::InvalidPolicy(format!(
                    "{intent:?}: alpha must be in [0, 1], got {alpha}"
                )));
            }
        }
        Ok(())
    }
}

/// The [`IntentPlan`] for each [`Intent`].
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::query::{Intent, IntentPlan, IntentPolicy, SearchModeHint};
///
/// let policy = IntentPolicy::default();
/// let (intent, plan) = policy.decide("What is the difference between TCP and UDP?");
/// assert_eq!(intent, Intent::Comparison);
/// assert_eq!(plan.top_k, 10);
/// assert_eq!(Intent::classify("how to install rust"), Intent::Procedural);
/// assert_eq!(policy.plan(Intent::Exploratory).mode, SearchModeHint::Vector);
/// // A corpus of code snippets: lean on keywords for how-to questions.
/// let policy = policy.with(Intent::Procedural, IntentPlan { top_k: 4, mode: SearchModeHint::Hybrid { alpha: 0.3 } })?;
/// assert_eq!(policy.plan(Intent::Procedural).top_k, 4);
/// assert!(policy.with(Intent::Factual, IntentPlan { top_k: 0, mode: SearchModeHint::Keyword }).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntentPolicy {
    factual: IntentPlan,
    comparison: IntentPlan,
    procedural: IntentPlan,
    exploratory: IntentPlan,
}

impl Default for IntentPolicy {
    /// - factual: 5 hits, hybrid α = 0.5: the answer is in a few passages
    ///   that share the question's names and terms, which BM25 finds well.
    /// - comparison: 10 hits, hybrid α = 0.5: passages on each side.
    /// - procedural: 8 hits, hybrid α = 0.7: steps spread over passages
    ///   worded differently from the question, with some keyword anchoring
    ///   for the commands and product names asked about.
    /// - exploratory: 10 hits, vector only: open questions share meaning,
    ///   not words, with the passages that answer them.
    fn default() -> Self {
        let hybrid = |top_k, alpha| IntentPlan {
            top_k,
            mode: SearchModeHint::Hybrid { alpha },
        };
        Self {
            factual: hybrid(5, 0.5),
            comparison: hybrid(10, 0.5),
            procedural: hybrid(8, 0.7),
            exploratory: IntentPlan {
                top_k: 10,
                mode: SearchModeHint::Vector,
            },
        }
    }
}

impl IntentPolicy {
    /// The plan for `intent`.
    pub fn plan(&self, intent: Intent) -> IntentPlan {
        match intent {
            Intent::Factual => self.factual,
            Intent::Comparison => self.comparison,
            Intent::Procedural => self.procedural,
            Intent::Exploratory => self.exploratory,
        }
    }

    /// This policy with `plan` for `intent`, once the plan is valid
    /// (`top_k` ≥ 1, `alpha` in [0, 1]).
    pub fn with(mut self, intent: Intent, plan: IntentPlan) -> Result<Self, QueryError> {
        plan.validate(intent)?;
        *match intent {
            Intent::Factual => &mut self.factual,
            Intent::Comparison => &mut self.comparison,
            Intent::Procedural => &mut self.procedural,
            Intent::Exploratory => &mut self.exploratory,
        } = plan;
        Ok(self)
    }

    /// Classifies `query` and returns its intent with the plan for it.
    pub fn decide(&self, query: &str) -> (Intent, IntentPlan) {
        let intent = Intent::classify(query);
        (intent, self.plan(intent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factual_question_forms() {
        for q in [
            "What is retrieval-augmented generation?",
            "what are embeddings",
            "What's BM25",
            "Who wrote the BERT paper?",
            "When was HNSW published",
            "where is the config file",
            "Which index is fastest?",
            "How many layers does MiniLM have?",
            "define recall",
        ] {
            assert_eq!(Intent::classify(q), Intent::Factual, "{q}");
        }
    }

    #[test]
    fn comparison_markers_anywhere() {
        for q in [
            "HNSW vs. flat index",
            "faiss versus hnswlib",
            "Compare BM25 and dense retrieval",
            "what is the difference between recall and precision",
            "Is HNSW better than IVF?",
            "pros and cons of caching",
        ] {
            assert_eq!(Intent::classify(q), Intent::Comparison, "{q}");
        }
    }

    #[test]
    fn procedural_forms_and_markers() {
        for q in [
            "How to install ragjet",
            "how do I build for CUDA?",
            "How can I compare two embeddings", // the form wins over "compare"
            "steps to deploy the server",
            "Redis setup tutorial",
            "what is the way to learn how to cook", // "how to" inside
        ] {
            assert_eq!(Intent::classify(q), Intent::Procedural, "{q}");
        }
    }

    #[test]
    fn everything_else_is_exploratory() {
        for q in [
            "why do embeddings work",
            "tell me about vector databases",
            "retrieval augmented generation",
            "people who compute embeddings", // "who" not at the start
            "whatever happened to tf-idf",   // "what" is not a word here
            "",
        ] {
            assert_eq!(Intent::classify(q), Intent::Exploratory, "{q:?}");
        }
    }

    #[test]
    fn policy_defaults_and_overrides() {
        let p = IntentPolicy::default();
        assert_eq!(p.plan(Intent::Factual).top_k, 5);
        assert_eq!(p.plan(Intent::Exploratory).mode, SearchModeHint::Vector);
        let (intent, plan) = p.decide("X vs Y");
        assert_eq!(intent, Intent::Comparison);
        assert_eq!(plan.mode, SearchModeHint::Hybrid { alpha: 0.5 });

        let keyword = IntentPlan {
            top_k: 3,
            mode: SearchModeHint::Keyword,
        };
        let p = p.with(Intent::Factual, keyword).unwrap();
        assert_eq!(p.plan(Intent::Factual), keyword);
        assert_eq!(p.plan(Intent::Comparison).top_k, 10);

        let zero = IntentPlan {
            top_k: 0,
            ..keyword
        };
        assert!(p
            .with(Intent::Procedural, zero)
            .unwrap_err()
            .to_string()
            .contains("Procedural: top_k"));
        for alpha in [-0.1, 1.5, f32::NAN] {
            let bad = IntentPlan {
                top_k: 3,
                mode: SearchModeHint::Hybrid { alpha },
            };
            assert!(p.with(Intent::Factual, bad).is_err(), "{alpha}");
        }
    }
}
