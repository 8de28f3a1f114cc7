//! Names of the metrics this crate records (through the `metrics` facade;
//! no recorder is installed here: the application chooses one, e.g.
//! ragjet-telemetry's Prometheus exporter).
//!
//! Every name is declared in ragjet-telemetry's catalogue
//! (`crates/ragjet-telemetry/src/metrics.rs`, the GPU gauges under its
//! `cuda` feature) and listed in `docs/metrics.md`; the names are repeated
//! here because this crate does not depend on telemetry. Keep both in step.

/// `ragjet_embedding_batch_token_limit{device}` (gauge): the token budget of one
/// forward pass that the adaptive batching currently uses (see
/// [`crate::Embedder::batch_token_limit`]). `device` is the embedder's
/// [`device_name`](crate::Embedder::device_name): `cpu`, `cuda:0`, ….
pub const EMBEDDING_BATCH_TOKEN_LIMIT: &str = "ragjet_embedding_batch_token_limit";

/// `ragjet_gpu_memory_used_bytes{device}` (gauge), set after every batch on
/// CUDA. `device` is the GPU ordinal (`0`, `1`, …), as in telemetry's
/// `set_gpu_memory`.
pub const GPU_MEMORY_USED_BYTES: &str = "ragjet_gpu_memory_used_bytes";

/// `ragjet_gpu_memory_total_bytes{device}` (gauge), set with the used gauge.
pub const GPU_MEMORY_TOTAL_BYTES: &str = "ragjet_gpu_memory_total_bytes";

/// Label keys.
pub mod labels {
    /// The device label (see each metric for its values).
    pub const DEVICE: &str = "device";
}
