//! A small HTTP/JSON endpoint with the autoscaling advice, meant to run
//! beside `/metrics` (the telemetry crate's server) so an autoscaler or an
//! operator can read it:
//!
//! - `GET /scale`: the advice for the signals the application's source
//!   reports now (503 when it has none yet);
//! - `POST /scale` with a JSON body `{"signals": {...}, "policy": {...}}`
//!   (policy optional, defaults filled in): the advice for those signals,
//!   for dry runs and for autoscalers that send their own figures;
//! - `GET /healthz`: `ok`.
//!
//! Built like the `/metrics` server: hyper's HTTP/1 server on a one-thread
//! tokio runtime, one task per connection, a 5 s deadline for the request
//! head, 16 KiB for it, 64 KiB for a body, 15 s per connection, at most 64
//! connections; 127.0.0.1 by default. A malformed request gets a 4xx with a
//! JSON error and concerns only its own connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::sync::{oneshot, Semaphore};

use super::autoscale::{advise, ScalePolicy, ScaleSignals};
use super::{ControlError, Result};

/// The default address: loopback only, next to `/metrics` on 9464.
pub const DEFAULT_ADVICE_ADDR: &str = "127.0.0.1:9465";

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_DEADLINE: Duration = Duration::from_secs(15);
const MAX_CONNECTIONS: usize = 64;
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Where `GET /scale` reads the current signals; `None`: not known yet.
pub type SignalSource = dyn Fn() -> Option<ScaleSignals> + Send + Sync;

/// A running advice endpoint; stops when dropped. An
/// [`Engine`](crate::Engine) serves one for its own signals with
/// `[control.autoscale]`.
///
/// ```
/// use std::io::{Read, Write};
/// use ragjet::control::{AdviceServer, ControlError, ScalePolicy, ScaleSignals};
///
/// # fn main() -> Result<(), ControlError> {
/// let server = AdviceServer::start("127.0.0.1:0".parse().unwrap(), ScalePolicy::default(), || {
///     Some(ScaleSignals {
///         replicas: 4,
///         queue_depth: 0,
///         p95_ms: 80.0,
///         utilisation: 0.1,
///         error_rate: 0.0,
///         seconds_since_last_scale: None,
///     })
/// })?;
/// let mut http = std::net::TcpStream::connect(server.local_addr()).unwrap();
/// http.write_all(b"GET /scale HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
/// let mut reply = String::new();
/// http.read_to_string(&mut reply).unwrap();
/// assert!(reply.starts_with("HTTP/1.1 200") && reply.contains(r#""action":"down""#));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AdviceServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    signals: ScaleSignals,
    #[serde(default)]
    policy: Option<ScalePolicy>,
}

struct State {
    source: Box<SignalSource>,
    policy: ScalePolicy,
}

impl AdviceServer {
    /// Binds `addr` (port 0 picks a free one) and serves the advice for
    /// `source`'s signals under `policy` on a background thread.
    pub fn start(
        addr: SocketAddr,
        policy: ScalePolicy,
        source: impl Fn() -> Option<ScaleSignals> + Send + Sync + 'static,
    ) -> Result<Self> {
        policy.validate()?;
        let err = |e: std::io::Error| ControlError::InvalidConfig(format!("binding {addr}: {e}"));
        let listener = std::net::TcpListener::bind(addr).map_err(err)?;
        let bound = listener.local_addr().map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(err)?;
        let listener = {
            let _in = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(err)?
        };
        let state = Arc::new(State {
            source: Box::new(source),
            policy,
        });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("ragjet-advice-http".into())
            .spawn(move || runtime.block_on(serve(listener, state, stopped)))
            .map_err(err)?;
        Ok(Self {
            addr: bound,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdviceServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "advice endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { respond(&state, req).await }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .max_buf_size(MAX_HEAD_BYTES)
                        .keep_alive(false)
                        // A client that shuts its write side after the
                        // request still gets the answer.
                        .half_close(true)
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
                });
            }
        }
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    json(
        status,
        serde_json::json!({ "error": message.to_string() }).to_string(),
    )
}

fn decide(signals: &ScaleSignals, policy: &ScalePolicy) -> Response<Full<Bytes>> {
    match advise(signals, policy) {
        Ok(d) => json(
            StatusCode::OK,
            serde_json::json!({ "decision": d, "signals": signals }).to_string(),
        ),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn respond(
    state: &State,
    req: Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = match (req.method().clone(), path.as_str()) {
        (Method::GET, "/healthz") => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"ok\n")));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        (Method::GET, "/scale") => {
            // The source is the application's code: a panic in it must not
            // take the endpoint down.
            let signals =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (state.source)()));
            match signals {
                Ok(Some(s)) => decide(&s, &state.policy),
                Ok(None) => error(StatusCode::SERVICE_UNAVAILABLE, "no signals observed yet"),
                Err(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the signal source failed",
                ),
            }
        }
        (Method::POST, "/scale") => {
            match Limited::new(req.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
            {
                Err(e) => error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body unreadable or over {MAX_BODY_BYTES} bytes: {e}"),
                ),
                Ok(body) => match serde_json::from_slice::<PostBody>(&body.to_bytes()) {
                    Ok(b) => decide(&b.signals, b.policy.as_ref().unwrap_or(&state.policy)),
                    Err(e) => error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
                },
            }
        }
        (_, "/scale") | (_, "/healthz") => {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, POST"));
            r
        }
        _ => error(StatusCode::NOT_FOUND, "not found; try /scale or /healthz"),
    };
    Ok(response)
}
