//! A GPU as a backend: a [`GpuExecutor`] on a device opened once per process and shared by
//! every backend on it, and one [`GpuKvStore`] per attention layer in GPU memory, serving
//! every sequence as the CPU's stores do (a pool of cells they share, or a ring each for
//! sliding-window layers). A step may mix sequences: its weight products run over all its
//! rows at once, and each sequence's attention over its own cells.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::device::{GpuDevice, GpuError};
use super::exec::{GpuExecutor, GpuPreparedGraph};
use super::kv::GpuKvStore;
use crate::backend::executor::{self, Executor, ExecutorBackend};
use crate::backend::{Backend, BackendError, BackendParams, Step};
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

/// A backend on adapter `index` with an empty KV store of each of `params.kv_layers` for
/// `params.n_seq` sequences.
pub(crate) fn open(index: usize, params: &BackendParams) -> Result<Box<dyn Backend>, BackendError> {
    let dev = shared_device(index)?;
    let n_seq = executor::n_seq(params);
    let kv = params
        .kv_layers
        .iter()
        .map(|s| {
            if s.pooled {
                let cells = params.pool_cells(s);
                GpuKvStore::pool(&dev, cells, n_seq, s.n_cells, s.k_width, s.v_width)
            } else {
                GpuKvStore::rings(&dev, s.n_cells, n_seq, s.k_width, s.v_width)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut exec = GpuExecutor::new(dev);
    exec.set_max_sequences(n_seq);
    Ok(Box::new(ExecutorBackend::new(exec, kv, n_seq)))
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
        step: &Step<'_>,
        kv: &mut [GpuKvStore],
    ) -> Result<&'a [f32], GpuError> {
        GpuExecutor::run_step(self, g, step, kv)
    }

    fn batches_sequences(&self) -> bool {
        true
    }
}
