//! The CPU as a backend: a [`CpuExecutor`] with its thread pool and one [`KvStore`] per
//! attention layer and sequence slot in host memory. Steps may mix sequences.

use super::exec::{CpuExecutor, ExecError, PreparedGraph};
use super::kv::KvStore;
use super::pool::MAX_THREADS;
use crate::backend::executor::{self, Executor, ExecutorBackend};
use crate::backend::{Backend, BackendError, BackendParams, Step};
use crate::graph::Graph;

/// A CPU backend with `params.n_threads` threads and empty KV stores of `params.kv_layers`
/// for each of `params.n_seq` sequence slots; more threads than [`MAX_THREADS`], or a thread the system refuses, is an error.
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
    let kv = (0..executor::n_seq(params))
        .flat_map(|_| &params.kv_layers)
        .map(|s| KvStore::try_new(s.n_cells, s.k_width, s.v_width))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Box::new(ExecutorBackend::new(
        exec,
        kv,
        executor::n_seq(params),
    )))
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
        n_layers: usize,
    ) -> Result<&'a [f32], ExecError> {
        CpuExecutor::run_step(self, g, step, kv, n_layers)
    }

    fn batches_sequences(&self) -> bool {
        true
    }

    fn copy_store(&mut self, src: &KvStore, dst: &mut KvStore) {
        dst.copy_from(src);
    }

    fn set_mat_mul_tap(
        &mut self,
        tap: Option<std::sync::Arc<dyn crate::backend::MatMulTap>>,
    ) -> bool {
        self.tap = tap;
        true
    }
}
