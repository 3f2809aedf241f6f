//! Kernels of prompt attention as tiled products: [`TILE_ROWS`] query rows (the (token, head)
//! pairs that share a KV head) sit in the lanes of one vector, and each block of up to
//! [`TILE_KEYS`] keys is one product `S = Qᵀ·K` (a broadcast key element times a vector of
//! rows: no horizontal sums), one online-softmax step per lane, and one product `Oᵀ += V·P`.
//! Every lane's arithmetic is its own, so a row gets the same bits whatever rows share its tile.
//!
//! [`tile_kernel`] hands out the SIMD version where the CPU has one (AVX-512 F); [`TILE_SCALAR`]
//! is the reference the tests hold it to.

use super::Isa;
use half::f16;

/// Query rows in a tile: the lanes of one 512-bit vector of f32.
pub const TILE_ROWS: usize = 16;

/// Keys in a block: scores of a block are `TILE_KEYS × TILE_ROWS` floats.
pub const TILE_KEYS: usize = 32;

/// What a tile carries from one block of keys to the next: each row's position, running
/// maximum and sum of the softmax, and its output so far, transposed (`ot[d·TILE_ROWS + r]`).
pub struct TileState {
    /// Position of each row's query (−1 for a padding row: it sees no key).
    pub pq: [i32; TILE_ROWS],
    /// Running maximum of each row's scores (−∞ before its first visible key).
    pub m: [f32; TILE_ROWS],
    /// Running sum of each row's `exp(score − m)`.
    pub l: [f32; TILE_ROWS],
    /// Unnormalised outputs, `head_dim_v × TILE_ROWS`.
    pub ot: Vec<f32>,
}

impl TileState {
    /// A state for outputs `dv` wide, with no row yet (every row padding).
    pub fn new(dv: usize) -> TileState {
        TileState {
            pq: [-1; TILE_ROWS],
            m: [f32::NEG_INFINITY; TILE_ROWS],
            l: [0.0; TILE_ROWS],
            ot: vec![0.0; dv * TILE_ROWS],
        }
    }

    /// Forget the rows: back to what [`TileState::new`] gives.
    pub fn reset(&mut self) {
        self.pq = [-1; TILE_ROWS];
        self.m = [f32::NEG_INFINITY; TILE_ROWS];
        self.l = [0.0; TILE_ROWS];
        self.ot.fill(0.0);
    }
}

/// `widen(rows, width, dst)`: `dst[j·width + d] = rows[j][d]` as f32, for every row and
/// `d < width` (`width` a multiple of 16, every row at least `width` long).
pub type WidenFn = fn(&[&[f16]], usize, &mut [f32]);

/// `scores(qt, dk, k, n, scale, s)`: `s[j·TILE_ROWS + r] = scale · Σ_d qt[d·TILE_ROWS + r] ·
/// k[j·dk + d]` for the `n ≤ TILE_KEYS` keys `j` (`qt`: the rows' queries transposed; `k`: keys
/// `dk` wide, holding `n` rounded up to 16 rows; `s`: `TILE_KEYS × TILE_ROWS`). Entries of `s`
/// past `n` keys may be overwritten with anything.
pub type ScoresFn = fn(&[f32], usize, &[f32], usize, f32, &mut [f32]);

/// `softmax_pv(s, pk, window, v, dv, state)`: one online-softmax step of the tile over the
/// `n = pk.len()` keys at positions `pk` whose scores are `s` (as [`ScoresFn`] left them): key
/// `j` counts for row `r` when [`visible`]; each row's maximum, sum and output are rescaled to
/// the new maximum, and `ot[d·R + r] += Σ_j exp(s − m)·v[j·dv + d]`. `s` is overwritten.
pub type SoftmaxPvFn = fn(&mut [f32], &[i32], Option<u32>, &[f32], usize, &mut TileState);

/// Most rows the few-row kernels take (a tile with more goes to the tile kernels).
pub const FEW_ROWS: usize = 8;

/// What a few rows (at most [`FEW_ROWS`], in memory order) carry from block to block: as
/// [`TileState`], one entry per row, outputs `o[g·dv + d]`.
pub struct FewState {
    /// Position of each row's query.
    pub pq: Vec<i32>,
    /// Running maximum of each row's scores.
    pub m: Vec<f32>,
    /// Running sum of each row's weights.
    pub l: Vec<f32>,
    /// Unnormalised outputs, `rows × head_dim_v`.
    pub o: Vec<f32>,
}

impl FewState {
    /// A state for `rows` rows at positions `pq` with outputs `dv` wide, nothing seen yet.
    pub fn new(pq: &[i32], dv: usize) -> FewState {
        let mut st = FewState {
            pq: Vec::new(),
            m: Vec::new(),
            l: Vec::new(),
            o: Vec::new(),
        };
        st.reset(pq, dv);
        st
    }

    /// Start over with rows at positions `pq` and outputs `dv` wide (allocating only to grow).
    pub fn reset(&mut self, pq: &[i32], dv: usize) {
        self.pq.clear();
        self.pq.extend_from_slice(pq);
        self.m.clear();
        self.m.resize(pq.len(), f32::NEG_INFINITY);
        self.l.clear();
        self.l.resize(pq.len(), 0.0);
        self.o.clear();
        self.o.resize(pq.len() * dv, 0.0);
    }
}

/// `few_scores(q, dk, keys, scale, s, kt)`: for each of the `q.len() / dk` rows `g` (queries
/// in memory order) and the `n = keys.len() ≤ TILE_KEYS` keys, `s[g·TILE_KEYS + j] = scale ·
/// Σ_d q[g·dk + d]·keys[j][d]`, the sums in [`ScoresFn`]'s order, so bit for bit what the row
/// gets in a tile (`kt`: scratch of `dk × TILE_KEYS`).
pub type FewScoresFn = fn(&[f32], usize, &[&[f16]], f32, &mut [f32], &mut [f32]);

/// `few_softmax_pv(s, pk, window, values, dv, state)`: [`SoftmaxPvFn`] of a few rows (scores
/// `s[g·TILE_KEYS + j]`), bit for bit what each row gets in a tile.
pub type FewSoftmaxPvFn = fn(&mut [f32], &[i32], Option<u32>, &[&[f16]], usize, &mut FewState);

/// Whether a key at `pk` is visible from a query at `pq` (causal, inside the window).
#[inline]
pub fn visible(pq: i32, pk: i32, window: Option<u32>) -> bool {
    pk >= 0 && pk <= pq && window.is_none_or(|w| ((pq as i64 - pk as i64) as u64) < w as u64)
}

/// The kernels of tiled prompt attention for one instruction set.
#[derive(Clone, Copy, Debug)]
pub struct TileKernel {
    /// The instruction set of these kernels.
    pub isa: Isa,
    /// F16 key or value rows to f32.
    pub widen: WidenFn,
    /// A block's scores.
    pub scores: ScoresFn,
    /// A block's softmax step and value product.
    pub softmax_pv: SoftmaxPvFn,
    /// A block's scores for a few rows (keys in the lanes).
    pub few_scores: FewScoresFn,
    /// A block's softmax step and value product for a few rows.
    pub few_softmax_pv: FewSoftmaxPvFn,
}

/// The scalar reference of [`TileKernel`].
pub static TILE_SCALAR: TileKernel = TileKernel {
    isa: Isa::Scalar,
    widen: widen_scalar,
    scores: scores_scalar,
    softmax_pv: softmax_pv_scalar,
    few_scores: few_scores_scalar,
    few_softmax_pv: few_softmax_pv_scalar,
};

/// The tiled-attention kernels for this CPU, or `None` where only the scalar reference would
/// run (there the per-token attention of `F16Ops` is faster).
pub fn tile_kernel() -> Option<&'static TileKernel> {
    #[cfg(target_arch = "x86_64")]
    if super::detected_isa() == Isa::Avx2 && super::avx2::attn_tile_available() {
        return Some(&super::avx2::TILE_ZMM);
    }
    None
}

/// `e^x` as the SIMD kernels compute it, bit for bit: range reduction to `2^k · e^r` with
/// `|r| ≤ ln2/2` and a degree-6 Taylor polynomial of `e^r` (relative error about 1e-7);
/// arguments under −87 (and NaN) give `e^−87`, never zero or an infinity.
pub(super) fn exp_poly(x: f32) -> f32 {
    let x = if x > EXP_MIN { x } else { EXP_MIN };
    let k = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = (-k).mul_add(LN2_LO, (-k).mul_add(LN2_HI, x));
    let mut e = EXP_TAYLOR[0];
    for &c in &EXP_TAYLOR[1..] {
        e = e.mul_add(r, c);
    }
    e * f32::from_bits(((k as i32 + 127) << 23) as u32)
}

/// The smallest argument [`exp_poly`] takes (smaller ones are raised to it).
pub(super) const EXP_MIN: f32 = -87.0;
/// ln 2 in a part exact in f32 ...
pub(super) const LN2_HI: f32 = 0.693_145_75;
/// ... and the rest.
pub(super) const LN2_LO: f32 = 1.428_606_8e-6;
/// Coefficients of the Taylor polynomial of `e^r`, highest degree first.
pub(super) const EXP_TAYLOR: [f32; 7] = [
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

fn widen_scalar(rows: &[&[f16]], width: usize, dst: &mut [f32]) {
    for (j, row) in rows.iter().enumerate() {
        for (d, x) in dst[j * width..(j + 1) * width]
            .iter_mut()
            .zip(&row[..width])
        {
            *d = x.to_f32();
        }
    }
}

fn scores_scalar(qt: &[f32], dk: usize, k: &[f32], n: usize, scale: f32, s: &mut [f32]) {
    const R: usize = TILE_ROWS;
    for j in 0..n {
        let kj = &k[j * dk..(j + 1) * dk];
        for r in 0..R {
            let mut acc = 0.0f32;
            for (d, &x) in kj.iter().enumerate() {
                acc = qt[d * R + r].mul_add(x, acc);
            }
            s[j * R + r] = acc * scale;
        }
    }
}

fn softmax_pv_scalar(
    s: &mut [f32],
    pk: &[i32],
    window: Option<u32>,
    v: &[f32],
    dv: usize,
    st: &mut TileState,
) {
    const R: usize = TILE_ROWS;
    for r in 0..R {
        let row = Row {
            pq: st.pq[r],
            m: &mut st.m[r],
            l: &mut st.l[r],
        };
        row_step(
            row,
            s,
            r,
            R,
            pk,
            window,
            &mut st.ot,
            r,
            R,
            |j, d| v[j * dv + d],
            dv,
        );
    }
}

/// One row's running maximum and sum, and its query's position.
struct Row<'a> {
    pq: i32,
    m: &'a mut f32,
    l: &'a mut f32,
}

/// One row's online-softmax step over a block, the arithmetic every kernel reproduces bit for
/// bit: its scores at `s[s0 + j·ss]` (overwritten with the weights), its output at
/// `o[o0 + d·os]`, value element `d` of key `j` from `v(j, d)`.
#[allow(clippy::too_many_arguments)]
fn row_step(
    row: Row<'_>,
    s: &mut [f32],
    s0: usize,
    ss: usize,
    pk: &[i32],
    window: Option<u32>,
    o: &mut [f32],
    o0: usize,
    os: usize,
    v: impl Fn(usize, usize) -> f32,
    dv: usize,
) {
    let n = pk.len();
    let vis = |j: usize| visible(row.pq, pk[j], window);
    let bm = (0..n)
        .filter(|&j| vis(j))
        .fold(f32::NEG_INFINITY, |m, j| m.max(s[s0 + j * ss]));
    let m = row.m.max(bm);
    if m == f32::NEG_INFINITY {
        for j in 0..n {
            s[s0 + j * ss] = 0.0;
        }
        return;
    }
    let c = exp_poly(*row.m - m);
    let mut sum = 0.0;
    for j in 0..n {
        let p = if vis(j) {
            exp_poly(s[s0 + j * ss] - m)
        } else {
            0.0
        };
        s[s0 + j * ss] = p;
        sum += p;
    }
    *row.l = *row.l * c + sum;
    *row.m = m;
    for d in 0..dv {
        let mut acc = o[o0 + d * os] * c;
        for j in 0..n {
            acc = s[s0 + j * ss].mul_add(v(j, d), acc);
        }
        o[o0 + d * os] = acc;
    }
}

fn few_scores_scalar(
    q: &[f32],
    dk: usize,
    keys: &[&[f16]],
    scale: f32,
    s: &mut [f32],
    _: &mut [f32],
) {
    for (g, qg) in q.chunks_exact(dk).enumerate() {
        for (j, kj) in keys.iter().enumerate() {
            let mut acc = 0.0f32;
            for (&x, k) in qg.iter().zip(&kj[..dk]) {
                acc = x.mul_add(k.to_f32(), acc);
            }
            s[g * TILE_KEYS + j] = acc * scale;
        }
    }
}

fn few_softmax_pv_scalar(
    s: &mut [f32],
    pk: &[i32],
    window: Option<u32>,
    values: &[&[f16]],
    dv: usize,
    st: &mut FewState,
) {
    for g in 0..st.pq.len() {
        let row = Row {
            pq: st.pq[g],
            m: &mut st.m[g],
            l: &mut st.l[g],
        };
        let v = |j: usize, d: usize| values[j][d].to_f32();
        row_step(
            row,
            s,
            g * TILE_KEYS,
            1,
            pk,
            window,
            &mut st.o,
            g * dv,
            1,
            v,
            dv,
        );
    }
}
