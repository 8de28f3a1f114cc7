//! The Prometheus side: a recorder configured from the catalogue, a handle
//! that renders it (plus process figures), and a small `/metrics` HTTP
//! endpoint on a plain `std` listener.
//!
//! The endpoint is ours rather than the exporter's `http-listener` so that
//! port 0 can be asked for and the bound address reported back, and so the
//! default build needs neither tokio nor hyper.

use crate::error::{Result, TelemetryError};
use crate::process::ProcessStats;
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Renders everything `/metrics` serves.
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
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// How often histogram samples are folded into buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and serves `GET /metrics`
    /// from `handle` on a background thread.
    pub fn start(addr: SocketAddr, handle: MetricsHandle) -> Result<Self> {
        let bind_err = |source| TelemetryError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind_err)?;
        let bound = listener.local_addr().map_err(bind_err)?;
        let stop = Arc::new(AtomicBool::new(false));

        let serve = {
            let stop = stop.clone();
            let handle = handle.clone();
            std::thread::Builder::new()
                .name("ragjet-metrics-http".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        // One bad client must not take the endpoint down.
                        if let Ok(stream) = conn {
                            let _ = serve_one(stream, &handle);
                        }
                    }
                })
                .map_err(bind_err)?
        };
        let upkeep = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("ragjet-metrics-upkeep".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        std::thread::park_timeout(UPKEEP_EVERY);
                        handle.run_upkeep();
                    }
                })
                .map_err(bind_err)?
        };
        Ok(Self {
            addr: bound,
            stop,
            threads: vec![serve, upkeep],
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for t in self.threads.drain(..) {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn serve_one(stream: TcpStream, handle: &MetricsHandle) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers; the body of a GET is empty.
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found; try /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
