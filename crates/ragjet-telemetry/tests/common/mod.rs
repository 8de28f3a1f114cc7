//! Shared test helpers: a plain HTTP GET, a Prometheus text parse, and
//! finding promtool.
#![allow(dead_code)]

use prometheus_parse::{Sample, Scrape, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// GETs `path` from `addr`; returns (status line, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header/body split");
    let status = head.lines().next().unwrap_or("").to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("content length")
        .parse()
        .unwrap();
    assert_eq!(body.len(), len, "body length matches Content-Length");
    (status, body.to_string())
}

/// Scrapes `/metrics` over HTTP and parses it.
pub fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    parse(&body)
}

/// Parses Prometheus text.
pub fn parse(body: &str) -> Scrape {
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("valid exposition text")
}

/// The sample called `metric` whose labels include all of `labels`.
pub fn find<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

/// The scalar value (counter, gauge, untyped) of a sample.
pub fn scalar(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(scrape, metric, labels).map(|s| &s.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        other => panic!("{metric} {labels:?}: no scalar sample ({other:?})"),
    }
}

/// One received request: head lines and body.
pub type Received = (Vec<String>, Vec<u8>);

/// A one-thread OTLP/HTTP receiver on a free port: answers every POST with
/// 200 and sends (request head lines, body) down the channel.
pub fn otlp_receiver() -> (SocketAddr, std::sync::mpsc::Receiver<Received>) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut stream) = conn else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = Vec::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push(line);
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
            );
            let _ = tx.send((head, body));
        }
    });
    (addr, rx)
}

/// The promtool binary (`$RAGJET_PROMTOOL`, else `promtool` on `PATH`), or
/// `None` when it is missing and `RAGJET_SKIP_PROMTOOL=1` opts out of the
/// check; `unchecked` says in the notice what then goes unchecked. Missing
/// without the opt-out is a failure.
pub fn promtool(unchecked: &str) -> Option<String> {
    let bin = std::env::var("RAGJET_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let found = std::process::Command::new(&bin)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(bin);
    }
    if std::env::var("RAGJET_SKIP_PROMTOOL").is_ok_and(|v| v == "1") {
        // Straight to the stderr handle: libtest captures `eprintln!` of
        // passing tests, and this notice must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "\n**********************************************************************\n\
             * SKIPPED: promtool ({bin} not found) because RAGJET_SKIP_PROMTOOL=1.\n\
             * NOT checked: {unchecked}.\n\
             * Install it: apt-get install prometheus\n\
             **********************************************************************"
        );
        return None;
    }
    panic!(
        "{bin} not found: install it (apt-get install prometheus; scripts/test.sh does) \
         or set RAGJET_SKIP_PROMTOOL=1 to skip this check knowingly"
    );
}
