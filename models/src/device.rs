//! Which backend a context computes on: the CPU, or a GPU adapter by index. Chosen with
//! `--device cpu|gpu` / `--gpu-index N` on the command line, `TESSERA_DEVICE` in the
//! environment (`cpu`, `gpu`, `gpu:N`), or the C ABI's context parameters. GPUs are opened
//! once per process and shared by every context on them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tessera_engine::gpu::GpuDevice;

use crate::error::{ModelError, Result};

/// A compute device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// SIMD kernels on the CPU's threads.
    #[default]
    Cpu,
    /// The GPU adapter of this index (0 = the best one; `tessera info --devices` lists them).
    Gpu(usize),
}

impl Device {
    /// Parse `cpu`, `gpu` or `gpu:N` (case-insensitive).
    pub fn parse(s: &str) -> Result<Device> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu(0)),
            _ => s
                .strip_prefix("gpu:")
                .and_then(|n| n.parse().ok())
                .map(Device::Gpu)
                .ok_or_else(|| {
                    ModelError::InvalidInput(format!(
                        "unknown device {s:?} (expected cpu, gpu or gpu:N)"
                    ))
                }),
        }
    }

    /// `TESSERA_DEVICE` if set (an invalid value is an error), else `None`.
    pub fn from_env() -> Result<Option<Device>> {
        match std::env::var("TESSERA_DEVICE") {
            Ok(v) if !v.trim().is_empty() => Device::parse(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// The open GPU of a `Gpu` device (opened on first use, then shared).
    pub fn open_gpu(index: usize) -> Result<Arc<GpuDevice>> {
        static OPEN: OnceLock<Mutex<HashMap<usize, Arc<GpuDevice>>>> = OnceLock::new();
        let mut open = OPEN
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(d) = open.get(&index) {
            return Ok(d.clone());
        }
        let d = GpuDevice::open(index).map_err(|e| ModelError::Backend(e.to_string()))?;
        open.insert(index, d.clone());
        Ok(d)
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Gpu(i) => write!(f, "gpu:{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
        assert_eq!(Device::parse("GPU").unwrap(), Device::Gpu(0));
        assert_eq!(Device::parse("gpu:2").unwrap(), Device::Gpu(2));
        assert!(Device::parse("tpu").is_err());
        assert!(Device::parse("gpu:x").is_err());
    }
}
