//! The production controls `[control]` puts in front of the engine: a rate
//! limiter per namespace for queries and for ingests, one circuit breaker
//! in front of the model, the retry policy of an ingest's embedding, the
//! model router, the A/B experiment over query options, the shared
//! reranker pool and the signals of the autoscaling advice.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use ragjet_inference::{CrossEncoder, CrossEncoderOptions, InferenceError};
use ragjet_telemetry::LatencyRecorder;

use super::types::{Answer, CacheOutcome, QueryOptions, SearchMode, VariantOptions};
use crate::config::{ControlConfig, RoutingSettings, VariantSettings};
use crate::control::{
    breaker::Permit, CircuitBreaker, CleanupHandle, Experiment, ModelPool, ModelRoute, PoolConfig,
    PoolGuard, RateLimit, RateLimiter, RetryPolicy, RouteDecision, RouteRequest, Router,
    ScaleSignals,
};
use crate::error::{Error, ErrorKind, Refusal, Result};
use crate::queue::{BatchQueue, Priority};

/// Which engine call is being admitted.
#[derive(Debug, Clone, Copy)]
pub(super) enum Call {
    Query,
    Ingest,
}

#[derive(Debug)]
pub(super) struct EngineControls {
    query_limiter: Option<RateLimiter>,
    ingest_limiter: Option<RateLimiter>,
    max_wait: Duration,
    pub(super) breaker: Option<CircuitBreaker>,
    pub(super) retry: RetryPolicy,
    pub(super) router: Option<Router>,
    route_counts: Mutex<BTreeMap<String, u64>>,
    pub(super) experiment: Option<EngineExperiment>,
}

/// An experiment and the query options of each of its variants.
#[derive(Debug)]
pub(super) struct EngineExperiment {
    pub(super) experiment: Arc<Experiment>,
    pub(super) variants: HashMap<String, VariantOptions>,
}

/// A variant's options as `[[control.experiment.variants]]` writes them;
/// the error names the offending key.
pub(crate) fn variant_overrides(v: &VariantSettings) -> Result<VariantOptions> {
    let key = |k: &str| format!("control.experiment.variants.{}.{k}", v.name);
    let mode = match (v.mode.as_deref(), v.alpha) {
        (None, None) => None,
        (None | Some("hybrid"), alpha) => {
            let alpha = alpha.unwrap_or(0.5);
            if !(alpha.is_finite() && (0.0..=1.0).contains(&alpha)) {
                return Err(Error::config(key("alpha"), "must be within 0..=1"));
            }
            Some(SearchMode::Hybrid { alpha })
        }
        (Some("vector"), None) => Some(SearchMode::Vector),
        (Some("keyword"), None) => Some(SearchMode::Keyword),
        (Some("vector" | "keyword"), Some(_)) => {
            return Err(Error::config(
                key("alpha"),
                "only a hybrid variant has alpha",
            ))
        }
        (Some(other), _) => {
            return Err(Error::config(
                key("mode"),
                format!("{other:?}: expected \"vector\", \"keyword\" or \"hybrid\""),
            ))
        }
    };
    if v.top_k == Some(0) {
        return Err(Error::config(key("top_k"), "must be at least 1"));
    }
    if let Some(l) = v.mmr {
        if !(l.is_finite() && (0.0..=1.0).contains(&l)) {
            return Err(Error::config(key("mmr"), "must be within 0..=1"));
        }
    }
    Ok(VariantOptions {
        top_k: v.top_k,
        mode,
        rerank_top_n: v.rerank_top_n.map(|n| (n > 0).then_some(n)),
        mmr: v.mmr,
    })
}

fn router_from(cfg: &RoutingSettings) -> Result<Router> {
    let routes = cfg
        .routes
        .iter()
        .map(|r| {
            ModelRoute::new(
                &r.name,
                &r.model,
                r.max_complexity,
                r.cost_per_1k_tokens,
                r.p95_latency_ms,
            )
        })
        .collect();
    let router = Router::new("engine", routes)
        .map_err(|e| Error::config("control.routing.routes", e.to_string()))?;
    Ok(router.long_tokens(cfg.long_tokens))
}

fn experiment_from(cfg: &ControlConfig) -> Result<EngineExperiment> {
    let e = &cfg.experiment;
    let key = "control.experiment";
    let pairs = e
        .variants
        .iter()
        .map(|v| (v.name.clone(), v.weight))
        .collect();
    let mut experiment =
        Experiment::new(&e.name, pairs).map_err(|err| Error::config(key, err.to_string()))?;
    if let Some(path) = &e.log_path {
        experiment = experiment
            .with_log(path)
            .map_err(|err| Error::config("control.experiment.log_path", err.to_string()))?;
    }
    let variants = e
        .variants
        .iter()
        .map(|v| Ok((v.name.clone(), variant_overrides(v)?)))
        .collect::<Result<_>>()?;
    Ok(EngineExperiment {
        experiment: Arc::new(experiment),
        variants,
    })
}

/// Whether an error says the model is unhealthy (counts against the
/// breaker) rather than that the request was wrong.
pub(super) fn is_service_failure(e: &Error) -> bool {
    match e {
        // A control's own refusal (the breaker's included, which must not
        // keep it open) says nothing new about the model.
        Error::Overloaded(
            Refusal::RateLimited { .. } | Refusal::CircuitOpen { .. } | Refusal::PoolFull { .. },
        )
        | Error::Control(_) => false,
        _ => matches!(
            e.kind(),
            ErrorKind::Internal | ErrorKind::Device | ErrorKind::Overloaded | ErrorKind::Storage
        ),
    }
}

impl EngineControls {
    /// The controls `cfg` asks for; a router or experiment given to the
    /// builder replaces the configured one.
    pub(super) fn new(
        cfg: &ControlConfig,
        router: Option<Router>,
        experiment: Option<EngineExperiment>,
    ) -> Result<Self> {
        let rl = &cfg.rate_limit;
        let (query_limiter, ingest_limiter) = if rl.enabled {
            (
                Some(RateLimiter::new(
                    "engine.query",
                    RateLimit::new(rl.queries_per_second, rl.query_burst),
                )?),
                Some(RateLimiter::new(
                    "engine.ingest",
                    RateLimit::new(rl.ingests_per_second, rl.ingest_burst),
                )?),
            )
        } else {
            (None, None)
        };
        let breaker = if cfg.breaker.enabled {
            Some(CircuitBreaker::new(
                "engine.model",
                cfg.breaker.breaker_config(),
            )?)
        } else {
            None
        };
        let r = &cfg.retry;
        let retry = RetryPolicy::new(r.max_attempts)?
            .delays(
                Duration::from_millis(r.base_delay_ms),
                Duration::from_millis(r.max_delay_ms),
            )?
            .operation("ingest.embed");
        let router = match router {
            Some(r) => Some(r),
            None if cfg.routing.enabled => Some(router_from(&cfg.routing)?),
            None => None,
        };
        let experiment = match experiment {
            Some(e) => Some(e),
            None if cfg.experiment.enabled => Some(experiment_from(cfg)?),
            None => None,
        };
        Ok(Self {
            query_limiter,
            ingest_limiter,
            max_wait: Duration::from_millis(rl.max_wait_ms),
            breaker,
            retry,
            router,
            route_counts: Mutex::new(BTreeMap::new()),
            experiment,
        })
    }

    /// The variant of the query's user, with its options; `None` without
    /// an experiment or a user.
    pub(super) fn variant(
        &self,
        options: &QueryOptions,
    ) -> Result<Option<(String, &VariantOptions)>> {
        let (Some(e), Some(user)) = (&self.experiment, options.user.as_deref()) else {
            return Ok(None);
        };
        let name = e.experiment.assign(user)?;
        let v = e.variants.get(&name).ok_or_else(|| {
            Error::config(
                "control.experiment.variants",
                format!("no options for variant {name:?}"),
            )
        })?;
        Ok(Some((name, v)))
    }

    /// Records an answered query's latency and cache outcome for its
    /// variant.
    pub(super) fn record_variant(&self, answer: &Answer, latency: Duration) {
        let (Some(e), Some(v)) = (&self.experiment, answer.variant.as_deref()) else {
            return;
        };
        let hit = match answer.cache {
            CacheOutcome::Miss => Some(false),
            CacheOutcome::RetrievalHit | CacheOutcome::SemanticHit { .. } => Some(true),
            CacheOutcome::Bypassed => None,
        };
        let recorded = e
            .experiment
            .record_latency(v, latency)
            .and_then(|()| match hit {
                Some(hit) => e.experiment.record_cache(v, hit),
                None => Ok(()),
            });
        if let Err(err) = recorded {
            tracing::warn!(error = %err, "A/B figures not recorded");
        }
    }

    /// The route for a query, counted; `None` without a router.
    pub(super) fn route(
        &self,
        text: &str,
        tokens: impl FnOnce() -> Option<usize>,
        options: &QueryOptions,
    ) -> Result<Option<RouteDecision>> {
        let Some(router) = &self.router else {
            return Ok(None);
        };
        let decision = router.route(&RouteRequest {
            text,
            tokens: tokens(),
            latency_budget_ms: None,
            user: options.user.as_deref(),
        })?;
        *self
            .route_counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(decision.route.clone())
            .or_default() += 1;
        Ok(Some(decision))
    }

    /// Decisions per route so far.
    pub(super) fn route_counts(&self) -> BTreeMap<String, u64> {
        self.route_counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn limiter(&self, call: Call) -> Option<&RateLimiter> {
        match call {
            Call::Query => self.query_limiter.as_ref(),
            Call::Ingest => self.ingest_limiter.as_ref(),
        }
    }

    /// Admits one call for `namespace`: its rate limit, then the breaker.
    /// The permit (when a breaker is on) must get the call's outcome.
    pub(super) fn admit(
        &self,
        call: Call,
        namespace: &str,
    ) -> Result<Option<Permit<&CircuitBreaker>>> {
        if let Some(l) = self.limiter(call) {
            if self.max_wait.is_zero() {
                l.try_acquire(namespace, 1.0)?;
            } else {
                l.acquire(namespace, 1.0, self.max_wait)?;
            }
        }
        Ok(match &self.breaker {
            Some(b) => Some(b.acquire()?),
            None => None,
        })
    }
}

/// A reranker pool and its cleanup thread, shared by every engine using
/// it (the thread stops when the last engine goes).
pub(super) struct SharedRerankers {
    pub(super) pool: Arc<ModelPool<CrossEncoder>>,
    _cleanup: Option<CleanupHandle>,
}

impl std::fmt::Debug for SharedRerankers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.pool.fmt(f)
    }
}

/// The engine's reranker when a pool holds it: the model's name there.
#[derive(Debug)]
pub(super) struct PooledReranker {
    pub(super) shared: Arc<SharedRerankers>,
    pub(super) model: String,
}

/// A reranker to score with: the engine's own, or one borrowed from the
/// pool for the call (the pool cannot unload it meanwhile).
pub(super) enum RerankerRef<'a> {
    Own(&'a CrossEncoder),
    Pooled(PoolGuard<CrossEncoder>),
}

impl std::ops::Deref for RerankerRef<'_> {
    type Target = CrossEncoder;
    fn deref(&self) -> &CrossEncoder {
        match self {
            RerankerRef::Own(r) => r,
            RerankerRef::Pooled(g) => g,
        }
    }
}

/// Pools of `[control.model_pool]`, by name: the engines of a process that
/// name the same pool share it.
fn registry() -> &'static Mutex<HashMap<String, Weak<SharedRerankers>>> {
    static POOLS: OnceLock<Mutex<HashMap<String, Weak<SharedRerankers>>>> = OnceLock::new();
    POOLS.get_or_init(Mutex::default)
}

/// Declared size of a cross-encoder: its weights file (read whole into
/// memory at load), else every file of the folder.
fn weights_bytes(dir: &std::path::Path) -> u64 {
    if let Ok(m) = std::fs::metadata(dir.join("model.safetensors")) {
        return m.len().max(1);
    }
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0)
        .max(1)
}

/// A loader of cross-encoders by folder, with the options of the engine
/// that made the pool.
pub fn reranker_loader(
    options: CrossEncoderOptions,
) -> impl Fn(&str) -> std::result::Result<(CrossEncoder, u64), String> + Send + Sync + 'static {
    move |name: &str| {
        let model = CrossEncoder::load_with(name, options.clone())
            .map_err(|e: InferenceError| e.to_string())?;
        Ok((model, weights_bytes(std::path::Path::new(name))))
    }
}

/// The pooled reranker of an engine: from `explicit` (the builder's pool)
/// or the process's pool named by `[control.model_pool]`, loaded once now
/// so a bad folder fails the build, not the first query.
pub(super) fn pooled_reranker(
    cfg: &crate::config::EngineConfig,
    explicit: Option<Arc<ModelPool<CrossEncoder>>>,
    options: impl FnOnce() -> Result<CrossEncoderOptions>,
) -> Result<Option<PooledReranker>> {
    let Some(dir) = &cfg.rerank.model_dir else {
        if explicit.is_some() {
            return Err(Error::config(
                "rerank.model_dir",
                "a model pool holds the reranker: name it with rerank.model_dir (EngineBuilder::reranker)",
            ));
        }
        return Ok(None);
    };
    let shared = match explicit {
        Some(pool) => Arc::new(SharedRerankers {
            pool,
            _cleanup: None,
        }),
        None if cfg.control.model_pool.enabled => {
            let p = &cfg.control.model_pool;
            let mut pools = registry().lock().unwrap_or_else(PoisonError::into_inner);
            pools.retain(|_, w| w.strong_count() > 0);
            match pools.get(&p.name).and_then(Weak::upgrade) {
                Some(shared) => shared,
                None => {
                    let pool = ModelPool::new(
                        &p.name,
                        PoolConfig {
                            max_models: p.max_models,
                            max_bytes: p.max_bytes,
                            idle_ttl: Duration::from_secs(p.idle_ttl_seconds),
                        },
                        reranker_loader(options()?),
                    )
                    .map_err(|e| Error::config("control.model_pool", e.to_string()))?;
                    let cleanup = (p.cleanup_seconds > 0)
                        .then(|| pool.spawn_cleanup(Duration::from_secs(p.cleanup_seconds)));
                    let shared = Arc::new(SharedRerankers {
                        pool,
                        _cleanup: cleanup,
                    });
                    pools.insert(p.name.clone(), Arc::downgrade(&shared));
                    shared
                }
            }
        }
        None => return Ok(None),
    };
    let model = dir.to_string_lossy().into_owned();
    drop(shared.pool.get(&model)?);
    Ok(Some(PooledReranker { shared, model }))
}

/// Items waiting in a model queue, both priorities.
pub(super) fn queue_depth<I, O, E>(q: &BatchQueue<I, O, E>) -> usize
where
    I: Send + 'static,
    O: Send + 'static,
    E: Send + 'static,
{
    q.depth(Priority::Interactive) + q.depth(Priority::Bulk)
}

/// This replica's signals for the autoscaling advice, over the latency
/// window (`telemetry.window_seconds`). Utilisation is the mean number of
/// queries in the engine (Little's law: throughput × mean latency) over
/// the `concurrency` it serves at full load, capped at 1; the error rate
/// counts refused and failed queries.
pub(super) fn scale_signals(
    latency: &LatencyRecorder,
    queue_depth: usize,
    replicas: u32,
    concurrency: f64,
) -> ScaleSignals {
    let s = latency.snapshot();
    let in_engine = s.throughput_per_second * s.mean_ms / 1000.0;
    let utilisation = if in_engine.is_finite() {
        (in_engine / concurrency).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let error_rate = if s.count == 0 {
        0.0
    } else {
        (s.errors as f64 / s.count as f64).clamp(0.0, 1.0)
    };
    ScaleSignals {
        replicas,
        queue_depth: queue_depth as u64,
        p95_ms: if s.p95_ms.is_finite() {
            s.p95_ms.max(0.0)
        } else {
            0.0
        },
        utilisation,
        error_rate,
        seconds_since_last_scale: None,
    }
}

/// Parses `control.autoscale.addr` (validated with the configuration).
pub(super) fn advice_addr(addr: &str) -> Result<SocketAddr> {
    addr.parse().map_err(|_| {
        Error::config(
            "control.autoscale.addr",
            format!("{addr:?} is not an address"),
        )
    })
}

/// Reports a call's outcome on its permit.
pub(super) fn settle(permit: Option<Permit<&CircuitBreaker>>, failed: Option<&Error>) {
    let Some(p) = permit else { return };
    match failed {
        None => p.success(),
        Some(e) if is_service_failure(e) => p.failure(),
        Some(_) => p.ignore(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_service_failures_count_against_the_breaker() {
        assert!(is_service_failure(&Error::Overloaded(Refusal::QueueFull {
            queue: "q".into(),
            capacity: 1
        })));
        assert!(is_service_failure(&Error::Queue("worker gone".into())));
        assert!(!is_service_failure(&Error::InvalidInput("empty".into())));
        assert!(!is_service_failure(&Error::config("k", "bad")));
        // The breaker's own refusal must not keep it open.
        let open = Error::from(crate::control::ControlError::CircuitOpen {
            breaker: "b".into(),
            retry_after: Duration::ZERO,
        });
        assert!(matches!(
            open,
            Error::Overloaded(Refusal::CircuitOpen { .. })
        ));
        assert!(!is_service_failure(&open));
    }
}
