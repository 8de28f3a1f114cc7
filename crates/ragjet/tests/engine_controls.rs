//! Routing, the A/B experiment, the reranker pool and the autoscaling
//! signals wired into the engine (`[control.routing]`,
//! `[control.experiment]`, `[control.model_pool]`, `[control.autoscale]`
//! and their builder methods). The controls themselves are tested in
//! `src/control/*`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ragjet::config::{RouteSettings, VariantSettings};
use ragjet::control::{
    Experiment, ManualClock, ModelPool, ModelRoute, PoolConfig, RouteReason, Router, ScaleAction,
};
use ragjet::inference::CrossEncoderOptions;
use ragjet::{Document, Error, ErrorKind, QueryOptions, Refusal, VariantOptions};

fn docs() -> Vec<Document> {
    common::corpus()[..12].to_vec()
}

fn tiny_cross_encoder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ragjet-inference/tests/fixtures/tiny-cross-encoder")
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// `[control.routing]`: every answer names the model chosen for the
/// caller's LLM, and decisions are counted per route; without it there
/// is no decision.
#[test]
fn routing_names_a_model_per_query_and_counts_decisions() {
    let e = common::builder()
        .configure(|c| {
            c.control.routing.enabled = true;
            c.control.routing.routes = vec![
                RouteSettings {
                    name: "small".into(),
                    model: "small-llm".into(),
                    max_complexity: 0.3,
                    cost_per_1k_tokens: 0.1,
                    p95_latency_ms: 300.0,
                },
                RouteSettings {
                    name: "large".into(),
                    model: "large-llm".into(),
                    max_complexity: 1.0,
                    cost_per_1k_tokens: 2.0,
                    p95_latency_ms: 1500.0,
                },
            ];
        })
        .build()
        .unwrap();
    e.ingest(docs()).unwrap();
    let o = QueryOptions::new().top_k(3);
    let simple = e.query("what is a hacker", &o).unwrap();
    let route = simple.route.expect("a routing decision");
    assert_eq!(
        (route.route.as_str(), route.model.as_str()),
        ("small", "small-llm")
    );
    assert_eq!(route.reason, RouteReason::Complexity);
    let hard = e
        .query("compare the hacker ethic versus the cracker ethic", &o)
        .unwrap();
    assert_eq!(hard.route.unwrap().model, "large-llm");
    e.query("what is a kludge", &o).unwrap();
    let counts = e.route_counts();
    assert_eq!(counts.get("small"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("large"), Some(&1), "{counts:?}");

    // Off by default.
    let plain = common::builder().build().unwrap();
    assert!(plain.query("what is a hacker", &o).unwrap().route.is_none());
    assert!(plain.route_counts().is_empty());
}

/// A router given to the builder, with a rule on the query's user.
#[test]
fn a_builder_router_sees_the_user() {
    let router = Router::new(
        "engine",
        vec![
            ModelRoute::new("small", "small-llm", 0.5, 0.1, 300.0),
            ModelRoute::new("large", "large-llm", 1.0, 2.0, 1500.0),
        ],
    )
    .unwrap()
    .rule(|req, _| (req.user == Some("vip")).then(|| "large".to_string()));
    let e = common::builder().router(router).build().unwrap();
    e.ingest(docs()).unwrap();
    let vip = e
        .query("what is a hacker", &QueryOptions::new().user("vip"))
        .unwrap()
        .route
        .unwrap();
    assert_eq!(
        (vip.model.as_str(), vip.reason),
        ("large-llm", RouteReason::Rule)
    );
    let other = e
        .query("what is a hacker", &QueryOptions::new().user("someone"))
        .unwrap()
        .route
        .unwrap();
    assert_eq!(other.model, "small-llm");
}

/// `[control.experiment]`: a user's variant changes what the engine does
/// (here top-k), the answer names it, latency and cache hits are recorded
/// per variant, and feedback goes through the engine.
#[test]
fn ab_variants_change_the_query_and_are_measured() {
    let e = common::builder()
        .configure(|c| {
            c.control.experiment.enabled = true;
            c.control.experiment.name = "topk-test".into();
            c.control.experiment.variants = vec![
                VariantSettings {
                    name: "control".into(),
                    weight: 1,
                    top_k: None,
                    mode: None,
                    alpha: None,
                    rerank_top_n: None,
                    mmr: None,
                },
                VariantSettings {
                    name: "narrow".into(),
                    weight: 1,
                    top_k: Some(1),
                    mode: Some("keyword".into()),
                    alpha: None,
                    rerank_top_n: None,
                    mmr: None,
                },
            ];
        })
        .build()
        .unwrap();
    e.ingest(docs()).unwrap();
    let x = e.experiment().expect("the experiment").clone();
    let user_in = |variant: &str| {
        (0..200)
            .map(|i| format!("user-{i}"))
            .find(|u| x.variant_of(u) == variant)
            .unwrap()
    };
    let (a, b) = (user_in("control"), user_in("narrow"));
    let q = "parents class object";
    let o = QueryOptions::new().top_k(4);
    let ra = e.query(q, &o.clone().user(&a)).unwrap();
    let rb = e.query(q, &o.clone().user(&b)).unwrap();
    assert_eq!(ra.variant.as_deref(), Some("control"));
    assert_eq!(rb.variant.as_deref(), Some("narrow"));
    assert_eq!(ra.hits.len(), 4);
    assert_eq!(rb.hits.len(), 1, "the variant's top_k is in force");
    assert_eq!(rb.mode, ragjet::SearchMode::Keyword);
    // Again: a cache hit, recorded for the variant.
    let again = e.query(q, &o.clone().user(&b)).unwrap();
    assert_eq!(again.cache, ragjet::CacheOutcome::RetrievalHit);
    // No user: no variant, nothing recorded.
    assert!(e.query(q, &o).unwrap().variant.is_none());

    assert_eq!(e.record_feedback(&b, 1.0).unwrap(), "narrow");
    let err = e.record_feedback(&b, 2.0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let s = x.summary();
    let (control, narrow) = (&s.variants[0], &s.variants[1]);
    assert_eq!((control.requests, control.cache_lookups), (1, 1));
    assert_eq!((narrow.requests, narrow.cache_lookups), (2, 2));
    assert_eq!(narrow.cache_hit_rate, 0.5);
    assert!(narrow.mean_latency_ms > 0.0);
    assert_eq!((narrow.feedback_count, narrow.mean_feedback), (1, 1.0));
    assert_eq!((control.assigned, narrow.assigned), (1, 1));
}

/// An experiment given to the builder; a variant that reranks needs a
/// reranker, and every variant needs options.
#[test]
fn a_builder_experiment_is_checked_against_the_engine() {
    let experiment = || {
        Arc::new(
            Experiment::new(
                "rerank-test",
                vec![("plain".to_string(), 1), ("rerank".to_string(), 1)],
            )
            .unwrap(),
        )
    };
    let reranking = VariantOptions {
        rerank_top_n: Some(Some(2)),
        ..VariantOptions::default()
    };
    let err = common::builder()
        .experiment(
            experiment(),
            [
                ("plain".to_string(), VariantOptions::default()),
                ("rerank".to_string(), reranking.clone()),
            ],
        )
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::Config { ref key, .. } if key == "rerank.model_dir"),
        "{err}"
    );
    let err = common::builder()
        .experiment(
            experiment(),
            [("plain".to_string(), VariantOptions::default())],
        )
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("\"rerank\" has no options"),
        "{err}"
    );
    let err = common::builder()
        .experiment(
            experiment(),
            [
                ("plain".to_string(), VariantOptions::default()),
                ("rerank".to_string(), VariantOptions::default()),
                ("typo".to_string(), VariantOptions::default()),
            ],
        )
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("\"typo\""), "{err}");

    let x = experiment();
    let e = common::builder()
        .reranker(tiny_cross_encoder())
        .experiment(
            x.clone(),
            [
                ("plain".to_string(), VariantOptions::default()),
                ("rerank".to_string(), reranking),
            ],
        )
        .build()
        .unwrap();
    e.ingest(docs()).unwrap();
    let user = (0..200)
        .map(|i| format!("u{i}"))
        .find(|u| x.variant_of(u) == "rerank")
        .unwrap();
    let a = e
        .query("hacker", &QueryOptions::new().top_k(5).user(user))
        .unwrap();
    assert_eq!(a.hits.len(), 2, "reranked down to the variant's top_n");
    assert!(a.timings.rerank > Duration::ZERO);
}

/// `EngineBuilder::model_pool`: two engines share one loaded reranker; it
/// is borrowed per query, so the pool can unload it when idle (manual
/// clock) and loads it again on the next query.
#[test]
fn engines_share_a_reranker_pool() {
    let loads = Arc::new(AtomicUsize::new(0));
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let pool = {
        let loads = loads.clone();
        let load = ragjet::engine::reranker_loader(CrossEncoderOptions::default());
        ModelPool::with_clock(
            "engine-test",
            PoolConfig {
                max_models: 2,
                max_bytes: 1 << 30,
                idle_ttl: Duration::from_secs(60),
            },
            move |name| {
                loads.fetch_add(1, Ordering::SeqCst);
                load(name)
            },
            Arc::new(clock.clone()),
        )
        .unwrap()
    };
    let build = || {
        common::builder()
            .reranker(tiny_cross_encoder())
            .model_pool(pool.clone())
            .build()
            .unwrap()
    };
    // A pool without a model name for the reranker is a mistake.
    let err = common::builder()
        .model_pool(pool.clone())
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::Config { ref key, .. } if key == "rerank.model_dir"),
        "{err}"
    );
    let (e1, e2) = (build(), build());
    assert_eq!(loads.load(Ordering::SeqCst), 1, "loaded once for both");
    assert!(Arc::ptr_eq(
        e1.model_pool().unwrap(),
        e2.model_pool().unwrap()
    ));
    assert!(pool.loaded_bytes() > 0);
    let o = QueryOptions::new().top_k(4).rerank(2).no_cache(true);
    for e in [&e1, &e2] {
        e.ingest(docs()).unwrap();
        assert_eq!(e.query("hacker", &o).unwrap().hits.len(), 2);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    // Not held between queries: idle past the TTL, it is unloaded...
    assert_eq!(pool.active(&tiny_cross_encoder().to_string_lossy()), 0);
    clock.advance(Duration::from_secs(61));
    assert_eq!(pool.cleanup().len(), 1);
    assert!(pool.loaded_models().is_empty());
    // ...and the next query loads it again.
    assert_eq!(e1.query("hacker", &o).unwrap().hits.len(), 2);
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

/// `[control.model_pool]`: engines of the process naming the same pool
/// share it; its gauges move as queries borrow the model.
#[test]
fn configured_engines_share_the_named_pool_and_its_gauges_move() {
    let (recorder, handle) = ragjet::telemetry::build_recorder().unwrap();
    let build = |pool: &str| {
        let pool = pool.to_string();
        metrics::with_local_recorder(&recorder, || {
            common::builder()
                .reranker(tiny_cross_encoder())
                .configure(|c| {
                    c.control.model_pool.enabled = true;
                    c.control.model_pool.name = pool;
                })
                .build()
                .unwrap()
        })
    };
    let (e1, e2, other) = (
        build("shared-gauges"),
        build("shared-gauges"),
        build("another"),
    );
    let pool = e1.model_pool().unwrap();
    assert!(Arc::ptr_eq(pool, e2.model_pool().unwrap()));
    assert!(!Arc::ptr_eq(pool, other.model_pool().unwrap()));
    let text = handle.render();
    let line = text
        .lines()
        .find(|l| l.starts_with("ragjet_pool_loaded_bytes{pool=\"shared-gauges\"}"))
        .unwrap_or_else(|| panic!("no loaded-bytes gauge in\n{text}"));
    let bytes: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(bytes, pool.loaded_bytes() as f64);
    assert!(bytes > 0.0);

    e1.ingest(docs()).unwrap();
    metrics::with_local_recorder(&recorder, || {
        e1.query("hacker", &QueryOptions::new().top_k(3).rerank(2))
    })
    .unwrap();
    let text = handle.render();
    assert!(
        text.lines().any(
            |l| l.starts_with("ragjet_pool_active_requests{pool=\"shared-gauges\"")
                && l.ends_with(" 0")
        ),
        "the active-request gauge was set and released:\n{text}"
    );
}

/// `[control.autoscale]`: the engine's own signals feed the advice, on
/// `Engine::scale_advice` and on `GET /scale`; refused queries raise the
/// error rate, which holds the count.
#[test]
fn the_engine_serves_advice_from_its_own_signals() {
    let e = common::builder()
        .advice_endpoint("127.0.0.1:0".parse().unwrap())
        .configure(|c| {
            c.control.autoscale.replicas = 3;
            // Idle by this measure: the advice is about the rules.
            c.control.autoscale.concurrency = 1e9;
            c.control.autoscale.policy.p95_target_ms = 600_000.0;
            c.control.rate_limit.enabled = true;
            c.control.rate_limit.queries_per_second = 1e-6;
            c.control.rate_limit.query_burst = 2.0;
        })
        .build()
        .unwrap();
    let addr = e.advice_addr().expect("an advice endpoint");
    e.ingest(docs()).unwrap();
    let o = QueryOptions::new().top_k(2);
    e.query("hacker", &o).unwrap();
    e.query("kludge", &o).unwrap();
    let s = e.scale_signals();
    assert_eq!((s.replicas, s.queue_depth, s.error_rate), (3, 0, 0.0));
    assert!(
        s.p95_ms > 0.0 && s.utilisation > 0.0 && s.utilisation < 1e-3,
        "{s:?}"
    );
    let advice = e.scale_advice().unwrap();
    assert_eq!(advice.action, ScaleAction::Down, "{advice:?}");
    let r = get(addr, "/scale");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.contains("\"action\":\"down\"") && r.contains("\"desired_replicas\":1"),
        "{r}"
    );

    for _ in 0..2 {
        let err = e.query("hacker", &o).unwrap_err();
        assert!(
            matches!(err, Error::Overloaded(Refusal::RateLimited { .. })),
            "{err}"
        );
    }
    let s = e.scale_signals();
    assert_eq!(s.error_rate, 0.5, "{s:?}");
    let r = get(addr, "/scale");
    assert!(
        r.contains("\"action\":\"hold\"") && r.contains("error rate"),
        "{r}"
    );
    drop(e);
    // The endpoint stops with the engine.
    assert!(TcpStream::connect(addr).is_err());
}

/// The new `[control]` tables are checked when the engine is built.
#[test]
fn bad_control_tables_are_refused() {
    for (toml, key) in [
        ("[control.routing]\nenabled = true\n", "control.routing.routes"),
        (
            "[control.experiment]\nenabled = true\n[[control.experiment.variants]]\nname = \"a\"\n",
            "control.experiment.variants",
        ),
        (
            "[control.experiment]\nenabled = true\n[[control.experiment.variants]]\nname = \"a\"\n\
             [[control.experiment.variants]]\nname = \"b\"\nmode = \"fuzzy\"\n",
            "control.experiment.variants.b.mode",
        ),
        ("[control.autoscale]\nenabled = true\naddr = \"nowhere\"\n", "control.autoscale.addr"),
        (
            "[control.autoscale.policy]\nscale_up_utilisation = 0.2\n[control.autoscale]\nenabled = true\n",
            "control.autoscale.policy",
        ),
        ("[control.model_pool]\nenabled = true\nmax_models = 0\n", "control.model_pool.max_models"),
    ] {
        let err = ragjet::EngineConfig::from_toml_str(toml)
            .and_then(|c| c.validate())
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { key: k, .. } if k == key),
            "{toml}: {err}"
        );
    }
}
