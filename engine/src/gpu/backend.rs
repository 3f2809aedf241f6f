//! A GPU as a [`Backend`]: a [`GpuExecutor`] on a device opened once per process and shared by
//! every backend on it, one [`GpuKvStore`] per attention layer in GPU memory, and the graphs it
//! has prepared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::device::{GpuDevice, GpuError};
use super::exec::{GpuExecutor, GpuPreparedGraph};
use super::kv::GpuKvStore;
use crate::backend::{Backend, BackendError, BackendParams, GraphId, KvLayer, PreparedGraphs};
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

/// One context's GPU state.
pub struct GpuBackend {
    exec: GpuExecutor,
    kv: Vec<GpuKvStore>,
    graphs: PreparedGraphs<GpuPreparedGraph>,
}

impl GpuBackend {
    /// A backend on adapter `index` with empty KV stores of `params.kv_layers`.
    pub fn new(index: usize, params: &BackendParams) -> Result<GpuBackend, GpuError> {
        let dev = shared_device(index)?;
        let kv = params
            .kv_layers
            .iter()
            .map(|s| GpuKvStore::new(&dev, s.n_cells, s.k_width, s.v_width))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GpuBackend {
            exec: GpuExecutor::new(dev),
            kv,
            graphs: PreparedGraphs::default(),
        })
    }
}

impl Backend for GpuBackend {
    fn describe(&self) -> String {
        self.exec.device().describe()
    }

    fn n_threads(&self) -> usize {
        0
    }

    /// Every row's output must fit in one storage binding beside the other activations.
    fn max_output_rows(&self, row_len: usize) -> Option<usize> {
        let rows = self.exec.device().max_binding() / 4 / (2 * row_len.max(1) as u64);
        Some(rows as usize)
    }

    fn prepare(&mut self, graph: Graph) -> Result<GraphId, BackendError> {
        Ok(self.graphs.insert(self.exec.prepare(graph)?))
    }

    fn run(
        &mut self,
        graph: GraphId,
        tokens: &[u32],
        positions: &[i32],
    ) -> Result<&[f32], BackendError> {
        let g = self.graphs.get_mut(graph)?;
        Ok(self.exec.run(g, tokens, positions, &mut self.kv)?)
    }

    fn n_kv_layers(&self) -> usize {
        self.kv.len()
    }

    fn kv_layer(&self, layer: usize) -> &dyn KvLayer {
        &self.kv[layer]
    }

    fn kv_clear(&mut self) {
        self.kv.iter_mut().for_each(GpuKvStore::clear);
    }

    fn kv_truncate(&mut self, pos: i32) {
        self.kv.iter_mut().for_each(|s| s.truncate(pos));
    }
}
