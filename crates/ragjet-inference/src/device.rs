//! Where the model runs ([`Device`]) and in which floating-point format
//! ([`Precision`]), and the GPU memory query behind the memory gauges.

use std::fmt;
use std::str::FromStr;

use candle_core::DType;

use crate::error::{InferenceError, Result};

/// The device an [`Embedder`](crate::Embedder) runs on.
///
/// Parsed from `"auto"`, `"cpu"`, `"cuda"` (= `cuda:0`) or `"cuda:N"`.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_inference::Device;
///
/// // Devices come from configuration files and command lines as strings.
/// assert_eq!("cpu".parse::<Device>()?, Device::Cpu);
/// assert_eq!("cuda".parse::<Device>()?, Device::Cuda(0));
/// assert_eq!("cuda:1".parse::<Device>()?.to_string(), "cuda:1");
/// assert_eq!(Device::default(), Device::Auto);
/// assert!("tpu".parse::<Device>().is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// The CPU (the packed f32 encoder unless another precision is asked).
    Cpu,
    /// The NVIDIA GPU with this ordinal. Needs the crate's `cuda` feature and
    /// a working driver; otherwise loading fails with
    /// [`InferenceError::DeviceUnavailable`].
    Cuda(usize),
    /// GPU 0 when the crate was built with `cuda` and a GPU answers, else the
    /// CPU; the choice and its reason are logged (`tracing` info).
    #[default]
    Auto,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Auto => f.write_str("auto"),
        }
    }
}

impl FromStr for Device {
    type Err = InferenceError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            InferenceError::InvalidOption(format!(
                "device {s:?}: expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\""
            ))
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                    n.parse().map(Device::Cuda).map_err(|_| bad())
                }
                _ => Err(bad()),
            },
        }
    }
}

/// Floating-point format of the weights and activations of the forward pass.
///
/// Pooling and normalisation always run in f32, whatever this is.
/// Parsed from `"f32"`, `"f16"`, `"bf16"` or `"int8"` (also `"float32"`,
/// `"fp16"`, `"float16"`, `"bfloat16"`).
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_inference::Precision;
///
/// assert_eq!("bfloat16".parse::<Precision>()?, Precision::Bf16);
/// assert_eq!("fp16".parse::<Precision>()?, Precision::F16);
/// // Never int8 by default: it trades accuracy for speed, so it is asked for.
/// assert!(matches!(Precision::cpu_default(), Precision::F32 | Precision::Bf16));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// 32-bit floats.
    F32,
    /// IEEE half precision: the default on CUDA (tensor cores).
    F16,
    /// bfloat16: f32's range with 8 bits of mantissa. On the CPU's packed
    /// backend only the inputs of the matrix products are rounded to it;
    /// sums, attention, layer norms and activations stay f32. The default
    /// on CPUs with AVX-512 BF16 (see [`Precision::cpu_default`]).
    Bf16,
    /// int8 matrix products on the CPU's packed backend only, never a
    /// default: weights quantized per output column at load, inputs per
    /// row as they arrive (u8 levels spanning the row's range), one outlier
    /// input channel per layer added in f32 (chosen at load), exact i32
    /// sums (AMX `tdpbusd` or `vpdpbusd` where the CPU has them, the same
    /// integers computed in plain code elsewhere, so every CPU gives the
    /// same vectors). Attention, softmax, layer norms and activations stay
    /// f32. About 1.35× bf16 on AMX, at a small cost in accuracy (mean
    /// cosine 0.9991, min 0.9981 against f32 sentence-transformers on the
    /// fixtures; `docs/performance.md`, "Int8 encoder").
    Int8,
}

impl Precision {
    /// The CPU's default: [`Precision::Bf16`] where the CPU multiplies
    /// bfloat16 natively (AVX-512 BF16: twice the f32 rate, embeddings
    /// within cosine 0.9999 of f32), else [`Precision::F32`].
    pub fn cpu_default() -> Self {
        if crate::linear::bf16_hardware() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    /// The candle format of the padded backend; `None` for int8, which
    /// only the packed backend computes.
    pub(crate) fn dtype(self) -> Option<DType> {
        match self {
            Precision::F32 => Some(DType::F32),
            Precision::F16 => Some(DType::F16),
            Precision::Bf16 => Some(DType::BF16),
            Precision::Int8 => None,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        })
    }
}

impl FromStr for Precision {
    type Err = InferenceError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            _ => Err(InferenceError::InvalidOption(format!(
                "precision {s:?}: expected \"f32\", \"f16\", \"bf16\" or \"int8\""
            ))),
        }
    }
}

/// A [`Device`] resolved to the candle device that runs the model.
pub(crate) struct Resolved {
    pub candle: candle_core::Device,
    /// `None` on the CPU.
    pub ordinal: Option<usize>,
}

impl Resolved {
    pub fn name(&self) -> String {
        match self.ordinal {
            Some(n) => format!("cuda:{n}"),
            None => "cpu".into(),
        }
    }
}

fn cpu() -> Resolved {
    Resolved {
        candle: candle_core::Device::Cpu,
        ordinal: None,
    }
}

/// Opens `device`; `Auto` falls back to the CPU with a log line.
pub(crate) fn resolve(device: Device) -> Result<Resolved> {
    match device {
        Device::Cpu => Ok(cpu()),
        Device::Cuda(n) => open_cuda(n).map_err(InferenceError::DeviceUnavailable),
        Device::Auto => match open_cuda(0) {
            Ok(resolved) => {
                tracing::info!(device = "cuda:0", "device auto: using CUDA GPU 0");
                Ok(resolved)
            }
            Err(why) => {
                tracing::info!(device = "cpu", reason = %why, "device auto: falling back to the CPU");
                Ok(cpu())
            }
        },
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> std::result::Result<Resolved, String> {
    Err(format!(
        "cuda:{n} needs a build of ragjet-inference with the `cuda` feature; this one has none"
    ))
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> std::result::Result<Resolved, String> {
    driver_present()?;
    let device = guarded(|| candle_core::Device::new_cuda(n).map_err(|e| e.to_string()))
        .map_err(|e| format!("no usable CUDA GPU {n}: {e}"))?;
    Ok(Resolved {
        candle: device,
        ordinal: Some(n),
    })
}

#[cfg(feature = "cuda")]
fn driver_present() -> std::result::Result<(), String> {
    if cuda_driver_available() {
        Ok(())
    } else {
        Err("no NVIDIA driver (libcuda.so.1 cannot be loaded)".into())
    }
}

/// Whether the NVIDIA driver library (`libcuda.so.1`) loads in this
/// process: ragjet's one probe for a CUDA driver, whatever this crate's
/// features (the facade asks it for retrieval's GPU search too).
///
/// It loads and releases the library without calling into it: cheap, no
/// CUDA context, and no panic. cudarc, in the dlopen mode ragjet builds it
/// with, panics on its first call when the library is missing, which
/// [`Device::Auto`] must not do on a machine without a GPU. A `true` does
/// not promise a working GPU (the driver may find none): opening one can
/// still fail with [`InferenceError::DeviceUnavailable`]. On non-Unix
/// targets there is no such probe and this returns `true`, leaving the
/// answer to the first driver call.
///
/// # Examples
///
/// ```
/// // Safe to call anywhere: the library is loaded, never called into.
/// let has_driver = ragjet_inference::cuda_driver_available();
/// assert_eq!(has_driver, ragjet_inference::cuda_driver_available());
/// ```
pub fn cuda_driver_available() -> bool {
    #[cfg(unix)]
    {
        [c"libcuda.so.1", c"libcuda.so"].iter().any(|name| {
            // SAFETY: dlopen/dlclose with a valid C string; the handle is
            // released at once (the library stays loaded if cudarc has it).
            unsafe {
                let handle = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
                if handle.is_null() {
                    false
                } else {
                    libc::dlclose(handle);
                    true
                }
            }
        })
    }
    #[cfg(not(unix))]
    true
}

/// Whether this build can run models on an NVIDIA GPU: it has the `cuda`
/// feature and [`cuda_driver_available`]. What [`Device::Auto`] checks
/// before it tries GPU 0; opening the GPU can still fail (see there).
///
/// # Examples
///
/// ```
/// use ragjet_inference::{cuda_available, cuda_driver_available, Device};
///
/// // Pick the device up front, e.g. to size batches, instead of relying on `Auto`.
/// let device = if cuda_available() { Device::Cuda(0) } else { Device::Cpu };
/// // A usable GPU needs a driver; a driver alone is not enough (the build needs `cuda`).
/// assert!(!cuda_available() || cuda_driver_available());
/// assert!(cfg!(feature = "cuda") || device == Device::Cpu);
/// ```
pub fn cuda_available() -> bool {
    cfg!(feature = "cuda") && cuda_driver_available()
}

/// Runs a CUDA driver call, turning a panic into an error: with cudarc's
/// dlopen mode (see the workspace's candle-core patch) the first driver call
/// panics when no `libcuda.so.1` exists, which must not bring the process
/// down when `Device::Auto` merely probes for a GPU.
#[cfg(feature = "cuda")]
fn guarded<T>(
    f: impl FnOnce() -> std::result::Result<T, String>,
) -> std::result::Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the CUDA driver library could not be loaded".into())),
    }
}

/// Used and total memory of GPU `ordinal`, in bytes, as the driver reports
/// them (`cuMemGetInfo`: every process's allocations count as used).
///
/// Errors with [`InferenceError::DeviceUnavailable`] when there is no such
/// GPU or no driver.
#[cfg(feature = "cuda")]
pub fn gpu_memory(ordinal: usize) -> Result<(u64, u64)> {
    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    driver_present()
        .and_then(|()| {
            guarded(|| {
                let ctx = CudaContext::new(ordinal).map_err(|e| e.to_string())?;
                ctx.mem_get_info().map_err(|e| e.to_string())
            })
        })
        .map(|(free, total)| ((total - free.min(total)) as u64, total as u64))
        .map_err(|e| InferenceError::DeviceUnavailable(format!("cuda:{ordinal}: {e}")))
}

/// Like [`gpu_memory`] on the device a model already holds (no new context).
#[cfg(feature = "cuda")]
pub(crate) fn device_memory(device: &candle_core::Device) -> Option<(u64, u64)> {
    let cuda = device.as_cuda_device().ok()?;
    let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
    Some(((total - free.min(total)) as u64, total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print() {
        for (text, device) in [
            ("auto", Device::Auto),
            ("CPU", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("cuda:3", Device::Cuda(3)),
        ] {
            assert_eq!(text.parse::<Device>().unwrap(), device);
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
        for bad in ["", "tpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1:2"] {
            assert!(
                matches!(bad.parse::<Device>(), Err(InferenceError::InvalidOption(_))),
                "{bad:?} parsed"
            );
        }
    }

    #[test]
    fn precisions_parse_and_print() {
        assert_eq!("fp16".parse::<Precision>().unwrap(), Precision::F16);
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("float32".parse::<Precision>().unwrap(), Precision::F32);
        assert_eq!(Precision::Bf16.to_string(), "bf16");
        assert!("f8".parse::<Precision>().is_err());
        assert_eq!("INT8".parse::<Precision>().unwrap(), Precision::Int8);
        assert_eq!(Precision::Int8.to_string(), "int8");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clean_error() {
        let err = resolve(Device::Cuda(0)).err().expect("no cuda feature");
        assert!(matches!(err, InferenceError::DeviceUnavailable(_)), "{err}");
        assert!(err.to_string().contains("`cuda` feature"), "{err}");
        assert!(resolve(Device::Auto).unwrap().ordinal.is_none());
        // Even where a driver loads, this build cannot use it.
        assert!(!cuda_available());
    }
}
