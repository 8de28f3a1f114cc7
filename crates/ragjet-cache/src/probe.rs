//! Running a check in a forked child, so that a check that aborts takes
//! only the child down.
//!
//! redb panics on some damaged files, and a few of those panics happen
//! while it is already unwinding, which aborts the process: `catch_unwind`
//! cannot stop that. Before the disk tier hands an existing file to redb in
//! this process, it lets a child do the same work on it first.
//!
//! # Why fork is sound here
//!
//! After `fork` in a multi-threaded process only the calling thread exists
//! in the child, and any lock another thread held at that instant stays
//! held forever. The child therefore must not need such a lock. What it
//! runs is redb on a `Database` it creates itself (its locks are new),
//! file I/O, and the allocator; glibc and musl both make `malloc` usable in
//! the child of a multi-threaded fork. It logs nothing and records no
//! metric (the `tracing` and `metrics` back ends hold locks of their own),
//! replaces the panic hook with one that writes the message to a pipe with
//! a raw `write` (the default hook takes the stderr lock), restores the
//! default action of the crash signals (so that an abort ends the child
//! quietly, not through the parent's crash reporter), and leaves with
//! `_exit`, running no destructor or `atexit` handler of the parent's state.
//! The one lock left is the panic hook's own, which another thread holds
//! only while it is itself panicking or swapping the hook at the instant of
//! the fork; then the child hangs and the deadline below ends it. Every
//! outcome the parent cannot read as "the check passed" is reported as
//! such, and the caller decides; for a cache file the safe reading of a
//! hang is "do not open it here".

use std::time::{Duration, Instant};

/// How the child ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It exited with this status; the panic messages it wrote, if any.
    Exited(i32, String),
    /// A signal ended it (an abort is `SIGABRT`); its panic messages.
    Signalled(i32, String),
    /// It ran past the deadline and was killed.
    TimedOut,
    /// No child could be run or waited for (fork refused, `SIGCHLD`
    /// ignored so that its status is lost, a platform other than Linux).
    NotRun(String),
}

/// Runs `check` in a forked child and returns how the child ended; the
/// child's exit status is what `check` returns. `check` must respect the
/// rules of the module documentation: no logging, no metrics, no locks
/// shared with other threads. The child may allocate at most `max_alloc`
/// bytes beyond what it inherits (`RLIMIT_DATA`): a check that asks
/// for more dies of the failed allocation, so a size read from a damaged
/// file cannot make the caller allocate it later.
#[cfg(target_os = "linux")]
pub(crate) fn in_child(deadline: Duration, max_alloc: u64, check: impl FnOnce() -> i32) -> Outcome {
    let mut fds = [0 as libc::c_int; 2];
    // Non-blocking at both ends: a child with more to say than the pipe
    // holds loses the rest instead of hanging on it.
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Outcome::NotRun(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    let [read_fd, write_fd] = fds;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork has no preconditions; the child below only runs code
    // allowed by the module documentation and always ends in `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = std::io::Error::last_os_error();
        close(read_fd);
        close(write_fd);
        return Outcome::NotRun(format!("fork: {err}"));
    }
    if pid == 0 {
        close(read_fd);
        // Dies with the parent: a parent killed mid-check must not leave a
        // child holding the file's lock against the next process's open.
        // SAFETY: prctl and getppid are plain syscalls.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(1); // the parent died before prctl: no one waits
            }
        }
        // What the runtime itself prints on the way down (an allocation
        // failure, a panic while panicking) goes to the parent's warning,
        // not to the application's stderr.
        // SAFETY: both descriptors are open; dup2 is async-signal-safe.
        unsafe { libc::dup2(write_fd, 2) };
        limit_data(max_alloc);
        // No core file for an expected abort.
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit pointer.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        // The parent's crash handlers (a crash reporter, libFuzzer's) would
        // report the child's expected death as the process's own crash.
        for sig in [
            libc::SIGABRT,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
        ] {
            // SAFETY: restores the default action; async-signal-safe.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
        std::panic::set_hook(Box::new(move |info| {
            let msg = format!("{info}\n");
            let bytes = &msg.as_bytes()[..msg.len().min(1024)];
            // SAFETY: writes from a valid buffer to our own pipe.
            unsafe { libc::write(write_fd, bytes.as_ptr().cast(), bytes.len()) };
        }));
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    close(write_fd);
    let outcome = wait(pid, deadline);
    let messages = drain(read_fd);
    close(read_fd);
    match outcome {
        Outcome::Exited(code, _) => Outcome::Exited(code, messages),
        Outcome::Signalled(sig, _) => Outcome::Signalled(sig, messages),
        other => other,
    }
}

/// Caps the child's data segment (heap and private anonymous maps) at what
/// it has now plus `extra` bytes. Left uncapped if `/proc` cannot say.
#[cfg(target_os = "linux")]
fn limit_data(extra: u64) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    let Some(kb) = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    else {
        return;
    };
    let cap = (kb * 1024).saturating_add(extra) as libc::rlim_t;
    let lim = libc::rlimit {
        rlim_cur: cap,
        rlim_max: cap,
    };
    // SAFETY: a valid rlimit pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_DATA, &lim) };
}

/// Without `fork` there is no child to run the check in.
#[cfg(not(target_os = "linux"))]
pub(crate) fn in_child(
    _deadline: Duration,
    _max_alloc: u64,
    _check: impl FnOnce() -> i32,
) -> Outcome {
    Outcome::NotRun("the check runs in a child on Linux only".into())
}

#[cfg(target_os = "linux")]
fn close(fd: libc::c_int) {
    // SAFETY: closes a descriptor this module opened and owns.
    unsafe { libc::close(fd) };
}

#[cfg(target_os = "linux")]
fn wait(pid: libc::pid_t, deadline: Duration) -> Outcome {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return Outcome::Exited(libc::WEXITSTATUS(status), String::new());
            }
            if libc::WIFSIGNALED(status) {
                return Outcome::Signalled(libc::WTERMSIG(status), String::new());
            }
        } else if r < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Outcome::NotRun(format!("waitpid: {err}"));
            }
        }
        if start.elapsed() > deadline {
            // SAFETY: signals and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Outcome::TimedOut;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// What the child wrote to the pipe, once it has ended (non-blocking, and
/// the write end is closed in both processes).
#[cfg(target_os = "linux")]
fn drain(fd: libc::c_int) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while out.len() < 4096 {
        // SAFETY: reads into a valid buffer from our own pipe.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    String::from_utf8_lossy(&out).trim_end().to_string()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reports_exit_status_panic_abort_and_hang() {
        let d = Duration::from_secs(20);
        assert_eq!(
            in_child(d, 1 << 30, || 7),
            Outcome::Exited(7, String::new())
        );
        match in_child(d, 1 << 30, || panic!("boom in child")) {
            Outcome::Exited(101, msg) => assert!(msg.contains("boom in child"), "{msg}"),
            other => panic!("{other:?}"),
        }
        match in_child(d, 1 << 30, || std::process::abort()) {
            Outcome::Signalled(sig, _) => assert_eq!(sig, libc::SIGABRT),
            other => panic!("{other:?}"),
        }
        let start = Instant::now();
        let hang = in_child(Duration::from_millis(200), 1 << 30, || loop {
            std::thread::sleep(Duration::from_secs(1));
        });
        assert_eq!(hang, Outcome::TimedOut);
        // Past the allocation cap: the allocation fails and the child dies.
        match in_child(d, 64 << 20, || {
            std::hint::black_box(vec![1u8; 512 << 20]).len() as i32
        }) {
            Outcome::Signalled(sig, _) => assert_eq!(sig, libc::SIGABRT),
            other => panic!("{other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
