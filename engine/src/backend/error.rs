//! One error type for every backend: what went wrong, typed by cause rather than by device.

use crate::DType;

/// Why a backend could not be opened, prepare a graph or run a step.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The step does not fit its graph: batch size, token id or position out of range.
    #[error("{0}")]
    InvalidStep(String),
    /// A tensor type the backend has no kernels for.
    #[error("tensor {name:?} has type {dtype}, which the {backend} backend cannot compute with")]
    UnsupportedDType {
        /// The tensor.
        name: String,
        /// Its type.
        dtype: DType,
        /// `CPU`, `GPU`, ….
        backend: &'static str,
    },
    /// A graph, shape or size the backend cannot run (over a device limit, an op it lacks).
    #[error("{0}")]
    Unsupported(String),
    /// The device could not be found or opened, or failed while running.
    #[error("{0}")]
    Device(String),
    /// A device name that is not `cpu`, `gpu` or `gpu:N`.
    #[error("unknown device {0:?} (expected cpu, gpu or gpu:N)")]
    UnknownDevice(String),
    /// The device's backend was left out of this build (a cargo feature).
    #[error(
        "this build of Tessera has no {0} backend (it was built without the `{0}` cargo feature)"
    )]
    NotBuilt(&'static str),
    /// The KV cells the sequences share are all taken: the step was not run.
    #[error(transparent)]
    KvFull(#[from] crate::kv_cells::PoolFull),
    /// The system refused memory for a buffer (KV store, scratch, logits).
    #[error(transparent)]
    OutOfMemory(#[from] crate::memory::OutOfMemory),
}

impl From<crate::cpu::exec::ExecError> for BackendError {
    fn from(e: crate::cpu::exec::ExecError) -> Self {
        use crate::cpu::exec::ExecError as E;
        match e {
            E::UnsupportedDType { name, dtype } => BackendError::UnsupportedDType {
                name,
                dtype,
                backend: "CPU",
            },
            E::MissingKv(..) | E::HeadTooWide { .. } => BackendError::Unsupported(e.to_string()),
            E::BatchSize { .. }
            | E::TokenOutOfRange { .. }
            | E::NegativePosition(_)
            | E::OutputRows { .. } => BackendError::InvalidStep(e.to_string()),
            E::OutOfMemory(e) => BackendError::OutOfMemory(e),
            E::KvFull(e) => BackendError::KvFull(e),
        }
    }
}

#[cfg(feature = "gpu")]
impl From<crate::gpu::GpuError> for BackendError {
    fn from(e: crate::gpu::GpuError) -> Self {
        use crate::gpu::GpuError as E;
        match e {
            E::UnsupportedDType { name, dtype } => BackendError::UnsupportedDType {
                name,
                dtype,
                backend: "GPU",
            },
            E::Unsupported(_) => BackendError::Unsupported(e.to_string()),
            E::KvFull(full) => BackendError::KvFull(full),
            E::NoAdapter | E::BadIndex { .. } | E::RequestDevice { .. } | E::Device(_) => {
                BackendError::Device(e.to_string())
            }
        }
    }
}
