#![no_main]
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
    let dir = SCRATCH.get_or_init(|| tempfile::tempdir().expect("scratch dir"));
    ragjet_fuzz::engine::store(dir.path(), data)
});
