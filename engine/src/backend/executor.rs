//! What every backend is made of, written once: an executor that prepares and runs graphs
//! against its own kind of KV store ([`Executor`]), and the [`Backend`] built on it
//! ([`ExecutorBackend`]: the executor, one store per layer, the prepared graphs by handle).
//! A backend implements [`Executor`] for its executor and [`KvLayer`] for its store.

use super::{Backend, BackendError, GraphId, KvLayer};
use crate::graph::Graph;

/// A backend's executor: plans graphs for its device and runs them over its KV stores.
pub(crate) trait Executor: Send {
    /// A graph planned and compiled for this executor.
    type Graph: Send;
    /// One layer's KV store in this executor's memory.
    type Store: KvLayer + Send;
    /// Its own error, typed by cause on the way out.
    type Error: Into<BackendError>;

    /// What computes ([`Backend::describe`]).
    fn describe(&self) -> String;
    /// CPU threads in use ([`Backend::n_threads`]).
    fn n_threads(&self) -> usize;
    /// The device's bound on output rows per step ([`Backend::max_output_rows`]).
    fn max_output_rows(&self, row_len: usize) -> Option<usize>;
    /// Plan `graph` and resolve its kernels.
    fn prepare(&mut self, graph: Graph) -> Result<Self::Graph, Self::Error>;
    /// Run one step of `g` over the stores `kv`; the output node's values.
    fn run<'a>(
        &'a mut self,
        g: &'a mut Self::Graph,
        tokens: &[u32],
        positions: &[i32],
        kv: &mut [Self::Store],
    ) -> Result<&'a [f32], Self::Error>;
    /// Show `tap` the inputs of weight products ([`Backend::set_mat_mul_tap`]); `false` where
    /// the executor cannot.
    fn set_mat_mul_tap(&mut self, tap: Option<std::sync::Arc<dyn super::MatMulTap>>) -> bool {
        let _ = tap;
        false
    }
}

/// A [`Backend`] made of an executor, its KV stores and the graphs it has prepared.
pub(crate) struct ExecutorBackend<E: Executor> {
    exec: E,
    kv: Vec<E::Store>,
    graphs: Vec<E::Graph>,
}

impl<E: Executor> ExecutorBackend<E> {
    /// `exec` with the stores `kv`, one per attention layer.
    pub(crate) fn new(exec: E, kv: Vec<E::Store>) -> Self {
        ExecutorBackend {
            exec,
            kv,
            graphs: Vec::new(),
        }
    }
}

impl<E: Executor> Backend for ExecutorBackend<E> {
    fn describe(&self) -> String {
        self.exec.describe()
    }

    fn n_threads(&self) -> usize {
        self.exec.n_threads()
    }

    fn max_output_rows(&self, row_len: usize) -> Option<usize> {
        self.exec.max_output_rows(row_len)
    }

    fn prepare(&mut self, graph: Graph) -> Result<GraphId, BackendError> {
        let g = self.exec.prepare(graph).map_err(Into::into)?;
        self.graphs.push(g);
        Ok(GraphId(self.graphs.len() - 1))
    }

    fn run(
        &mut self,
        graph: GraphId,
        tokens: &[u32],
        positions: &[i32],
    ) -> Result<&[f32], BackendError> {
        let n = self.graphs.len();
        let g = self.graphs.get_mut(graph.0).ok_or_else(|| {
            BackendError::InvalidStep(format!(
                "graph handle {} was not prepared by this backend ({n} graphs)",
                graph.0
            ))
        })?;
        self.exec
            .run(g, tokens, positions, &mut self.kv)
            .map_err(Into::into)
    }

    fn n_kv_layers(&self) -> usize {
        self.kv.len()
    }

    fn kv_layer(&self, layer: usize) -> &dyn KvLayer {
        &self.kv[layer]
    }

    fn kv_clear(&mut self) {
        self.kv.iter_mut().for_each(KvLayer::clear);
    }

    fn kv_truncate(&mut self, pos: i32) {
        self.kv.iter_mut().for_each(|s| s.truncate(pos));
    }

    fn set_mat_mul_tap(
        &mut self,
        tap: Option<std::sync::Arc<dyn super::MatMulTap>>,
    ) -> Result<(), BackendError> {
        let device = self.exec.describe();
        if self.exec.set_mat_mul_tap(tap) {
            Ok(())
        } else {
            Err(BackendError::Unsupported(format!(
                "watching weight-product inputs (importance matrices) runs on the CPU, not on {device}"
            )))
        }
    }
}
