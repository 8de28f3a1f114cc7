//! The hot-path cost of instrumentation: one span plus three metric updates,
//! as a query handler does them, with no exporter consuming spans.
//!
//! ```text
//! cargo bench -p ragjet-telemetry --bench hot_path
//! ```

use criterion::{criterion_group, criterion_main, Criterion};
use ragjet_telemetry::metrics::{self as m, QueryStatus};
use ragjet_telemetry::spans;
use std::hint::black_box;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

fn one_operation() {
    let span = spans::retrieval(black_box("docs"), 5);
    let _g = span.enter();
    m::record_query(QueryStatus::Ok, black_box(Duration::from_micros(850)));
    m::record_cache_request("embedding", "l1", "hit");
}

fn bench(c: &mut Criterion) {
    let (recorder, _handle) = ragjet_telemetry::build_recorder().expect("recorder");
    let mut group = c.benchmark_group("span_plus_three_metrics");

    // Prometheus recorder installed, no tracing subscriber at all.
    group.bench_function("no_subscriber", |b| {
        metrics::with_local_recorder(&recorder, || b.iter(one_operation))
    });

    // A subscriber that keeps span data (the registry) with a log layer
    // filtered to `warn`: the span is filtered out, as in production with
    // no OTLP exporter.
    let filtered = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
    );
    tracing::subscriber::with_default(filtered, || {
        group.bench_function("subscriber_filtered", |b| {
            metrics::with_local_recorder(&recorder, || b.iter(one_operation))
        });
    });

    // A registry that records every span (what the OTLP layer sits on),
    // with no layer consuming it.
    let recording = tracing_subscriber::registry();
    tracing::subscriber::with_default(recording, || {
        group.bench_function("registry_recording", |b| {
            metrics::with_local_recorder(&recorder, || b.iter(one_operation))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
