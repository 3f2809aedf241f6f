//! The GPU backend on wgpu: adapter selection ([`device`]), WGSL kernels from `shaders/`
//! ([`shaders`]), weights uploaded once as raw GGUF blocks ([`weights`]), KV caches in GPU
//! memory ([`kv`]), and an executor that runs the same planned [`crate::graph::Graph`] as the
//! CPU backend with one command encoder per step ([`exec`]).

pub mod backend;
pub mod device;
pub mod exec;
pub mod kv;
pub mod shaders;
pub mod weights;

pub use device::{AdapterReport, GpuDevice, GpuError, list_adapters};
pub use exec::{GpuExecutor, GpuPreparedGraph};
pub use kv::GpuKvStore;
