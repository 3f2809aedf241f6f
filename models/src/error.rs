//! Errors of the model side: loading, validating and running a model.

use thiserror::Error;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The file is not a readable GGUF file.
    #[error(transparent)]
    Gguf(#[from] tessera_engine::GgufError),
    /// The architecture named in `general.architecture` is not implemented.
    #[error("unsupported architecture {0:?} (supported: {list})", list = crate::arch::names())]
    UnsupportedArch(String),
    /// A hyper-parameter is missing or out of range.
    #[error("invalid hyper-parameter {key}: {why}")]
    InvalidHParam {
        /// The metadata key.
        key: String,
        /// What is wrong with it.
        why: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("tensor {0:?} is missing")]
    MissingTensor(String),
    /// A tensor has the wrong shape.
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    BadShape {
        /// The tensor.
        name: String,
        /// The shape the hyper-parameters imply (ggml order).
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor's type has no kernels.
    #[error("tensor {name:?} has type {dtype}, which Tessera cannot compute with")]
    UnsupportedDType {
        /// The tensor.
        name: String,
        /// Its type.
        dtype: tessera_engine::DType,
    },
    /// A grammar is invalid, or a constrained generation could not go on.
    #[error(transparent)]
    Constraint(#[from] crate::constraint::ConstraintError),
    /// An input the caller gave is unusable (too long, empty, out of range).
    #[error("{0}")]
    InvalidInput(String),
    /// The compute backend failed (no GPU, a GPU error, a shape it cannot run, a step that
    /// does not fit its graph).
    #[error(transparent)]
    Backend(#[from] tessera_engine::BackendError),
    /// An evaluation produced NaN or infinite logits: the weights or parameters are unusable.
    /// Refused, so that no caller samples from them or reports them as a result.
    #[error(
        "the model produced non-finite logits (NaN or infinity) at position {position}: its \
         weights or RoPE/scale parameters are unusable"
    )]
    NonFiniteLogits {
        /// The position whose logits were not finite.
        position: usize,
    },
    /// The tokenizer could not be built.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A context whose footprint exceeds the memory left under the tightest limit (refused
    /// before anything is allocated).
    #[error(transparent)]
    OutOfMemory(Box<crate::footprint::MemoryRefusal>),
    /// The system refused an allocation (a size the footprint did not foresee).
    #[error(transparent)]
    Allocation(#[from] tessera_engine::memory::OutOfMemory),
}

/// Result type of the model side.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
