//! Tessera's runtime: the GGUF reader, tensor element types, quantized block formats, the
//! compute graph and its CPU backend. It knows nothing about model architectures.

pub mod cpu;
pub mod dtype;
pub mod gguf;
pub mod graph;
pub mod quant;

pub use dtype::DType;
pub use gguf::{GgufError, GgufFile, Tensor};
