//! The production controls wired together around a flaky "LLM", as an
//! operator would run them: a rate limit per tenant, a circuit breaker
//! with retries and a dead-letter store, a router choosing the model per
//! question, an A/B test, a model pool, and the autoscaling advice served
//! beside `/metrics`.
//!
//! ```text
//! cargo run -p ragjet --example operations
//! ```
//!
//! It needs no model and runs in about a second: time is a manual clock
//! (back-off waits advance it), the LLM is a closure that times out while
//! it is "down", and the pooled "models" are strings. Everything else is
//! the real code; docs/controls.md explains each control and its defaults.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ragjet::control::{
    AdviceServer, BreakerConfig, CircuitBreaker, Clock, DeadLetterStore, Experiment, ManualClock,
    ModelPool, ModelRoute, PoolConfig, RateLimit, RateLimiter, RetryError, RetryPolicy,
    RouteRequest, Router, ScalePolicy, ScaleSignals,
};
use ragjet::telemetry::{build_recorder, MetricsServer};

#[derive(Debug)]
enum LlmError {
    Timeout,
    CircuitOpen,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Metrics: the catalogue's recorder and /metrics on a free port.
    let (recorder, handle) = build_recorder()?;
    metrics::set_global_recorder(recorder)?;
    let metrics_server = MetricsServer::start("127.0.0.1:0".parse()?, handle.clone())?;

    let clock = ManualClock::new(Duration::from_secs(1_800_000_000));
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let dir = std::env::temp_dir().join(format!("ragjet-operations-{}", std::process::id()));

    // 1. Rate limit per tenant: 2 requests a second, bursts of 3.
    let limiter = RateLimiter::new("api", RateLimit::new(2.0, 3.0))?.with_clock(shared.clone());
    let admitted = (0..5)
        .filter(|_| limiter.try_acquire("tenant-a", 1.0).is_ok())
        .count();
    println!("rate limit: tenant-a sent 5 at once, {admitted} admitted");

    // 2. A flaky LLM behind a breaker, retries and a dead-letter store.
    let breaker = CircuitBreaker::new(
        "llm",
        BreakerConfig {
            consecutive_failures: 3,
            open_for: Duration::from_secs(30),
            ..BreakerConfig::default()
        },
    )?
    .with_clock(shared.clone());
    let retry = RetryPolicy::new(3)?
        .delays(Duration::from_millis(200), Duration::from_secs(2))?
        .operation("llm.complete")
        .with_clock(shared.clone());
    let letters = DeadLetterStore::open("llm", dir.join("llm-dead-letters.log"))?;
    let down = AtomicBool::new(false);
    let reached = AtomicU32::new(0);
    let llm = |prompt: &str| -> Result<String, LlmError> {
        reached.fetch_add(1, Ordering::SeqCst);
        if down.load(Ordering::SeqCst) {
            Err(LlmError::Timeout)
        } else {
            Ok(format!("answer to {prompt:?}"))
        }
    };
    let ask = |prompt: &str| -> Result<String, String> {
        let r = retry.run(
            |_: &LlmError| true, // timeouts and an open circuit are both transient
            |_| {
                let permit = breaker.acquire().map_err(|_| LlmError::CircuitOpen)?;
                match llm(prompt) {
                    Ok(a) => {
                        permit.success();
                        Ok(a)
                    }
                    Err(e) => {
                        permit.failure();
                        Err(e)
                    }
                }
            },
        );
        r.map_err(|e| {
            let (attempts, last) = match e {
                RetryError::Exhausted { attempts, last } => (attempts, last),
                RetryError::Permanent(last) => (1, last),
            };
            let letter = letters
                .push("llm.complete", prompt, format!("{last:?}"), attempts)
                .expect("dead letter stored");
            format!(
                "{last:?} after {attempts} attempts, dead letter {}",
                letter.id
            )
        })
    };
    println!("llm: {}", ask("what is a circuit breaker?")?);
    down.store(true, Ordering::SeqCst);
    for q in ["why did the build fail?", "summarise the incident"] {
        match ask(q) {
            Ok(a) => println!("llm: {a}"),
            Err(e) => println!("llm: {q:?} failed: {e}"),
        }
    }
    println!(
        "breaker: {} after {} calls reached the LLM",
        breaker.state().as_str(),
        reached.load(Ordering::SeqCst)
    );
    down.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(30));
    println!("llm: {}", ask("is it back?")?);
    let report = letters.redrive(|l| llm(&l.payload).map(|_| ()).map_err(|e| format!("{e:?}")))?;
    println!(
        "dead letters: {} re-driven, {} failed, {} left; breaker {}",
        report.redriven.len(),
        report.failed.len(),
        letters.len(),
        breaker.state().as_str()
    );

    // 3. Routing: the cheap model for simple questions.
    let router = Router::new(
        "chat",
        vec![
            ModelRoute::new("simple", "small-llm", 0.4, 0.15, 400.0),
            ModelRoute::new("complex", "large-llm", 1.0, 2.5, 2500.0),
        ],
    )?;
    for q in [
        "what is the capital of France?",
        "compare the consistency models of Raft and Paxos",
    ] {
        let d = router.route(&RouteRequest {
            text: q,
            ..Default::default()
        })?;
        println!(
            "route: {q:?} -> {} (complexity {:.2}, {:?})",
            d.model, d.complexity.score, d.reason
        );
    }

    // 4. An A/B test of two prompts.
    let exp = Experiment::new("prompt-v2", vec![("control".into(), 1), ("v2".into(), 1)])?
        .with_log(dir.join("ab-assignments.jsonl"))?;
    for i in 0..200u64 {
        let variant = exp.assign(&format!("user-{i}"))?;
        let base = if variant == "v2" { 180 } else { 210 };
        exp.record_latency(&variant, Duration::from_millis(base + i % 40))?;
        exp.record_cache(&variant, i % 3 == 0)?;
    }
    let summary = exp.summary();
    let lat = summary.comparisons[0].latency_ms.expect("enough samples");
    println!(
        "a/b: v2 - control latency {:+.1} ms, 95 % CI [{:.1}, {:.1}], significant: {}",
        lat.difference,
        lat.low,
        lat.high,
        lat.significant()
    );

    // 5. A pool of embedding models loaded on demand.
    let loads = Arc::new(Mutex::new(Vec::new()));
    let l = loads.clone();
    let pool = ModelPool::with_clock(
        "embedders",
        PoolConfig {
            max_models: 2,
            ..PoolConfig::default()
        },
        move |name: &str| {
            l.lock().unwrap().push(name.to_owned());
            Ok((format!("model {name}"), 90 << 20))
        },
        shared.clone(),
    )?;
    for name in ["minilm", "bge-small", "minilm", "e5-base"] {
        let m = pool.get(name)?;
        clock.advance(Duration::from_secs(1));
        drop(m);
    }
    println!(
        "pool: loaded {:?} in turn, holding {:?}",
        loads.lock().unwrap(),
        pool.loaded_models()
    );

    // 6. Scaling advice beside /metrics.
    let signals = ScaleSignals {
        replicas: 3,
        queue_depth: 12,
        p95_ms: 640.0,
        utilisation: 0.91,
        error_rate: 0.002,
        seconds_since_last_scale: Some(900.0),
    };
    let advice = AdviceServer::start("127.0.0.1:0".parse()?, ScalePolicy::default(), move || {
        Some(signals.clone())
    })?;
    let mut s = TcpStream::connect(advice.local_addr())?;
    s.write_all(b"GET /scale HTTP/1.1\r\nHost: ops\r\n\r\n")?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    println!("advice: GET http://{}/scale -> {body}", advice.local_addr());

    let text = handle.render();
    println!("metrics (http://{}/metrics):", metrics_server.local_addr());
    for line in text.lines().filter(|l| {
        [
            "ragjet_rate_limited_total",
            "ragjet_circuit_state",
            "ragjet_retries_total",
            "ragjet_dead_letters",
            "ragjet_route_decisions_total",
            "ragjet_pool_evictions_total",
        ]
        .iter()
        .any(|m| l.starts_with(m))
    }) {
        println!("  {line}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
