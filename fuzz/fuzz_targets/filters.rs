#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ragjet_fuzz::engine::filters(data));
