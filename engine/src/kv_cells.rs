//! Which token each cell of a KV store holds, in two layouts:
//! - [`CellPositions`], one sequence's ring: a token at position `p` goes to cell
//!   `p % n_cells`, so `n_ctx` cells are a plain cache and `window` cells a ring buffer. Each
//!   cell remembers its position (-1 when empty), which keeps the attention mask exact after
//!   wrapping or truncation. Sliding-window layers keep one ring per sequence; the GPU keeps
//!   one per sequence for every layer.
//! - [`CellPool`], cells shared by every sequence: a cell allocator gives each new token a
//!   free cell, each sequence lists its cells in position order, and a cell a forked prefix
//!   shares is held by several sequences at once (counted, freed with the last).

use crate::memory::{OutOfMemory, try_filled_vec};

/// The position held by each cell of one store.
#[derive(Clone, Debug)]
pub struct CellPositions {
    pos: Vec<i32>,
}

impl CellPositions {
    /// `n_cells` empty cells.
    pub fn new(n_cells: usize) -> CellPositions {
        CellPositions {
            pos: vec![-1; n_cells],
        }
    }

    /// [`Self::new`], or [`OutOfMemory`] when the system refuses the memory.
    pub fn try_new(n_cells: usize) -> Result<CellPositions, OutOfMemory> {
        Ok(CellPositions {
            pos: try_filled_vec(n_cells, -1, "the KV cache's cell positions")?,
        })
    }

    /// Number of cells.
    pub fn n_cells(&self) -> usize {
        self.pos.len()
    }

    /// Position held by each cell (-1 = empty).
    pub fn as_slice(&self) -> &[i32] {
        &self.pos
    }

    /// Cells holding a token.
    pub fn used(&self) -> usize {
        self.pos.iter().filter(|&&p| p >= 0).count()
    }

    /// The cell position `pos` goes to.
    pub fn cell_of(&self, pos: i32) -> usize {
        pos.rem_euclid(self.pos.len() as i32) as usize
    }

    /// Record that the cell of `pos` now holds it.
    pub fn note_written(&mut self, pos: i32) {
        let c = self.cell_of(pos);
        self.pos[c] = pos;
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.pos.fill(-1);
    }

    /// Forget the tokens at positions `>= pos`.
    pub fn truncate(&mut self, pos: i32) {
        for p in &mut self.pos {
            if *p >= pos {
                *p = -1;
            }
        }
    }

    /// Forget positions `p0..p1` and move the later ones back by `p1 - p0`, each to the cell
    /// of its new position; returns the moves `(from cell, to cell)` in position order. In a
    /// ring that wrapped a move's target may be a later move's source, so stores move the rows
    /// through a copy (all read, then all written). A moved token landing on the cell of an
    /// earlier kept one (a whole ring behind the new last position) replaces it, as a step
    /// writing there would.
    pub fn discard(&mut self, p0: i32, p1: i32) -> Vec<(usize, usize)> {
        let d = p1 - p0;
        let mut held: Vec<(i32, usize)> = (self.pos.iter().enumerate())
            .filter(|&(_, &p)| p >= p0)
            .map(|(c, &p)| (p, c))
            .collect();
        held.sort_unstable();
        for &(_, c) in &held {
            self.pos[c] = -1;
        }
        let mut moves = Vec::new();
        for (p, from) in held.into_iter().filter(|&(p, _)| p >= p1) {
            let to = self.cell_of(p - d);
            self.pos[to] = p - d;
            moves.push((from, to));
        }
        moves
    }

    /// The positions `[lo, lo + n)` a step starting at `pmin` must scan: those before `pmin`
    /// that the store can still hold and that a window (relative to `pmin`) leaves visible,
    /// less leading ones it no longer holds (after truncation or a reset).
    pub fn scan_range(&self, pmin: i32, window: Option<u32>) -> (u32, u32) {
        let mut lo = (pmin as i64 - self.pos.len() as i64).max(0);
        if let Some(w) = window {
            lo = lo.max(pmin as i64 - w as i64 + 1);
        }
        let mut lo = lo.min(pmin as i64);
        while lo < pmin as i64 && self.pos[self.cell_of(lo as i32)] != lo as i32 {
            lo += 1;
        }
        (lo as u32, (pmin as i64 - lo) as u32)
    }
}

/// Which cells of one layer's store hold which sequence's tokens, the same for the CPU's and
/// the GPU's stores: a ring per sequence (sequence `s`'s at cells `s × ring ..`, a token at
/// position `p` in its ring's cell `p % ring`), or one [`CellPool`] all sequences share. The
/// stores keep the keys and values and move them as these say.
#[derive(Clone, Debug)]
pub enum SeqCells {
    /// One ring of `ring` cells per sequence.
    Rings {
        /// Cells per ring.
        ring: usize,
        /// Each sequence's ring.
        seqs: Vec<CellPositions>,
    },
    /// One pool of cells shared by every sequence.
    Pool(CellPool),
}

impl SeqCells {
    /// A ring of `ring` cells for each of `n_seq` sequences (at least one).
    pub fn try_rings(ring: usize, n_seq: usize) -> Result<SeqCells, OutOfMemory> {
        let seqs = (0..n_seq.max(1))
            .map(|_| CellPositions::try_new(ring))
            .collect::<Result<_, _>>()?;
        Ok(SeqCells::Rings { ring, seqs })
    }

    /// A pool of `n_cells` cells for `n_seq` sequences of up to `n_ctx` tokens each.
    pub fn try_pool(n_cells: usize, n_seq: usize, n_ctx: usize) -> Result<SeqCells, OutOfMemory> {
        Ok(SeqCells::Pool(CellPool::try_new(n_cells, n_seq, n_ctx)?))
    }

    /// Cells of the store (every sequence's).
    pub fn n_cells(&self) -> usize {
        match self {
            SeqCells::Rings { ring, seqs } => ring.saturating_mul(seqs.len()),
            SeqCells::Pool(pool) => pool.n_cells(),
        }
    }

    /// Sequences served.
    pub fn n_seq(&self) -> usize {
        match self {
            SeqCells::Rings { seqs, .. } => seqs.len(),
            SeqCells::Pool(pool) => pool.n_seq(),
        }
    }

    /// Cells holding a token of some sequence (a shared cell counts once).
    pub fn used(&self) -> usize {
        match self {
            SeqCells::Rings { seqs, .. } => seqs.iter().map(CellPositions::used).sum(),
            SeqCells::Pool(pool) => pool.used(),
        }
    }

    /// Cells holding a token of sequence `seq` (0 for one not served).
    pub fn seq_used(&self, seq: u32) -> usize {
        match self {
            SeqCells::Rings { seqs, .. } => seqs.get(seq as usize).map_or(0, CellPositions::used),
            SeqCells::Pool(pool) => pool.seq_used(seq),
        }
    }

    /// Free cells of a pool (`None` for rings, which never run out).
    pub fn free_cells(&self) -> Option<usize> {
        match self {
            SeqCells::Rings { .. } => None,
            SeqCells::Pool(pool) => Some(pool.free_cells()),
        }
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        match self {
            SeqCells::Rings { seqs, .. } => seqs.iter_mut().for_each(CellPositions::clear),
            SeqCells::Pool(pool) => pool.clear(),
        }
    }

    /// Forget sequence `seq`'s tokens at positions `>= pos`.
    pub fn seq_truncate(&mut self, seq: u32, pos: i32) {
        match self {
            SeqCells::Rings { seqs, .. } => seqs[seq as usize].truncate(pos),
            SeqCells::Pool(pool) => pool.truncate(seq, pos),
        }
    }

    /// Make sequence `dst` hold what `src` holds at positions `< n` and nothing else. A pool
    /// shares the cells; rings return the rows whose data the store must copy: `(first row
    /// of src's ring, rows, first row of dst's)`.
    pub fn seq_copy(&mut self, src: u32, dst: u32, n: i32) -> Option<(usize, usize, usize)> {
        match self {
            SeqCells::Pool(pool) => {
                pool.copy(src, dst, n);
                None
            }
            SeqCells::Rings { ring, seqs } => {
                let copy = (src != dst).then(|| {
                    seqs[dst as usize] = seqs[src as usize].clone();
                    (src as usize * *ring, *ring, dst as usize * *ring)
                });
                seqs[dst as usize].truncate(n);
                copy
            }
        }
    }

    /// Whether a step fits: each `(sequence, first position, tokens)` of it. Only a pool can
    /// run out.
    pub fn check_step(
        &self,
        groups: impl Iterator<Item = (u32, i32, usize)>,
    ) -> Result<(), PoolFull> {
        match self {
            SeqCells::Rings { .. } => Ok(()),
            SeqCells::Pool(pool) => pool.check_step(groups),
        }
    }

    /// Fails as [`Self::discard`] would (a pool short of cells for the later tokens it shares
    /// with other sequences), changing nothing.
    pub fn check_discard(&self, seq: u32, p0: i32, p1: i32) -> Result<(), PoolFull> {
        match self {
            SeqCells::Rings { .. } => Ok(()),
            SeqCells::Pool(pool) => pool.check_discard(seq, p0, p1),
        }
    }

    /// Sequence `seq` drops its tokens at positions `p0..p1` and its later ones move back by
    /// `p1 - p0`; returns the store's row moves `(from cell, to cell)` (a pool keeps its cells
    /// but for those other sequences share; a ring moves each to its new position's cell).
    /// Stores move the rows through a copy: all read, then all written. After
    /// [`Self::check_discard`].
    pub fn discard(&mut self, seq: u32, p0: i32, p1: i32) -> Vec<(usize, usize)> {
        match self {
            SeqCells::Pool(pool) => (pool.discard(seq, p0, p1).expect("check_discard first"))
                .into_iter()
                .map(|(f, t)| (f as usize, t as usize))
                .collect(),
            SeqCells::Rings { ring, seqs } => {
                let base = seq as usize * *ring;
                (seqs[seq as usize].discard(p0, p1).into_iter())
                    .map(|(f, t)| (base + f, base + t))
                    .collect()
            }
        }
    }
}

/// Move rows of `width` values of `data` by `moves` (`(from, to)` row numbers), all read
/// before any is written, each passed through `edit` on the way.
pub fn move_rows<T: Copy>(
    data: &mut [T],
    width: usize,
    moves: &[(usize, usize)],
    mut edit: impl FnMut(&mut [T]),
) {
    if width == 0 {
        return;
    }
    let mut rows: Vec<T> = Vec::with_capacity(moves.len() * width);
    for &(from, _) in moves {
        rows.extend_from_slice(&data[from * width..(from + 1) * width]);
    }
    for (&(_, to), row) in moves.iter().zip(rows.chunks_exact_mut(width)) {
        edit(row);
        data[to * width..(to + 1) * width].copy_from_slice(row);
    }
}

/// A step needs more free cells than a [`CellPool`] has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the KV cache is full: the step needs {need} free cells and {free} are free \
     (other sequences hold the rest; free some, or make the cache larger)"
)]
pub struct PoolFull {
    /// Cells the step would take.
    pub need: usize,
    /// Cells free (counting those the step itself would release).
    pub free: usize,
}

/// The cells of one KV store shared by every sequence: each sequence's cells in position
/// order, how many sequences hold each cell, and the free cells. Cells are taken in a fixed
/// order (a fresh pool's lowest first, then the last freed), so stores that see the same
/// operations hold the same tokens in the same cells.
#[derive(Clone, Debug)]
pub struct CellPool {
    /// Sequences holding each cell (0: free).
    refs: Vec<u32>,
    /// Free cells, the next one taken last.
    free: Vec<u32>,
    /// Each sequence's `(position, cell)`s, positions increasing.
    seqs: Vec<Vec<(i32, u32)>>,
    /// Room each sequence's list gets when it first grows (its context), so steps after the
    /// first allocate nothing.
    seq_capacity: usize,
}

impl CellPool {
    /// `n_cells` free cells for `n_seq` sequences of up to `seq_capacity` tokens each (their
    /// lists grow past it if need be), or [`OutOfMemory`] when the system refuses.
    pub fn try_new(
        n_cells: usize,
        n_seq: usize,
        seq_capacity: usize,
    ) -> Result<CellPool, OutOfMemory> {
        let mut free = try_filled_vec(n_cells, 0u32, "the KV cache's free cells")?;
        for (i, c) in free.iter_mut().enumerate() {
            *c = (n_cells - 1 - i) as u32;
        }
        Ok(CellPool {
            refs: try_filled_vec(n_cells, 0, "the KV cache's cell owners")?,
            free,
            seqs: vec![Vec::new(); n_seq.max(1)],
            seq_capacity: seq_capacity.min(n_cells),
        })
    }

    /// Number of cells.
    pub fn n_cells(&self) -> usize {
        self.refs.len()
    }

    /// Sequences the pool serves.
    pub fn n_seq(&self) -> usize {
        self.seqs.len()
    }

    /// Cells no sequence holds.
    pub fn free_cells(&self) -> usize {
        self.free.len()
    }

    /// Cells some sequence holds (a shared cell counts once).
    pub fn used(&self) -> usize {
        self.n_cells() - self.free.len()
    }

    /// Cells sequence `seq` holds (0 for a sequence the pool does not serve).
    pub fn seq_used(&self, seq: u32) -> usize {
        self.seqs.get(seq as usize).map_or(0, Vec::len)
    }

    /// Sequence `seq`'s `(position, cell)`s, positions increasing.
    pub fn cells(&self, seq: u32) -> &[(i32, u32)] {
        &self.seqs[seq as usize]
    }

    /// Sequence `seq`'s cells at positions before `pos`.
    pub fn before(&self, seq: u32, pos: i32) -> &[(i32, u32)] {
        &self.seqs[seq as usize][..self.index(seq, pos)]
    }

    /// Index in sequence `seq`'s list of its first cell at position `pos` or after.
    fn index(&self, seq: u32, pos: i32) -> usize {
        self.seqs[seq as usize].partition_point(|&(p, _)| p < pos)
    }

    /// How many of `cells` no other sequence holds (they go free when these are released).
    fn sole(&self, cells: &[(i32, u32)]) -> usize {
        cells
            .iter()
            .filter(|&&(_, c)| self.refs[c as usize] == 1)
            .count()
    }

    /// Whether a step fits: each `(sequence, first position, tokens)` of it replaces the
    /// sequence's cells from its first position on with one new cell per token.
    pub fn check_step(
        &self,
        groups: impl Iterator<Item = (u32, i32, usize)>,
    ) -> Result<(), PoolFull> {
        let (mut need, mut released) = (0, 0);
        for (seq, pmin, n) in groups {
            need += n;
            released += self.sole(&self.seqs[seq as usize][self.index(seq, pmin)..]);
        }
        let free = self.free.len() + released;
        if need > free {
            return Err(PoolFull { need, free });
        }
        Ok(())
    }

    /// Give sequence `seq` new cells for `positions` (increasing), after releasing its cells
    /// at the first of them and after; returns the new cells, in order. Panics where the pool
    /// has too few free cells ([`Self::check_step`] first).
    pub fn extend(&mut self, seq: u32, positions: &[i32]) -> &[(i32, u32)] {
        let Some(&pmin) = positions.first() else {
            return &[];
        };
        self.truncate(seq, pmin);
        assert!(
            positions.len() <= self.free.len(),
            "KV pool: check_step first"
        );
        let s = &mut self.seqs[seq as usize];
        let start = s.len();
        if s.capacity() < start + positions.len() {
            s.reserve_exact((start + positions.len()).max(self.seq_capacity) - start);
        }
        for &p in positions {
            let c = self.free.pop().expect("checked above");
            self.refs[c as usize] = 1;
            s.push((p, c));
        }
        &s[start..]
    }

    /// Release sequence `seq`'s cells at positions `>= pos`.
    pub fn truncate(&mut self, seq: u32, pos: i32) {
        let keep = self.index(seq, pos);
        let s = &mut self.seqs[seq as usize];
        for (_, c) in s.drain(keep..) {
            release(&mut self.refs, &mut self.free, c);
        }
    }

    /// Release every cell of every sequence.
    pub fn clear(&mut self) {
        for seq in 0..self.seqs.len() as u32 {
            self.truncate(seq, i32::MIN);
        }
    }

    /// Sequence `seq` lets go of its tokens at positions `p0..p1` (`p0 < p1`), and its later
    /// tokens move back by `p1 - p0` positions. A later token's cell that other sequences
    /// hold too (a forked prefix) is replaced by a fresh cell for this sequence, since its key
    /// is about to be rotated. Returns each later token's `(cell to read, cell to write)`,
    /// equal unless replaced; [`PoolFull`] (nothing changed) when there are too few free cells
    /// for the replacements.
    pub fn discard(&mut self, seq: u32, p0: i32, p1: i32) -> Result<Vec<(u32, u32)>, PoolFull> {
        self.check_discard(seq, p0, p1)?;
        let (i0, i1) = (self.index(seq, p0), self.index(seq, p1));
        let s = &mut self.seqs[seq as usize];
        for (_, c) in s.drain(i0..i1) {
            release(&mut self.refs, &mut self.free, c);
        }
        let mut moves = Vec::with_capacity(s.len() - i0);
        for e in &mut s[i0..] {
            let from = e.1;
            if self.refs[from as usize] > 1 {
                self.refs[from as usize] -= 1;
                let to = self.free.pop().expect("counted by check_discard");
                self.refs[to as usize] = 1;
                e.1 = to;
            }
            e.0 -= p1 - p0;
            moves.push((from, e.1));
        }
        Ok(moves)
    }

    /// Fails as [`Self::discard`] would, changing nothing.
    pub fn check_discard(&self, seq: u32, p0: i32, p1: i32) -> Result<(), PoolFull> {
        let s = &self.seqs[seq as usize];
        let (i0, i1) = (self.index(seq, p0), self.index(seq, p1));
        let later = &s[i1..];
        let shared = later.len() - self.sole(later);
        let free = self.free.len() + self.sole(&s[i0..i1]);
        if shared > free {
            return Err(PoolFull { need: shared, free });
        }
        Ok(())
    }

    /// Make sequence `dst` hold `src`'s cells at positions `< n` and nothing else: the cells
    /// are shared, not copied (`src == dst` truncates).
    pub fn copy(&mut self, src: u32, dst: u32, n: i32) {
        if src == dst {
            return self.truncate(src, n);
        }
        self.truncate(dst, i32::MIN);
        let keep = self.index(src, n);
        let (from, to) = source_and_target(&mut self.seqs, src as usize, dst as usize);
        for &(_, c) in &from[..keep] {
            self.refs[c as usize] += 1;
        }
        to.extend_from_slice(&from[..keep]);
    }
}

/// One sequence fewer holds cell `c`; the last one frees it.
fn release(refs: &mut [u32], free: &mut Vec<u32>, c: u32) {
    let r = &mut refs[c as usize];
    *r -= 1;
    if *r == 0 {
        free.push(c);
    }
}

/// Items `src` and `dst` (`src != dst`) of `items`, the one to read and the one to write:
/// what copying one sequence's (or slot's) cells to another borrows.
fn source_and_target<T>(items: &mut [T], src: usize, dst: usize) -> (&T, &mut T) {
    assert_ne!(src, dst, "a source and a distinct target");
    if src < dst {
        let (lo, hi) = items.split_at_mut(dst);
        (&lo[src], &mut hi[0])
    } else {
        let (lo, hi) = items.split_at_mut(src);
        (&hi[0], &mut lo[dst])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discarding_moves_later_positions_back_in_order() {
        let mut c = CellPositions::new(8);
        for p in 0..6 {
            c.note_written(p);
        }
        assert_eq!(c.discard(1, 3), vec![(3, 1), (4, 2), (5, 3)]);
        assert_eq!(c.as_slice(), &[0, 1, 2, 3, -1, -1, -1, -1]);
        // Nothing past the gap: only forgotten.
        assert_eq!(c.discard(3, 9), vec![]);
        assert_eq!(c.as_slice(), &[0, 1, 2, -1, -1, -1, -1, -1]);
        // A ring of 4 that wrapped (positions 6..10 in cells 2, 3, 0, 1): dropping 3..7
        // leaves 7, 8, 9 at 3, 4, 5 (cells 3, 0, 1).
        let mut r = CellPositions::new(4);
        for p in 0..10 {
            r.note_written(p);
        }
        assert_eq!(r.discard(3, 7), vec![(3, 3), (0, 0), (1, 1)]);
        assert_eq!(r.as_slice(), &[4, 5, -1, 3]);
        // Dropping what the ring no longer holds moves everything it does.
        assert_eq!(r.discard(0, 2), vec![(3, 1), (0, 2), (1, 3)]);
        assert_eq!(r.as_slice(), &[-1, 1, 2, 3]);
    }

    #[test]
    fn discard_moves_later_tokens_back_and_unshares_their_cells() {
        let mut pool = CellPool::try_new(8, 2, 8).unwrap();
        pool.extend(0, &[0, 1, 2, 3, 4]);
        pool.copy(0, 1, 5);
        // Sequence 0 drops positions 1..3: 3 and 4 become 1 and 2, on fresh cells (sequence
        // 1 keeps the old ones, with their keys as they are).
        let moves = pool.discard(0, 1, 3).unwrap();
        assert_eq!(moves, [(3, 5), (4, 6)]);
        assert_eq!(pool.cells(0), &[(0, 0), (1, 5), (2, 6)]);
        assert_eq!(pool.cells(1).len(), 5);
        assert_eq!(pool.free_cells(), 1);
        // Unshared: the cells stay where they are.
        pool.truncate(1, 0);
        assert_eq!(pool.discard(0, 0, 1).unwrap(), [(5, 5), (6, 6)]);
        assert_eq!(pool.cells(0), &[(0, 5), (1, 6)]);
        // Too few free cells for the copies: refused, nothing changed.
        let mut full = CellPool::try_new(3, 2, 3).unwrap();
        full.extend(0, &[0, 1, 2]);
        full.copy(0, 1, 3);
        assert_eq!(full.discard(0, 0, 1), Err(PoolFull { need: 2, free: 0 }));
        assert_eq!(full.cells(0), &[(0, 0), (1, 1), (2, 2)]);
    }

    #[test]
    fn pool_shares_forked_cells_and_frees_them_with_the_last_holder() {
        let mut pool = CellPool::try_new(8, 3, 8).unwrap();
        let cells: Vec<u32> = pool.extend(0, &[0, 1, 2, 3]).iter().map(|e| e.1).collect();
        assert_eq!(cells, [0, 1, 2, 3], "lowest cells first");
        // Sequence 1 forks the first three tokens: no new cells.
        pool.copy(0, 1, 3);
        assert_eq!((pool.used(), pool.seq_used(1)), (4, 3));
        // Each goes on on its own cells.
        pool.check_step([(0, 4, 1), (1, 3, 2)].into_iter()).unwrap();
        assert_eq!(pool.extend(0, &[4])[0], (4, 4));
        assert_eq!(pool.extend(1, &[3, 4]), &[(3, 5), (4, 6)]);
        assert_eq!(pool.before(1, 4), &[(0, 0), (1, 1), (2, 2), (3, 5)]);
        // One free cell: a 2-token step does not fit, unless it replaces its own cells.
        assert_eq!(
            pool.check_step([(2, 0, 2)].into_iter()),
            Err(PoolFull { need: 2, free: 1 })
        );
        pool.check_step([(1, 3, 2)].into_iter()).unwrap();
        // Shared cells stay while a holder is left.
        pool.truncate(0, 0);
        assert_eq!((pool.used(), pool.free_cells()), (5, 3));
        pool.clear();
        assert_eq!(
            (pool.used(), pool.seq_used(1), pool.free_cells()),
            (0, 0, 8)
        );
    }

    #[test]
    fn ring_wraps_truncates_and_scans() {
        let mut c = CellPositions::new(4);
        for p in 0..6 {
            c.note_written(p);
        }
        assert_eq!(c.as_slice(), &[4, 5, 2, 3]);
        // A step at 6 sees 2..6 (the ring holds four), or 4..6 with a window of 3.
        assert_eq!(c.scan_range(6, None), (2, 4));
        assert_eq!(c.scan_range(6, Some(3)), (4, 2));
        c.truncate(4);
        assert_eq!(c.as_slice(), &[-1, -1, 2, 3]);
        assert_eq!(c.used(), 2);
        // Positions 4 and 5 are gone: a step at 4 scans 2..4 only.
        assert_eq!(c.scan_range(4, None), (2, 2));
        c.clear();
        assert_eq!(c.used(), 0);
        assert_eq!(c.scan_range(3, None), (3, 0));
    }
}
