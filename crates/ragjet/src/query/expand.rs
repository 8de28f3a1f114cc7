//! Query expansion from a user's synonym map, for keyword search: BM25
//! only finds the words a passage uses, so "car" misses "automobile" unless
//! the query carries both. Vector search needs no expansion and does not get
//! it.

use std::collections::{HashMap, HashSet};

use super::QueryError;

/// A validated synonym map: each key (a word or a phrase of several words)
/// expands to its synonyms. Matching is whole-word and case-insensitive;
/// it is one-way ("car" → "automobile" does not imply the reverse) and not
/// transitive.
///
/// Words are what whitespace separates, with punctuation at their ends
/// removed ("(car)," is "car"; "c++" and "c#" stay). Languages written
/// without spaces therefore match a key only where it stands apart.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet::query::SynonymMap;
/// use std::collections::HashMap;
///
/// let map = SynonymMap::new(HashMap::from([
///     ("machine learning".to_string(), vec!["ML".to_string(), "statistical learning".to_string()]),
///     ("machine".to_string(), vec!["device".to_string()]),
/// ]))?;
/// // The longest key wins, matching is whole-word and case-insensitive.
/// let e = map.expand("Machine Learning for ml beginners");
/// assert_eq!(e.matched, ["machine learning"]);
/// assert_eq!(e.added, ["statistical learning"]); // "ML" is already in the query
/// assert_eq!(e.text, "Machine Learning for ml beginners statistical learning");
/// assert!(map.expand("machinery").added.is_empty());
/// // Blank synonyms are refused when the map is built, not at query time.
/// assert!(SynonymMap::new(HashMap::from([("x".to_string(), vec![" ".to_string()])])).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SynonymMap {
    /// Key as its lowercase words → synonyms as given, in order, deduplicated.
    entries: HashMap<Vec<String>, Vec<String>>,
    /// Words in the longest key, to bound the phrase search.
    longest_key: usize,
}

/// What expansion found and produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// The query followed by the synonyms it did not already contain:
    /// the text for keyword search.
    pub text: String,
    /// Keys found in the query, lowercase, in order of appearance.
    pub matched: Vec<String>,
    /// Synonyms added, in order, each once.
    pub added: Vec<String>,
}

impl SynonymMap {
    /// Validates `map`: every key must have a word and every synonym must
    /// be non-blank. Keys that differ only in case or spacing are merged.
    pub fn new(map: HashMap<String, Vec<String>>) -> Result<Self, QueryError> {
        // Sorted, so that merged keys keep a deterministic synonym order.
        let mut keys: Vec<_> = map.into_iter().collect();
        keys.sort();
        let mut entries: HashMap<Vec<String>, Vec<String>> = HashMap::new();
        for (key, synonyms) in keys {
            let words = lower_words(&key);
            if words.is_empty() {
                return Err(QueryError::InvalidSynonym(format!(
                    "the key {key:?} has no word"
                )));
            }
            let list = entries.entry(words).or_default();
            for synonym in synonyms {
                let synonym = synonym.split_whitespace().collect::<Vec<_>>().join(" ");
                if synonym.is_empty() {
                    return Err(QueryError::InvalidSynonym(format!(
                        "a synonym of {key:?} is blank"
                    )));
                }
                if !list.contains(&synonym) {
                    list.push(synonym);
                }
            }
        }
        let longest_key = entries.keys().map(Vec::len).max().unwrap_or(0);
        Ok(Self {
            entries,
            longest_key,
        })
    }

    /// Whether the map has no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Expands `query`: at each word, the longest key starting there
    /// matches (so "machine learning" wins over "machine"), and its
    /// synonyms not already in the query (as whole words, any case) are
    /// appended.
    pub fn expand(&self, query: &str) -> Expansion {
        let words = lower_words(query);
        let present: HashSet<&str> = words.iter().map(String::as_str).collect();
        let mut matched = Vec::new();
        let mut added: Vec<String> = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let longest = self.longest_key.min(words.len() - i);
            let hit = (1..=longest)
                .rev()
                .find_map(|len| self.entries.get(&words[i..i + len]).map(|s| (len, s)));
            let Some((len, synonyms)) = hit else {
                i += 1;
                continue;
            };
            matched.push(words[i..i + len].join(" "));
            for synonym in synonyms {
                let synonym_words = lower_words(synonym);
                let already_there = synonym_words.iter().all(|w| present.contains(w.as_str()))
                    || added
                        .iter()
                        .any(|a| a.to_lowercase() == synonym.to_lowercase());
                if !already_there {
                    added.push(synonym.clone());
                }
            }
            i += len;
        }
        let mut text = query.trim().to_string();
        for synonym in &added {
            text.push(' ');
            text.push_str(synonym);
        }
        Expansion {
            text,
            matched,
            added,
        }
    }
}

/// Lowercase words of `text`: whitespace-separated, punctuation trimmed at
/// both ends except a trailing "#" ("c#").
fn lower_words(text: &str) -> Vec<String> {
    use unicode_categories::UnicodeCategories;
    text.split_whitespace()
        .map(|w| {
            let w = w.trim_start_matches(|c: char| c.is_punctuation());
            let trimmed = w.trim_end_matches(|c: char| c.is_punctuation());
            // Keep one trailing '#' right after the word ("c#", "f#").
            let w = match w[trimmed.len()..].strip_prefix('#') {
                Some(_) if !trimmed.is_empty() => &w[..trimmed.len() + 1],
                _ => trimmed,
            };
            w.to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[&str])]) -> SynonymMap {
        SynonymMap::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn whole_words_case_insensitive() {
        let m = map(&[
            ("car", &["automobile", "vehicle"]),
            ("ML", &["machine learning"]),
        ]);
        let e = m.expand("Cheap CAR insurance for ml engineers?");
        assert_eq!(
            e.text,
            "Cheap CAR insurance for ml engineers? automobile vehicle machine learning"
        );
        assert_eq!(e.matched, ["car", "ml"]);
        assert_eq!(e.added, ["automobile", "vehicle", "machine learning"]);
        // Not inside other words.
        let e = m.expand("carpet cards html");
        assert_eq!(e.text, "carpet cards html");
        assert!(e.matched.is_empty() && e.added.is_empty());
    }

    #[test]
    fn punctuation_around_words_does_not_hide_them() {
        let m = map(&[
            ("car", &["automobile"]),
            ("c#", &["csharp"]),
            ("c++", &["cpp"]),
        ]);
        assert_eq!(m.expand("(car), car.").added, ["automobile"]);
        assert_eq!(m.expand("c# or c++?").added, ["csharp", "cpp"]);
        assert!(m.expand("c").added.is_empty());
    }

    #[test]
    fn longest_phrase_wins_and_synonyms_already_present_are_not_added() {
        let m = map(&[
            ("machine", &["device"]),
            ("machine learning", &["ML", "statistical learning"]),
        ]);
        let e = m.expand("machine learning with ml");
        assert_eq!(e.matched, ["machine learning"]);
        // "ML" is in the query already (as "ml").
        assert_eq!(e.added, ["statistical learning"]);
        let e = m.expand("machine shop");
        assert_eq!(e.matched, ["machine"]);
        assert_eq!(e.added, ["device"]);
    }

    #[test]
    fn repeated_keys_add_their_synonyms_once() {
        let m = map(&[("car", &["auto"]), ("Car ", &["auto", "motor"])]);
        let e = m.expand("car car");
        assert_eq!(e.matched, ["car", "car"]);
        assert_eq!(e.added, ["auto", "motor"]);
    }

    #[test]
    fn invalid_maps_are_errors() {
        let bad = |k: &str, v: &[&str]| {
            SynonymMap::new(HashMap::from([(
                k.to_string(),
                v.iter().map(|s| s.to_string()).collect(),
            )]))
            .unwrap_err()
            .to_string()
        };
        assert!(bad(" ?! ", &["x"]).contains("has no word"));
        assert!(bad("car", &["auto", "  "]).contains("blank"));
        assert!(SynonymMap::new(HashMap::new()).unwrap().is_empty());
    }
}
