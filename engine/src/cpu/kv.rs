//! KV storage on the CPU: one store per attention layer holds the F16 keys and values of every
//! sequence, its cells laid out as [`SeqCells`] says:
//! - a **pool** ([`CellPool`](crate::kv_cells::CellPool)): cells shared by every sequence,
//!   each new token given a free cell, a forked prefix shared rather than copied
//!   (global-attention layers);
//! - **rings** ([`CellPositions`](crate::kv_cells::CellPositions)): each sequence its own ring
//!   of cells, a token at position `p` in cell `p % ring`, so memory stays O(window) however
//!   long the context (sliding-window layers).
//!
//! Attention reads a sequence's cells in position order in both, so a token's result does not
//! depend on where its sequence's cells lie or what other sequences hold.

use half::f16;

use crate::backend::{BackendError, KvLayer};
use crate::kv_cells::{PoolFull, SeqCells, move_rows};
use crate::memory::{OutOfMemory, try_filled_vec};
use crate::rope::KeyRotation;

/// K and V of one attention layer, for every sequence.
pub struct KvStore {
    n_cells: usize,
    k_width: usize,
    v_width: usize,
    k: Vec<f16>,
    v: Vec<f16>,
    cells: SeqCells,
}

impl KvStore {
    /// An empty store for one sequence: a ring (or plain cache) of `n_cells` cells, each with
    /// `k_width` key and `v_width` value elements (heads × head width).
    pub fn new(n_cells: usize, k_width: usize, v_width: usize) -> KvStore {
        Self::try_rings(n_cells, 1, k_width, v_width).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::new`], or [`OutOfMemory`] when the system refuses the memory (or the size
    /// overflows) instead of aborting.
    pub fn try_new(n_cells: usize, k_width: usize, v_width: usize) -> Result<KvStore, OutOfMemory> {
        Self::try_rings(n_cells, 1, k_width, v_width)
    }

    /// A ring of `ring` cells for each of `n_seq` sequences.
    pub fn try_rings(
        ring: usize,
        n_seq: usize,
        k_width: usize,
        v_width: usize,
    ) -> Result<KvStore, OutOfMemory> {
        Self::try_with(k_width, v_width, SeqCells::try_rings(ring, n_seq)?)
    }

    /// A pool of `n_cells` cells shared by `n_seq` sequences of up to `n_ctx` tokens each.
    pub fn try_pool(
        n_cells: usize,
        n_seq: usize,
        n_ctx: usize,
        k_width: usize,
        v_width: usize,
    ) -> Result<KvStore, OutOfMemory> {
        Self::try_with(k_width, v_width, SeqCells::try_pool(n_cells, n_seq, n_ctx)?)
    }

    fn try_with(k_width: usize, v_width: usize, cells: SeqCells) -> Result<KvStore, OutOfMemory> {
        let n_cells = cells.n_cells();
        let elems = |width: usize| n_cells.saturating_mul(width);
        Ok(KvStore {
            n_cells,
            k_width,
            v_width,
            k: try_filled_vec(elems(k_width), f16::ZERO, "the KV cache's keys")?,
            v: try_filled_vec(elems(v_width), f16::ZERO, "the KV cache's values")?,
            cells,
        })
    }

    /// Number of cells (every sequence's).
    pub fn n_cells(&self) -> usize {
        self.n_cells
    }

    /// Sequences the store serves.
    pub fn n_seq(&self) -> usize {
        self.cells.n_seq()
    }

    /// Key elements per cell.
    pub fn k_width(&self) -> usize {
        self.k_width
    }

    /// Value elements per cell.
    pub fn v_width(&self) -> usize {
        self.v_width
    }

    /// Bytes held by keys, values and positions.
    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * 2 + self.n_cells * 4
    }

    /// Cells holding a token of some sequence (a shared cell counts once).
    pub fn used_cells(&self) -> usize {
        self.cells.used()
    }

    /// Cells holding a token of sequence `seq`.
    pub fn seq_used_cells(&self, seq: u32) -> usize {
        self.cells.seq_used(seq)
    }

    /// Free cells of a pool (`None` for rings, which never run out).
    pub fn free_cells(&self) -> Option<usize> {
        self.cells.free_cells()
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.cells.clear();
    }

    /// Forget sequence `seq`'s tokens at positions `>= pos`.
    pub fn seq_truncate(&mut self, seq: u32, pos: i32) {
        self.cells.seq_truncate(seq, pos);
    }

    /// Forget every sequence's tokens at positions `>= pos`.
    pub fn truncate(&mut self, pos: i32) {
        for seq in 0..self.n_seq() as u32 {
            self.seq_truncate(seq, pos);
        }
    }

    /// Make sequence `dst` hold what `src` holds at positions `< n` and nothing else: a pool
    /// shares the cells, rings copy `src`'s ring.
    pub fn seq_copy(&mut self, src: u32, dst: u32, n: i32) {
        if let Some((from, rows, to)) = self.cells.seq_copy(src, dst, n) {
            let (kw, vw) = (self.k_width, self.v_width);
            self.k.copy_within(from * kw..(from + rows) * kw, to * kw);
            self.v.copy_within(from * vw..(from + rows) * vw, to * vw);
        }
    }

    /// Fails unless [`Self::seq_discard`] can drop sequence `seq`'s positions `p0..p1`: a pool
    /// needs free cells for the later tokens it shares with other sequences (rings always
    /// can).
    pub fn check_discard(&self, seq: u32, p0: i32, p1: i32) -> Result<(), BackendError> {
        Ok(self.cells.check_discard(seq, p0, p1)?)
    }

    /// Drop sequence `seq`'s tokens at positions `p0..p1` and move its later tokens back by
    /// `p1 - p0`, rotating their keys by `rotation` (`None`: the layer has no RoPE). After
    /// [`Self::check_discard`]. A pool moves its rows in place in position order; a ring
    /// (whose targets may be later sources once it wrapped) through a copy.
    pub fn seq_discard(&mut self, seq: u32, p0: i32, p1: i32, rotation: Option<&KeyRotation>) {
        let moves = self.cells.discard(seq, p0, p1);
        let mut key = vec![0.0f32; self.k_width];
        move_rows(&mut self.k, self.k_width, &moves, |row| {
            if let Some(r) = rotation {
                r.apply_f16(row, &mut key);
            }
        });
        move_rows(&mut self.v, self.v_width, &moves, |_| {});
    }

    /// Sequence 0's ring: the position each of its cells holds (-1 = empty); empty for a pool.
    pub fn cell_positions(&self) -> &[i32] {
        match &self.cells {
            SeqCells::Rings { seqs, .. } => seqs[0].as_slice(),
            SeqCells::Pool(_) => &[],
        }
    }

    /// Whether a step fits: each `(sequence, first position, tokens)` of it. Only a pool can
    /// run out.
    pub fn check_step(
        &self,
        groups: impl Iterator<Item = (u32, i32, usize)>,
    ) -> Result<(), PoolFull> {
        self.cells.check_step(groups)
    }

    /// Sequence `seq`'s cells a step starting at `pmin` reads, oldest first, into `rows`
    /// (cell indices) and `positions`: those before `pmin` (the step replaces the rest) that a
    /// window (relative to `pmin`) leaves visible. Returns how many; the slices must hold
    /// [`Self::n_cells`].
    pub fn gather(
        &self,
        seq: u32,
        pmin: i32,
        window: Option<u32>,
        rows: &mut [u32],
        positions: &mut [i32],
    ) -> usize {
        let visible = |pk: i32| window.is_none_or(|w| (pmin as i64 - pk as i64) < w as i64);
        let mut n = 0;
        match &self.cells {
            SeqCells::Pool(pool) => {
                for &(pk, c) in pool.before(seq, pmin) {
                    if visible(pk) {
                        rows[n] = c;
                        positions[n] = pk;
                        n += 1;
                    }
                }
            }
            SeqCells::Rings { ring, seqs } => {
                // Walk the ring in position order (oldest first) whatever the layout: its
                // oldest cell is the one the step's first token will overwrite. The same
                // order for rings and plain caches makes their results bit-identical.
                let cells = &seqs[seq as usize];
                let base = seq as usize * ring;
                let start = cells.cell_of(pmin);
                for j in 0..*ring {
                    let c = (start + j) % ring;
                    let pk = cells.as_slice()[c];
                    if pk >= 0 && pk < pmin && visible(pk) {
                        rows[n] = (base + c) as u32;
                        positions[n] = pk;
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Keep a step's K and V (already F16, `positions.len()` rows of each) as sequence
    /// `seq`'s tokens at `positions`, replacing what it held from the first of them on. A
    /// pool must have room ([`Self::check_step`]).
    pub fn write_step(&mut self, seq: u32, positions: &[i32], k: &[f16], v: &[f16]) {
        let (kw, vw) = (self.k_width, self.v_width);
        let mut put = |c: usize, t: usize| {
            self.k[c * kw..(c + 1) * kw].copy_from_slice(&k[t * kw..(t + 1) * kw]);
            self.v[c * vw..(c + 1) * vw].copy_from_slice(&v[t * vw..(t + 1) * vw]);
        };
        match &mut self.cells {
            SeqCells::Pool(pool) => {
                for (t, &(_, c)) in pool.extend(seq, positions).iter().enumerate() {
                    put(c as usize, t);
                }
            }
            SeqCells::Rings { ring, seqs } => {
                let cells = &mut seqs[seq as usize];
                let base = seq as usize * *ring;
                for (t, &pos) in positions.iter().enumerate() {
                    put(base + cells.cell_of(pos), t);
                    cells.note_written(pos);
                }
            }
        }
    }

    /// All keys, `n_cells × k_width`.
    pub fn k_all(&self) -> &[f16] {
        &self.k
    }

    /// All values, `n_cells × v_width`.
    pub fn v_all(&self) -> &[f16] {
        &self.v
    }
}

impl KvLayer for KvStore {
    fn n_cells(&self) -> usize {
        self.n_cells
    }

    fn bytes(&self) -> usize {
        KvStore::bytes(self)
    }

    fn used_cells(&self) -> usize {
        KvStore::used_cells(self)
    }

    fn seq_used_cells(&self, seq: u32) -> usize {
        KvStore::seq_used_cells(self, seq)
    }

    fn free_cells(&self) -> Option<usize> {
        KvStore::free_cells(self)
    }

    fn clear(&mut self) {
        KvStore::clear(self);
    }

    fn seq_truncate(&mut self, seq: u32, pos: i32) {
        KvStore::seq_truncate(self, seq, pos);
    }

    fn seq_copy(&mut self, src: u32, dst: u32, n: i32) {
        KvStore::seq_copy(self, src, dst, n);
    }

    fn check_discard(&self, seq: u32, p0: i32, p1: i32) -> Result<(), BackendError> {
        KvStore::check_discard(self, seq, p0, p1)
    }

    fn seq_discard(
        &mut self,
        seq: u32,
        p0: i32,
        p1: i32,
        rotation: Option<&KeyRotation>,
    ) -> Result<(), BackendError> {
        KvStore::seq_discard(self, seq, p0, p1, rotation);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::ops::rope::rope_apply;

    fn keys(t: usize, w: usize) -> Vec<f16> {
        (0..t * w).map(|i| f16::from_f32(i as f32)).collect()
    }

    #[test]
    fn ring_wraps_and_remembers_positions() {
        let mut s = KvStore::new(4, 2, 2);
        let k = keys(6, 2);
        s.write_step(0, &[0, 1, 2, 3, 4, 5], &k, &k);
        assert_eq!(s.cell_positions(), &[4, 5, 2, 3]);
        s.truncate(4);
        assert_eq!(s.cell_positions(), &[-1, -1, 2, 3]);
        assert_eq!(s.used_cells(), 2);
        assert_eq!(s.bytes(), 4 * 4 * 2 + 16);
    }

    /// Keys roped at positions 0..8; positions 2..5 dropped: the keys of 5..8, rotated back 3
    /// positions, are those of a key roped at 2..5 (to F16 rounding), and far from it when not
    /// rotated; in a pool, and in a ring that wrapped.
    #[test]
    fn discarding_rotates_later_keys_to_their_new_positions() {
        use crate::graph::{RopeMode, RopeParams};
        use crate::rope::rope_table;
        let (hd, heads) = (16, 2);
        let w = hd * heads;
        let p = RopeParams {
            mode: RopeMode::Neox,
            n_dims: hd,
            base: 10000.0,
            freq_scale: 0.25,
            ext_factor: 1.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            orig_ctx: 64,
        };
        let raw: Vec<f32> = (0..w).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
        let roped = |pos: i32| {
            let mut t = vec![0.0; hd];
            rope_table(pos, &p, None, &mut t);
            let mut k = raw.clone();
            rope_apply(&mut k, hd, p.mode, hd, &t);
            k
        };
        let keys: Vec<f16> = (0..8).flat_map(roped).map(f16::from_f32).collect();
        let positions: Vec<i32> = (0..8).collect();
        // A pool, and a ring of 6 cells that wrapped (it holds 2..8 before the discard).
        let shifted = |pool: bool, rotate: bool| {
            let mut s = if pool {
                KvStore::try_pool(16, 1, 16, w, w).unwrap()
            } else {
                KvStore::try_rings(6, 1, w, w).unwrap()
            };
            s.write_step(0, &positions, &keys, &keys);
            s.check_discard(0, 2, 5).unwrap();
            let r = KeyRotation::new(&p, None, hd, -3);
            s.seq_discard(0, 2, 5, rotate.then_some(&r));
            let (mut rows, mut pos) = (vec![0; 16], vec![0; 16]);
            let n = s.gather(0, 5, None, &mut rows, &mut pos);
            let want: &[i32] = if pool { &[0, 1, 2, 3, 4] } else { &[2, 3, 4] };
            assert_eq!(pos[..n], *want);
            (rows[..n].to_vec(), pos[..n].to_vec(), s)
        };
        // The largest difference of the moved keys (now at 2..5) from keys roped there.
        let err = |pool: bool, rotate: bool| {
            let (rows, pos, s) = shifted(pool, rotate);
            rows.iter()
                .zip(&pos)
                .filter(|&(_, &q)| q >= 2)
                .flat_map(|(&c, &q)| {
                    let c = c as usize;
                    let got = s.k_all()[c * w..(c + 1) * w].to_vec();
                    roped(q)
                        .into_iter()
                        .zip(got)
                        .map(|(a, b)| (a - b.to_f32()).abs())
                        .collect::<Vec<_>>()
                })
                .fold(0.0f32, f32::max)
        };
        for pool in [true, false] {
            assert!(err(pool, true) < 4e-3, "rotated: {}", err(pool, true));
            assert!(err(pool, false) > 0.1, "not rotated: {}", err(pool, false));
        }
    }

    /// A pool and rings give a sequence the same sources, with the same keys, wherever its
    /// cells lie; a fork shares the pool's cells and copies the rings'.
    #[test]
    fn pool_and_rings_gather_a_sequence_alike() {
        let (w, n) = (2, 6);
        let mut pool = KvStore::try_pool(16, 2, 8, w, w).unwrap();
        let mut rings = KvStore::try_rings(8, 2, w, w).unwrap();
        let k = keys(n, w);
        // Sequence 1 first, so sequence 0's cells in the pool do not start at 0.
        for s in [&mut pool, &mut rings] {
            s.write_step(1, &[0, 1], &k[..2 * w], &k[..2 * w]);
            s.write_step(0, &[0, 1, 2, 3, 4, 5], &k, &k);
            s.seq_copy(0, 1, 3);
        }
        assert_eq!((pool.used_cells(), rings.used_cells()), (6, 9));
        assert_eq!((pool.seq_used_cells(1), rings.seq_used_cells(1)), (3, 3));
        let read = |s: &KvStore, seq: u32, pmin: i32, win: Option<u32>| {
            let (mut rows, mut pos) = (vec![0; s.n_cells()], vec![0; s.n_cells()]);
            let m = s.gather(seq, pmin, win, &mut rows, &mut pos);
            let ks: Vec<f16> = rows[..m]
                .iter()
                .flat_map(|&r| s.k_all()[r as usize * w..(r as usize + 1) * w].to_vec())
                .collect();
            (pos[..m].to_vec(), ks)
        };
        for (seq, pmin, win) in [(0, 6, None), (0, 4, Some(3)), (1, 6, None), (1, 2, None)] {
            let (p, kp) = read(&pool, seq, pmin, win);
            assert_eq!((p.clone(), kp.clone()), read(&rings, seq, pmin, win));
            let want: Vec<i32> = (0..pmin.min(if seq == 1 { 3 } else { 6 }))
                .filter(|&q| win.is_none_or(|w| pmin - q < w as i32))
                .collect();
            assert_eq!(p, want, "sequence {seq} from {pmin}");
            assert_eq!(
                kp,
                k[want[0] as usize * w..(want[0] as usize + want.len()) * w]
            );
        }
        assert_eq!(
            pool.check_step([(0, 6, 11)].into_iter()),
            Err(PoolFull { need: 11, free: 10 })
        );
        pool.clear();
        assert_eq!(pool.free_cells(), Some(16));
    }
}
