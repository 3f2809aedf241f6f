//! The CPU as a [`Backend`]: a [`CpuExecutor`] with its thread pool, one [`KvStore`] per
//! attention layer in host memory, and the graphs it has prepared.

use super::exec::{CpuExecutor, PreparedGraph};
use super::kv::KvStore;
use super::pool::MAX_THREADS;
use crate::backend::{Backend, BackendError, BackendParams, GraphId, KvLayer, PreparedGraphs};
use crate::graph::Graph;

/// One context's CPU state.
pub struct CpuBackend {
    exec: CpuExecutor,
    kv: Vec<KvStore>,
    graphs: PreparedGraphs<PreparedGraph>,
}

impl CpuBackend {
    /// An executor with `params.n_threads` threads and empty KV stores of `params.kv_layers`;
    /// more threads than [`MAX_THREADS`], or a thread the system refuses, is an error.
    pub fn new(params: &BackendParams) -> Result<CpuBackend, BackendError> {
        if params.n_threads > MAX_THREADS {
            return Err(BackendError::Unsupported(format!(
                "{} threads: the CPU backend takes at most {MAX_THREADS}",
                params.n_threads
            )));
        }
        let exec = CpuExecutor::try_new(params.n_threads).map_err(|e| {
            BackendError::Device(format!(
                "could not start {} CPU threads: {e}",
                params.n_threads
            ))
        })?;
        Ok(CpuBackend {
            exec,
            kv: params
                .kv_layers
                .iter()
                .map(|s| KvStore::new(s.n_cells, s.k_width, s.v_width))
                .collect(),
            graphs: PreparedGraphs::default(),
        })
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        "cpu".into()
    }

    fn n_threads(&self) -> usize {
        self.exec.n_threads()
    }

    fn max_output_rows(&self, _row_len: usize) -> Option<usize> {
        None
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
        self.kv.iter_mut().for_each(KvStore::clear);
    }

    fn kv_truncate(&mut self, pos: i32) {
        self.kv.iter_mut().for_each(|s| s.truncate(pos));
    }
}
