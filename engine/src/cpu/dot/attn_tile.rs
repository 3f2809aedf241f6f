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
}

/// The scalar reference of [`TileKernel`].
pub static TILE_SCALAR: TileKernel = TileKernel {
    isa: Isa::Scalar,
    widen: widen_scalar,
    scores: scores_scalar,
    softmax_pv: softmax_pv_scalar,
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
    let n = pk.len();
    for r in 0..R {
        let vis = |j: usize| visible(st.pq[r], pk[j], window);
        let bm = (0..n)
            .filter(|&j| vis(j))
            .fold(f32::NEG_INFINITY, |m, j| m.max(s[j * R + r]));
        let m = st.m[r].max(bm);
        if m == f32::NEG_INFINITY {
            for j in 0..n {
                s[j * R + r] = 0.0;
            }
            continue;
        }
        let c = exp_poly(st.m[r] - m);
        let mut sum = 0.0;
        for j in 0..n {
            let p = if vis(j) {
                exp_poly(s[j * R + r] - m)
            } else {
                0.0
            };
            s[j * R + r] = p;
            sum += p;
        }
        st.l[r] = st.l[r] * c + sum;
        st.m[r] = m;
        for d in 0..dv {
            let mut o = st.ot[d * R + r] * c;
            for j in 0..n {
                o = s[j * R + r].mul_add(v[j * dv + d], o);
            }
            st.ot[d * R + r] = o;
        }
    }
}
