//! OpenTelemetry span export over OTLP/HTTP (protobuf), feature `otlp`.
//!
//! Spans opened through `tracing` (see [`crate::spans`]) become OTel spans
//! through `tracing-opentelemetry`; a parent-based ratio sampler keeps the
//! share of traces asked for (10 % by default), so a sampled query carries
//! all of its children and an unsampled one costs no export.

use crate::error::{Result, TelemetryError};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanExporter};
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tracing_subscriber::registry::LookupSpan;

/// Where and how much to export.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// Full OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: String,
    /// Share of new traces kept, 0..=1 (children follow their parent).
    pub sampling_ratio: f64,
    /// Per-export HTTP timeout.
    pub timeout: Duration,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4318/v1/traces".into(),
            sampling_ratio: 0.1,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Builds a tracer provider exporting to `config.endpoint` in batches, on
/// a background thread of the SDK's own (no async runtime needed).
pub fn build_provider(config: &OtlpConfig, service_name: &str) -> Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.endpoint.clone())
        .with_timeout(config.timeout)
        .build()
        .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
    provider_with_exporter(exporter, service_name, config.sampling_ratio, true)
}

/// Builds a provider around any exporter (an in-memory one in tests).
/// `batch` picks the batching processor; `false` exports each span as it
/// ends, which tests want.
pub fn provider_with_exporter(
    exporter: impl SpanExporter + 'static,
    service_name: &str,
    sampling_ratio: f64,
    batch: bool,
) -> Result<SdkTracerProvider> {
    if !(0.0..=1.0).contains(&sampling_ratio) {
        return Err(TelemetryError::InvalidConfig(format!(
            "sampling ratio {sampling_ratio} is outside 0..=1"
        )));
    }
    let builder = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            sampling_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_string())
                .build(),
        );
    let builder = if batch {
        builder.with_batch_exporter(exporter)
    } else {
        builder.with_simple_exporter(exporter)
    };
    Ok(builder.build())
}

/// The `tracing` layer feeding `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("ragjet"))
        .with_error_records_to_exceptions(true)
}
