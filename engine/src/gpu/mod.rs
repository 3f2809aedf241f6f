//! The GPU backend on wgpu: adapter selection ([`device`]), WGSL kernels from `shaders/`
//! ([`shaders`]) with their uniform parameter blocks declared once in Rust ([`params`]),
//! weights uploaded once as raw GGUF blocks ([`weights`]), KV caches in GPU memory ([`kv`]),
//! and an executor that runs the same planned [`crate::graph::Graph`] as the CPU backend with
//! one command encoder per step ([`exec`]), each op recorded by its encoder (`encode`) and the
//! per-step values in a step buffer (`step`).

pub mod backend;
pub mod device;
mod encode;
pub mod exec;
pub mod kv;
pub mod params;
mod readback;
pub mod shaders;
mod step;
pub mod weights;

pub use device::{AdapterReport, GpuDevice, GpuError, list_adapters};
pub use exec::{GpuExecutor, GpuPreparedGraph};
pub use kv::GpuKvStore;
