//! What every class of the binding shares: the panic guard, the mapping of
//! Rust errors onto the Python hierarchy, and the checked conversions of
//! texts, numpy arrays, metadata and filters.
//!
//! Arrays are checked, never converted: a float64, 1-D where 2-D is needed
//! or non-contiguous array is an `InvalidInputError` naming the problem, so
//! a caller never pays for a hidden copy or gets vectors it did not send.

use std::panic::{catch_unwind, AssertUnwindSafe};

use numpy::{
    dtype, PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray1,
    PyReadonlyArray2, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use ragjet::inference::InferenceError;
use ragjet::retrieval::{Metadata, MetadataFilters, MetadataValue};
use ragjet::ErrorKind;

/// The classes are defined in Python, where an exception can derive from
/// two built-ins (`InvalidInputError` is also a `ValueError`), which
/// `create_exception!` cannot express.
pub(crate) mod errors {
    pyo3::import_exception!(ragjet._errors, RagjetError);
    pyo3::import_exception!(ragjet._errors, InvalidInputError);
    pyo3::import_exception!(ragjet._errors, ModelLoadError);
    pyo3::import_exception!(ragjet._errors, DeviceError);
    pyo3::import_exception!(ragjet._errors, OutOfMemoryError);
    pyo3::import_exception!(ragjet._errors, OverloadedError);
    pyo3::import_exception!(ragjet._errors, RateLimitedError);
    pyo3::import_exception!(ragjet._errors, CircuitOpenError);
    pyo3::import_exception!(ragjet._errors, QueueFullError);
    pyo3::import_exception!(ragjet._errors, DeadlineExceededError);
    pyo3::import_exception!(ragjet._errors, StorageError);
}
use errors::{
    DeviceError, InvalidInputError, ModelLoadError, OutOfMemoryError, OverloadedError, RagjetError,
    StorageError,
};

/// Maps any facade error onto the hierarchy by the facade's own
/// classification ([`ragjet::Error::kind`]), so the binding and the Rust
/// API agree on what is bad input and what is a storage failure.
pub(crate) fn engine_err(err: ragjet::Error) -> PyErr {
    let msg = err.to_string();
    if let ragjet::Error::Inference(InferenceError::OutOfMemory { .. }) = err {
        return OutOfMemoryError::new_err(msg);
    }
    if let Some(refusal) = err.refusal() {
        return refusal_err(refusal, msg);
    }
    match err.kind() {
        // A configuration mistake is a bad argument from Python's side.
        ErrorKind::InvalidInput | ErrorKind::Config => InvalidInputError::new_err(msg),
        ErrorKind::ModelLoad => ModelLoadError::new_err(msg),
        ErrorKind::Overloaded => OverloadedError::new_err(msg),
        ErrorKind::Storage => StorageError::new_err(msg),
        ErrorKind::Device => DeviceError::new_err(msg),
        _ => RagjetError::new_err(msg),
    }
}

/// A refused call as the `OverloadedError` subclass naming why, with
/// `retry_after` in seconds where the refuser knows it (else `None`).
fn refusal_err(refusal: &ragjet::Refusal, msg: String) -> PyErr {
    use ragjet::Refusal as R;
    let e = match refusal {
        R::RateLimited { .. } => errors::RateLimitedError::new_err(msg),
        R::CircuitOpen { .. } => errors::CircuitOpenError::new_err(msg),
        R::QueueFull { .. } => errors::QueueFullError::new_err(msg),
        R::DeadlineExceeded { .. } => errors::DeadlineExceededError::new_err(msg),
        _ => OverloadedError::new_err(msg),
    };
    let retry_after = refusal.retry_after().map(|d| d.as_secs_f64());
    Python::attach(|py| {
        let _ = e.value(py).setattr("retry_after", retry_after);
    });
    e
}

/// An error of the model crate.
pub(crate) fn inference_err(err: InferenceError) -> PyErr {
    engine_err(err.into())
}

/// An error of the index crate.
pub(crate) fn retrieval_err(err: ragjet::retrieval::RetrievalError) -> PyErr {
    engine_err(err.into())
}

/// An error of the cache crate.
pub(crate) fn cache_err(err: ragjet::cache::CacheError) -> PyErr {
    engine_err(err.into())
}

/// Runs an entry point, turning a Rust panic into a `RagjetError` that
/// carries its message. Without this pyo3 raises `PanicException`, which
/// derives from `BaseException`: `except Exception` misses it and a
/// notebook or server treats it as fatal.
pub(crate) fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("a panic without a message");
            Err(RagjetError::new_err(format!(
                "internal error in ragjet (a bug; please report it): {what}"
            )))
        }
    }
}

pub(crate) fn invalid(msg: impl Into<String>) -> PyErr {
    InvalidInputError::new_err(msg.into())
}

pub(crate) fn describe(obj: &Bound<'_, PyAny>) -> String {
    if obj.is_none() {
        "None".to_owned()
    } else {
        obj.get_type()
            .name()
            .map_or_else(|_| "an object".to_owned(), |n| format!("of type {n}"))
    }
}

/// A count that must be at least 1, as `usize`.
pub(crate) fn positive(name: &str, value: Option<i64>) -> PyResult<Option<usize>> {
    match value {
        None => Ok(None),
        Some(v) if v >= 1 => usize::try_from(v)
            .map(Some)
            .map_err(|_| invalid(format!("{name}={v} is too large"))),
        Some(v) => Err(invalid(format!("{name} must be at least 1, not {v}"))),
    }
}

/// A required count of at least 1 (`k`, `top_k`, `top_n`).
pub(crate) fn count(name: &str, value: i64) -> PyResult<usize> {
    Ok(positive(name, Some(value))?.unwrap_or(1))
}

/// `texts` as owned strings, and whether it was one bare `str`.
pub(crate) fn extract_texts(texts: &Bound<'_, PyAny>) -> PyResult<(Vec<String>, bool)> {
    if let Ok(text) = texts.cast::<PyString>() {
        return Ok((vec![text_of(text, None)?], true));
    }
    Ok((str_list("texts", texts)?, false))
}

/// A sequence of `str` (not one bare `str`, not bytes), named `what` in
/// errors.
pub(crate) fn str_list(what: &str, items: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if items.is_instance_of::<PyString>() {
        return Err(invalid(format!(
            "{what} must be a list of str, not one str: wrap it in a list"
        )));
    }
    if items.is_instance_of::<PyBytes>() || items.is_instance_of::<PyByteArray>() {
        return Err(invalid(format!(
            "{what} must be a str or a sequence of str, not bytes: decode them first"
        )));
    }
    let iter = items.try_iter().map_err(|_| {
        invalid(format!(
            "{what} must be a sequence of str, not {}",
            describe(items)
        ))
    })?;
    let mut out = Vec::with_capacity(items.len().unwrap_or(0));
    for (i, item) in iter.enumerate() {
        let item = item?;
        let text = item
            .cast::<PyString>()
            .map_err(|_| invalid(format!("{what}[{i}] is {}, not a str", describe(&item))))?;
        out.push(text_of_named(text, &format!("{what}[{i}]"))?);
    }
    Ok(out)
}

/// A sequence whose items are `str` or `None`; `None` for the whole
/// argument gives `n` `None`s. Its length must be `n`.
pub(crate) fn optional_str_list(
    what: &str,
    items: Option<&Bound<'_, PyAny>>,
    n: usize,
) -> PyResult<Vec<Option<String>>> {
    let Some(items) = items.filter(|i| !i.is_none()) else {
        return Ok(vec![None; n]);
    };
    if items.is_instance_of::<PyString>() {
        return Err(invalid(format!("{what} must be a list, not one str")));
    }
    let iter = items
        .try_iter()
        .map_err(|_| invalid(format!("{what} must be a list, not {}", describe(items))))?;
    let mut out = Vec::with_capacity(n);
    for (i, item) in iter.enumerate() {
        let item = item?;
        if item.is_none() {
            out.push(None);
            continue;
        }
        let text = item.cast::<PyString>().map_err(|_| {
            invalid(format!(
                "{what}[{i}] is {}, not a str or None",
                describe(&item)
            ))
        })?;
        out.push(Some(text_of_named(text, &format!("{what}[{i}]"))?));
    }
    if out.len() != n {
        return Err(invalid(format!(
            "{what} has {} items for {n} ids; give one per id",
            out.len()
        )));
    }
    Ok(out)
}

pub(crate) fn text_of(text: &Bound<'_, PyString>, index: Option<usize>) -> PyResult<String> {
    let which = index.map_or_else(|| "the text".to_owned(), |i| format!("texts[{i}]"));
    text_of_named(text, &which)
}

fn text_of_named(text: &Bound<'_, PyString>, which: &str) -> PyResult<String> {
    text.to_cow()
        .map(|t| t.into_owned())
        .map_err(|err| invalid(format!("{which} is not valid Unicode text: {err}")))
}

/// The array behind `obj` after the checks every vector input shares:
/// a numpy array of native float32, C-contiguous, of `ndim` dimensions.
fn checked_array<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    ndim: usize,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let shape = if ndim == 1 { "(dim,)" } else { "(n, dim)" };
    let array = obj.cast::<PyUntypedArray>().map_err(|_| {
        invalid(format!(
            "{name} must be a numpy float32 array of shape {shape}, not {}; \
             use np.asarray(x, dtype=np.float32)",
            describe(obj)
        ))
    })?;
    let py = obj.py();
    if !array.dtype().is_equiv_to(&dtype::<f32>(py)) {
        return Err(invalid(format!(
            "{name} has dtype {}, not float32: convert it with .astype(np.float32) \
             (ragjet does not convert silently)",
            array.dtype()
        )));
    }
    if array.ndim() != ndim {
        let hint = if ndim == 2 {
            "; one vector needs reshape(1, -1)"
        } else {
            ""
        };
        return Err(invalid(format!(
            "{name} must be {ndim}-D of shape {shape}, got shape {}{hint}",
            shape_str(array.shape())
        )));
    }
    if !array.is_c_contiguous() {
        return Err(invalid(format!(
            "{name} is not C-contiguous (a slice or a transpose?): \
             pass np.ascontiguousarray({name})"
        )));
    }
    Ok(array.clone())
}

/// A shape as Python writes it: `(4,)`, `(2, 3)`.
pub(crate) fn shape_str(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A `(n, dim)` float32 matrix, borrowed in place.
pub(crate) fn read_matrix<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<PyReadonlyArray2<'py, f32>> {
    let array = checked_array(obj, name, 2)?;
    let array = array.cast::<PyArray2<f32>>()?;
    array
        .try_readonly()
        .map_err(|e| invalid(format!("{name} cannot be read: {e}")))
}

/// A `(dim,)` float32 vector, borrowed in place.
pub(crate) fn read_vector<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<PyReadonlyArray1<'py, f32>> {
    let array = checked_array(obj, name, 1)?;
    let array = array.cast::<PyArray1<f32>>()?;
    array
        .try_readonly()
        .map_err(|e| invalid(format!("{name} cannot be read: {e}")))
}

/// Whether `obj` is a 2-D array (for arguments taking one vector or many).
pub(crate) fn is_matrix(obj: &Bound<'_, PyAny>) -> bool {
    obj.cast::<PyUntypedArray>()
        .is_ok_and(|array| array.ndim() == 2)
}

/// Checks that `data` holds rows of `dim` (at least 1, and
/// `expected_dim`) finite numbers, naming the first bad row and column.
pub(crate) fn check_rows(
    data: &[f32],
    dim: usize,
    expected_dim: usize,
    name: &str,
) -> PyResult<()> {
    if dim == 0 {
        return Err(invalid(format!("{name} has no columns (dimension 0)")));
    }
    if dim != expected_dim {
        return Err(invalid(format!(
            "{name} has dimension {dim}, expected {expected_dim}"
        )));
    }
    if let Some(at) = data.iter().position(|x| !x.is_finite()) {
        let (row, col) = (at / dim, at % dim);
        return Err(invalid(format!(
            "{name} holds a NaN or infinity at row {row}, column {col}"
        )));
    }
    Ok(())
}

/// A Python value as metadata: `None`, `bool`, `int`, `float`, `str`, or a
/// list/tuple of those (nested lists too); anything else is refused with
/// the path of the offending value.
pub(crate) fn py_to_value(
    obj: &Bound<'_, PyAny>,
    path: &dyn Fn() -> String,
) -> PyResult<MetadataValue> {
    if obj.is_none() {
        return Ok(MetadataValue::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(MetadataValue::Bool(b.is_true()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(MetadataValue::String(text_of_named(s, &path())?));
    }
    if obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>() {
        let x: f64 = obj
            .extract()
            .map_err(|e| invalid(format!("{} is a number out of range: {e}", path())))?;
        return Ok(MetadataValue::Number(x));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, item) in obj.try_iter()?.enumerate() {
            let item = item?;
            items.push(py_to_value(&item, &|| format!("{}[{i}]", path()))?);
        }
        return Ok(MetadataValue::List(items));
    }
    // numpy scalars (np.int64, np.float32) are neither int nor float.
    let is_text_like = obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyByteArray>()
        || obj.is_instance_of::<PyDict>();
    if !is_text_like && (obj.hasattr("__index__")? || obj.hasattr("__float__")?) {
        if let Ok(x) = obj.extract::<f64>() {
            return Ok(MetadataValue::Number(x));
        }
    }
    Err(invalid(format!(
        "{} is {}; metadata values must be str, int, float, bool, None or a list of them",
        path(),
        describe(obj)
    )))
}

/// A dict of metadata (`None` for none).
pub(crate) fn dict_to_metadata(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Metadata> {
    let mut out = Metadata::new();
    if obj.is_none() {
        return Ok(out);
    }
    let dict = obj
        .cast::<PyDict>()
        .map_err(|_| invalid(format!("{what} must be a dict, not {}", describe(obj))))?;
    for (key, value) in dict.iter() {
        let key = key
            .cast::<PyString>()
            .map_err(|_| invalid(format!("{what} has a key {}, not a str", describe(&key))))?
            .to_cow()?
            .into_owned();
        let v = py_to_value(&value, &|| format!("{what}['{key}']"))?;
        out.insert(key, v);
    }
    Ok(out)
}

/// One dict per id (`None` for none at all, or `None` items).
pub(crate) fn metadata_list(obj: Option<&Bound<'_, PyAny>>, n: usize) -> PyResult<Vec<Metadata>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(vec![Metadata::new(); n]);
    };
    if obj.is_instance_of::<PyDict>() {
        return Err(invalid(
            "metadata must be a list with one dict per id, not one dict",
        ));
    }
    let iter = obj.try_iter().map_err(|_| {
        invalid(format!(
            "metadata must be a list of dicts, not {}",
            describe(obj)
        ))
    })?;
    let mut out = Vec::with_capacity(n);
    for (i, item) in iter.enumerate() {
        out.push(dict_to_metadata(&item?, &format!("metadata[{i}]"))?);
    }
    if out.len() != n {
        return Err(invalid(format!(
            "metadata has {} items for {n} ids; give one per id",
            out.len()
        )));
    }
    Ok(out)
}

/// Numbers come back as `int` when they are whole and exactly
/// representable (|x| ≤ 2⁵³): metadata holds every number as f64, and
/// LlamaIndex metadata is mostly integers (years, pages) that should not
/// come back as `2024.0`.
pub(crate) fn value_to_py<'py>(
    py: Python<'py>,
    value: &MetadataValue,
) -> PyResult<Bound<'py, PyAny>> {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    Ok(match value {
        MetadataValue::Null => py.None().into_bound(py),
        MetadataValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        MetadataValue::Number(x) if x.fract() == 0.0 && x.abs() <= EXACT => {
            (*x as i64).into_pyobject(py)?.into_any()
        }
        MetadataValue::Number(x) => PyFloat::new(py, *x).into_any(),
        MetadataValue::String(s) => PyString::new(py, s).into_any(),
        MetadataValue::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(value_to_py(py, item)?)?;
            }
            list.into_any()
        }
    })
}

/// Metadata as a new dict.
pub(crate) fn metadata_to_py<'py>(
    py: Python<'py>,
    metadata: &Metadata,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in metadata {
        dict.set_item(k, value_to_py(py, v)?)?;
    }
    Ok(dict)
}

/// `filters` as ragjet filters: `None`; a JSON `str`; a dict in the shape of
/// LlamaIndex's `MetadataFilters.model_dump()` (enum members such as
/// `FilterOperator.EQ` are `str`s and serialise as their values); or any
/// object with `model_dump_json()` (LlamaIndex's `MetadataFilters` itself).
pub(crate) fn parse_filters(
    filters: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<MetadataFilters>> {
    let Some(filters) = filters.filter(|f| !f.is_none()) else {
        return Ok(None);
    };
    let py = filters.py();
    let json: String = if let Ok(s) = filters.cast::<PyString>() {
        s.to_cow()?.into_owned()
    } else if filters.is_instance_of::<PyDict>() {
        let kwargs = PyDict::new(py);
        kwargs.set_item("allow_nan", false)?;
        py.import("json")?
            .call_method("dumps", (filters,), Some(&kwargs))
            .map_err(|e| invalid(format!("filters cannot be written as JSON: {e}")))?
            .extract()?
    } else if filters.hasattr("model_dump_json")? {
        filters.call_method0("model_dump_json")?.extract()?
    } else {
        return Err(invalid(format!(
            "filters must be None, a dict, a JSON str or a llama_index MetadataFilters, not {}",
            describe(filters)
        )));
    };
    MetadataFilters::from_json(&json)
        .map(Some)
        .map_err(retrieval_err)
}
