//! Backends behind one trait: what the model side sees of the hardware it computes on.
//!
//! A [`Backend`] is one context's compute state on one device: its executor (CPU threads or a
//! GPU queue), the KV stores of every attention layer in that device's memory, and the graphs it
//! has prepared. [`open`] builds one for a [`Device`]; the model side holds a
//! `Box<dyn Backend>` and never names the CPU or GPU executors. A new backend is an engine-only
//! change: a [`Device`] variant, an executor implementing `executor::Executor` with a store
//! implementing [`KvLayer`] (the [`Backend`] around them is written once), and a line in
//! [`open`].

mod device;
mod error;
pub(crate) mod executor;
mod step;
mod tap;

pub use device::{AdapterReport, Device, list_gpus};
pub use error::BackendError;
pub use step::Step;
pub use tap::MatMulTap;

use crate::graph::Graph;

/// The shape of one attention layer's KV store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvShape {
    /// Cells (tokens) one sequence's store holds: the context, or a sliding window's ring.
    pub n_cells: usize,
    /// Whether the layer's sequences may share one pool of cells
    /// ([`BackendParams::kv_pool_cells`]); `false`: a ring of `n_cells` per sequence.
    pub pooled: bool,
    /// Key elements per cell (KV heads × key head width).
    pub k_width: usize,
    /// Value elements per cell (KV heads × value head width).
    pub v_width: usize,
}

/// What a backend is built with.
#[derive(Clone, Debug, Default)]
pub struct BackendParams {
    /// CPU threads (0 = all cores); backends that are not the CPU ignore it.
    pub n_threads: usize,
    /// One KV store per attention layer, in layer order.
    pub kv_layers: Vec<KvShape>,
    /// Sequences (0 is taken as 1).
    pub n_seq: usize,
    /// Cells of the pool that the sequences of each pooled layer share (0: `n_cells × n_seq`,
    /// as much as separate stores would hold). Backends without pools (the GPU) give each
    /// sequence its own store of `n_cells` instead.
    pub kv_pool_cells: usize,
}

impl BackendParams {
    /// Cells of a pooled layer's pool of shape `s`.
    pub fn pool_cells(&self, s: &KvShape) -> usize {
        if self.kv_pool_cells > 0 {
            self.kv_pool_cells
        } else {
            s.n_cells.saturating_mul(self.n_seq.max(1))
        }
    }
}

/// A graph prepared by a backend, named by the handle [`Backend::prepare`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GraphId(pub(crate) usize);

/// One layer's KV store, for every sequence of a backend.
pub trait KvLayer {
    /// Cells in the store.
    fn n_cells(&self) -> usize;
    /// Bytes the store holds (keys, values and cell positions), on whatever device.
    fn bytes(&self) -> usize;
    /// Cells holding a token of some sequence (a cell sequences share counts once).
    fn used_cells(&self) -> usize;
    /// Cells holding a token of sequence `seq`.
    fn seq_used_cells(&self, seq: u32) -> usize;
    /// Free cells of a pool that sequences share (`None`: the store has none to run out of).
    fn free_cells(&self) -> Option<usize> {
        None
    }
    /// Forget every token.
    fn clear(&mut self);
    /// Forget sequence `seq`'s tokens at positions `>= pos`.
    fn seq_truncate(&mut self, seq: u32, pos: i32);
    /// Make sequence `dst` hold what `src` holds at positions `< n` and nothing else.
    fn seq_copy(&mut self, src: u32, dst: u32, n: i32);
    /// Fails unless [`Self::seq_discard`] can drop sequence `seq`'s positions `p0..p1`.
    fn check_discard(&self, seq: u32, p0: i32, p1: i32) -> Result<(), BackendError> {
        let _ = (seq, p0, p1);
        Err(BackendError::Unsupported(
            "this KV store cannot drop tokens from the middle of a sequence".into(),
        ))
    }
    /// Drop sequence `seq`'s tokens at `p0..p1` and move its later tokens back by `p1 - p0`,
    /// their keys rotated by `rotation` (`None`: no RoPE in this layer); after
    /// [`Self::check_discard`]. Fails only where the device does (the store is then lost).
    fn seq_discard(
        &mut self,
        seq: u32,
        p0: i32,
        p1: i32,
        rotation: Option<&crate::rope::KeyRotation>,
    ) -> Result<(), BackendError> {
        let _ = (seq, p0, p1, rotation);
        Ok(())
    }
}

/// One context's compute state on one device: executor, KV stores and prepared graphs.
pub trait Backend: Send {
    /// What computes: `cpu`, or a GPU adapter's name, API and type.
    fn describe(&self) -> String;

    /// CPU threads in use (0 where the backend is not the CPU).
    fn n_threads(&self) -> usize;

    /// The most output rows of `row_len` floats one step may produce, where the device bounds
    /// it (a GPU's largest storage binding); `None` where it does not.
    fn max_output_rows(&self, row_len: usize) -> Option<usize>;

    /// Plan `graph` and resolve its kernels; the handle runs it as often as wanted.
    fn prepare(&mut self, graph: Graph) -> Result<GraphId, BackendError>;

    /// Run one step of a prepared graph: its tokens, each attending over its own sequence's
    /// stores and extending them. Returns the output node's values (`rows × cols`). A step
    /// breaking [`Step::validate`]'s rules is [`BackendError::InvalidStep`]; a step mixing
    /// sequences where [`Self::batches_sequences`] is false is [`BackendError::Unsupported`].
    fn run(&mut self, graph: GraphId, step: &Step<'_>) -> Result<&[f32], BackendError>;

    /// Whether one step may hold tokens of several sequences, and graphs may select output
    /// rows ([`crate::graph::OutputRows::Rows`]); where not, callers step one sequence at a
    /// time with [`crate::graph::OutputRows::All`] or [`crate::graph::OutputRows::Last`].
    fn batches_sequences(&self) -> bool;

    /// Sequences.
    fn n_seq(&self) -> usize;

    /// Number of KV stores (one per attention layer).
    fn n_kv_layers(&self) -> usize;

    /// Bytes the KV store of layer `layer` (`< n_kv_layers()`) holds for every sequence.
    fn kv_layer_bytes(&self, layer: usize) -> usize;

    /// Forget every cached token of every sequence.
    fn kv_clear(&mut self);

    /// Forget the cached tokens at positions `>= pos` of every sequence.
    fn kv_truncate(&mut self, pos: i32);

    /// Forget every cached token of sequence `seq`.
    fn kv_seq_clear(&mut self, seq: u32) -> Result<(), BackendError>;

    /// Forget the cached tokens of sequence `seq` at positions `>= pos`.
    fn kv_seq_truncate(&mut self, seq: u32, pos: i32) -> Result<(), BackendError>;

    /// Make sequence `dst` hold what sequence `src` holds at positions `< n` and nothing else
    /// (a shared prefix forked: a pool shares its cells, other stores copy); `src == dst`
    /// truncates.
    fn kv_seq_copy(&mut self, src: u32, dst: u32, n: i32) -> Result<(), BackendError>;

    /// Drop sequence `seq`'s tokens at positions `p0..p1` (`p0 < p1`) and move its later
    /// tokens back by `p1 - p0`, each layer's keys rotated by its `rotations` entry (`None`:
    /// the layer has no RoPE): llama.cpp's `seq_rm` then `seq_add`. Cells other sequences
    /// share are copied first. Refused, changing nothing, where the pool lacks cells for the
    /// copies; a device failing while the cells move leaves the sequence empty
    /// ([`BackendError::Device`]).
    fn kv_seq_discard(
        &mut self,
        seq: u32,
        p0: i32,
        p1: i32,
        rotations: &[Option<crate::rope::KeyRotation>],
    ) -> Result<(), BackendError>;

    /// Cells holding a token of sequence `seq`, all layers together.
    fn kv_seq_used_cells(&self, seq: u32) -> usize;

    /// Cells holding a token of some sequence, all layers together (a cell sequences share
    /// counts once).
    fn kv_used_cells(&self) -> usize;

    /// Bytes of the KV stores holding tokens now.
    fn kv_used_bytes(&self) -> usize;

    /// Tokens that still fit in the pool the sequences share (the fewest free cells of any
    /// pooled layer); `None` where there is no pool to run out of (every sequence has its own
    /// stores of the context's size).
    fn kv_free_cells(&self) -> Option<usize>;

    /// Show `tap` the inputs of the weight products of every step from now on (`None`: stop).
    /// Only the CPU backend can; others return [`BackendError::Unsupported`].
    fn set_mat_mul_tap(
        &mut self,
        tap: Option<std::sync::Arc<dyn MatMulTap>>,
    ) -> Result<(), BackendError>;
}

/// A backend on `device` with `params`' threads and KV stores. GPUs are opened once per
/// process and shared by every backend on them.
pub fn open(device: Device, params: &BackendParams) -> Result<Box<dyn Backend>, BackendError> {
    match device {
        Device::Cpu => crate::cpu::backend::open(params),
        #[cfg(feature = "gpu")]
        Device::Gpu(index) => crate::gpu::backend::open(index, params),
        #[cfg(not(feature = "gpu"))]
        Device::Gpu(_) => Err(BackendError::NotBuilt("gpu")),
    }
}

/// Open `device` (once per process, as [`open`] does) and describe it; an error says why it
/// cannot be used.
pub fn describe(device: Device) -> Result<String, BackendError> {
    match device {
        Device::Cpu => Ok("cpu".into()),
        #[cfg(feature = "gpu")]
        Device::Gpu(index) => Ok(crate::gpu::backend::shared_device(index)?.describe()),
        #[cfg(not(feature = "gpu"))]
        Device::Gpu(_) => Err(BackendError::NotBuilt("gpu")),
    }
}
