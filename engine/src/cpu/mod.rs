//! The CPU backend: dot-product kernels chosen at run time (scalar, AVX2/FMA, NEON), the per-op
//! kernels, KV storage, a low-overhead thread pool, the executor that runs planned graphs, and
//! the [`crate::Backend`] they make together.

pub mod backend;
pub mod dot;
pub mod exec;
pub mod kv;
pub mod ops;
pub mod pool;
