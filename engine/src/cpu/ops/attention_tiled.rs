//! A step's attention as tiled products (flash attention): the (token, query head) rows of
//! each KV head are cut into tiles of [`TILE_ROWS`], and each tile walks the sources in blocks
//! of at most [`TILE_KEYS`]: the block's keys and values widened to f32 once, its scores one
//! product over all the tile's rows, one online-softmax step, one product with the values
//! ([`TileKernel`]). Per key that is 16 rows per vector instruction where
//! [`attention::attend_group`] gets the 1–4 heads of one token. A tile of at most
//! [`FEW_ROWS`] rows (a decode step's heads) takes the few-row kernels, keys in the lanes.
//!
//! A row's result depends on nothing but its own query and the sources: blocks are cut at
//! fixed positions, every lane's arithmetic is its own, the few-row kernels repeat the tile's
//! arithmetic, and a block no row of a tile sees (skipped) would have left each row as it
//! was. So a sequence gets the same bits prefilled in one step or several, beside other
//! sequences or alone, on a ring or a full cache.
//!
//! A row walks the keys one segment (256 positions) at a time, each from a fresh
//! softmax state merged into the row's in position order. A decode step of a model with few
//! KV heads has fewer tiles than threads; it splits its tiles by segment instead, each
//! thread walking some segments, and the merges are the same (the keys read once in all).

use std::cell::RefCell;

use half::f16;

use super::SharedMut;
use super::attention::{self, KvView};
use crate::cpu::dot::{FEW_ROWS, FewState, TILE_KEYS, TILE_ROWS, TileKernel, TileState};
use crate::cpu::pool::{ThreadPool, split_range};
use crate::graph::AttnParams;

/// Whether [`attend_tiled`] takes this shape: head widths in whole vectors of 16.
pub fn supports(p: &AttnParams) -> bool {
    p.head_dim.is_multiple_of(16) && p.head_dim_v.is_multiple_of(16)
}

/// A block of sources: their indices, and their lowest and highest position.
struct KeyBlock {
    sources: std::ops::Range<usize>,
    lo: i32,
    hi: i32,
}

/// The sources cut into blocks of at most [`TILE_KEYS`] by position: a block holds the
/// sources whose positions share `position / TILE_KEYS` (and rise), so a key lands in the same
/// block whatever else the step holds: a prompt in one step or several, a ring that has
/// dropped its oldest cells or a full cache. That fixes each row's order of sums.
fn key_blocks(positions: &[i32], blocks: &mut Vec<KeyBlock>) {
    blocks.clear();
    for (j, &pk) in positions.iter().enumerate() {
        match blocks.last_mut() {
            Some(b)
                if b.sources.len() < TILE_KEYS
                    && pk > b.hi
                    && pk.div_euclid(TILE_KEYS as i32) == b.hi.div_euclid(TILE_KEYS as i32) =>
            {
                b.sources.end = j + 1;
                b.hi = pk;
            }
            _ => blocks.push(KeyBlock {
                sources: j..j + 1,
                lo: pk,
                hi: pk,
            }),
        }
    }
}

/// Positions per segment of the keys. A row's attention is computed segment by segment, each
/// from a fresh softmax state, and the segments' states are merged in position order
/// ([`merge_row`]): the same sums whether one thread walks the segments (a tile of a prompt)
/// or several threads take one each and the caller merges (a decode step with fewer tiles
/// than threads, [`attend_blocks`]). Rows seeing only one segment get what a single walk
/// gives. A multiple of [`TILE_KEYS`], so a block lies in one segment.
const SEGMENT_POSITIONS: i32 = 8 * TILE_KEYS as i32;

/// The segment of block `b`.
fn segment_of(b: &KeyBlock) -> i32 {
    b.lo.div_euclid(SEGMENT_POSITIONS)
}

/// `blocks` cut into runs of one segment each, in order (`out`: ranges of block indices).
fn segment_runs(blocks: &[KeyBlock], out: &mut Vec<std::ops::Range<usize>>) {
    out.clear();
    for (i, b) in blocks.iter().enumerate() {
        match out.last_mut() {
            Some(r) if segment_of(&blocks[r.start]) == segment_of(b) => r.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
}

/// Merges one row's softmax state `(mb, lb, ob)` of a later segment into `(ma, la, oa)`: both
/// rescaled to the larger maximum and added. A state that saw nothing (maximum −∞) changes
/// nothing, and into one that saw nothing the other is copied. `oa[i]`, `ob[i]` are the
/// outputs at `i·stride`.
fn merge_row(
    (ma, la): (&mut f32, &mut f32),
    oa: &mut [f32],
    (mb, lb): (f32, f32),
    ob: &[f32],
    n: usize,
    stride: usize,
) {
    if mb == f32::NEG_INFINITY {
        return;
    }
    if *ma == f32::NEG_INFINITY {
        (*ma, *la) = (mb, lb);
        for i in 0..n {
            oa[i * stride] = ob[i * stride];
        }
        return;
    }
    let m = ma.max(mb);
    let (fa, fb) = ((*ma - m).exp(), (mb - m).exp());
    for i in 0..n {
        oa[i * stride] = oa[i * stride] * fa + ob[i * stride] * fb;
    }
    *la = *la * fa + lb * fb;
    *ma = m;
}

/// Merges every row of `b` into `a` ([`merge_row`]); `dv` outputs per row.
fn merge_few(a: &mut FewState, b: &FewState, dv: usize) {
    for r in 0..a.m.len() {
        merge_row(
            (&mut a.m[r], &mut a.l[r]),
            &mut a.o[r * dv..(r + 1) * dv],
            (b.m[r], b.l[r]),
            &b.o[r * dv..(r + 1) * dv],
            dv,
            1,
        );
    }
}

/// Merges rows `0..rows` of `b` into `a` ([`merge_row`]); `dv` outputs per row, transposed.
fn merge_tile(a: &mut TileState, b: &TileState, rows: usize, dv: usize) {
    for r in 0..rows {
        merge_row(
            (&mut a.m[r], &mut a.l[r]),
            &mut a.ot[r..],
            (b.m[r], b.l[r]),
            &b.ot[r..],
            dv,
            TILE_ROWS,
        );
    }
}

/// What a thread needs to run tiles: the tile's queries (transposed) and state, one block's
/// keys and values in f32 and its scores; for a few rows, their queries, state and scores;
/// and a second state of each kind for the segments after a row's first ([`merge_row`]).
/// Each thread keeps one, grown to the widest heads it has seen, so a decode step allocates
/// nothing.
struct TileScratch {
    qt: Vec<f32>,
    state: TileState,
    state_seg: TileState,
    k: Vec<f32>,
    v: Vec<f32>,
    s: Vec<f32>,
    head: Vec<f32>,
    few_q: Vec<f32>,
    few: FewState,
    few_seg: FewState,
}

impl TileScratch {
    fn new() -> TileScratch {
        TileScratch {
            qt: Vec::new(),
            state: TileState::new(0),
            state_seg: TileState::new(0),
            k: Vec::new(),
            v: Vec::new(),
            s: vec![0.0; TILE_KEYS * TILE_ROWS],
            head: Vec::new(),
            few_q: Vec::new(),
            few: FewState::new(&[], 0),
            few_seg: FewState::new(&[], 0),
        }
    }

    /// Sized for heads `dk` wide with values `dv` wide (allocating only to grow).
    fn fit(&mut self, dk: usize, dv: usize) {
        self.qt.resize(dk * TILE_ROWS, 0.0);
        self.state.ot.resize(dv * TILE_ROWS, 0.0);
        self.state_seg.ot.resize(dv * TILE_ROWS, 0.0);
        self.k.resize(TILE_KEYS * dk, 0.0);
        self.v.resize(TILE_KEYS * dv, 0.0);
        self.head.resize(dv, 0.0);
        self.few_q.resize(FEW_ROWS * dk, 0.0);
    }
}

/// The calling thread's cut of the step being attended: its key blocks, their segment runs
/// ([`segment_runs`]) and, for a step split by segment, each (tile, segment) task's state.
#[derive(Default)]
struct StepBlocks {
    blocks: Vec<KeyBlock>,
    runs: Vec<std::ops::Range<usize>>,
    partials: Vec<FewState>,
}

thread_local! {
    /// This thread's tile scratch.
    static SCRATCH: RefCell<TileScratch> = RefCell::new(TileScratch::new());
    /// The calling thread's key blocks of the step being attended.
    static BLOCKS: RefCell<StepBlocks> = RefCell::new(StepBlocks::default());
}

/// `out[t, h] = Σ_j softmax_j(scale·q[t, h]·k_j) v_j` over the sources of `kv` visible from
/// the query of token `t` at `positions[t]` (`q`: `n_tok × n_head·head_dim`,
/// `out`: `n_tok × n_head·head_dim_v`), with `sinks` (a logit per head) in the denominators.
/// Queries pass through F16 as in [`attention::attend_group`], whose results these match up
/// to the order of the sums. `p` must be [`supports`]-ed.
#[allow(clippy::too_many_arguments)]
pub fn attend_tiled(
    pool: &ThreadPool,
    kern: &TileKernel,
    q: &[f32],
    positions: &[i32],
    kv: &KvView<'_>,
    p: &AttnParams,
    sinks: Option<&[f32]>,
    out: &mut [f32],
) {
    attend_tiled_with(pool, kern, TILE_ROWS, q, positions, kv, p, sinks, out)
}

/// [`attend_tiled`] with tiles of `tile_rows ≤ TILE_ROWS` rows (the tests cut them smaller to
/// show a row's bits do not depend on its tile); a tile of at most [`FEW_ROWS`] rows runs the
/// few-row kernels, which give the same bits.
#[allow(clippy::too_many_arguments)]
fn attend_tiled_with(
    pool: &ThreadPool,
    kern: &TileKernel,
    tile_rows: usize,
    q: &[f32],
    positions: &[i32],
    kv: &KvView<'_>,
    p: &AttnParams,
    sinks: Option<&[f32]>,
    out: &mut [f32],
) {
    assert!(supports(p), "head widths in whole vectors");
    assert!((1..=TILE_ROWS).contains(&tile_rows));
    let n_tok = positions.len();
    let (nh, dk, dv) = (p.n_head, p.head_dim, p.head_dim_v);
    assert!(q.len() >= n_tok * nh * dk && out.len() >= n_tok * nh * dv);
    BLOCKS.with_borrow_mut(|sb| {
        key_blocks(kv.positions, &mut sb.blocks);
        segment_runs(&sb.blocks, &mut sb.runs);
        let step = AttnStep {
            kern,
            tile_rows,
            q,
            positions,
            kv,
            p,
            sinks,
            blocks: &sb.blocks,
            runs: &sb.runs,
        };
        attend_blocks(pool, &step, &mut sb.partials, out)
    });
}

/// What every tile of a step shares.
struct AttnStep<'a> {
    kern: &'a TileKernel,
    tile_rows: usize,
    q: &'a [f32],
    positions: &'a [i32],
    kv: &'a KvView<'a>,
    p: &'a AttnParams,
    sinks: Option<&'a [f32]>,
    blocks: &'a [KeyBlock],
    runs: &'a [std::ops::Range<usize>],
}

impl AttnStep<'_> {
    /// Query rows ((token, head) pairs) of each KV head.
    fn rows_per_head(&self) -> usize {
        self.positions.len() * (self.p.n_head / self.p.n_head_kv)
    }

    /// Tiles of each KV head.
    fn tiles_per_head(&self) -> usize {
        self.rows_per_head().div_ceil(self.tile_rows)
    }

    /// Tile `task` (KV head after KV head): its KV head, its first row and its row count.
    fn tile_rows_of(&self, task: usize) -> (usize, usize, usize) {
        let tph = self.tiles_per_head();
        let (kvh, tile) = (task / tph, task % tph);
        let first = tile * self.tile_rows;
        (
            kvh,
            first,
            (self.rows_per_head() - first).min(self.tile_rows),
        )
    }

    /// Row `r` of tile (`kvh`, `first`) as (token, head).
    fn row(&self, kvh: usize, first: usize, r: usize) -> (usize, usize) {
        let group = self.p.n_head / self.p.n_head_kv;
        ((first + r) / group, kvh * group + (first + r) % group)
    }

    /// Normalises row `r`'s output `head` (maximum `m`, sum `l`) and stores it in `out`.
    ///
    /// # Safety
    /// No other thread writes that row of `out` meanwhile.
    unsafe fn emit(
        &self,
        out: SharedMut<f32>,
        (t, h): (usize, usize),
        head: &mut [f32],
        m: f32,
        l: f32,
    ) {
        let (nh, dv) = (self.p.n_head, self.p.head_dim_v);
        attention::finish_head(head, m, l, self.sinks.map(|s| s[h]));
        // SAFETY: the caller owns the row (precondition).
        unsafe { out.slice((t * nh + h) * dv..(t * nh + h + 1) * dv) }.copy_from_slice(head);
    }
}

/// [`attend_tiled_with`] over the step's blocks: one task per tile, or, where the tiles are
/// fewer than the threads, their rows few and the keys span several segments (a decode
/// step of a model with one KV head), one task per (tile, segment), merged after.
fn attend_blocks(
    pool: &ThreadPool,
    st: &AttnStep<'_>,
    partials: &mut Vec<FewState>,
    out: &mut [f32],
) {
    let p = st.p;
    let (nh, dk, dv) = (p.n_head, p.head_dim, p.head_dim_v);
    let n_tok = st.positions.len();
    let n_tiles = p.n_head_kv * st.tiles_per_head();
    let o = SharedMut(out.as_mut_ptr());
    let parallel = n_tok * nh * st.kv.positions.len() * dk >= super::PARALLEL_MIN_ELEMS;
    let few = st.rows_per_head().min(st.tile_rows) <= FEW_ROWS;
    if parallel && few && n_tiles < pool.n_threads() && st.runs.len() > 1 {
        return attend_by_segment(pool, st, partials, o);
    }
    let work = |ti: usize, nt: usize| {
        SCRATCH.with_borrow_mut(|sc| {
            sc.fit(dk, dv);
            for task in split_range(n_tiles, ti, nt, 1) {
                let (kvh, first, rows) = st.tile_rows_of(task);
                let mut pq = [0; TILE_ROWS];
                for (r, pq) in pq.iter_mut().enumerate().take(rows) {
                    *pq = st.positions[st.row(kvh, first, r).0];
                }
                let tile = Tile {
                    kvh,
                    pq: &pq[..rows],
                    query: &|r: usize| {
                        let (t, h) = st.row(kvh, first, r);
                        &st.q[(t * nh + h) * dk..(t * nh + h + 1) * dk]
                    },
                };
                let mut emit = |r: usize, head: &mut [f32], m: f32, l: f32| {
                    // SAFETY: each (token, head) row belongs to one row of one tile, and
                    // every tile is one task.
                    unsafe { st.emit(o, st.row(kvh, first, r), head, m, l) };
                };
                if rows <= FEW_ROWS {
                    run_few(&tile, st, sc, &mut emit);
                } else {
                    run_tile(&tile, st, sc, &mut emit);
                }
            }
        });
    };
    if n_tiles > 1 && parallel {
        pool.run(&work);
    } else {
        work(0, 1);
    }
}

/// [`attend_blocks`] with one task per (tile, segment run): each task walks its run into a
/// state of its own, then the caller merges each tile's states in position order
/// ([`merge_few`]) and emits the rows: the sums [`run_few`] makes walking the runs itself.
fn attend_by_segment(
    pool: &ThreadPool,
    st: &AttnStep<'_>,
    partials: &mut Vec<FewState>,
    o: SharedMut<f32>,
) {
    let p = st.p;
    let (nh, dk, dv) = (p.n_head, p.head_dim, p.head_dim_v);
    let n_tiles = p.n_head_kv * st.tiles_per_head();
    let n_runs = st.runs.len();
    let n_tasks = n_tiles * n_runs;
    if partials.len() < n_tasks {
        partials.resize_with(n_tasks, || FewState::new(&[], 0));
    }
    let parts = SharedMut(partials.as_mut_ptr());
    let tile_of = |task: usize| {
        let (kvh, first, rows) = st.tile_rows_of(task);
        let mut pq = [0; FEW_ROWS];
        for (r, pq) in pq.iter_mut().enumerate().take(rows) {
            *pq = st.positions[st.row(kvh, first, r).0];
        }
        (kvh, first, rows, pq)
    };
    pool.run(&|ti, nt| {
        SCRATCH.with_borrow_mut(|sc| {
            sc.fit(dk, dv);
            for task in split_range(n_tasks, ti, nt, 1) {
                let (t, run) = (task / n_runs, task % n_runs);
                let (kvh, first, rows, pq) = tile_of(t);
                let tile = Tile {
                    kvh,
                    pq: &pq[..rows],
                    query: &|r: usize| {
                        let (t, h) = st.row(kvh, first, r);
                        &st.q[(t * nh + h) * dk..(t * nh + h + 1) * dk]
                    },
                };
                // SAFETY: task `task < n_tasks` owns partial `task`, which `partials` holds.
                let state = &mut unsafe { parts.slice(task..task + 1) }[0];
                few_queries(&tile, dk, &mut sc.few_q);
                state.reset(tile.pq, dv);
                let blocks = &st.blocks[st.runs[run].clone()];
                few_blocks(
                    st,
                    &tile,
                    &sc.few_q[..rows * dk],
                    blocks,
                    &mut sc.s,
                    &mut sc.k,
                    state,
                );
            }
        })
    });
    for t in 0..n_tiles {
        let (kvh, first, rows, _) = tile_of(t);
        let (acc, rest) = partials[t * n_runs..(t + 1) * n_runs]
            .split_first_mut()
            .expect("at least one run");
        for later in rest.iter() {
            merge_few(acc, later, dv);
        }
        for r in 0..rows {
            // SAFETY: the workers are done; this thread alone writes the outputs now.
            unsafe {
                st.emit(
                    o,
                    st.row(kvh, first, r),
                    &mut acc.o[r * dv..(r + 1) * dv],
                    acc.m[r],
                    acc.l[r],
                )
            };
        }
    }
}

/// The rows of one tile: their KV head, their queries' positions and their queries.
struct Tile<'a> {
    kvh: usize,
    pq: &'a [i32],
    query: &'a dyn Fn(usize) -> &'a [f32],
}

impl Tile<'_> {
    /// Whether no row of the tile sees any key of block `b`.
    fn unseen(&self, b: &KeyBlock, p: &AttnParams) -> bool {
        let pq_min = *self.pq.iter().min().expect("a row");
        let pq_max = *self.pq.iter().max().expect("a row");
        b.lo > pq_max
            || p.window
                .is_some_and(|w| b.hi as i64 <= pq_min as i64 - w as i64)
    }

    /// The step's segment runs holding a block some row of the tile sees, as block slices.
    fn seen_runs<'s>(&self, st: &'s AttnStep<'_>) -> impl Iterator<Item = &'s [KeyBlock]> {
        st.runs
            .iter()
            .map(|r| &st.blocks[r.clone()])
            .filter(|run| run.iter().any(|b| !self.unseen(b, st.p)))
    }
}

/// A row's finished output: `(row, unnormalised output, maximum, sum)`.
type Emit<'a> = dyn FnMut(usize, &mut [f32], f32, f32) + 'a;

/// `softcap·tanh(x / softcap)` on a block's scores when the model sets a softcap.
fn soft_cap(s: &mut [f32], p: &AttnParams) {
    if let Some(c) = p.softcap {
        for x in s {
            *x = c * (*x / c).tanh();
        }
    }
}

/// One tile through the tile kernels (rows in the lanes), segment run after segment run.
fn run_tile(tile: &Tile<'_>, st: &AttnStep<'_>, sc: &mut TileScratch, emit: &mut Emit<'_>) {
    let (dk, dv, rows) = (st.p.head_dim, st.p.head_dim_v, tile.pq.len());
    for r in 0..TILE_ROWS {
        let query = (r < rows).then(|| (tile.query)(r));
        for d in 0..dk {
            // Queries pass through F16, as ggml's flash attention converts them.
            sc.qt[d * TILE_ROWS + r] = query.map_or(0.0, |q| f16::from_f32(q[d]).to_f32());
        }
    }
    let TileScratch {
        qt,
        state,
        state_seg,
        k,
        v,
        s,
        head,
        ..
    } = sc;
    state.reset();
    state.pq[..rows].copy_from_slice(tile.pq);
    for (i, run) in tile.seen_runs(st).enumerate() {
        if i == 0 {
            tile_blocks(st, tile, qt, run, k, v, s, state);
        } else {
            state_seg.reset();
            state_seg.pq[..rows].copy_from_slice(tile.pq);
            tile_blocks(st, tile, qt, run, k, v, s, state_seg);
            merge_tile(state, state_seg, rows, dv);
        }
    }
    for r in 0..rows {
        for (d, x) in head.iter_mut().enumerate() {
            *x = state.ot[d * TILE_ROWS + r];
        }
        emit(r, head, state.m[r], state.l[r]);
    }
}

/// The tile's online softmax over the blocks of `run` it sees, into `state`.
#[allow(clippy::too_many_arguments)]
fn tile_blocks(
    st: &AttnStep<'_>,
    tile: &Tile<'_>,
    qt: &[f32],
    run: &[KeyBlock],
    k: &mut [f32],
    v: &mut [f32],
    s: &mut [f32],
    state: &mut TileState,
) {
    let (p, kv, kern) = (st.p, st.kv, st.kern);
    let (dk, dv) = (p.head_dim, p.head_dim_v);
    let mut keys: [&[f16]; TILE_KEYS] = [&[]; TILE_KEYS];
    let mut values: [&[f16]; TILE_KEYS] = [&[]; TILE_KEYS];
    for b in run.iter().filter(|b| !tile.unseen(b, p)) {
        let n = b.sources.len();
        for (i, j) in b.sources.clone().enumerate() {
            keys[i] = kv.key_head(j, tile.kvh, p);
            values[i] = kv.value_head(j, tile.kvh, p);
        }
        (kern.widen)(&keys[..n], dk, k);
        (kern.widen)(&values[..n], dv, v);
        (kern.scores)(qt, dk, k, n, p.scale, s);
        soft_cap(&mut s[..n * TILE_ROWS], p);
        let pk = &kv.positions[b.sources.clone()];
        (kern.softmax_pv)(s, pk, p.window, v, dv, state);
    }
}

/// The tile's queries, through F16, row after row into `q`.
fn few_queries(tile: &Tile<'_>, dk: usize, q: &mut [f32]) {
    for (r, qr) in q[..tile.pq.len() * dk].chunks_exact_mut(dk).enumerate() {
        for (x, &y) in qr.iter_mut().zip((tile.query)(r)) {
            *x = f16::from_f32(y).to_f32();
        }
    }
}

/// A tile of at most [`FEW_ROWS`] rows through the few-row kernels (keys in the lanes),
/// segment run after segment run.
fn run_few(tile: &Tile<'_>, st: &AttnStep<'_>, sc: &mut TileScratch, emit: &mut Emit<'_>) {
    let (dk, dv, rows) = (st.p.head_dim, st.p.head_dim_v, tile.pq.len());
    few_queries(tile, dk, &mut sc.few_q);
    let TileScratch {
        few_q,
        few,
        few_seg,
        k,
        s,
        ..
    } = sc;
    let q = &few_q[..rows * dk];
    few.reset(tile.pq, dv);
    for (i, run) in tile.seen_runs(st).enumerate() {
        if i == 0 {
            few_blocks(st, tile, q, run, s, k, few);
        } else {
            few_seg.reset(tile.pq, dv);
            few_blocks(st, tile, q, run, s, k, few_seg);
            merge_few(few, few_seg, dv);
        }
    }
    for r in 0..rows {
        let head = &mut few.o[r * dv..(r + 1) * dv];
        emit(r, head, few.m[r], few.l[r]);
    }
}

/// The few rows' online softmax over the blocks of `run` the tile sees, into `state`.
fn few_blocks(
    st: &AttnStep<'_>,
    tile: &Tile<'_>,
    q: &[f32],
    run: &[KeyBlock],
    s: &mut [f32],
    kt: &mut [f32],
    state: &mut FewState,
) {
    let (p, kv, kern) = (st.p, st.kv, st.kern);
    let (dk, dv, rows) = (p.head_dim, p.head_dim_v, tile.pq.len());
    let mut keys: [&[f16]; TILE_KEYS] = [&[]; TILE_KEYS];
    let mut values: [&[f16]; TILE_KEYS] = [&[]; TILE_KEYS];
    for b in run.iter().filter(|b| !tile.unseen(b, p)) {
        let n = b.sources.len();
        for (i, j) in b.sources.clone().enumerate() {
            keys[i] = kv.key_head(j, tile.kvh, p);
            values[i] = kv.value_head(j, tile.kvh, p);
        }
        (kern.few_scores)(q, dk, &keys[..n], p.scale, s, kt);
        for r in 0..rows {
            soft_cap(&mut s[r * TILE_KEYS..r * TILE_KEYS + n], p);
        }
        let pk = &kv.positions[b.sources.clone()];
        (kern.few_softmax_pv)(s, pk, p.window, &values[..n], dv, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::dot::{F16_SCALAR, TILE_SCALAR, tile_kernel};

    /// A step's sources: `n_cells` cached cells (stored in reverse order, gathered in
    /// position order), then `n_tok` batch tokens; keys rise along the positions so the
    /// running maximum keeps moving (the outputs get rescaled).
    struct Sources {
        cache_k: Vec<f16>,
        cache_v: Vec<f16>,
        batch_k: Vec<f16>,
        batch_v: Vec<f16>,
        rows: Vec<u32>,
        positions: Vec<i32>,
        n_cells: usize,
        values_in_keys: bool,
    }

    fn f(i: usize) -> f32 {
        ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0
    }

    impl Sources {
        fn new(p: &AttnParams, n_cells: usize, n_tok: usize, values_in_keys: bool) -> Sources {
            let kw = p.n_head_kv * p.head_dim;
            let vw = if values_in_keys {
                0
            } else {
                p.n_head_kv * p.head_dim_v
            };
            let key = |i: usize| f16::from_f32(f(i) + (i / kw) as f32 / 100.0);
            let all_k: Vec<f16> = (0..(n_cells + n_tok) * kw).map(key).collect();
            let all_v: Vec<f16> = (0..(n_cells + n_tok) * vw)
                .map(|i| f16::from_f32(f(i + 7)))
                .collect();
            let rev = |a: &[f16], w: usize| -> Vec<f16> {
                (0..n_cells)
                    .rev()
                    .flat_map(|c| a[c * w..(c + 1) * w].to_vec())
                    .collect()
            };
            Sources {
                cache_k: rev(&all_k, kw),
                cache_v: rev(&all_v, vw),
                batch_k: all_k[n_cells * kw..].to_vec(),
                batch_v: all_v[n_cells * vw..].to_vec(),
                rows: (0..n_cells)
                    .map(|j| (n_cells - 1 - j) as u32)
                    .chain((0..n_tok).map(|t| (n_cells + t) as u32))
                    .collect(),
                positions: (0..(n_cells + n_tok) as i32).collect(),
                n_cells,
                values_in_keys,
            }
        }

        fn view(&self) -> KvView<'_> {
            KvView {
                cache_k: &self.cache_k,
                cache_v: &self.cache_v,
                batch_k: &self.batch_k,
                batch_v: &self.batch_v,
                n_cells: self.n_cells,
                rows: &self.rows,
                positions: &self.positions,
                values_in_keys: self.values_in_keys,
            }
        }
    }

    fn params(n_head: usize, n_head_kv: usize, dk: usize, dv: usize) -> AttnParams {
        AttnParams {
            n_head,
            n_head_kv,
            head_dim: dk,
            head_dim_v: dv,
            scale: 0.3,
            window: None,
            softcap: None,
        }
    }

    /// The per-token attention of every (token, head), with the scalar kernels.
    fn per_token(
        q: &[f32],
        pos: &[i32],
        kv: &KvView<'_>,
        p: &AttnParams,
        sinks: Option<&[f32]>,
    ) -> Vec<f32> {
        let (nh, dk, dv) = (p.n_head, p.head_dim, p.head_dim_v);
        let group = nh / p.n_head_kv;
        let mut out = vec![f32::NAN; pos.len() * nh * dv];
        for (t, &pq) in pos.iter().enumerate() {
            for h in 0..nh {
                let qh: Vec<f32> = q[(t * nh + h) * dk..(t * nh + h + 1) * dk]
                    .iter()
                    .map(|&x| f16::from_f32(x).to_f32())
                    .collect();
                let o = &mut out[(t * nh + h) * dv..(t * nh + h + 1) * dv];
                let sink = sinks.map(|s| &s[h..h + 1]);
                attention::attend_group_with(&F16_SCALAR, &qh, pq, h / group, kv, p, sink, o);
            }
        }
        out
    }

    fn tiled(
        kern: &TileKernel,
        q: &[f32],
        pos: &[i32],
        kv: &KvView<'_>,
        p: &AttnParams,
        sinks: Option<&[f32]>,
    ) -> Vec<f32> {
        tiled_rows(kern, TILE_ROWS, q, pos, kv, p, sinks)
    }

    fn tiled_rows(
        kern: &TileKernel,
        rows: usize,
        q: &[f32],
        pos: &[i32],
        kv: &KvView<'_>,
        p: &AttnParams,
        sinks: Option<&[f32]>,
    ) -> Vec<f32> {
        let mut out = vec![f32::NAN; pos.len() * p.n_head * p.head_dim_v];
        attend_tiled_with(
            &ThreadPool::new(2),
            kern,
            rows,
            q,
            pos,
            kv,
            p,
            sinks,
            &mut out,
        );
        out
    }
    /// Tiles get what the per-token attention gets (up to the order of the sums) on GQA
    /// groups that cut tiles mid-token, MHA, MLA-style values inside the keys, a sliding
    /// window, a softcap, sinks and cached cells; the SIMD tiles get the scalar tiles' bits.
    #[test]
    fn tiles_match_per_token_attention() {
        let mut cases = vec![
            (params(6, 2, 64, 64), 40, 37, false, false),
            (params(4, 2, 128, 128), 10, 70, false, true),
            (params(4, 1, 48, 32), 0, 45, true, false),
            (params(3, 3, 16, 16), 33, 20, false, false),
        ];
        cases[1].0.window = Some(23);
        cases[2].0.softcap = Some(5.0);
        cases[3].0.window = Some(1);
        for (i, (p, n_cells, n_tok, values_in_keys, with_sinks)) in cases.into_iter().enumerate() {
            let src = Sources::new(&p, n_cells, n_tok, values_in_keys);
            let kv = src.view();
            let q: Vec<f32> = (0..n_tok * p.n_head * p.head_dim)
                .map(|i| f(i + 3) * 2.0)
                .collect();
            let pos = &src.positions[n_cells..];
            let sinks: Vec<f32> = (0..p.n_head).map(|h| [0.5, 30.0, -20.0][h % 3]).collect();
            let sinks = with_sinks.then_some(&sinks[..]);
            let want = per_token(&q, pos, &kv, &p, sinks);
            let got = tiled(&TILE_SCALAR, &q, pos, &kv, &p, sinks);
            for (e, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 2e-5, "case {i} element {e}: {a} vs {b}");
            }
            // Every kernel and tile size (16-row tiles, few-row tiles of 8, 5 and 1) gets the
            // scalar tiles' bits.
            for kern in [Some(&TILE_SCALAR), tile_kernel()].into_iter().flatten() {
                for rows in [16, 8, 5, 1] {
                    let other = tiled_rows(kern, rows, &q, pos, &kv, &p, sinks);
                    for (e, (a, b)) in other.iter().zip(&got).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "case {i} {:?} rows {rows} element {e}: {a} vs {b}",
                            kern.isa
                        );
                    }
                }
            }
        }
    }

    /// Keys over several segments: tiles get the per-token attention (up to the order of the
    /// sums), and a decode step of one KV head, split by segment across the threads, gets the
    /// bits its token gets inside the whole prompt (walked segment by segment by one tile),
    /// with a window, a softcap and sinks too.
    #[test]
    fn segments_split_across_threads_keep_the_bits() {
        let base = params(4, 1, 32, 32);
        let mut windowed = base;
        windowed.window = Some(300);
        let mut capped = base;
        capped.softcap = Some(5.0);
        let (n_cells, n_tok) = (3 * SEGMENT_POSITIONS as usize + 40, 12);
        for (i, (p, with_sinks)) in [(base, false), (windowed, false), (capped, true)]
            .into_iter()
            .enumerate()
        {
            let src = Sources::new(&p, n_cells, n_tok, false);
            let kv = src.view();
            let q: Vec<f32> = (0..n_tok * p.n_head * p.head_dim)
                .map(|i| f(i + 5) * 3.0)
                .collect();
            let pos = &src.positions[n_cells..];
            let sinks: Vec<f32> = (0..p.n_head).map(|h| [0.5, 3.0, -2.0][h % 3]).collect();
            let sinks = with_sinks.then_some(&sinks[..]);
            let whole = tiled(&TILE_SCALAR, &q, pos, &kv, &p, sinks);
            let want = per_token(&q, pos, &kv, &p, sinks);
            for (e, (a, b)) in whole.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 2e-5, "case {i} element {e}: {a} vs {b}");
            }
            let row = p.n_head * p.head_dim;
            for kern in [Some(&TILE_SCALAR), tile_kernel()].into_iter().flatten() {
                for t in [0, 5, n_tok - 1] {
                    let one = tiled(
                        kern,
                        &q[t * row..(t + 1) * row],
                        &pos[t..t + 1],
                        &kv,
                        &p,
                        sinks,
                    );
                    for (e, (a, b)) in one.iter().zip(&whole[t * row..]).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "case {i} {:?} token {t} element {e}: {a} vs {b}",
                            kern.isa
                        );
                    }
                }
            }
        }
    }

    /// A row's bits do not depend on which rows share its tile: the batch's last tokens
    /// attended alone (so every tile holds other rows) get what they got in the whole batch.
    #[test]
    fn rows_get_the_same_bits_in_any_tile() {
        let mut p = params(6, 2, 32, 32);
        p.window = Some(40);
        let (n_cells, n_tok) = (20, 50);
        let src = Sources::new(&p, n_cells, n_tok, false);
        let kv = src.view();
        let q: Vec<f32> = (0..n_tok * p.n_head * p.head_dim)
            .map(|i| f(i + 1))
            .collect();
        let pos = &src.positions[n_cells..];
        for kern in [Some(&TILE_SCALAR), tile_kernel()].into_iter().flatten() {
            let whole = tiled(kern, &q, pos, &kv, &p, None);
            let row = p.n_head * p.head_dim;
            for skip in [1, 3, 8] {
                let part = tiled(kern, &q[skip * row..], &pos[skip..], &kv, &p, None);
                for (e, (a, b)) in part.iter().zip(&whole[skip * row..]).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{:?} skip {skip} element {e}",
                        kern.isa
                    );
                }
            }
        }
    }
}
