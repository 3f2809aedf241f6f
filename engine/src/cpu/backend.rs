//! The CPU as a backend: a [`CpuExecutor`] with its thread pool and one [`KvStore`] per
//! attention layer in host memory.

use super::exec::{CpuExecutor, ExecError, PreparedGraph};
use super::kv::KvStore;
use super::pool::MAX_THREADS;
use crate::backend::executor::{Executor, ExecutorBackend};
use crate::backend::{Backend, BackendError, BackendParams};
use crate::graph::Graph;

/// A CPU backend with `params.n_threads` threads and empty KV stores of `params.kv_layers`;
/// more threads than [`MAX_THREADS`], or a thread the system refuses, is an error.
pub(crate) fn open(params: &BackendParams) -> Result<Box<dyn Backend>, BackendError> {
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
    let kv = params
        .kv_layers
        .iter()
        .map(|s| KvStore::try_new(s.n_cells, s.k_width, s.v_width))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Box::new(ExecutorBackend::new(exec, kv)))
}

impl Executor for CpuExecutor {
    type Graph = PreparedGraph;
    type Store = KvStore;
    type Error = ExecError;

    fn describe(&self) -> String {
        "cpu".into()
    }

    fn n_threads(&self) -> usize {
        CpuExecutor::n_threads(self)
    }

    fn max_output_rows(&self, _row_len: usize) -> Option<usize> {
        None
    }

    fn prepare(&mut self, graph: Graph) -> Result<PreparedGraph, ExecError> {
        CpuExecutor::prepare(self, graph)
    }

    fn run<'a>(
        &'a mut self,
        g: &'a mut PreparedGraph,
        tokens: &[u32],
        positions: &[i32],
        kv: &mut [KvStore],
    ) -> Result<&'a [f32], ExecError> {
        CpuExecutor::run(self, g, tokens, positions, kv)
    }

    fn set_mat_mul_tap(
        &mut self,
        tap: Option<std::sync::Arc<dyn crate::backend::MatMulTap>>,
    ) -> bool {
        self.tap = tap;
        true
    }
}
