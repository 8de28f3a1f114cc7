//! L3 tests against a real `redis-server`.
//!
//! `RAGJET_TEST_REDIS_URL` (e.g. `redis://127.0.0.1:6390/0`) names a server
//! for the shared-tier tests; the outage test starts and kills its own
//! `redis-server` (from `RAGJET_TEST_REDIS_SERVER`, else `PATH`).
//! `scripts/test.sh` installs and starts one. Without them every test here
//! FAILS, so a missing server cannot pass unnoticed; a developer without
//! Redis opts out knowingly with `RAGJET_SKIP_REDIS_TESTS=1`, which skips
//! them with a notice.
#![cfg(feature = "redis")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ragjet_cache::*;

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::{free_port, OwnServer};

/// What these tests skip when Redis is missing and skipping is allowed.
const SKIPPED: &str = "a Redis tier test (the L3 tier is NOT tested)";

fn require(what: &str) -> Option<()> {
    redis_server::require(what, SKIPPED)
}

fn redis_url() -> Option<String> {
    match std::env::var("RAGJET_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => require("RAGJET_TEST_REDIS_URL").map(|_| String::new()),
    }
}

/// A key prefix no other test or run uses.
fn prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("ragjet-test:{test}:{}:{nanos}:", std::process::id())
}

/// This test deployment's MAC key.
fn mac_key() -> [u8; 32] {
    RedisConfig::mac_key_from_secret("ragjet redis tests: not a real secret").unwrap()
}

fn redis_cfg(url: &str, prefix: &str) -> RedisConfig {
    let mut c = RedisConfig::new(url, mac_key());
    c.key_prefix = prefix.to_string();
    c.timeout = Duration::from_millis(500);
    c
}

fn raw_conn(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn raw_get(con: &mut redis::Connection, k: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(k).query(con).unwrap()
}

fn raw_set(con: &mut redis::Connection, k: &str, v: &[u8]) {
    redis::cmd("SET").arg(k).arg(v).query::<()>(con).unwrap();
}

fn mem() -> MemoryConfig {
    MemoryConfig {
        max_bytes: 1 << 20,
        estimated_entries: 100,
        max_value_bytes: 1 << 20,
    }
}

#[test]
fn replicas_share_entries_through_l3_with_promotion() {
    let Some(url) = redis_url() else { return };
    let p = prefix("share");
    let a = TieredCache::builder()
        .memory(mem())
        .redis(redis_cfg(&url, &p))
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let b = TieredCache::builder()
        .memory(mem())
        .disk(DiskConfig::new(dir.path().join("b.redb")))
        .redis(redis_cfg(&url, &p))
        .build()
        .unwrap();
    let s = Scope::tenant("t");
    let k = s.key("test").str("shared").finish();
    let v: Vec<f32> = (0..384).map(|i| i as f32 / 384.0).collect();
    a.put(&k, &v).unwrap();
    assert_eq!(
        b.get::<Vec<f32>>(&k),
        Some(v.clone()),
        "replica b reads a's write"
    );
    let st = b.stats();
    assert_eq!(st.l3.unwrap().hits, 1);
    assert_eq!(st.l3.unwrap().errors, 0);
    // Promoted into b's L2 and L1.
    assert_eq!(st.l1.unwrap().entries, 1);
    assert_eq!(st.l2.unwrap().entries, 1);
    assert_eq!(b.get::<Vec<f32>>(&k), Some(v));
    assert_eq!(b.stats().l1.unwrap().hits, 1);
    assert_eq!(
        b.stats().l3.unwrap().hits,
        1,
        "second read did not reach Redis"
    );

    // Tenant isolation in L3: tenant u asks for the same logical key.
    let other = Scope::tenant("u").key("test").str("shared").finish();
    assert_eq!(b.get::<Vec<f32>>(&other), None);

    b.clear(TierKind::L3).unwrap();
    let c = TieredCache::builder()
        .redis(redis_cfg(&url, &p))
        .build()
        .unwrap();
    assert_eq!(c.get::<Vec<f32>>(&k), None, "clear(L3) removed the entry");
}

#[test]
fn l3_expiry_and_damaged_entries() {
    let Some(url) = redis_url() else { return };
    let p = prefix("damage");
    let clock = ManualClock::new(1_700_000_000_000);
    let cache = TieredCache::builder()
        .redis(redis_cfg(&url, &p))
        .clock(std::sync::Arc::new(clock.clone()))
        .build()
        .unwrap();
    let s = Scope::tenant("t");
    let k = s.key("test").str("ttl").finish();
    cache
        .put_with_ttl(&k, &"x".to_string(), Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(cache.get::<String>(&k).as_deref(), Some("x"));
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        cache.get::<String>(&k),
        None,
        "expiry in the header is honoured"
    );

    // Garbage written straight into Redis under a cache key is a miss and
    // is deleted.
    let bad = s.key("test").str("bad").finish();
    let mut con = raw_conn(&url);
    let rkey = format!("{p}{}", bad.to_hex());
    raw_set(&mut con, &rkey, b"\x00garbage");
    assert_eq!(cache.get::<String>(&bad), None);
    assert_eq!(raw_get(&mut con, &rkey), None, "damaged entry dropped");
    // So is a value of another Redis type under our key, without taking
    // the tier down: the next lookup still reaches Redis.
    let list = s.key("test").str("list").finish();
    let list_key = format!("{p}{}", list.to_hex());
    redis::cmd("RPUSH")
        .arg(&list_key)
        .arg("x")
        .query::<()>(&mut con)
        .unwrap();
    assert_eq!(cache.get::<String>(&list), None);
    cache.put(&list, &"y".to_string()).unwrap();
    assert_eq!(cache.get::<String>(&list).as_deref(), Some("y"));
    let st = cache.stats().l3.unwrap();
    assert_eq!((st.errors, st.rejected), (0, 2), "{st:?}");
    cache.clear(TierKind::L3).unwrap();
}

/// Renders the figures a Prometheus recorder got while `f` ran.
fn with_recorder(f: impl FnOnce()) -> String {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    ::metrics::with_local_recorder(&recorder, f);
    handle.render()
}

fn rejected_total(text: &str, reason: &str) -> u64 {
    let prefix = format!(
        "ragjet_cache_rejected_total{{cache=\"generic\",tier=\"l3\",reason=\"{reason}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.parse().unwrap())
}

/// Someone who can write to Redis but lacks the deployment's MAC key
/// cannot plant answers: not as a well-formed entry of their own, not by
/// moving a tenant's entry under another tenant's key, not by editing the
/// key check of such an entry.
#[test]
fn l3_values_without_the_deployments_mac_are_misses() {
    let Some(url) = redis_url() else { return };
    let p = prefix("mac");
    let cache = TieredCache::builder()
        .redis(redis_cfg(&url, &p))
        .build()
        .unwrap();
    let mut attacker_cfg = redis_cfg(&url, &p);
    attacker_cfg.mac_key =
        RedisConfig::mac_key_from_secret("someone else's secret, not ours").unwrap();
    let attacker = TieredCache::builder().redis(attacker_cfg).build().unwrap();
    let mut con = raw_conn(&url);
    let rkey = |k: &CacheKey| format!("{p}{}", k.to_hex());

    let a = Scope::tenant("a").key("answers").str("q").finish();
    let b = Scope::tenant("b").key("answers").str("q").finish();
    let text = with_recorder(|| {
        // 1. A well-formed entry written with another key.
        attacker.put(&b, &"planted".to_string()).unwrap();
        assert!(raw_get(&mut con, &rkey(&b)).is_some());
        assert_eq!(cache.get::<String>(&b), None, "planted value served");
        assert_eq!(raw_get(&mut con, &rkey(&b)), None, "refused entry deleted");

        // 2. Tenant a's genuine entry copied under tenant b's key.
        cache.put(&a, &"a's answer".to_string()).unwrap();
        let genuine = raw_get(&mut con, &rkey(&a)).unwrap();
        raw_set(&mut con, &rkey(&b), &genuine);
        assert_eq!(cache.get::<String>(&b), None, "a's value served to b");

        // 3. The same, with the envelope's key check (bytes 24..32 after
        // the 32-byte MAC) rewritten for b: only the MAC catches this one.
        let mut moved = genuine.clone();
        moved[32 + 24..32 + 32].copy_from_slice(&b.as_bytes()[..8]);
        raw_set(&mut con, &rkey(&b), &moved);
        assert_eq!(cache.get::<String>(&b), None, "edited value served to b");

        // The genuine entry still serves its own tenant.
        assert_eq!(cache.get::<String>(&a).as_deref(), Some("a's answer"));
    });
    let st = cache.stats().l3.unwrap();
    assert_eq!((st.rejected, st.hits, st.errors), (3, 1, 0), "{st:?}");
    assert_eq!(rejected_total(&text, "auth"), 3, "{text}");
    cache.clear(TierKind::L3).unwrap();
}

/// A value above `max_value_bytes` is refused after reading at most one
/// byte past the cap, before any MAC check or decoding.
#[test]
fn l3_oversized_values_are_refused_unread() {
    let Some(url) = redis_url() else { return };
    let p = prefix("size");
    let mut cfg = redis_cfg(&url, &p);
    cfg.max_value_bytes = 4096;
    let cache = TieredCache::builder().redis(cfg.clone()).build().unwrap();
    let mut con = raw_conn(&url);
    let s = Scope::tenant("t");
    let big = s.key("test").str("big").finish();
    let big_key = format!("{p}{}", big.to_hex());

    // 64 MiB under a cache key (Redis builds it with SETRANGE, so the test
    // sends only a few bytes): a lookup must not fetch it.
    redis::cmd("SETRANGE")
        .arg(&big_key)
        .arg((64 << 20) - 1)
        .arg(b"x".as_slice())
        .query::<()>(&mut con)
        .unwrap();
    let sent_before = net_output_bytes(&mut con);
    let text = with_recorder(|| assert_eq!(cache.get::<Vec<u8>>(&big), None));
    let sent = net_output_bytes(&mut con) - sent_before;
    // Other tests share the server, but none sends megabytes.
    assert!(
        sent < 8 << 20,
        "Redis sent {sent} bytes for one refused lookup"
    );
    assert_eq!(rejected_total(&text, "oversize"), 1, "{text}");
    assert_eq!(raw_get(&mut con, &big_key), None, "refused entry deleted");
    let st = cache.stats().l3.unwrap();
    assert_eq!((st.rejected, st.misses, st.errors), (1, 1, 0), "{st:?}");

    // Writes above the cap skip L3 (and drop an older copy); at the cap
    // they round-trip.
    let k = s.key("test").str("k").finish();
    cache.put(&k, &vec![1u8; 100]).unwrap();
    cache.put(&k, &vec![2u8; 5000]).unwrap();
    assert_eq!(raw_get(&mut con, &format!("{p}{}", k.to_hex())), None);
    assert_eq!(cache.get::<Vec<u8>>(&k), None, "no stale value served");
    let fits = vec![3u8; 4096 - 40 - 2]; // header + 2-byte length prefix
    cache.put(&k, &fits).unwrap();
    assert_eq!(cache.get::<Vec<u8>>(&k), Some(fits));
    cache.clear(TierKind::L3).unwrap();
}

/// Bytes Redis has sent to all clients so far (`INFO stats`).
fn net_output_bytes(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .expect("total_net_output_bytes in INFO stats")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn l3_config_needs_a_real_key() {
    let url = "redis://127.0.0.1:1/0";
    let zero = RedisConfig::new(url, [0u8; 32]);
    assert!(matches!(
        TieredCache::builder().redis(zero).build(),
        Err(CacheError::InvalidOption(_))
    ));
    assert!(RedisConfig::mac_key_from_secret("short").is_err());
    let k1 = RedisConfig::mac_key_from_secret("0123456789abcdef-one").unwrap();
    let k2 = RedisConfig::mac_key_from_secret("0123456789abcdef-two").unwrap();
    assert_ne!(k1, k2);
    assert_eq!(
        k1,
        RedisConfig::mac_key_from_secret("0123456789abcdef-one").unwrap()
    );
    let shown = format!("{:?}", RedisConfig::new(url, k1));
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(
        !shown.contains(&format!("{k1:?}")),
        "the key leaks: {shown}"
    );
}

#[test]
fn requests_are_served_while_redis_is_down() {
    let port = free_port();
    let Some(mut server) = OwnServer::start(port, SKIPPED) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut rc = redis_cfg(&server.url(), "ragjet-outage:");
    rc.timeout = Duration::from_millis(100);
    rc.retry_after = Duration::ZERO; // retry on every call, so recovery needs no waiting
    let cache = TieredCache::builder()
        .memory(mem())
        .disk(DiskConfig::new(dir.path().join("l2.redb")))
        .redis(rc.clone())
        .build()
        .unwrap();
    let l3_only = TieredCache::builder().redis(rc).build().unwrap();
    let s = Scope::tenant("t");
    let k = |n: &str| s.key("test").str(n).finish();

    cache
        .put(&k("before"), &"stored before".to_string())
        .unwrap();
    assert_eq!(
        l3_only.get::<String>(&k("before")).as_deref(),
        Some("stored before")
    );
    assert_eq!(cache.stats().l3.unwrap().errors, 0);

    server.stop();

    // Reads of known keys are served by L1/L2; the L3 failures are counted.
    assert_eq!(
        cache.get::<String>(&k("before")).as_deref(),
        Some("stored before")
    );
    // Writes succeed for the caller.
    cache
        .put(&k("during"), &"stored during".to_string())
        .unwrap();
    assert_eq!(
        cache.get::<String>(&k("during")).as_deref(),
        Some("stored during")
    );
    // A miss is a miss, not an error.
    assert_eq!(cache.get::<String>(&k("absent")), None);
    let v: Result<String, ()> = cache.get_or_compute(&k("computed"), || Ok("computed".into()));
    assert_eq!(v.as_deref(), Ok("computed"));
    // A cache with Redis as its only tier degrades to always-miss.
    assert_eq!(l3_only.get::<String>(&k("before")), None);
    l3_only.put(&k("x"), &"x".to_string()).unwrap();
    let st = cache.stats().l3.unwrap();
    assert!(st.errors >= 3, "{st:?}");
    assert!(l3_only.stats().l3.unwrap().errors >= 2);

    // Back up (empty, no persistence): the tier works again.
    let Some(_server2) = OwnServer::start(port, SKIPPED) else {
        return;
    };
    cache.put(&k("after"), &"stored after".to_string()).unwrap();
    assert_eq!(
        l3_only.get::<String>(&k("after")).as_deref(),
        Some("stored after")
    );
}
