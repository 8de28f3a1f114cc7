//! The small HTTP/1 server behind `/metrics` and the facade's `/scale`
//! advice endpoint: hyper on a one-thread tokio runtime of its own, each
//! connection a task, so a client that connects and sends nothing, or
//! trickles an endless header, holds one bounded task until its deadline
//! while other requests are served.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, Semaphore};

/// What a handler of an [`HttpEndpoint`] answers.
pub type Reply = Response<Full<Bytes>>;

/// Headers accepted in one request.
const MAX_HEADERS: usize = 64;

/// The bounds that keep an [`HttpEndpoint`] serving whatever its clients
/// do.
#[derive(Debug, Clone, Copy)]
pub struct EndpointLimits {
    /// Connections served at once; beyond this new ones are closed at
    /// once, so idle clients cannot exhaust file descriptors or memory.
    pub max_connections: usize,
    /// A client must have sent its whole request head within this time.
    pub header_read_timeout: Duration,
    /// A connection is closed this long after it was accepted, whatever it
    /// is doing (covers a client that reads the response slowly).
    pub connection_deadline: Duration,
    /// Request head buffer per connection (hyper's minimum is 8 KiB); a
    /// longer request line or header set is answered 431 and closed.
    pub max_head_bytes: usize,
}

impl Default for EndpointLimits {
    /// 128 connections, 5 s for the head, 15 s per connection, 16 KiB of
    /// head.
    fn default() -> Self {
        EndpointLimits {
            max_connections: 128,
            header_read_timeout: Duration::from_secs(5),
            connection_deadline: Duration::from_secs(15),
            max_head_bytes: 16 * 1024,
        }
    }
}

/// Work the endpoint's thread runs between requests, every `every`.
pub(crate) struct Upkeep {
    pub(crate) every: Duration,
    pub(crate) run: Box<dyn Fn() + Send>,
}

/// A running HTTP endpoint; stops when dropped (the listener closes and
/// every connection task is cancelled).
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_telemetry::http::{EndpointLimits, HttpEndpoint, Reply};
/// use std::io::{Read, Write};
///
/// let hello = |_req| async { Reply::new("hello\n".into()) };
/// let server = HttpEndpoint::start("127.0.0.1:0".parse()?, "hello-http", EndpointLimits::default(), hello)?;
/// let mut conn = std::net::TcpStream::connect(server.local_addr())?;
/// conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
/// let mut response = String::new();
/// conn.read_to_string(&mut response)?;
/// assert!(response.starts_with("HTTP/1.1 200") && response.ends_with("hello\n"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HttpEndpoint {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpEndpoint {
    /// Binds `addr` (port 0 picks a free port) and answers every request
    /// with `handler` on a background thread named `name`.
    pub fn start<H, F>(
        addr: SocketAddr,
        name: &str,
        limits: EndpointLimits,
        handler: H,
    ) -> std::io::Result<Self>
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Reply> + Send + 'static,
    {
        Self::start_with_upkeep(addr, name, limits, handler, None)
    }

    pub(crate) fn start_with_upkeep<H, F>(
        addr: SocketAddr,
        name: &str,
        limits: EndpointLimits,
        handler: H,
        upkeep: Option<Upkeep>,
    ) -> std::io::Result<Self>
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Reply> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let listener = {
            let _in_runtime = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let (stop, stopped) = oneshot::channel();
        let name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                runtime.block_on(serve(
                    listener,
                    name,
                    limits,
                    Arc::new(handler),
                    upkeep,
                    stopped,
                ))
            })?;
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

impl Drop for HttpEndpoint {
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
/// `limits`; runs `upkeep` in between.
async fn serve<H, F>(
    listener: tokio::net::TcpListener,
    name: String,
    limits: EndpointLimits,
    handler: Arc<H>,
    upkeep: Option<Upkeep>,
    mut stopped: oneshot::Receiver<()>,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Without upkeep the timer is never polled.
    let every = upkeep
        .as_ref()
        .map_or(Duration::from_secs(3600), |u| u.every);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tick.tick(), if upkeep.is_some() => {
                if let Some(u) = &upkeep {
                    (u.run)();
                }
            }
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors or similar: back off instead of
                        // spinning on an error that repeats at once.
                        tracing::warn!(error = %e, endpoint = %name, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(
                        endpoint = %name,
                        "{} connections open; refusing one", limits.max_connections
                    );
                    continue;
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let service = hyper::service::service_fn(move |req| {
                        let reply = handler(req);
                        async move { Ok::<_, Infallible>(reply.await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits.header_read_timeout)
                        .max_buf_size(limits.max_head_bytes)
                        .max_headers(MAX_HEADERS)
                        .keep_alive(false)
                        .title_case_headers(true)
                        // A client that shuts its write side after the
                        // request still gets the answer.
                        .half_close(true)
                        .serve_connection(TokioIo::new(stream), service);
                    // Errors and timeouts only concern this one client.
                    let _ = tokio::time::timeout(limits.connection_deadline, conn).await;
                });
            }
        }
    }
}
