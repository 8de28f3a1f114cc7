//! A redis-server of the test's own, for the tests that stop and restart
//! Redis under a cache (`ragjet-cache`'s `redis.rs`, `ragjet`'s
//! `load_outage.rs`, which includes this file by path).

#![allow(dead_code)] // each including test uses its own part

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `None` (after a loud notice) when `RAGJET_SKIP_REDIS_TESTS=1`: `what`
/// is missing and the caller skips `test`, knowingly. Otherwise panics, so
/// a machine without Redis never passes these tests silently.
pub fn require(what: &str, test: &str) -> Option<()> {
    if std::env::var("RAGJET_SKIP_REDIS_TESTS").is_ok_and(|v| v == "1") {
        // Straight to the stderr handle: libtest captures `eprintln!` of
        // passing tests, and this notice must be seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n**********************************************************************\n\
             * SKIPPED: {test}, because RAGJET_SKIP_REDIS_TESTS=1\n\
             * and {what} is not available.\n\
             **********************************************************************"
        );
        return None;
    }
    panic!(
        "{what} is not available: install redis-server and run the tests through \
         scripts/test.sh (which starts one and sets RAGJET_TEST_REDIS_URL), or set \
         RAGJET_SKIP_REDIS_TESTS=1 to skip the Redis tests knowingly"
    );
}

/// A redis-server of our own, killed on drop.
pub struct OwnServer {
    child: Child,
    port: u16,
}

impl OwnServer {
    /// Starts `redis-server` (or `RAGJET_TEST_REDIS_SERVER`) on `port`
    /// without persistence and waits until it answers; `None` when the
    /// binary is missing and [`require`] allows a skip.
    pub fn start(port: u16, test: &str) -> Option<Self> {
        let bin =
            std::env::var("RAGJET_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = match Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(_) => {
                require(&format!("the redis-server binary ({bin})"), test)?;
                unreachable!("require returns None or panics");
            }
        };
        let mut server = OwnServer { child, port };
        // Polling until it answers, not a timed assertion.
        for _ in 0..500 {
            if server.dbsize().is_some() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        server.stop();
        panic!("redis-server on port {port} did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Keys held, or `None` when the server does not answer (RESP over a
    /// plain socket: `DBSIZE` answers `:<n>`).
    pub fn dbsize(&self) -> Option<u64> {
        use std::io::{Read, Write};
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        c.write_all(b"*1\r\n$6\r\nDBSIZE\r\n").ok()?;
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).ok()?;
        let reply = std::str::from_utf8(&buf[..n]).ok()?;
        reply.strip_prefix(':')?.trim_end().parse().ok()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free a moment ago (the OS picked it for a listener just closed).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
