/// Everything that can go wrong while setting up telemetry or computing a
/// report.
///
/// Bad configuration or input (a bad log filter, a port already taken, a
/// price for an unknown model) is reported here; nothing in this crate
/// panics on it.
///
/// # Examples
///
/// ```
/// use ragjet_telemetry::{LatencyRecorder, TelemetryError};
/// use std::time::Duration;
///
/// let err = LatencyRecorder::new(Duration::ZERO).unwrap_err();
/// assert!(matches!(err, TelemetryError::InvalidConfig(_)));
/// assert!(err.to_string().contains("too short"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A configuration value is out of its valid range.
    #[error("invalid telemetry configuration: {0}")]
    InvalidConfig(String),
    /// The log filter directive could not be parsed.
    #[error("invalid log filter {filter:?}: {reason}")]
    InvalidFilter {
        /// The directive that was given.
        filter: String,
        /// Why the parser rejected it.
        reason: String,
    },
    /// Another global `tracing` subscriber or `metrics` recorder is already
    /// installed (by code outside this crate), so ours cannot be.
    #[error("a global {0} is already installed by someone else")]
    AlreadyInstalled(&'static str),
    /// The metrics endpoint could not bind or serve.
    #[error("metrics endpoint on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: std::net::SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The Prometheus exporter rejected its configuration (bad buckets).
    #[error("prometheus exporter: {0}")]
    Prometheus(String),
    /// A cost was recorded for a model that has no price.
    #[error("no price configured for model {0:?}")]
    UnknownModel(String),
    /// The OpenTelemetry exporter could not be built or flushed.
    #[error("OpenTelemetry exporter: {0}")]
    Otlp(String),
    /// A report could not be serialised.
    #[error("could not serialise report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result alias for this crate.
pub type Result<T, E = TelemetryError> = std::result::Result<T, E>;
