//! L3 tests against a real `redis-server`.
//!
//! `RAGJET_TEST_REDIS_URL` (e.g. `redis://127.0.0.1:6390/0`) names a server
//! for the shared-tier tests; the outage test starts and kills its own
//! `redis-server` (from `RAGJET_TEST_REDIS_SERVER`, else `PATH`). Without
//! them the tests are skipped with a note, except under CI (`CI` set), where
//! they fail so a missing server cannot pass unnoticed.
#![cfg(feature = "redis")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ragjet_cache::*;

fn require(what: &str) -> Option<()> {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is not available but CI is set: .ci/run must install and start redis-server and export RAGJET_TEST_REDIS_URL");
    }
    eprintln!("note: skipping Redis test, {what} is not available");
    None
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

fn redis_cfg(url: &str, prefix: &str) -> RedisConfig {
    let mut c = RedisConfig::new(url);
    c.key_prefix = prefix.to_string();
    c.timeout = Duration::from_millis(500);
    c
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
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_connection().unwrap();
    let rkey = format!("{p}{}", bad.to_hex());
    redis::cmd("SET")
        .arg(&rkey)
        .arg(b"\x00garbage".as_slice())
        .query::<()>(&mut con)
        .unwrap();
    assert_eq!(cache.get::<String>(&bad), None);
    let left: Option<Vec<u8>> = redis::cmd("GET").arg(&rkey).query(&mut con).unwrap();
    assert_eq!(left, None, "damaged entry dropped");
    assert_eq!(cache.stats().l3.unwrap().errors, 0);
    cache.clear(TierKind::L3).unwrap();
}

/// A redis-server of our own, killed on drop.
struct OwnServer {
    child: Child,
    port: u16,
}

impl OwnServer {
    fn start(port: u16) -> Option<Self> {
        let bin =
            std::env::var("RAGJET_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = match Command::new(&bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(_) => {
                let _ = require(&format!("the redis-server binary ({bin})"));
                return None;
            }
        };
        let server = OwnServer { child, port };
        // Wait until it answers PING (polling, not a timed assertion).
        let client = redis::Client::open(server.url()).unwrap();
        for _ in 0..500 {
            if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(100)) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return Some(server);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {port} did not start");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn requests_are_served_while_redis_is_down() {
    let port = free_port();
    let Some(mut server) = OwnServer::start(port) else {
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
    let Some(_server2) = OwnServer::start(port) else {
        return;
    };
    cache.put(&k("after"), &"stored after".to_string()).unwrap();
    assert_eq!(
        l3_only.get::<String>(&k("after")).as_deref(),
        Some("stored after")
    );
}
