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
//! Served like `/metrics`, by the telemetry crate's
//! [`HttpEndpoint`]: hyper's HTTP/1 server on a one-thread
//! tokio runtime, one task per connection, a 5 s deadline for the request
//! head, 16 KiB for it, 64 KiB for a body, 15 s per connection, at most 64
//! connections; 127.0.0.1 by default. A malformed request gets a 4xx with a
//! JSON error and concerns only its own connection.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use ragjet_telemetry::http::{EndpointLimits, HttpEndpoint, Reply};
use serde::Deserialize;

use super::autoscale::{advise, ScalePolicy, ScaleSignals};
use super::{ControlError, Result};

/// The default address: loopback only, next to `/metrics` on 9464.
pub const DEFAULT_ADVICE_ADDR: &str = "127.0.0.1:9465";

const MAX_CONNECTIONS: usize = 64;
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
    endpoint: HttpEndpoint,
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
        let state = Arc::new(State {
            source: Box::new(source),
            policy,
        });
        let limits = EndpointLimits {
            max_connections: MAX_CONNECTIONS,
            ..EndpointLimits::default()
        };
        let endpoint = HttpEndpoint::start(addr, "ragjet-advice-http", limits, move |req| {
            let state = state.clone();
            async move { respond(&state, req).await }
        })
        .map_err(|e| ControlError::InvalidConfig(format!("binding {addr}: {e}")))?;
        Ok(Self { endpoint })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }
}

fn json(status: StatusCode, body: String) -> Reply {
    let mut r = Reply::new(Bytes::from(body).into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Reply {
    json(
        status,
        serde_json::json!({ "error": message.to_string() }).to_string(),
    )
}

fn decide(signals: &ScaleSignals, policy: &ScalePolicy) -> Reply {
    match advise(signals, policy) {
        Ok(d) => json(
            StatusCode::OK,
            serde_json::json!({ "decision": d, "signals": signals }).to_string(),
        ),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn respond(state: &State, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    let response = match (req.method().clone(), path.as_str()) {
        (Method::GET, "/healthz") => {
            let mut r = Reply::new(Bytes::from_static(b"ok\n").into());
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
    response
}
