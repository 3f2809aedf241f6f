//! Which position each cell of a KV store holds, kept the same way by every backend: a token
//! at position `p` goes to cell `p % n_cells`, so a store of `n_ctx` cells is a plain cache and a
//! store of `window` cells is a ring buffer. Each cell remembers its position (-1 when empty),
//! which is what makes the attention mask exact after wrapping or truncation.

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

#[cfg(test)]
mod tests {
    use super::*;

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
