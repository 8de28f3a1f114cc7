//! The functions behind ragjet's fuzz targets. Each takes the fuzzer's
//! bytes; the stable replay tests include the same files and run every
//! committed corpus file through them (see `docs/reliability.md`).

pub mod cache;
pub mod engine;
