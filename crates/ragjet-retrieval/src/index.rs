//! The index API common to [`crate::FlatIndex`] and [`crate::HnswIndex`].

use std::collections::HashSet;
use std::path::Path;

use crate::distance::Metric;
use crate::error::{Result, RetrievalError};
use crate::filter::MetadataFilters;
use crate::types::{Entry, Hit, Record};

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
    fn get(&self, id: &str) -> Option<&Record>;
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
    let mut seen = HashSet::with_capacity(entries.len());
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        if e.id.is_empty() {
            return Err(RetrievalError::InvalidId("empty id".into()));
        }
        if !seen.insert(e.id.clone()) {
            return Err(RetrievalError::InvalidId(format!(
                "id {:?} appears twice in one batch",
                e.id
            )));
        }
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
