//! The index API common to [`crate::FlatIndex`] and [`crate::HnswIndex`].

use std::collections::HashSet;
use std::path::Path;

use crate::distance::Metric;
use crate::error::{Result, RetrievalError};
use crate::filter::MetadataFilters;
use crate::types::{Entry, Hit, Record, RecordRef};

/// A vector index over entries with string ids, text and metadata.
///
/// Contract shared by all implementations:
/// * `upsert` is all-or-nothing: every entry is checked (dimension, finite
///   components, non-zero for cosine, non-empty and unique ids) before any
///   is applied; an existing id is replaced.
/// * `search` returns at most `min(k, len())` hits: `k` is capped at the
///   number of live entries before anything is allocated for it, so any
///   `k` (`usize::MAX` included) is safe. `k == 0` or an empty index gives
///   an empty list, not an error. A query of the wrong dimension, with
///   NaN/inf, or zero under cosine is an error (checked before `k`).
///   Scores are higher-is-better (see [`Metric`]).
/// * Deleted ids are never returned by a search.
///
/// Code written against the trait runs on every index kind, so a caller can
/// start exact and move to HNSW without touching it:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{
///     Entry, FlatConfig, FlatIndex, HnswConfig, HnswIndex, MetadataFilters, Metric, VectorIndex,
/// };
///
/// fn fill(index: &mut dyn VectorIndex) -> ragjet_retrieval::Result<()> {
///     index.upsert(vec![
///         Entry::new("a", vec![1.0, 0.0, 0.0]).with_meta("year", 1983i64).with_ref_doc_id("doc-1"),
///         Entry::new("b", vec![0.8, 0.6, 0.0]).with_meta("year", 1975i64).with_ref_doc_id("doc-1"),
///         Entry::new("c", vec![0.0, 0.0, 1.0]).with_meta("year", 1990i64).with_ref_doc_id("doc-2"),
///     ])
/// }
///
/// let recent = MetadataFilters::from_json(
///     r#"{"filters": [{"key": "year", "operator": ">", "value": 1980}]}"#,
/// )?;
/// let mut flat = FlatIndex::new(FlatConfig::new(3, Metric::Cosine))?;
/// let mut hnsw = HnswIndex::new(HnswConfig::new(3, Metric::Cosine))?;
/// for index in [&mut flat as &mut dyn VectorIndex, &mut hnsw] {
///     fill(index)?;
///     let hits = index.search(&[0.9, 0.5, 0.0], 2, None)?;
///     assert_eq!(hits[0].id, "b");
///     let hits = index.search(&[0.9, 0.5, 0.0], 2, Some(&recent))?;
///     assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
///     assert!(index.search(&[1.0, 0.0], 1, None).is_err()); // wrong dimension
///     assert_eq!(index.delete_ref_doc("doc-1"), 2);
///     assert_eq!(index.len(), 1);
/// }
/// # Ok(()) }
/// ```
pub trait VectorIndex: Send + Sync {
    /// Vector dimension.
    fn dim(&self) -> usize;
    /// Similarity metric.
    fn metric(&self) -> Metric;
    /// Number of live entries.
    fn len(&self) -> usize;
    /// Whether the index holds no live entry.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Adds entries, replacing those whose id exists.
    fn upsert(&mut self, entries: Vec<Entry>) -> Result<()>;
    /// Deletes entries by id; returns how many existed.
    fn delete(&mut self, ids: &[&str]) -> usize;
    /// Deletes every entry whose `ref_doc_id` is given; returns how many.
    fn delete_ref_doc(&mut self, ref_doc_id: &str) -> usize;
    /// The `k` most similar live entries passing `filter`, best first.
    fn search(&self, query: &[f32], k: usize, filter: Option<&MetadataFilters>)
        -> Result<Vec<Hit>>;
    /// [`VectorIndex::search`] for many queries at once.
    fn search_batch(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        filter: Option<&MetadataFilters>,
    ) -> Result<Vec<Vec<Hit>>> {
        queries.iter().map(|q| self.search(q, k, filter)).collect()
    }
    /// Text, metadata and source document of a live entry.
    fn get(&self, id: &str) -> Option<RecordRef<'_>>;
    /// Ids of the live entries passing `filter` (all with `None`), for
    /// listing nodes and deleting by filter.
    fn ids_matching(&self, filter: Option<&MetadataFilters>) -> Result<Vec<String>>;
    /// Saves the index under `dir` (see [`crate::persist`] for the layout
    /// and crash guarantees).
    fn save(&self, dir: &Path) -> Result<()>;
    /// The namespace label used on metrics.
    fn namespace(&self) -> &str;
    /// Sets the namespace label used on metrics.
    fn set_namespace(&mut self, namespace: &str);
}

/// Validates a batch and turns it into records plus prepared vectors.
pub(crate) fn prepare_entries(
    entries: Vec<Entry>,
    dim: usize,
    metric: Metric,
) -> Result<Vec<(Record, Vec<f32>)>> {
    // Borrowed ids: a copy of each would be freed right after, leaving
    // the allocator holes between the records' small allocations.
    let mut seen = HashSet::with_capacity(entries.len());
    for e in &entries {
        if e.id.is_empty() {
            return Err(RetrievalError::InvalidId("empty id".into()));
        }
        if !seen.insert(e.id.as_str()) {
            return Err(RetrievalError::InvalidId(format!(
                "id {:?} appears twice in one batch",
                e.id
            )));
        }
    }
    drop(seen);
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let mut v = e.vector;
        metric.prepare(&mut v, dim)?;
        out.push((
            Record {
                id: e.id,
                text: e.text,
                metadata: e.metadata,
                ref_doc_id: e.ref_doc_id,
            },
            v,
        ));
    }
    Ok(out)
}

/// Copies and prepares a query vector.
pub(crate) fn prepare_query(query: &[f32], dim: usize, metric: Metric) -> Result<Vec<f32>> {
    let mut q = query.to_vec();
    metric.prepare(&mut q, dim)?;
    Ok(q)
}

pub(crate) fn check_filter(filter: Option<&MetadataFilters>) -> Result<()> {
    match filter {
        Some(f) => f.validate(),
        None => Ok(()),
    }
}

pub(crate) fn check_dim(dim: usize) -> Result<()> {
    if dim == 0 {
        return Err(RetrievalError::InvalidOption(
            "dimension must be at least 1".into(),
        ));
    }
    Ok(())
}
