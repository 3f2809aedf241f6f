//! What every backend is made of, written once: an executor that prepares and runs graphs
//! against its own kind of KV store ([`Executor`]), and the [`Backend`] built on it
//! ([`ExecutorBackend`]: the executor, one store per layer and sequence slot, the prepared
//! graphs by handle, and the per-sequence KV operations).
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
    /// Run one step of `g` (already checked by [`Step::validate`]) over the stores `kv`:
    /// `n_layers` per sequence, sequence after sequence; the output node's values.
    fn run<'a>(
        &'a mut self,
        g: &'a mut Self::Graph,
        step: &Step<'_>,
        kv: &mut [Self::Store],
        n_layers: usize,
    ) -> Result<&'a [f32], Self::Error>;
    /// Whether a step may mix sequences ([`Backend::batches_sequences`]).
    fn batches_sequences(&self) -> bool;
    /// Make `dst` (a store of the same shape) hold what `src` holds: keys, values and cell
    /// positions.
    fn copy_store(&mut self, src: &Self::Store, dst: &mut Self::Store);
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
    /// `n_layers` stores per sequence slot, slot after slot.
    kv: Vec<E::Store>,
    n_layers: usize,
    n_seq: usize,
    graphs: Vec<E::Graph>,
}

impl<E: Executor> ExecutorBackend<E> {
    /// `exec` with the stores `kv` of `n_seq` sequence slots (at least 1): one per attention
    /// layer for each slot, slot after slot.
    pub(crate) fn new(exec: E, kv: Vec<E::Store>, n_seq: usize) -> Self {
        assert!(
            n_seq > 0 && kv.len().is_multiple_of(n_seq),
            "whole sequence slots of stores"
        );
        ExecutorBackend {
            exec,
            n_layers: kv.len() / n_seq,
            n_seq,
            kv,
            graphs: Vec::new(),
        }
    }

    /// Sequence `seq`'s stores, or [`BackendError::InvalidStep`] for a slot it does not have.
    fn seq_range(&self, seq: u32) -> Result<std::ops::Range<usize>, BackendError> {
        let n_seq = self.n_seq();
        if seq as usize >= n_seq {
            return Err(BackendError::InvalidStep(format!(
                "sequence {seq} is out of range (the backend has {n_seq} sequence slots)"
            )));
        }
        let s = seq as usize * self.n_layers;
        Ok(s..s + self.n_layers)
    }
}

/// The number of sequence slots of `params` (0 is taken as 1).
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
        self.exec
            .run(g, step, &mut self.kv, self.n_layers)
            .map_err(Into::into)
    }

    fn batches_sequences(&self) -> bool {
        self.exec.batches_sequences()
    }

    fn n_seq(&self) -> usize {
        self.n_seq
    }

    fn n_kv_layers(&self) -> usize {
        self.n_layers
    }

    fn kv_seq_layer(&self, seq: u32, layer: usize) -> &dyn KvLayer {
        assert!(layer < self.n_layers, "layer {layer} of {}", self.n_layers);
        &self.kv[seq as usize * self.n_layers + layer]
    }

    fn kv_clear(&mut self) {
        self.kv.iter_mut().for_each(KvLayer::clear);
    }

    fn kv_truncate(&mut self, pos: i32) {
        self.kv.iter_mut().for_each(|s| s.truncate(pos));
    }

    fn kv_seq_clear(&mut self, seq: u32) -> Result<(), BackendError> {
        let r = self.seq_range(seq)?;
        self.kv[r].iter_mut().for_each(KvLayer::clear);
        Ok(())
    }

    fn kv_seq_truncate(&mut self, seq: u32, pos: i32) -> Result<(), BackendError> {
        let r = self.seq_range(seq)?;
        self.kv[r].iter_mut().for_each(|s| s.truncate(pos));
        Ok(())
    }

    fn kv_seq_copy(&mut self, src: u32, dst: u32, n: i32) -> Result<(), BackendError> {
        let (rs, rd) = (self.seq_range(src)?, self.seq_range(dst)?);
        if src != dst {
            for (a, b) in rs.zip(rd) {
                // Borrow the source store and the destination store (another slot) together.
                let (src_store, dst_store) = if a < b {
                    let (lo, hi) = self.kv.split_at_mut(b);
                    (&lo[a], &mut hi[0])
                } else {
                    let (lo, hi) = self.kv.split_at_mut(a);
                    (&hi[0], &mut lo[b])
                };
                self.exec.copy_store(src_store, dst_store);
            }
        }
        self.kv_seq_truncate(dst, n)
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
