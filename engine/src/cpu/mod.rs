//! The CPU backend: dot-product kernels chosen at run time (scalar, AVX2/FMA, NEON) and the
//! per-op kernels the graph executor calls.

pub mod dot;
pub mod ops;
