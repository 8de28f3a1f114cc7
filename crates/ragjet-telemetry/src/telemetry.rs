//! Process-wide set-up: the `tracing` subscriber, the Prometheus recorder
//! and its `/metrics` endpoint, and (feature `otlp`) span export.
//!
//! Only applications call [`Telemetry::init`]; libraries just emit through
//! `tracing` and `metrics`. Tests that need figures build a local recorder
//! with [`crate::build_recorder`] instead, so they can run in parallel.

use crate::error::{Result, TelemetryError};
use crate::exporter::{build_recorder, MetricsHandle, MetricsServer};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Default `/metrics` port (the one OpenTelemetry's Prometheus exporter uses).
pub const DEFAULT_METRICS_PORT: u16 = 9464;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines on stderr.
    #[default]
    Human,
    /// One JSON object per line on stderr, for log shippers.
    Json,
    /// No log output (spans still reach the OTLP exporter if enabled).
    Off,
}

/// What [`Telemetry::init`] installs.
///
/// # Examples
///
/// ```
/// use ragjet_telemetry::{LogFormat, TelemetryConfig, DEFAULT_METRICS_PORT};
///
/// let config = TelemetryConfig::default();
/// assert_eq!(config.metrics_addr.unwrap().port(), DEFAULT_METRICS_PORT);
/// assert!(config.install_subscriber && config.install_metrics);
///
/// let config = TelemetryConfig::default()
///     .with_metrics_port(0)
///     .with_log_format(LogFormat::Json)
///     .with_log_filter("ragjet=debug,warn");
/// assert_eq!(config.log_format, LogFormat::Json);
/// assert_eq!(config.log_filter.as_deref(), Some("ragjet=debug,warn"));
/// // Embedding in a host that owns the globals: install nothing.
/// let library_mode = TelemetryConfig {
///     install_subscriber: false,
///     install_metrics: false,
///     metrics_addr: None,
///     ..TelemetryConfig::default()
/// };
/// assert!(library_mode.metrics_addr.is_none());
/// ```
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Service name reported to OTLP collectors.
    pub service_name: String,
    /// Log format.
    pub log_format: LogFormat,
    /// `tracing` filter directive (`info`, `ragjet=debug,warn`, ...); `None`
    /// reads `RUST_LOG`, falling back to `info`.
    pub log_filter: Option<String>,
    /// Install the global `tracing` subscriber.
    pub install_subscriber: bool,
    /// Install the global `metrics` recorder.
    pub install_metrics: bool,
    /// Where `/metrics` listens; `None` for no endpoint. Port 0 picks a free
    /// port, reported by [`TelemetryGuard::metrics_addr`].
    pub metrics_addr: Option<SocketAddr>,
    /// OTLP span export; `None` for none.
    #[cfg(feature = "otlp")]
    pub otlp: Option<crate::otlp::OtlpConfig>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: "ragjet".into(),
            log_format: LogFormat::Human,
            log_filter: None,
            install_subscriber: true,
            install_metrics: true,
            metrics_addr: Some(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                DEFAULT_METRICS_PORT,
            ))),
            #[cfg(feature = "otlp")]
            otlp: None,
        }
    }
}

impl TelemetryConfig {
    /// Serves `/metrics` on 127.0.0.1:`port` (0 = any free port).
    pub fn with_metrics_port(mut self, port: u16) -> Self {
        self.metrics_addr = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        self
    }

    /// Sets the log format.
    pub fn with_log_format(mut self, format: LogFormat) -> Self {
        self.log_format = format;
        self
    }

    /// Sets the log filter directive.
    pub fn with_log_filter(mut self, filter: impl Into<String>) -> Self {
        self.log_filter = Some(filter.into());
        self
    }

    /// Exports spans over OTLP/HTTP.
    #[cfg(feature = "otlp")]
    pub fn with_otlp(mut self, otlp: crate::otlp::OtlpConfig) -> Self {
        self.otlp = Some(otlp);
        self
    }
}

#[derive(Debug)]
struct Installed {
    handle: Option<MetricsHandle>,
    // Kept for the life of the process: the global recorder it serves can
    // never be uninstalled either.
    server: Option<MetricsServer>,
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

static INSTALLED: Mutex<Option<Arc<Installed>>> = Mutex::new(None);

/// Entry point for process-wide telemetry.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_telemetry::{LogFormat, Telemetry, TelemetryConfig};
/// use std::io::{Read, Write};
///
/// // Once, in `main`; port 0 so the example never collides with a real exporter.
/// let guard = Telemetry::init(
///     TelemetryConfig::default().with_metrics_port(0).with_log_format(LogFormat::Off),
/// )?;
/// ragjet_telemetry::metrics::record_index_operation("docs", "search");
/// let addr = guard.metrics_addr().expect("an endpoint was asked for");
/// let mut conn = std::net::TcpStream::connect(addr)?;
/// conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
/// let mut body = String::new();
/// conn.read_to_string(&mut body)?;
/// assert!(body.contains("ragjet_index_operations_total"));
/// // Later calls share the first installation.
/// let again = Telemetry::init(TelemetryConfig::default())?;
/// assert_eq!(again.metrics_addr(), Some(addr));
/// guard.flush()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Telemetry;

/// Keeps telemetry flushed: dropping it flushes pending spans to the OTLP
/// exporter. Logs and metrics need no flush (logs are written unbuffered,
/// metrics are pulled). Keep it alive in `main`.
#[derive(Debug, Clone)]
#[must_use = "dropping the guard flushes telemetry; keep it alive in main"]
pub struct TelemetryGuard {
    installed: Arc<Installed>,
}

impl TelemetryGuard {
    /// The address `/metrics` is served on, if an endpoint is running.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.installed
            .server
            .as_ref()
            .map(MetricsServer::local_addr)
    }

    /// Renders the global recorder, if one was installed.
    pub fn metrics(&self) -> Option<&MetricsHandle> {
        self.installed.handle.as_ref()
    }

    /// Flushes pending spans now.
    pub fn flush(&self) -> Result<()> {
        #[cfg(feature = "otlp")]
        if let Some(p) = &self.installed.provider {
            p.force_flush()
                .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
        }
        Ok(())
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            // The subscriber may be the thing failing; stderr always works.
            eprintln!("ragjet-telemetry: flush on drop failed: {e}");
        }
    }
}

fn env_filter(config: &TelemetryConfig) -> Result<EnvFilter> {
    let directive = match &config.log_filter {
        Some(f) => f.clone(),
        None => std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| "info".into()),
    };
    EnvFilter::try_new(&directive).map_err(|e| TelemetryError::InvalidFilter {
        filter: directive,
        reason: e.to_string(),
    })
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

impl Telemetry {
    /// Installs what `config` asks for and returns a guard.
    ///
    /// Idempotent: the first successful call installs; later calls return a
    /// guard on the same installation and ignore their `config` (globals
    /// cannot be swapped). Fails without installing anything when another
    /// subscriber or recorder is already global, the filter is invalid, or
    /// the port is taken.
    pub fn init(config: TelemetryConfig) -> Result<TelemetryGuard> {
        let mut slot = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(installed) = slot.as_ref() {
            return Ok(TelemetryGuard {
                installed: installed.clone(),
            });
        }

        // Everything fallible that installs nothing comes first.
        if config.install_subscriber && tracing::dispatcher::has_been_set() {
            return Err(TelemetryError::AlreadyInstalled("tracing subscriber"));
        }
        let mut layers: Vec<BoxedLayer> = Vec::new();
        if config.install_subscriber {
            let filter = env_filter(&config)?;
            // Colour only on a terminal: escape codes garble log files.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi);
            match config.log_format {
                LogFormat::Human => layers.push(fmt.with_filter(filter).boxed()),
                LogFormat::Json => layers.push(fmt.json().with_filter(filter).boxed()),
                LogFormat::Off => {}
            }
        }
        #[cfg(feature = "otlp")]
        let provider = match (&config.otlp, config.install_subscriber) {
            (Some(otlp), true) => {
                let provider = crate::otlp::build_provider(otlp, &config.service_name)?;
                layers.push(
                    crate::otlp::layer(&provider)
                        .with_filter(env_filter(&config)?)
                        .boxed(),
                );
                Some(provider)
            }
            _ => None,
        };

        let (handle, server) = if config.install_metrics {
            let (recorder, handle) = build_recorder()?;
            let server = match config.metrics_addr {
                Some(addr) => Some(MetricsServer::start(addr, handle.clone())?),
                None => None,
            };
            ::metrics::set_global_recorder(recorder)
                .map_err(|_| TelemetryError::AlreadyInstalled("metrics recorder"))?;
            (Some(handle), server)
        } else {
            (None, None)
        };

        if config.install_subscriber {
            use tracing_subscriber::util::SubscriberInitExt;
            // Also forwards `log` records from dependencies into tracing.
            // Only a race with another installer can make this fail now.
            tracing_subscriber::registry()
                .with(layers)
                .try_init()
                .map_err(|_| TelemetryError::AlreadyInstalled("tracing subscriber"))?;
        }

        let installed = Arc::new(Installed {
            handle,
            server,
            #[cfg(feature = "otlp")]
            provider,
        });
        *slot = Some(installed.clone());
        Ok(TelemetryGuard { installed })
    }
}
