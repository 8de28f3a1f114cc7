//! The Prometheus side: a recorder configured from the catalogue, a handle
//! that renders it (plus process figures), and a small `/metrics` HTTP
//! endpoint.
//!
//! The endpoint is [`crate::http::HttpEndpoint`] (hyper on a one-thread
//! tokio runtime, a bounded task per connection). It is not
//! metrics-exporter-prometheus's
//! `http-listener`, which binds internally (port 0 could not be reported
//! back), sets no read deadline, caps no connections, and renders only the
//! recorder (the process figures here are read at scrape time).

use crate::error::{Result, TelemetryError};
use crate::http::{EndpointLimits, HttpEndpoint, Reply, Upkeep};
use crate::process::ProcessStats;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::net::SocketAddr;
use std::time::Duration;

/// Renders everything `/metrics` serves.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (recorder, handle) = ragjet_telemetry::build_recorder()?;
/// metrics::with_local_recorder(&recorder, || {
///     ragjet_telemetry::metrics::record_index_operation("docs", "add");
/// });
/// handle.run_upkeep();
/// let text = handle.render();
/// assert!(text.contains("ragjet_index_operations_total{namespace=\"docs\",kind=\"add\"} 1"));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MetricsHandle {
    inner: PrometheusHandle,
}

impl MetricsHandle {
    /// The Prometheus text exposition: facade-recorded metrics followed by
    /// the process figures read now.
    pub fn render(&self) -> String {
        let mut text = self.inner.render();
        text.push_str(&ProcessStats::read().render());
        text
    }

    /// Folds pending histogram samples into their buckets. The endpoint's
    /// background thread does this every few seconds; call it yourself
    /// only for a recorder without an endpoint that is rarely rendered.
    pub fn run_upkeep(&self) {
        self.inner.run_upkeep();
    }
}

/// Builds a recorder configured from the catalogue (help text, units and
/// per-metric buckets) without installing anything global.
///
/// Use it with [`metrics::with_local_recorder`] in tests, which can then run
/// in parallel, each with its own figures:
///
/// ```
/// let (recorder, handle) = ragjet_telemetry::build_recorder().unwrap();
/// metrics::with_local_recorder(&recorder, || {
///     ragjet_telemetry::metrics::record_feedback(1.0);
/// });
/// assert!(handle.render().contains("ragjet_feedback_score_count 1"));
/// ```
pub fn build_recorder() -> Result<(PrometheusRecorder, MetricsHandle)> {
    let mut builder = PrometheusBuilder::new();
    for m in crate::metrics::catalogue().filter(|m| !m.buckets.is_empty()) {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(m.name.to_string()), m.buckets)
            .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
    }
    let recorder = builder.build_recorder();
    ::metrics::with_local_recorder(&recorder, crate::metrics::describe_all);
    let handle = MetricsHandle {
        inner: recorder.handle(),
    };
    Ok((recorder, handle))
}

/// A running `/metrics` endpoint; stops when dropped.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_telemetry::{build_recorder, MetricsServer};
/// use std::io::{Read, Write};
///
/// let (recorder, handle) = build_recorder()?;
/// metrics::with_local_recorder(&recorder, || ragjet_telemetry::metrics::record_feedback(0.5));
/// // Port 0 picks a free port; `local_addr` says which.
/// let server = MetricsServer::start("127.0.0.1:0".parse()?, handle)?;
/// let mut conn = std::net::TcpStream::connect(server.local_addr())?;
/// conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
/// let mut response = String::new();
/// conn.read_to_string(&mut response)?;
/// assert!(response.starts_with("HTTP/1.1 200"));
/// assert!(response.contains("ragjet_feedback_score_count 1"));
/// drop(server); // stops the endpoint
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MetricsServer {
    endpoint: HttpEndpoint,
}

/// How often histogram samples are folded into buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and serves `GET /metrics`
    /// from `handle` on a background thread (limits:
    /// [`EndpointLimits::default`]).
    pub fn start(addr: SocketAddr, handle: MetricsHandle) -> Result<Self> {
        let upkeep = {
            let handle = handle.clone();
            Upkeep {
                every: UPKEEP_EVERY,
                run: Box::new(move || handle.run_upkeep()),
            }
        };
        let endpoint = HttpEndpoint::start_with_upkeep(
            addr,
            "ragjet-metrics-http",
            EndpointLimits::default(),
            move |req| std::future::ready(respond(&handle, &req)),
            Some(upkeep),
        )
        .map_err(|source| TelemetryError::Bind { addr, source })?;
        Ok(Self { endpoint })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }
}

fn respond(handle: &MetricsHandle, req: &Request<Incoming>) -> Reply {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, TEXT_FORMAT, handle.render()),
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics\n".into(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        ),
    };
    let mut response = Reply::new(Bytes::from(body).into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET"));
    }
    response
}
