//! OTLP export (feature `otlp`): spans through the real layer into a
//! collecting exporter, and the real OTLP/HTTP exporter into an in-process
//! receiver.
#![cfg(feature = "otlp")]

mod common;

use opentelemetry::trace::{SpanId, Status};
use opentelemetry::Value;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use ragjet_telemetry::otlp::{self, OtlpConfig};
use ragjet_telemetry::spans::{self, attr, names};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collect {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

fn attr_of<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn run_pipeline() {
    let q = spans::query("docs", 5);
    let _g = q.enter();
    let e = spans::embedding("all-MiniLM-L6-v2", 2);
    spans::record_input_tokens(&e, 17);
    spans::record_error(&e, "EmptyInput", &"no texts to embed");
    drop(e);
    let r = spans::retrieval("docs", 5);
    spans::record_returned(&r, 5);
}

#[test]
fn spans_carry_names_attributes_parents_and_errors() {
    let collect = Collect::default();
    let provider =
        otlp::provider_with_exporter(collect.clone(), "ragjet-test", 1.0, false).unwrap();
    let sub = tracing_subscriber::registry().with(otlp::layer(&provider));
    tracing::subscriber::with_default(sub, run_pipeline);
    provider.force_flush().unwrap();

    let spans = collect.0.lock().unwrap().clone();
    let by = |n: &str| {
        spans
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("{n}: {spans:?}"))
    };
    let (q, e, r) = (by(names::QUERY), by(names::EMBEDDING), by(names::RETRIEVAL));
    assert_eq!(q.parent_span_id, SpanId::INVALID);
    assert_eq!(e.parent_span_id, q.span_context.span_id());
    assert_eq!(r.parent_span_id, q.span_context.span_id());
    assert_eq!(e.span_context.trace_id(), q.span_context.trace_id());

    assert_eq!(
        attr_of(e, attr::GEN_AI_OPERATION_NAME),
        Some(&Value::from("embeddings"))
    );
    assert_eq!(
        attr_of(e, attr::GEN_AI_REQUEST_MODEL),
        Some(&Value::from("all-MiniLM-L6-v2"))
    );
    assert_eq!(
        attr_of(e, attr::GEN_AI_USAGE_INPUT_TOKENS),
        Some(&Value::I64(17))
    );
    assert_eq!(
        attr_of(e, attr::ERROR_TYPE),
        Some(&Value::from("EmptyInput"))
    );
    assert!(
        matches!(&e.status, Status::Error { description } if description == "no texts to embed"),
        "{:?}",
        e.status
    );
    assert_eq!(
        attr_of(r, attr::DB_COLLECTION_NAME),
        Some(&Value::from("docs"))
    );
    assert_eq!(
        attr_of(r, attr::DB_RESPONSE_RETURNED_ROWS),
        Some(&Value::I64(5))
    );
    assert!(!matches!(q.status, Status::Error { .. }));
}

#[test]
fn sampling_ratio_zero_exports_nothing_and_bad_ratio_is_rejected() {
    let collect = Collect::default();
    let provider = otlp::provider_with_exporter(collect.clone(), "t", 0.0, false).unwrap();
    let sub = tracing_subscriber::registry().with(otlp::layer(&provider));
    tracing::subscriber::with_default(sub, run_pipeline);
    provider.force_flush().unwrap();
    assert!(collect.0.lock().unwrap().is_empty());
    assert!(otlp::provider_with_exporter(Collect::default(), "t", 1.5, false).is_err());
}

#[test]
fn real_exporter_posts_protobuf_to_an_otlp_http_receiver() {
    let (addr, rx) = common::otlp_receiver();

    let config = OtlpConfig {
        endpoint: format!("http://{addr}/v1/traces"),
        sampling_ratio: 1.0,
        timeout: Duration::from_secs(5),
    };
    let provider = otlp::build_provider(&config, "ragjet-otlp-test").unwrap();
    let sub = tracing_subscriber::registry().with(otlp::layer(&provider));
    tracing::subscriber::with_default(sub, run_pipeline);
    provider.force_flush().unwrap();

    let (head, body) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("an export arrived");
    assert!(head[0].starts_with("POST /v1/traces "), "{head:?}");
    assert!(head
        .iter()
        .any(|h| h.to_ascii_lowercase().contains("application/x-protobuf")));
    // Protobuf carries strings as raw UTF-8: names, keys and the service
    // name are visible in the payload without decoding it.
    let body = String::from_utf8_lossy(&body);
    for needle in [
        names::QUERY,
        names::EMBEDDING,
        attr::GEN_AI_REQUEST_MODEL,
        "EmptyInput",
        "ragjet-otlp-test",
    ] {
        assert!(
            body.contains(needle),
            "{needle} missing from the OTLP payload"
        );
    }
    provider.shutdown().unwrap();
}
