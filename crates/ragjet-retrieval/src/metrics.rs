//! Metric names emitted by this crate, in one place.
//!
//! Everything goes through the `metrics` facade; nothing here installs a
//! recorder (the telemetry crate does that), so with no recorder the calls
//! are no-ops.
//!
//! # Examples
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ragjet_retrieval::metrics::DEFAULT_NAMESPACE;
//! use ragjet_retrieval::{FlatConfig, FlatIndex, Metric, VectorIndex};
//!
//! // A stand-alone index reports its figures under the default namespace label...
//! let mut index = FlatIndex::new(FlatConfig::new(4, Metric::Dot))?;
//! assert_eq!(index.namespace(), DEFAULT_NAMESPACE);
//! // ...which its owner can rename so dashboards tell collections apart.
//! index.set_namespace("products");
//! assert_eq!(index.namespace(), "products");
//! # Ok(()) }
//! ```

/// Gauge: number of live entries in an index, label `namespace`.
pub const INDEX_SIZE: &str = "ragjet_index_size";
/// Counter: index operations, labels `namespace` and `kind`
/// (`add` | `delete` | `search` | `save` | `load`).
pub const INDEX_OPERATIONS_TOTAL: &str = "ragjet_index_operations_total";

/// Namespace label used by indexes that are not inside a [`crate::VectorStore`].
pub const DEFAULT_NAMESPACE: &str = "default";

pub(crate) fn record_op(namespace: &str, kind: &'static str, n: u64) {
    metrics::counter!(INDEX_OPERATIONS_TOTAL, "namespace" => namespace.to_string(), "kind" => kind)
        .increment(n);
}

pub(crate) fn record_size(namespace: &str, size: usize) {
    metrics::gauge!(INDEX_SIZE, "namespace" => namespace.to_string()).set(size as f64);
}
