//! The Prometheus side: a recorder configured from the catalogue, a handle
//! that renders it (plus process figures), and a small `/metrics` HTTP
//! endpoint.
//!
//! The endpoint is hyper's HTTP/1 server on a one-thread tokio runtime of its
//! own: every connection is a task, so a client that connects and sends
//! nothing, or trickles an endless header, holds one bounded task until its
//! deadline while scrapes go on. It is not metrics-exporter-prometheus's
//! `http-listener`, which binds internally (port 0 could not be reported
//! back), sets no read deadline, caps no connections, and renders only the
//! recorder (the process figures here are read at scrape time).

use crate::error::{Result, TelemetryError};
use crate::process::ProcessStats;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

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
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// How often histogram samples are folded into buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// A client must have sent its whole request head within this time.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed this long after it was accepted, whatever it is
/// doing (covers a client that reads the response slowly).
pub(crate) const CONNECTION_DEADLINE: Duration = Duration::from_secs(15);
/// Connections served at once; beyond this new ones are closed at once, so
/// idle clients cannot exhaust file descriptors or memory.
pub(crate) const MAX_CONNECTIONS: usize = 128;
/// Request head buffer per connection (hyper's minimum is 8 KiB); a longer
/// request line or header set is answered 431 and closed.
pub(crate) const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// Headers accepted in one request.
const MAX_HEADERS: usize = 64;
/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and serves `GET /metrics`
    /// from `handle` on a background thread.
    pub fn start(addr: SocketAddr, handle: MetricsHandle) -> Result<Self> {
        let bind_err = |source| TelemetryError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        let bound = listener.local_addr().map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(bind_err)?;
        let listener = {
            let _in_runtime = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(bind_err)?
        };
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("ragjet-metrics-http".into())
            .spawn(move || runtime.block_on(serve(listener, handle, stopped)))
            .map_err(bind_err)?;
        Ok(Self {
            addr: bound,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the thread is gone already.
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            // The runtime drops with the thread, closing the listener and
            // cancelling every connection task.
            let _ = t.join();
        }
    }
}

/// Accepts connections until `stopped`, each served by its own task under
/// the limits above; also runs the recorder's upkeep.
async fn serve(
    listener: tokio::net::TcpListener,
    handle: MetricsHandle,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = upkeep.tick() => handle.run_upkeep(),
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors or similar: back off instead of
                        // spinning on an error that repeats at once.
                        tracing::warn!(error = %e, "metrics endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!("metrics endpoint: {MAX_CONNECTIONS} connections open; refusing one");
                    continue;
                };
                let handle = handle.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let service = hyper::service::service_fn(move |req| {
                        std::future::ready(respond(&handle, &req))
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
                        .max_headers(MAX_HEADERS)
                        .keep_alive(false)
                        .title_case_headers(true)
                        .serve_connection(TokioIo::new(stream), service);
                    // Errors and timeouts only concern this one client.
                    let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
                });
            }
        }
    }
}

fn respond(
    handle: &MetricsHandle,
    req: &Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
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
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET"));
    }
    Ok(response)
}
