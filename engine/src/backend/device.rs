//! Which device a backend computes on: the CPU, or a GPU adapter by index. Named `cpu`, `gpu`
//! or `gpu:N` on command lines, in `TESSERA_DEVICE` and in the C ABI's parameters.

use super::BackendError;

/// A compute device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// SIMD kernels on the CPU's threads.
    #[default]
    Cpu,
    /// The GPU adapter of this index (0 = the best one; [`list_gpus`] lists them).
    Gpu(usize),
}

impl Device {
    /// Parse `cpu`, `gpu` or `gpu:N` (case-insensitive).
    pub fn parse(s: &str) -> Result<Device, BackendError> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu(0)),
            _ => s
                .strip_prefix("gpu:")
                .and_then(|n| n.parse().ok())
                .map(Device::Gpu)
                .ok_or(BackendError::UnknownDevice(s)),
        }
    }

    /// `TESSERA_DEVICE` if set (an invalid value is an error), else `None`.
    pub fn from_env() -> Result<Option<Device>, BackendError> {
        match std::env::var("TESSERA_DEVICE") {
            Ok(v) if !v.trim().is_empty() => Device::parse(&v).map(Some),
            _ => Ok(None),
        }
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

/// What one adapter is and offers.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    /// Index for `--gpu-index`.
    pub index: usize,
    /// Name as the driver gives it.
    pub name: String,
    /// Vulkan, Metal, DX12….
    pub backend: String,
    /// Discrete, integrated, CPU (software), virtual.
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Largest storage-buffer binding in bytes.
    pub max_storage_binding: u64,
    /// Largest buffer in bytes.
    pub max_buffer: u64,
    /// Workgroup memory in bytes.
    pub max_workgroup_storage: u32,
    /// Invocations per workgroup.
    pub max_invocations: u32,
    /// `shader-f16` is available.
    pub shader_f16: bool,
    /// Subgroup operations are available.
    pub subgroups: bool,
    /// Smallest and largest subgroup size the adapter reports.
    pub subgroup_size: (u32, u32),
}

/// Every GPU adapter this build can use, best first (none without the `gpu` feature).
pub fn list_gpus() -> Vec<AdapterReport> {
    #[cfg(feature = "gpu")]
    return crate::gpu::list_adapters();
    #[cfg(not(feature = "gpu"))]
    Vec::new()
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
        assert_eq!(
            Device::parse("TPU").unwrap_err().to_string(),
            "unknown device \"tpu\" (expected cpu, gpu or gpu:N)"
        );
    }
}
