//! Span helpers declare the conventional names and attributes, nest, and
//! record errors; checked with a capturing layer under a local subscriber.

use ragjet_telemetry::spans::{self, attr, names};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

#[derive(Debug, Default, Clone)]
struct Captured {
    name: String,
    parent: Option<String>,
    fields: HashMap<String, String>,
    events: Vec<HashMap<String, String>>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>, Arc<Mutex<HashMap<u64, usize>>>);

struct V<'a>(&'a mut HashMap<String, String>);
impl Visit for V<'_> {
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().into(), format!("{v:?}"));
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), v.into());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut c = Captured {
            name: attrs.metadata().name().into(),
            parent: ctx
                .span(id)
                .and_then(|s| s.parent())
                .map(|p| p.name().to_string()),
            ..Default::default()
        };
        attrs.record(&mut V(&mut c.fields));
        let mut all = self.0.lock().unwrap();
        self.1.lock().unwrap().insert(id.into_u64(), all.len());
        all.push(c);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let i = self.1.lock().unwrap()[&id.into_u64()];
        values.record(&mut V(&mut self.0.lock().unwrap()[i].fields));
    }
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.event_span(event) {
            let i = self.1.lock().unwrap()[&span.id().into_u64()];
            let mut f = HashMap::new();
            event.record(&mut V(&mut f));
            self.0.lock().unwrap()[i].events.push(f);
        }
    }
}

fn capture(f: impl FnOnce()) -> Vec<Captured> {
    let cap = Capture::default();
    let sub = tracing_subscriber::registry().with(
        cap.clone()
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    tracing::subscriber::with_default(sub, f);
    let out = cap.0.lock().unwrap().clone();
    out
}

#[test]
fn pipeline_spans_nest_with_conventional_attributes() {
    let spans = capture(|| {
        let q = spans::query("docs", 5);
        let _g = q.enter();
        let e = spans::embedding("all-MiniLM-L6-v2", 1);
        spans::record_input_tokens(&e, 7);
        drop(e);
        let c = spans::cache("embedding", "l1");
        spans::record_cache_result(&c, "miss");
        drop(c);
        let r = spans::retrieval("docs", 5);
        spans::record_returned(&r, 3);
        drop(r);
        let _ = spans::rerank("bge-reranker", 3);
        let _ = spans::index_update("docs", "add", 10);
    });
    let by_name = |n: &str| {
        spans
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    let q = by_name(names::QUERY);
    assert_eq!(q.parent, None);
    assert_eq!(q.fields[attr::DB_COLLECTION_NAME], "docs");
    let e = by_name(names::EMBEDDING);
    assert_eq!(e.parent.as_deref(), Some(names::QUERY));
    assert_eq!(e.fields[attr::GEN_AI_OPERATION_NAME], "embeddings");
    assert_eq!(e.fields[attr::GEN_AI_REQUEST_MODEL], "all-MiniLM-L6-v2");
    assert_eq!(e.fields[attr::GEN_AI_USAGE_INPUT_TOKENS], "7");
    assert_eq!(by_name(names::CACHE).fields[attr::CACHE_RESULT], "miss");
    let r = by_name(names::RETRIEVAL);
    assert_eq!(r.fields[attr::DB_OPERATION_NAME], "search");
    assert_eq!(r.fields[attr::DB_RESPONSE_RETURNED_ROWS], "3");
    assert_eq!(r.parent.as_deref(), Some(names::QUERY));
    assert_eq!(by_name(names::RERANK).fields[attr::CANDIDATES], "3");
    assert_eq!(
        by_name(names::INDEX_UPDATE).fields[attr::DB_OPERATION_NAME],
        "add"
    );
}

#[test]
fn errors_are_recorded_with_their_kind() {
    let spans = capture(|| {
        let s = spans::embedding("m", 0);
        spans::record_error(&s, "EmptyInput", &"no texts to embed");
    });
    let s = &spans[0];
    assert_eq!(s.fields[attr::ERROR_TYPE], "EmptyInput");
    assert_eq!(s.fields[attr::OTEL_STATUS_DESCRIPTION], "no texts to embed");
    assert_eq!(s.events.len(), 1);
    assert_eq!(s.events[0]["error.type"], "EmptyInput");
}
