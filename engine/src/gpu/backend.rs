//! A GPU as a backend: a [`GpuExecutor`] on a device opened once per process and shared by
//! every backend on it, and one [`GpuKvStore`] per attention layer in GPU memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::device::{GpuDevice, GpuError};
use super::exec::{GpuExecutor, GpuPreparedGraph};
use super::kv::GpuKvStore;
use crate::backend::executor::{Executor, ExecutorBackend};
use crate::backend::{Backend, BackendError, BackendParams};
use crate::graph::Graph;

/// The open GPU of adapter `index` (opened on first use, then shared by every context).
pub fn shared_device(index: usize) -> Result<Arc<GpuDevice>, GpuError> {
    static OPEN: OnceLock<Mutex<HashMap<usize, Arc<GpuDevice>>>> = OnceLock::new();
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(d) = open.get(&index) {
        return Ok(d.clone());
    }
    let d = GpuDevice::open(index)?;
    open.insert(index, d.clone());
    Ok(d)
}

/// A backend on adapter `index` with empty KV stores of `params.kv_layers`.
pub(crate) fn open(index: usize, params: &BackendParams) -> Result<Box<dyn Backend>, BackendError> {
    let dev = shared_device(index)?;
    let kv = params
        .kv_layers
        .iter()
        .map(|s| GpuKvStore::new(&dev, s.n_cells, s.k_width, s.v_width))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Box::new(ExecutorBackend::new(GpuExecutor::new(dev), kv)))
}

impl Executor for GpuExecutor {
    type Graph = GpuPreparedGraph;
    type Store = GpuKvStore;
    type Error = GpuError;

    fn describe(&self) -> String {
        self.device().describe()
    }

    fn n_threads(&self) -> usize {
        0
    }

    /// Every row's output must fit in one storage binding beside the other activations: room
    /// for three rows of `row_len` per token (the logits, a post-processed copy such as
    /// Gemma 2's soft-capped logits, and the rest).
    fn max_output_rows(&self, row_len: usize) -> Option<usize> {
        let rows = self.device().max_binding() / 4 / (3 * row_len.max(1) as u64);
        Some(rows as usize)
    }

    fn prepare(&mut self, graph: Graph) -> Result<GpuPreparedGraph, GpuError> {
        GpuExecutor::prepare(self, graph)
    }

    fn run<'a>(
        &'a mut self,
        g: &'a mut GpuPreparedGraph,
        tokens: &[u32],
        positions: &[i32],
        kv: &mut [GpuKvStore],
    ) -> Result<&'a [f32], GpuError> {
        GpuExecutor::run(self, g, tokens, positions, kv)
    }
}
