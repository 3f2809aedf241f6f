//! What every backend is made of, written once: an executor that prepares and runs graphs
//! against its own kind of KV store ([`Executor`]), and the [`Backend`] built on it
//! ([`ExecutorBackend`]: the executor, its stores (one per layer, serving every sequence), the
//! prepared graphs by handle, and the per-sequence KV operations).
//! A backend implements [`Executor`] for its executor and [`KvLayer`] for its store.

use super::{Backend, BackendError, GraphId, KvLayer, Step};
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
    /// Run one step of `g` (already checked by [`Step::validate`]) over the stores `kv` (one
    /// per attention layer, serving every sequence); the output node's values.
    fn run<'a>(
        &'a mut self,
        g: &'a mut Self::Graph,
        step: &Step<'_>,
        kv: &mut [Self::Store],
    ) -> Result<&'a [f32], Self::Error>;
    /// Whether a step may mix sequences ([`Backend::batches_sequences`]).
    fn batches_sequences(&self) -> bool;
    /// Show `tap` the inputs of weight products ([`Backend::set_mat_mul_tap`]); `false` where
    /// the executor cannot.
    fn set_mat_mul_tap(&mut self, tap: Option<std::sync::Arc<dyn super::MatMulTap>>) -> bool {
        let _ = tap;
        false
    }
}

/// A [`Backend`] made of an executor, its KV stores (one per attention layer, each serving
/// every sequence: a pool of cells they share, or a ring each) and the graphs it has
/// prepared.
pub(crate) struct ExecutorBackend<E: Executor> {
    exec: E,
    kv: Vec<E::Store>,
    n_seq: usize,
    graphs: Vec<E::Graph>,
}

impl<E: Executor> ExecutorBackend<E> {
    /// `exec` with the stores `kv` (one per attention layer) of `n_seq` sequences.
    pub(crate) fn new(exec: E, kv: Vec<E::Store>, n_seq: usize) -> Self {
        assert!(n_seq > 0, "a backend serves at least one sequence");
        ExecutorBackend {
            exec,
            kv,
            n_seq,
            graphs: Vec::new(),
        }
    }

    /// Fails with [`BackendError::InvalidStep`] for a sequence the backend does not have.
    fn check_seq(&self, seq: u32) -> Result<(), BackendError> {
        if (seq as usize) < self.n_seq {
            Ok(())
        } else {
            Err(BackendError::InvalidStep(format!(
                "sequence {seq} is out of range (the backend has {} sequences)",
                self.n_seq
            )))
        }
    }
}

/// The number of sequences of `params` (0 is taken as 1).
pub(crate) fn n_seq(params: &super::BackendParams) -> usize {
    params.n_seq.max(1)
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

    fn run(&mut self, graph: GraphId, step: &Step<'_>) -> Result<&[f32], BackendError> {
        step.validate(self.n_seq())?;
        if !self.exec.batches_sequences() && step.only_seq().is_none() && step.n_tokens() > 0 {
            return Err(BackendError::Unsupported(format!(
                "{} runs the tokens of one sequence per step",
                self.exec.describe()
            )));
        }
        let n = self.graphs.len();
        let g = self.graphs.get_mut(graph.0).ok_or_else(|| {
            BackendError::InvalidStep(format!(
                "graph handle {} was not prepared by this backend ({n} graphs)",
                graph.0
            ))
        })?;
        self.exec.run(g, step, &mut self.kv).map_err(Into::into)
    }

    fn batches_sequences(&self) -> bool {
        self.exec.batches_sequences()
    }

    fn n_seq(&self) -> usize {
        self.n_seq
    }

    fn n_kv_layers(&self) -> usize {
        self.kv.len()
    }

    fn kv_layer_bytes(&self, layer: usize) -> usize {
        self.kv[layer].bytes()
    }

    fn kv_clear(&mut self) {
        self.kv.iter_mut().for_each(KvLayer::clear);
    }

    fn kv_truncate(&mut self, pos: i32) {
        for seq in 0..self.n_seq as u32 {
            self.kv.iter_mut().for_each(|st| st.seq_truncate(seq, pos));
        }
    }

    fn kv_seq_clear(&mut self, seq: u32) -> Result<(), BackendError> {
        self.kv_seq_truncate(seq, i32::MIN)
    }

    fn kv_seq_truncate(&mut self, seq: u32, pos: i32) -> Result<(), BackendError> {
        self.check_seq(seq)?;
        self.kv.iter_mut().for_each(|st| st.seq_truncate(seq, pos));
        Ok(())
    }

    fn kv_seq_copy(&mut self, src: u32, dst: u32, n: i32) -> Result<(), BackendError> {
        self.check_seq(src)?;
        self.check_seq(dst)?;
        self.kv.iter_mut().for_each(|st| st.seq_copy(src, dst, n));
        Ok(())
    }

    fn kv_seq_discard(
        &mut self,
        seq: u32,
        p0: i32,
        p1: i32,
        rotations: &[Option<crate::rope::KeyRotation>],
    ) -> Result<(), BackendError> {
        self.check_seq(seq)?;
        if p0 < 0 || p1 <= p0 || rotations.len() != self.kv.len() {
            return Err(BackendError::InvalidStep(format!(
                "discarding positions {p0}..{p1} with {} rotations for {} layers",
                rotations.len(),
                self.kv.len()
            )));
        }
        for st in &self.kv {
            st.check_discard(seq, p0, p1)?;
        }
        for (i, r) in rotations.iter().enumerate() {
            if let Err(e) = self.kv[i].seq_discard(seq, p0, p1, r.as_ref()) {
                // Some layers moved, some not: the sequence is lost.
                self.kv_seq_clear(seq)?;
                return Err(e);
            }
        }
        Ok(())
    }

    fn kv_seq_used_cells(&self, seq: u32) -> usize {
        if seq as usize >= self.n_seq {
            return 0;
        }
        self.kv.iter().map(|st| st.seq_used_cells(seq)).sum()
    }

    fn kv_used_cells(&self) -> usize {
        self.kv.iter().map(KvLayer::used_cells).sum()
    }

    fn kv_used_bytes(&self) -> usize {
        self.kv
            .iter()
            .map(|st| st.used_cells() * st.bytes() / st.n_cells().max(1))
            .sum()
    }

    fn kv_free_cells(&self) -> Option<usize> {
        self.kv.iter().filter_map(KvLayer::free_cells).min()
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
