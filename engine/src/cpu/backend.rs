//! The CPU as a backend: a [`CpuExecutor`] with its thread pool and one [`KvStore`] per
//! attention layer in host memory, serving every sequence (a pool of cells they share, or a
//! ring each for sliding-window layers). Steps may mix sequences.

use super::exec::{CpuExecutor, ExecError, PreparedGraph};
use super::kv::KvStore;
use super::pool::MAX_THREADS;
use crate::backend::executor::{self, Executor, ExecutorBackend};
use crate::backend::{Backend, BackendError, BackendParams, Step};
use crate::graph::Graph;

/// A CPU backend with `params.n_threads` threads and an empty KV store of each of
/// `params.kv_layers` for `params.n_seq` sequences; more threads than [`MAX_THREADS`], or a thread the system refuses, is an error.
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
    let n_seq = executor::n_seq(params);
    let kv = params
        .kv_layers
        .iter()
        .map(|s| {
            if s.pooled {
                KvStore::try_pool(params.pool_cells(s), n_seq, s.n_cells, s.k_width, s.v_width)
            } else {
                KvStore::try_rings(s.n_cells, n_seq, s.k_width, s.v_width)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Box::new(ExecutorBackend::new(exec, kv, n_seq)))
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
        step: &Step<'_>,
        kv: &mut [KvStore],
    ) -> Result<&'a [f32], ExecError> {
        CpuExecutor::run_step(self, g, step, kv)
    }

    fn batches_sequences(&self) -> bool {
        true
    }

    fn set_mat_mul_tap(
        &mut self,
        tap: Option<std::sync::Arc<dyn crate::backend::MatMulTap>>,
    ) -> bool {
        self.tap = tap;
        true
    }
}
