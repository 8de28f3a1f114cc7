//! Observability for ragjet: tracing spans, Prometheus metrics, latency
//! percentiles, SLO and cost reports.
//!
//! This crate is being built; it has no public API yet.
#![warn(missing_docs)]
