//! BM25 keyword index over the same string ids as the vector indexes.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use crate::error::{corrupt, Result, RetrievalError};
use crate::persist;
use crate::topk::TopK;
use crate::types::Hit;

/// BM25 parameters.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{Bm25Index, Bm25Params};
///
/// // Less length normalisation for corpora of very uneven passages.
/// let params = Bm25Params { b: 0.3, ..Bm25Params::default() };
/// let index = Bm25Index::new(params)?;
/// assert_eq!(index.params().b, 0.3);
/// assert!(Bm25Index::new(Bm25Params { k1: -1.0, ..Bm25Params::default() }).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bm25Params {
    /// Term-frequency saturation (usual range 1.2–2.0).
    pub k1: f32,
    /// Length normalisation, 0 (none) to 1 (full).
    pub b: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Bm25Params { k1: 1.2, b: 0.75 }
    }
}

/// Splits text on Unicode word boundaries (UAX #29) and lowercases; the
/// same tokeniser is used for documents and queries.
///
/// # Examples
///
/// ```
/// assert_eq!(ragjet_retrieval::bm25::tokenize("Hello, World! It's 2024"), ["hello", "world", "it's", "2024"]);
/// ```
pub fn tokenize(text: &str) -> Vec<String> {
    text.unicode_words().map(|w| w.to_lowercase()).collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Doc {
    id: String,
    len: u32,
    /// Unique terms with their counts in this document.
    terms: Vec<(String, u32)>,
}

#[derive(Serialize, Deserialize)]
struct Bm25File {
    params: Bm25Params,
    docs: Vec<Doc>,
}

/// Okapi BM25 with the non-negative IDF `ln(1 + (N − df + 0.5)/(df + 0.5))`.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{Bm25Index, Bm25Params};
///
/// let mut index = Bm25Index::new(Bm25Params::default())?;
/// index.upsert("rust", "Rust is a systems programming language")?;
/// index.upsert("python", "Python is a dynamic programming language")?;
/// index.upsert("cat", "The cat sat on the mat")?;
/// let hits = index.search("systems language", 2);
/// assert_eq!(hits[0].id, "rust"); // rarer term "systems" decides
/// assert_eq!(hits.len(), 2);
/// assert!(index.search("zebra", 5).is_empty());
///
/// assert!(index.delete("cat"));
/// assert_eq!(index.len(), 2);
/// let dir = tempfile::tempdir()?;
/// index.save(dir.path())?;
/// let loaded = Bm25Index::load(dir.path())?;
/// assert_eq!(loaded.search("dynamic", 1)[0].id, "python");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Bm25Index {
    params: Bm25Params,
    docs: Vec<Option<Doc>>,
    free: Vec<u32>,
    by_id: HashMap<String, u32>,
    postings: HashMap<String, Vec<(u32, u32)>>,
    total_len: u64,
}

impl Bm25Index {
    /// An empty index; `k1` must be ≥ 0 and `b` within 0..=1.
    pub fn new(params: Bm25Params) -> Result<Self> {
        if !(params.k1 >= 0.0 && params.k1.is_finite() && (0.0..=1.0).contains(&params.b)) {
            return Err(RetrievalError::InvalidOption(format!(
                "BM25 needs k1 >= 0 and 0 <= b <= 1, got {params:?}"
            )));
        }
        Ok(Bm25Index {
            params,
            ..Default::default()
        })
    }

    /// The parameters (to build an empty index like this one).
    pub fn params(&self) -> Bm25Params {
        self.params
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there is no document.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Adds or replaces a document.
    pub fn upsert(&mut self, id: &str, text: &str) -> Result<()> {
        if id.is_empty() {
            return Err(RetrievalError::InvalidId("empty id".into()));
        }
        self.delete(id);
        let tokens = tokenize(text);
        let mut tf: HashMap<String, u32> = HashMap::new();
        for t in &tokens {
            *tf.entry(t.clone()).or_default() += 1;
        }
        let mut terms: Vec<(String, u32)> = tf.into_iter().collect();
        terms.sort();
        self.insert_doc(Doc {
            id: id.to_string(),
            len: tokens.len() as u32,
            terms,
        });
        Ok(())
    }

    fn insert_doc(&mut self, doc: Doc) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.docs.push(None);
                (self.docs.len() - 1) as u32
            }
        };
        for (t, n) in &doc.terms {
            self.postings.entry(t.clone()).or_default().push((slot, *n));
        }
        self.total_len += doc.len as u64;
        self.by_id.insert(doc.id.clone(), slot);
        self.docs[slot as usize] = Some(doc);
    }

    /// Saves the index under `dir` with the same crash-safe, checksummed
    /// layout as the vector indexes ([`crate::persist`]).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let _span = tracing::info_span!("index.save", kind = "bm25").entered();
        let file = Bm25File {
            params: self.params,
            docs: self.docs.iter().flatten().cloned().collect(),
        };
        persist::save_atomic(dir, "bm25", |tmp| {
            persist::write_json(&tmp.join("bm25.json"), &file)
        })
    }

    /// Loads an index saved with [`Bm25Index::save`]. Each document is
    /// checked to be what [`Bm25Index::upsert`] would have made: a unique,
    /// non-empty id, non-empty terms in strictly increasing order, counts
    /// of at least 1 that add up to the document length. Anything else is
    /// [`RetrievalError::Corrupt`].
    pub fn load(dir: &Path) -> Result<Self> {
        let gen = persist::open_verified(dir)?;
        if gen.kind() != "bm25" {
            return Err(corrupt(
                dir,
                format!("holds a {:?}, not a BM25 index", gen.kind()),
            ));
        }
        let root = gen.root();
        let path = root.path("bm25.json");
        let file: Bm25File = root.read_json("bm25.json")?;
        let mut idx = Bm25Index::new(file.params).map_err(|e| corrupt(&path, e))?;
        if u32::try_from(file.docs.len()).is_err() {
            return Err(corrupt(&path, "too many documents"));
        }
        for doc in file.docs {
            if idx.by_id.contains_key(&doc.id) || doc.id.is_empty() {
                return Err(corrupt(&path, format!("bad or duplicate id {:?}", doc.id)));
            }
            let sorted = doc.terms.windows(2).all(|w| w[0].0 < w[1].0);
            let counted: u64 = doc.terms.iter().map(|(_, n)| *n as u64).sum();
            if !sorted
                || doc.terms.iter().any(|(t, n)| t.is_empty() || *n == 0)
                || counted != doc.len as u64
            {
                return Err(corrupt(
                    &path,
                    format!("document {:?}: terms do not match its length", doc.id),
                ));
            }
            idx.insert_doc(doc);
        }
        Ok(idx)
    }

    /// Removes a document; returns whether it existed.
    pub fn delete(&mut self, id: &str) -> bool {
        let Some(slot) = self.by_id.remove(id) else {
            return false;
        };
        if let Some(doc) = self.docs[slot as usize].take() {
            self.total_len -= doc.len as u64;
            for (t, _) in doc.terms {
                if let Some(p) = self.postings.get_mut(&t) {
                    p.retain(|(s, _)| *s != slot);
                    if p.is_empty() {
                        self.postings.remove(&t);
                    }
                }
            }
        }
        self.free.push(slot);
        true
    }

    /// The `k` best-scoring documents for `query` (documents sharing no
    /// term with it are not returned). Best first; ties go to the earlier
    /// slot. `k` is capped at the number of matching documents, so any `k`
    /// is safe; `k == 0` gives an empty list.
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        let _span = tracing::debug_span!("bm25.search", k).entered();
        if k == 0 || self.is_empty() {
            return Vec::new();
        }
        let n = self.len() as f32;
        let avgdl = (self.total_len as f32 / n).max(f32::MIN_POSITIVE);
        let Bm25Params { k1, b } = self.params;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        let unique: HashSet<String> = tokenize(query).into_iter().collect();
        for t in unique {
            let Some(post) = self.postings.get(&t) else {
                continue;
            };
            let df = post.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(slot, tf) in post {
                let dl = self.docs[slot as usize].as_ref().map_or(0, |d| d.len) as f32;
                let tf = tf as f32;
                let s = idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * dl / avgdl));
                *scores.entry(slot).or_default() += s;
            }
        }
        let mut top = TopK::new(k.min(scores.len()));
        for (slot, s) in scores {
            top.push(s, slot);
        }
        top.into_sorted()
            .into_iter()
            .filter_map(|c| {
                self.docs[c.slot as usize].as_ref().map(|d| Hit {
                    id: d.id.clone(),
                    score: c.score,
                })
            })
            .collect()
    }
}
