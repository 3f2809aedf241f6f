//! Tessera's runtime: the GGUF reader, tensor element types, quantized block formats, the
//! compute graph, its CPU backend and (feature `gpu`) its wgpu backend. It knows nothing about model architectures.

pub mod backend;
pub mod cpu;
pub mod dtype;
pub mod gguf;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod graph;
pub mod kv_cells;
pub mod memory;
pub mod quant;
pub mod rope;

pub use backend::{Backend, BackendError, Device};
pub use dtype::DType;
pub use gguf::{GgufError, GgufFile, Tensor};
