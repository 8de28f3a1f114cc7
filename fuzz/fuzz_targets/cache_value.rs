#![no_main]
//! L2 always; L3 too when `RAGJET_FUZZ_REDIS_URL` names a server.
use std::sync::OnceLock;

static SCRATCH: OnceLock<tempfile::TempDir> = OnceLock::new();

libfuzzer_sys::fuzz_target!(
    // libfuzzer-sys's panic hook aborts on every panic, even one the code
    // under test catches on purpose (the disk tier turns a redb panic on a
    // damaged file into an error); the default hook leaves those alone,
    // and an uncaught panic still aborts in libfuzzer-sys's wrapper.
    init: {
        drop(std::panic::take_hook());
    },
    |data: &[u8]| {
    let dir = SCRATCH.get_or_init(|| {
        tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("scratch dir")
    });
    ragjet_fuzz::cache::disk_value(dir.path(), data);
    if let Ok(url) = std::env::var("RAGJET_FUZZ_REDIS_URL") {
        let prefix = format!("ragjet-fuzz:{}:", std::process::id());
        ragjet_fuzz::cache::redis_value(&url, &prefix, data);
    }
});
