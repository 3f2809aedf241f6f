//! Finding and opening a GPU through wgpu: the adapters this machine offers (Vulkan, Metal,
//! DX12), what each reports (name, backend, limits, optional features, subgroup sizes), and a
//! [`GpuDevice`] opened on one of them with the limits the kernels need.

use std::sync::{Arc, Weak};

use super::weights::GpuWeight;
use crate::Tensor;

/// Why no GPU could be opened.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// wgpu found no adapter at all.
    #[error(
        "no GPU adapter found (wgpu saw no Vulkan, Metal or DX12 device; on Linux without a GPU, \
         install a software one: apt-get install mesa-vulkan-drivers)"
    )]
    NoAdapter,
    /// `--gpu-index` past the last adapter.
    #[error(
        "GPU index {index} does not exist: {count} adapter(s) found (see `tessera info --devices`)"
    )]
    BadIndex {
        /// The index asked for.
        index: usize,
        /// Adapters found.
        count: usize,
    },
    /// The adapter refused to open a device.
    #[error("could not open the GPU {name:?}: {source}")]
    RequestDevice {
        /// Adapter name.
        name: String,
        /// wgpu's reason.
        source: wgpu::RequestDeviceError,
    },
    /// A tensor type without GPU kernels.
    #[error("tensor {name:?} has type {dtype}, which the GPU backend cannot compute with")]
    UnsupportedDType {
        /// The tensor.
        name: String,
        /// Its type.
        dtype: crate::DType,
    },
    /// A shape the kernels do not handle.
    #[error("the GPU backend cannot run this graph: {0}")]
    Unsupported(String),
    /// wgpu reported an error while running.
    #[error("GPU error: {0}")]
    Device(String),
    /// A step needs more KV cells than the pool has free.
    #[error(transparent)]
    KvFull(#[from] crate::kv_cells::PoolFull),
}

pub use crate::backend::AdapterReport;

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if std::env::var_os("WGPU_BACKEND").is_none() {
        desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    }
    wgpu::Instance::new(desc)
}

fn adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut list = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    // Real GPUs first, software rasterisers last, so index 0 is the best choice.
    list.sort_by_key(|a| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    });
    list
}

fn report(index: usize, a: &wgpu::Adapter) -> AdapterReport {
    let info = a.get_info();
    let limits = a.limits();
    let features = a.features();
    AdapterReport {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        max_storage_binding: limits.max_storage_buffer_binding_size,
        max_buffer: limits.max_buffer_size,
        max_workgroup_storage: limits.max_compute_workgroup_storage_size,
        max_invocations: limits.max_compute_invocations_per_workgroup,
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        subgroups: features.contains(wgpu::Features::SUBGROUP),
        subgroup_size: (info.subgroup_min_size, info.subgroup_max_size),
    }
}

/// Every adapter wgpu finds, best first.
pub fn list_adapters() -> Vec<AdapterReport> {
    adapters(&instance())
        .iter()
        .enumerate()
        .map(|(i, a)| report(i, a))
        .collect()
}

/// An open GPU: wgpu device and queue plus what its adapter reported.
pub struct GpuDevice {
    /// The wgpu device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// What the adapter is.
    pub report: AdapterReport,
    /// The limits the device was opened with.
    pub limits: wgpu::Limits,
    /// Whether the device was opened with subgroup operations (the adapter has them); kernels
    /// use them where a subgroup is wide enough, and workgroup memory otherwise.
    pub subgroups: bool,
    /// The first error wgpu reported and nobody has collected yet.
    errors: Arc<std::sync::Mutex<Option<String>>>,
    /// Uploaded weights by the address and length of their bytes, shared by every executor
    /// on this device; an entry lives as long as some executor holds the upload.
    weights: std::sync::Mutex<std::collections::HashMap<(usize, usize), Weak<GpuWeight>>>,
    /// A cap on weight chunks in bytes below the binding limit (0: none), see
    /// [`GpuDevice::limit_weight_chunks`].
    chunk_cap: std::sync::atomic::AtomicU64,
}

impl GpuDevice {
    /// Open adapter `index` of [`list_adapters`] (0 = the best one).
    pub fn open(index: usize) -> Result<Arc<GpuDevice>, GpuError> {
        let instance = instance();
        let list = adapters(&instance);
        if list.is_empty() {
            return Err(GpuError::NoAdapter);
        }
        let Some(adapter) = list.get(index) else {
            return Err(GpuError::BadIndex {
                index,
                count: list.len(),
            });
        };
        let report = report(index, adapter);
        // Ask for everything the adapter has: large weight tensors need the largest bindings.
        let limits = adapter.limits();
        // Optional features the kernels use when present: subgroup shuffles (mat-vec sums).
        let subgroups = report.subgroups;
        let required_features = if subgroups {
            wgpu::Features::SUBGROUP
        } else {
            wgpu::Features::empty()
        };
        let desc = wgpu::DeviceDescriptor {
            label: Some("tessera"),
            required_features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            GpuError::RequestDevice {
                name: report.name.clone(),
                source: e,
            }
        })?;
        // wgpu's default for errors is a panic; keep the first one for `check` instead.
        let errors = Arc::new(std::sync::Mutex::new(None));
        let slot = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            if s.is_none() {
                *s = Some(e.to_string());
            }
        }));
        Ok(Arc::new(GpuDevice {
            device,
            queue,
            report,
            limits,
            subgroups,
            errors,
            weights: Default::default(),
            chunk_cap: Default::default(),
        }))
    }

    /// A one-line description: name (backend, type).
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {})",
            self.report.name, self.report.backend, self.report.device_type
        )
    }

    /// The first error wgpu reported since the last check, as an `Err`.
    pub fn check(&self) -> Result<(), GpuError> {
        let mut s = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        match s.take() {
            Some(e) => Err(GpuError::Device(e)),
            None => Ok(()),
        }
    }

    /// `t` in GPU memory: the upload another executor on this device already holds, or a new
    /// one. Two contexts on one model share one copy of the weights.
    pub fn shared_weight(self: &Arc<Self>, t: &Tensor) -> Result<Arc<GpuWeight>, GpuError> {
        let key = super::weights::weight_key(t);
        let mut cache = self.weights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = cache.get(&key).and_then(Weak::upgrade) {
            return Ok(w);
        }
        cache.retain(|_, w| w.strong_count() > 0);
        let w = Arc::new(GpuWeight::upload(self, t)?);
        cache.insert(key, Arc::downgrade(&w));
        Ok(w)
    }

    /// Bytes of weights in GPU memory, over every executor on this device.
    pub fn weight_bytes(&self) -> u64 {
        let cache = self.weights.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .values()
            .filter_map(Weak::upgrade)
            .map(|w| w.bytes())
            .sum()
    }

    /// Split weights uploaded from now on into chunks of at most `bytes` (0: the binding
    /// limit only), so that tests exercise the chunked paths on any adapter without tensors
    /// of hundreds of MiB. Weights already uploaded keep their chunks.
    pub fn limit_weight_chunks(&self, bytes: u64) {
        self.chunk_cap
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Largest chunk of a weight, in bytes: [`GpuDevice::max_binding`], or less where
    /// [`GpuDevice::limit_weight_chunks`] says so.
    pub fn max_weight_chunk(&self) -> u64 {
        match self.chunk_cap.load(std::sync::atomic::Ordering::Relaxed) {
            0 => self.max_binding(),
            cap => cap.min(self.max_binding()),
        }
    }

    /// Largest storage binding the kernels may use, in bytes (a multiple of 4).
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
            & !3
    }
}
