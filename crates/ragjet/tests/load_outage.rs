//! The concurrent load of `tests/load.rs` against an Engine whose embedding
//! and retrieval caches have a Redis tier (L3), with `redis-server` killed a
//! third of the way through the run and started again at two thirds.
//!
//! What it proves: every operation of the 8 threads still succeeds and the
//! final state still equals the sequential model (requests are served from
//! L1/L2 and the model while L3 is down); the failed L3 calls are counted
//! (`ragjet_cache_requests_total{tier="l3",result="error"}`); and once the
//! server is back the tier recovers by itself: L3 calls answer again and
//! new entries land in the new server.
//!
//! It starts its own `redis-server` (from `RAGJET_TEST_REDIS_SERVER`, else
//! `PATH`) on a free loopback port. Without one it FAILS, so CI cannot pass
//! it unnoticed; a developer without Redis opts out knowingly with
//! `RAGJET_SKIP_REDIS_TESTS=1`. Needs `--features redis`; CI runs
//! `cargo test -p ragjet --features redis --test load_outage` at 300
//! operations per thread, the figure in `docs/reliability.md` is
//!
//! ```text
//! RAGJET_LOAD_OPS=10000 cargo test -p ragjet --features redis --test load_outage -- --nocapture
//! ```
//!
//! Its own binary: it installs the global metrics recorder.
#![cfg(feature = "redis")]

#[path = "load_mix/mod.rs"]
mod load_mix;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ragjet::{Document, Engine, QueryOptions};

use load_mix::*;

#[path = "../../ragjet-cache/tests/support/redis_server.rs"]
mod redis_server;
use redis_server::{free_port, OwnServer};

/// What this test skips when Redis is missing and skipping is allowed.
const SKIPPED: &str = "the Engine load test with a Redis outage";

/// Sums `ragjet_cache_requests_total` over both caches for one tier and
/// one result.
fn requests(text: &str, tier: &str, result: &str) -> u64 {
    let labels = [format!("tier=\"{tier}\""), format!("result=\"{result}\"")];
    text.lines()
        .filter(|l| l.starts_with("ragjet_cache_requests_total{"))
        .filter(|l| labels.iter().all(|x| l.contains(x.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[derive(Debug, Clone, Copy)]
struct Snap {
    l3_ok: u64,
    l3_err: u64,
    l12_hits: u64,
}

fn snap(text: &str) -> Snap {
    Snap {
        l3_ok: requests(text, "l3", "hit") + requests(text, "l3", "miss"),
        l3_err: requests(text, "l3", "error"),
        l12_hits: requests(text, "l1", "hit") + requests(text, "l2", "hit"),
    }
}

#[test]
fn redis_killed_during_the_load_run() {
    let ops = std::env::var("RAGJET_LOAD_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let port = free_port();
    let Some(server) = OwnServer::start(port, SKIPPED) else {
        return;
    };
    let (recorder, handle) = ragjet::telemetry::build_recorder().unwrap();
    metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .model_dir(tiny_model())
        .num_threads(1)
        .chunking(48, 8)
        .cache_dir(dir.path())
        .redis_url(server.url())
        .redis_secret("ragjet load outage test: not a real secret")
        .build()
        .unwrap();

    let counts = Counts::default();
    let total = (THREADS * ops) as u64;
    let finished = AtomicBool::new(false);
    // Kill at a third of the operations begun, start again at two thirds.
    let controller = |mut server: OwnServer| {
        let wait_for = |n: u64| {
            while counts.begun.load(Ordering::Relaxed) < n && !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        wait_for(total / 3);
        server.stop();
        let killed = (Instant::now(), snap(&handle.render()));
        wait_for(2 * total / 3);
        let restarted_at = Instant::now();
        let at_restart = snap(&handle.render());
        let server = OwnServer::start(port, SKIPPED).expect("redis-server started before");
        (server, killed, restarted_at, at_restart)
    };
    let (models, took, (server, killed, restarted_at, at_restart)) = std::thread::scope(|s| {
        let ctl = s.spawn(|| controller(server));
        let (models, took) = run(&engine, ops, &counts);
        finished.store(true, Ordering::Relaxed);
        (models, took, ctl.join().unwrap())
    });
    let at_end = snap(&handle.render());
    let docs = check_final(&engine, &models);
    let (killed_at, at_kill) = killed;
    let outage = restarted_at - killed_at;
    let during = |a: Snap, b: Snap| {
        (
            b.l3_ok - a.l3_ok,
            b.l3_err - a.l3_err,
            b.l12_hits - a.l12_hits,
        )
    };
    let (ok_down, err_down, l12_down) = during(at_kill, at_restart);
    let (ok_after, err_after, _) = during(at_restart, at_end);

    // Down: L3 calls fail and are counted, L1/L2 keep answering.
    assert!(err_down > 0, "no L3 error counted during the outage");
    assert!(l12_down > 0, "no L1/L2 hit during the outage");

    // Back: after the back-off (`retry_after`, 1 s by default) the first
    // call reconnects; fresh documents go through every tier again.
    std::thread::sleep(Duration::from_millis(1200));
    let before = snap(&handle.render());
    let fresh: Vec<Document> = (0..16)
        .map(|i| {
            Document::new(
                format!("after-{i}"),
                format!("recovered passage {i} zzrecov{i}"),
            )
        })
        .collect();
    engine.ingest(fresh).unwrap();
    for i in 0..16 {
        engine
            .query(&format!("zzrecov{i}"), &QueryOptions::new().top_k(3))
            .unwrap();
    }
    let after = snap(&handle.render());
    let (ok_rec, err_rec, _) = during(before, after);
    let keys = server.dbsize().expect("the restarted server answers");
    println!(
        "load with a Redis outage: {}\n  outage {:.2} s: L3 {err_down} errors, {ok_down} answers; \
         L1/L2 {l12_down} hits\n  after the restart, during the run: L3 {ok_after} answers, \
         {err_after} errors\n  recovery phase (16 ingests, 16 queries): L3 {ok_rec} answers, \
         {err_rec} errors; {keys} keys in the restarted server",
        summary(&counts, ops, took.as_secs_f64(), docs),
        outage.as_secs_f64(),
    );
    assert!(ok_rec >= 16, "the L3 tier did not answer after the restart");
    assert!(
        err_rec * 10 <= ok_rec,
        "L3 still failing after the restart: {err_rec} errors, {ok_rec} answers"
    );
    assert!(keys > 0, "nothing written to the restarted server");
}
