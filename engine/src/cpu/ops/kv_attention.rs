//! A step's attention over a KV store: the batch's K/V staged as F16 (as the cache will hold
//! them), the visible sources of its sequence gathered in position order (cached cells, then
//! the batch), every
//! (token, query-head group) attended by [`attention::attend_group`] across the pool's tasks,
//! then the batch's K/V written into the store.

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::{PARALLEL_MIN_ELEMS, SharedMut};
use super::{attention, attention_tiled};
use crate::cpu::dot::tile_kernel;
use crate::cpu::kv::KvStore;
use crate::cpu::pool::{ThreadPool, split_range};
use crate::graph::AttnParams;
use crate::memory::{OutOfMemory, try_grow};

/// Query floats an attention task converts at once (`MAX_GROUP_HEADS` heads of 512; wider
/// heads go one at a time, up to 2048 wide).
pub const QBUF: usize = 2048;

/// Widest key head the CPU attends ([`QBUF`]: one head's query fits the conversion buffer).
pub const MAX_HEAD_DIM: usize = QBUF;

/// Scratch memory of [`attend_step`], grown once to what the graph needs.
#[derive(Default)]
pub struct KvAttnScratch {
    /// Rows (cache cells, then batch tokens) of the sources attention reads.
    src_rows: Vec<u32>,
    /// Their positions.
    positions: Vec<i32>,
    /// The batch's K/V in F16, written to the store after attention.
    staged_k: Vec<f16>,
    staged_v: Vec<f16>,
}

impl KvAttnScratch {
    /// Grow to what a step of `n_tokens` over `store` needs (a no-op once big enough), or
    /// [`OutOfMemory`] when the system refuses.
    pub fn reserve(&mut self, n_tokens: usize, store: &KvStore) -> Result<(), OutOfMemory> {
        let n_src = store.n_cells().saturating_add(n_tokens);
        try_grow(&mut self.src_rows, n_src, "attention's source rows")?;
        try_grow(&mut self.positions, n_src, "attention's source positions")?;
        let (nk, nv) = (
            n_tokens.saturating_mul(store.k_width()),
            n_tokens.saturating_mul(store.v_width()),
        );
        try_grow(&mut self.staged_k, nk, "the batch's staged keys")?;
        try_grow(&mut self.staged_v, nv, "the batch's staged values")
    }
}

/// Attention of the batch's queries `q` (tokens of sequence `seq` at `positions`) over that
/// sequence's cached cells and the batch's own keys `k` and values `v`, into `out`; then the
/// batch's K/V are written into the store (a pool must have room: `KvStore::check_step`). A store without values (`v_width` 0: MLA's latent cache) reads each
/// value from the first `head_dim_v` elements of its key head, and `v` must be those (it is
/// not read). `scratch` must have been reserved for the step.
#[allow(clippy::too_many_arguments)]
pub fn attend_step(
    pool: &ThreadPool,
    scratch: &mut KvAttnScratch,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seq: u32,
    positions: &[i32],
    store: &mut KvStore,
    p: &AttnParams,
    sinks: Option<&[f32]>,
    out: &mut [f32],
) {
    let n_tok = positions.len();
    let (kw, vw) = (store.k_width(), store.v_width());
    let values_in_keys = vw == 0;
    assert!(
        !values_in_keys || p.head_dim_v <= p.head_dim,
        "values read from keys need head_dim_v ≤ head_dim"
    );
    // The batch's K/V as the cache will hold them (F16).
    let sk = &mut scratch.staged_k[..n_tok * kw];
    let sv = &mut scratch.staged_v[..n_tok * vw];
    sk.convert_from_f32_slice(&k[..n_tok * kw]);
    sv.convert_from_f32_slice(&v[..n_tok * vw]);
    // Gather the sequence's cached cells some query of the batch can see (cells at or after
    // the batch's first position are stale: the batch replaces them), then the batch itself.
    let pmin = *positions.iter().min().expect("non-empty batch");
    let n_cells = store.n_cells();
    let mut n_src = store.gather(
        seq,
        pmin,
        p.window,
        &mut scratch.src_rows,
        &mut scratch.positions,
    );
    for (t, &pos) in positions.iter().enumerate() {
        scratch.src_rows[n_src] = (n_cells + t) as u32;
        scratch.positions[n_src] = pos;
        n_src += 1;
    }
    // Keys and values are read in place, as F16 (no per-step conversion of the cache).
    let view = attention::KvView {
        cache_k: store.k_all(),
        cache_v: store.v_all(),
        batch_k: sk,
        batch_v: sv,
        n_cells,
        rows: &scratch.src_rows[..n_src],
        positions: &scratch.positions[..n_src],
        values_in_keys,
    };
    // Tiles where the CPU has their kernels (every step: a row's bits must not depend on
    // how many tokens share its step), else one (token, head group) at a time.
    let tiled = tile_kernel().filter(|_| attention_tiled::supports(p));
    if let Some(kern) = tiled {
        attention_tiled::attend_tiled(pool, kern, q, positions, &view, p, sinks, out);
    } else {
        attend_rows(pool, q, positions, &view, p, sinks, out);
    }
    store.write_step(seq, positions, sk, sv);
}

/// [`attend_step`]'s attention one (token, query-head group) at a time, by
/// [`attention::attend_group`].
fn attend_rows(
    pool: &ThreadPool,
    q: &[f32],
    positions: &[i32],
    view: &attention::KvView<'_>,
    p: &AttnParams,
    sinks: Option<&[f32]>,
    out: &mut [f32],
) {
    let n_tok = positions.len();
    let n_src = view.positions.len();
    let o = SharedMut(out.as_mut_ptr());
    let (nh, dk, dv) = (p.n_head, p.head_dim, p.head_dim_v);
    let group = p.n_head / p.n_head_kv;
    let qw = nh * dk;
    let ow = nh * dv;
    // A task: `hg` query heads of one token that share a KV head (each key and value is
    // converted once for all of them), or single heads where that leaves too few tasks.
    let chunk = (1..=attention::MAX_GROUP_HEADS)
        .rev()
        .find(|&c| group.is_multiple_of(c))
        .expect("1 divides");
    let hg = if chunk * dk <= QBUF && n_tok * nh / chunk >= pool.n_tasks() {
        chunk
    } else {
        1
    };
    assert!(hg * dk <= QBUF, "head width {dk} over {QBUF} / {hg}");
    let work = |ti: usize, nt: usize| {
        let mut qbuf = [0.0f32; QBUF];
        for task in split_range(n_tok * nh / hg, ti, nt, 1) {
            let (t, h) = (task / (nh / hg), task % (nh / hg) * hg);
            // Queries pass through F16, as ggml's flash attention converts them.
            let qh = &mut qbuf[..hg * dk];
            for (d, &x) in qh
                .iter_mut()
                .zip(&q[t * qw + h * dk..t * qw + (h + hg) * dk])
            {
                *d = f16::from_f32(x).to_f32();
            }
            // SAFETY: each (token, head) output slice is written by one thread.
            let dst = unsafe { o.slice(t * ow + h * dv..t * ow + (h + hg) * dv) };
            let sinks = sinks.map(|s| &s[h..h + hg]);
            attention::attend_group(qh, positions[t], h / group, view, p, sinks, dst);
        }
    };
    if n_tok * nh * n_src * dk >= PARALLEL_MIN_ELEMS {
        pool.run(&work);
    } else {
        work(0, 1);
    }
}
