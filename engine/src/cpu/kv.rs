//! KV storage on the CPU: `n_cells` cells of F16 keys and values, each remembering the
//! position it holds ([`CellPositions`]: a token at position `p` goes to cell `p % n_cells`, so
//! a store of `n_ctx` cells is a plain cache and a store of `window` cells is a ring buffer).

use half::f16;

use crate::backend::KvLayer;
use crate::kv_cells::CellPositions;
use crate::memory::{OutOfMemory, try_filled_vec};

/// K and V of one attention layer.
pub struct KvStore {
    n_cells: usize,
    k_width: usize,
    v_width: usize,
    k: Vec<f16>,
    v: Vec<f16>,
    /// Position held by each cell.
    cells: CellPositions,
}

impl KvStore {
    /// An empty store of `n_cells` cells, each with `k_width` key and `v_width` value elements
    /// (heads × head width).
    pub fn new(n_cells: usize, k_width: usize, v_width: usize) -> KvStore {
        Self::try_new(n_cells, k_width, v_width).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::new`], or [`OutOfMemory`] when the system refuses the memory (or the size
    /// overflows) instead of aborting.
    pub fn try_new(n_cells: usize, k_width: usize, v_width: usize) -> Result<KvStore, OutOfMemory> {
        let elems = |width: usize| n_cells.saturating_mul(width);
        Ok(KvStore {
            n_cells,
            k_width,
            v_width,
            k: try_filled_vec(elems(k_width), f16::ZERO, "the KV cache's keys")?,
            v: try_filled_vec(elems(v_width), f16::ZERO, "the KV cache's values")?,
            cells: CellPositions::try_new(n_cells)?,
        })
    }

    /// Number of cells.
    pub fn n_cells(&self) -> usize {
        self.n_cells
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

    /// Cells holding a token.
    pub fn used_cells(&self) -> usize {
        self.cells.used()
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.cells.clear();
    }

    /// Forget the tokens at positions `>= pos`.
    pub fn truncate(&mut self, pos: i32) {
        self.cells.truncate(pos);
    }

    /// The cell position `pos` goes to.
    pub fn cell_of(&self, pos: i32) -> usize {
        self.cells.cell_of(pos)
    }

    /// Position held by each cell (-1 = empty).
    pub fn cell_positions(&self) -> &[i32] {
        self.cells.as_slice()
    }

    /// Keys of cell `c`.
    pub fn k_cell(&self, c: usize) -> &[f16] {
        &self.k[c * self.k_width..(c + 1) * self.k_width]
    }

    /// Values of cell `c`.
    pub fn v_cell(&self, c: usize) -> &[f16] {
        &self.v[c * self.v_width..(c + 1) * self.v_width]
    }

    /// All keys, `n_cells × k_width`.
    pub fn k_all(&self) -> &[f16] {
        &self.k
    }

    /// All values, `n_cells × v_width`.
    pub fn v_all(&self) -> &[f16] {
        &self.v
    }

    /// Make this store (of the same shape) hold what `src` holds: keys, values and positions.
    pub fn copy_from(&mut self, src: &KvStore) {
        assert_eq!(
            (self.n_cells, self.k_width, self.v_width),
            (src.n_cells, src.k_width, src.v_width),
            "KV stores of one shape"
        );
        self.k.copy_from_slice(&src.k);
        self.v.copy_from_slice(&src.v);
        self.cells.clone_from(&src.cells);
    }

    /// Store already-converted K and V for position `pos`.
    pub fn write_f16(&mut self, pos: i32, k: &[f16], v: &[f16]) {
        let c = self.cell_of(pos);
        self.k[c * self.k_width..(c + 1) * self.k_width].copy_from_slice(k);
        self.v[c * self.v_width..(c + 1) * self.v_width].copy_from_slice(v);
        self.cells.note_written(pos);
    }
}

impl KvLayer for KvStore {
    fn n_cells(&self) -> usize {
        self.n_cells
    }

    fn bytes(&self) -> usize {
        KvStore::bytes(self)
    }

    fn cell_positions(&self) -> &[i32] {
        self.cells.as_slice()
    }

    fn clear(&mut self) {
        KvStore::clear(self);
    }

    fn truncate(&mut self, pos: i32) {
        KvStore::truncate(self, pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_wraps_and_remembers_positions() {
        let mut s = KvStore::new(4, 2, 2);
        let k = [f16::ONE; 2];
        for p in 0..6 {
            s.write_f16(p, &k, &k);
        }
        assert_eq!(s.cell_positions(), &[4, 5, 2, 3]);
        s.truncate(4);
        assert_eq!(s.cell_positions(), &[-1, -1, 2, 3]);
        assert_eq!(s.used_cells(), 2);
        assert_eq!(s.bytes(), 4 * 4 * 2 + 16);
    }
}
