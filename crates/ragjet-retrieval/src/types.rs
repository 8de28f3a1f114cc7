//! Entries, metadata values and search hits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One metadata value, in the shapes LlamaIndex node metadata takes.
///
/// Serialised untagged, so it reads and writes plain JSON
/// (`"a"`, `3`, `2.5`, `true`, `["x", "y"]`, `null`). Integers and floats
/// are both held as `f64`: `1` and `1.0` compare equal, as in Python.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::MetadataValue;
///
/// let v: MetadataValue = serde_json::from_str(r#"["a", 1, true, null]"#)?;
/// assert_eq!(
///     v,
///     MetadataValue::List(vec!["a".into(), 1i64.into(), true.into(), MetadataValue::Null])
/// );
/// // Integers and floats are one kind of number, as in Python.
/// assert_eq!(MetadataValue::from(1i64), MetadataValue::from(1.0));
/// assert_eq!(serde_json::to_string(&MetadataValue::from("x"))?, r#""x""#);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(untagged)]
pub enum MetadataValue {
    /// JSON `null` / Python `None`.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// Any number (integers up to 2^53 are exact).
    Number(f64),
    /// A string.
    String(String),
    /// A list of values (LlamaIndex uses lists of strings or numbers).
    List(Vec<MetadataValue>),
}

impl From<&str> for MetadataValue {
    fn from(s: &str) -> Self {
        MetadataValue::String(s.to_string())
    }
}
impl From<String> for MetadataValue {
    fn from(s: String) -> Self {
        MetadataValue::String(s)
    }
}
impl From<f64> for MetadataValue {
    fn from(x: f64) -> Self {
        MetadataValue::Number(x)
    }
}
impl From<i64> for MetadataValue {
    fn from(x: i64) -> Self {
        MetadataValue::Number(x as f64)
    }
}
impl From<bool> for MetadataValue {
    fn from(b: bool) -> Self {
        MetadataValue::Bool(b)
    }
}
impl<T: Into<MetadataValue>> From<Vec<T>> for MetadataValue {
    fn from(v: Vec<T>) -> Self {
        MetadataValue::List(v.into_iter().map(Into::into).collect())
    }
}

/// Per-entry metadata: ordered so that saved files are deterministic.
pub type Metadata = BTreeMap<String, MetadataValue>;

/// An entry to add to an index: external id, vector, text and metadata.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{Entry, FlatConfig, FlatIndex, Metric, MetadataValue, VectorIndex};
///
/// let entry = Entry::new("chunk-7", vec![0.1, 0.2])
///     .with_text("Paris is the capital of France.")
///     .with_meta("year", 2024)
///     .with_meta("tags", vec!["geo", "europe"])
///     .with_ref_doc_id("atlas.pdf");
/// let mut index = FlatIndex::new(FlatConfig::new(2, Metric::Dot))?;
/// index.upsert(vec![entry])?;
/// let record = index.get("chunk-7").unwrap();
/// assert_eq!(record.metadata["year"], MetadataValue::Number(2024.0));
/// assert_eq!(record.ref_doc_id.as_deref(), Some("atlas.pdf"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// External id (a LlamaIndex node id). Adding an existing id replaces it.
    pub id: String,
    /// The embedding.
    pub vector: Vec<f32>,
    /// The node text (may be empty).
    pub text: String,
    /// Metadata used by filters.
    pub metadata: Metadata,
    /// Id of the source document, for `delete_ref_doc`.
    pub ref_doc_id: Option<String>,
}

impl Entry {
    /// An entry with no text, metadata or source document.
    pub fn new(id: impl Into<String>, vector: Vec<f32>) -> Self {
        Entry {
            id: id.into(),
            vector,
            text: String::new(),
            metadata: Metadata::new(),
            ref_doc_id: None,
        }
    }

    /// Sets the text.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = text.into();
        self
    }

    /// Adds one metadata key.
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<MetadataValue>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the source-document id.
    pub fn with_ref_doc_id(mut self, ref_doc_id: impl Into<String>) -> Self {
        self.ref_doc_id = Some(ref_doc_id.into());
        self
    }
}

/// What an index keeps about an entry besides its vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// External id.
    pub id: String,
    /// Node text.
    pub text: String,
    /// Metadata.
    pub metadata: Metadata,
    /// Source document id.
    pub ref_doc_id: Option<String>,
}

/// Per-entry metadata as an index stores it: the pairs sorted by key in one
/// allocation. A [`Metadata`] `BTreeMap` allocates a node of eleven pairs
/// (about 640 bytes) even for one key, which at millions of entries is
/// most of an index's memory beside the vectors.
pub(crate) type StoredMetadata = Box<[(Box<str>, MetadataValue)]>;

/// Where a [`crate::MetadataFilters`] reads an entry's values: a
/// [`Metadata`] map or an index's [`MetadataRef`].
pub trait MetadataLookup {
    /// The value under `key`, if any.
    fn lookup(&self, key: &str) -> Option<&MetadataValue>;
}

impl MetadataLookup for Metadata {
    fn lookup(&self, key: &str) -> Option<&MetadataValue> {
        self.get(key)
    }
}

/// A live entry's metadata, borrowed from its index (see
/// [`MetadataLookup`] and [`RecordRef`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetadataRef<'a>(pub(crate) &'a [(Box<str>, MetadataValue)]);

impl<'a> MetadataRef<'a> {
    /// No metadata.
    pub const EMPTY: MetadataRef<'static> = MetadataRef(&[]);

    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&'a MetadataValue> {
        let i = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        Some(&self.0[i].1)
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a MetadataValue)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An owned copy.
    pub fn to_metadata(&self) -> Metadata {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

/// `metadata["key"]`, as on a [`Metadata`] map.
///
/// # Panics
///
/// If the key is not present (as `BTreeMap`'s indexing).
impl std::ops::Index<&str> for MetadataRef<'_> {
    type Output = MetadataValue;

    fn index(&self, key: &str) -> &MetadataValue {
        self.get(key).expect("no entry found for key")
    }
}

impl MetadataLookup for MetadataRef<'_> {
    fn lookup(&self, key: &str) -> Option<&MetadataValue> {
        self.get(key)
    }
}

/// The same JSON as the [`Metadata`] map it came from.
impl Serialize for MetadataRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// The stored form of a map (already sorted by key: a `BTreeMap`'s order).
pub(crate) fn store_metadata(m: Metadata) -> StoredMetadata {
    m.into_iter()
        .map(|(k, v)| (k.into_boxed_str(), v))
        .collect()
}

/// A live entry's [`Record`], borrowed from its index: indexes keep ids,
/// text and metadata in compact internal forms (an id arena, one box for
/// text, metadata and source document only when an entry has any, metadata
/// as a sorted slice), so [`crate::VectorIndex::get`] lends views instead
/// of stored `Record`s.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{Entry, FlatConfig, FlatIndex, Metric, VectorIndex};
///
/// let mut index = FlatIndex::new(FlatConfig::new(2, Metric::Cosine))?;
/// index.upsert(vec![Entry::new("a", vec![1.0, 0.0]).with_text("hello")])?;
/// let rec = index.get("a").unwrap();
/// assert_eq!((rec.id, rec.text, rec.ref_doc_id), ("a", "hello", None));
/// assert!(rec.metadata.is_empty() && rec.metadata.get("lang").is_none());
/// let owned = rec.to_record();
/// assert_eq!(owned.text, "hello");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RecordRef<'a> {
    /// External id.
    pub id: &'a str,
    /// Node text (empty when the entry has none).
    pub text: &'a str,
    /// Metadata (empty when the entry has none).
    pub metadata: MetadataRef<'a>,
    /// Source document id.
    pub ref_doc_id: Option<&'a str>,
}

impl RecordRef<'_> {
    /// An owned copy.
    pub fn to_record(&self) -> Record {
        Record {
            id: self.id.to_string(),
            text: self.text.to_string(),
            metadata: self.metadata.to_metadata(),
            ref_doc_id: self.ref_doc_id.map(str::to_string),
        }
    }
}

/// One search result. `score` is higher-is-better (see [`crate::Metric`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// External id of the entry.
    pub id: String,
    /// Similarity score.
    pub score: f32,
}
