//! Python bindings for ragjet. This crate converts types and keeps Python's
//! promises (the GIL released while computing, Ctrl-C honoured, no panic
//! reaching the interpreter); every behaviour lives in the Rust crates, and
//! every Rust error maps onto one class of the hierarchy in
//! `python/ragjet/_errors.py` (`convert.rs`).
//!
//! One module per family of classes: `embedder.rs`, `index.rs` (indexes,
//! hits, fusion), `rerank.rs`, `cache.rs`, `telemetry.rs`, `engine.rs`,
//! `control.rs` (rate limits, breaker, retries, dead letters, routing, A/B
//! tests, model pool, scaling advice).

use numpy::PyArray1;
use pyo3::prelude::*;
use ragjet::inference;

mod cache;
mod control;
mod convert;
mod embedder;
mod engine;
mod index;
mod rerank;
mod telemetry;

use convert::guard;

// Embedding allocates large activation buffers per batch; the system
// allocator returns them to the OS and page-faults them back each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Whether this build of ragjet can run models on an NVIDIA GPU here: it
/// was built with CUDA and the NVIDIA driver loads. Then `device="auto"`
/// picks GPU 0; otherwise the CPU.
#[pyfunction]
fn cuda_available() -> PyResult<bool> {
    guard(|| Ok(inference::cuda_available()))
}

/// Test hook: panics inside the guard every entry point runs in, so the
/// tests can show a panic arrives as `RagjetError`, not `PanicException`.
#[pyfunction]
fn _panic(message: &str) -> PyResult<()> {
    guard(|| panic!("{message}"))
}

#[pymodule]
fn _ragjet(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Load numpy's C API now. Loaded lazily by the first array, it runs
    // Python code, where a Ctrl-C pending from a long `embed` surfaces, and
    // the numpy crate panics on that error instead of returning it.
    PyArray1::<f32>::zeros(m.py(), 0, false);
    m.add("__version__", ragjet::VERSION)?;
    let features: Vec<&str> = [("cuda", cfg!(feature = "cuda"))]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
    m.add(
        "build_features",
        pyo3::types::PyTuple::new(m.py(), features)?,
    )?;
    m.add_class::<embedder::Embedder>()?;
    index::register(m)?;
    rerank::register(m)?;
    cache::register(m)?;
    telemetry::register(m)?;
    engine::register(m)?;
    control::register(m)?;
    m.add_function(wrap_pyfunction!(cuda_available, m)?)?;
    m.add_function(wrap_pyfunction!(_panic, m)?)?;
    Ok(())
}
