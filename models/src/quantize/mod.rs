//! `tessera quantize`: convert a GGUF model to a smaller type or one of llama.cpp's mixes
//! (`Q4_K_M`, `Q3_K_S`, …), tensor by tensor as llama-quantize does, with the same bytes.
//!
//! [`file_type`] names the targets, [`choose`] decides each tensor's type, [`run`] streams the
//! conversion into a new file.

pub mod calibrate;
pub mod choose;
pub mod file_type;
pub mod imatrix;
pub mod run;

pub use choose::{Choice, ChoiceError, Choices, ModelFacts};
pub use file_type::{FILE_TYPES, FileType};
pub use run::{QuantizeError, QuantizeParams, Summary, TensorDone, plan, quantize};
