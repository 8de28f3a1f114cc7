//! Security rules of the facade: a saved engine is read and written only
//! inside its directory (no user string becomes a path, no symbolic link
//! planted in a saved state is followed), and the `/scale` endpoint binds
//! loopback by default and drops slow clients without stopping service.
//! (Tenant isolation is a property test in `ragjet-cache`; `/metrics` is
//! tested in `ragjet-telemetry/tests/security_endpoints.rs`.)

mod common;

use std::fs;
use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ragjet::control::{AdviceServer, ScalePolicy, DEFAULT_ADVICE_ADDR};
use ragjet::{Document, Engine, ErrorKind, IngestOptions, QueryOptions};

/// Every path under `root`, links not followed.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out.sort();
    out
}

const HOSTILE: &[&str] = &[
    "../../escape",
    "/etc/passwd",
    "..",
    "a/../../b",
    "C:\\x",
    "nul\0",
];

/// Namespaces and document ids that look like paths are stored as data:
/// after ingesting, saving and reopening, nothing exists outside the store
/// directory and every name comes back as given.
#[test]
fn names_never_become_paths() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("deep/store");
    let e = common::builder().store_dir(&store).build().unwrap();
    for (i, name) in HOSTILE.iter().enumerate() {
        let r = e
            .ingest_with(
                vec![Document::new(
                    *name,
                    format!("document number {i} about parsers"),
                )],
                &IngestOptions {
                    namespace: Some(name),
                    ..IngestOptions::default()
                },
            )
            .unwrap();
        assert!(r.failed.is_empty(), "{name:?}: {:?}", r.failed);
    }
    e.save(&store).unwrap();
    drop(e);
    let outside: Vec<_> = tree(root.path())
        .into_iter()
        .filter(|p| !p.starts_with(&store) && p != &root.path().join("deep"))
        .collect();
    assert!(outside.is_empty(), "written outside the store: {outside:?}");
    let e = Engine::open(&store).unwrap();
    for name in HOSTILE {
        let a = e
            .query("parsers", &QueryOptions::new().top_k(1).namespace(*name))
            .unwrap();
        assert_eq!(a.hits[0].doc_id, *name);
    }
}

fn state_dir(store: &Path) -> PathBuf {
    fs::read_dir(store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("state-") && !n.ends_with(".tmp")
        })
        .expect("a saved state")
}

/// Replaces `path` by a link to a copy of it at `aside`: same bytes, same
/// checksums, but outside the directory.
fn link_out(path: &Path, aside: &Path) {
    fs::rename(path, aside).unwrap();
    std::os::unix::fs::symlink(aside, path).unwrap();
}

fn link_back(path: &Path, aside: &Path) {
    fs::remove_file(path).unwrap();
    fs::rename(aside, path).unwrap();
}

/// Every part of a saved state moved out of the directory and linked back
/// in (identical bytes, so only the link is wrong) is refused as a storage
/// error, and the state opens again once the part is back.
#[cfg(unix)]
#[test]
fn a_saved_state_does_not_follow_links() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let e = common::builder().build().unwrap();
    e.ingest(common::corpus()[..3].to_vec()).unwrap();
    e.save(&store).unwrap();
    drop(e);
    Engine::open(&store).unwrap();
    let state = state_dir(&store);
    let state_name = state.file_name().unwrap().to_owned();
    let mut parts = vec![
        store.join("ENGINE"),
        state.clone(),
        state.join("MANIFEST.json"),
        state.join("config.toml"),
        state.join("docs.json"),
        state.join("index"),
        state.join("bm25"),
        state.join("bm25/ns-0"),
    ];
    // The files inside the index and BM25 saves are ragjet-retrieval's
    // (tests/security_paths.rs); their entry points are checked here.
    parts.push(state.join("index/CURRENT"));
    parts.push(state.join("bm25/ns-0/CURRENT"));
    for (i, part) in parts.iter().enumerate() {
        let rel = part.strip_prefix(&store).unwrap();
        let aside = root.path().join(format!("aside-{i}"));
        link_out(part, &aside);
        let err = Engine::open(&store).expect_err(&format!("{rel:?} linked outside"));
        assert_eq!(err.kind(), ErrorKind::Storage, "{rel:?}: {err}");
        assert!(err.to_string().contains("symbolic link"), "{rel:?}: {err}");
        link_back(part, &aside);
    }
    // Everything back in place: the state opens (so each refusal above was
    // the link's doing).
    assert!(store.join(&state_name).is_dir());
    Engine::open(&store).unwrap();
}

/// `embeddings.redb` (the embedding cache's disk tier) planted as a link:
/// the engine works from memory instead of writing the link's target, and
/// saving into a directory holding such a link is refused.
#[cfg(unix)]
#[test]
fn the_embedding_cache_file_does_not_follow_links() {
    let root = tempfile::tempdir().unwrap();
    let target = root.path().join("victim");
    fs::write(&target, b"").unwrap();
    let store = root.path().join("store");
    fs::create_dir(&store).unwrap();
    std::os::unix::fs::symlink(&target, store.join("embeddings.redb")).unwrap();
    let e = common::builder().store_dir(&store).build().unwrap();
    let r = e.ingest(common::corpus()[..2].to_vec()).unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(
        fs::metadata(&target).unwrap().len(),
        0,
        "the link was followed"
    );

    let other = root.path().join("other");
    fs::create_dir(&other).unwrap();
    std::os::unix::fs::symlink(&target, other.join("embeddings.redb")).unwrap();
    let err = e.save(&other).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    // redb initialises an empty file it is pointed at: the target would
    // hold a database now had either link been followed.
    assert_eq!(fs::metadata(&target).unwrap().len(), 0);
}

#[test]
fn the_advice_endpoint_binds_loopback_by_default() {
    let addr: SocketAddr = DEFAULT_ADVICE_ADDR.parse().unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
}

/// Sends `head` then drips `drip` one byte per `every` until the server
/// hangs up; returns when it did (`None`: still open after `limit`).
fn drip(addr: SocketAddr, head: &[u8], every: Duration, limit: Duration) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(every)).unwrap();
    let t0 = Instant::now();
    if s.write_all(head).is_err() {
        return Some(t0.elapsed());
    }
    let mut buf = [0u8; 512];
    while t0.elapsed() < limit {
        if s.write_all(b"a").is_err() {
            return Some(t0.elapsed());
        }
        match s.read(&mut buf) {
            Ok(_) => return Some(t0.elapsed()),
            Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) => {}
            Err(_) => return Some(t0.elapsed()),
        }
    }
    None
}

fn healthz(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Slowloris on `/scale`: clients dripping their head are cut off by the
/// 5 s head deadline, clients dripping a body by the 15 s connection
/// deadline, and the endpoint answers others meanwhile.
#[test]
fn the_advice_endpoint_cuts_off_slow_clients() {
    let server = AdviceServer::start(
        "127.0.0.1:0".parse().unwrap(),
        ScalePolicy::default(),
        || None,
    )
    .unwrap();
    let addr = server.local_addr();
    let every = Duration::from_millis(200);
    let limit = Duration::from_secs(40);
    let heads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                drip(
                    addr,
                    b"POST /scale HTTP/1.1\r\nHost: x\r\nX-Slow: ",
                    every,
                    limit,
                )
            })
        })
        .collect();
    let bodies: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                drip(
                    addr,
                    b"POST /scale HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n{",
                    every,
                    limit,
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let r = healthz(addr);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let slowest = |hs: Vec<std::thread::JoinHandle<Option<Duration>>>| {
        hs.into_iter()
            .map(|h| h.join().unwrap().expect("a slow client was never cut off"))
            .max()
            .unwrap()
    };
    let head = slowest(heads);
    let body = slowest(bodies);
    assert!(head < Duration::from_secs(10), "head drip lasted {head:?}");
    assert!(body < Duration::from_secs(25), "body drip lasted {body:?}");
    eprintln!("/scale slowloris: head drips cut after {head:?}, body drips after {body:?}");
    assert!(healthz(addr).starts_with("HTTP/1.1 200"));
}
