//! KV storage in GPU memory: one store per attention layer for every sequence, f16 keys and
//! values (stored as pairs in u32 words) and each cell's position, its cells laid out as the
//! CPU's stores lay theirs out ([`SeqCells`]): a ring per sequence (sliding-window layers; a
//! token at position `p` in its ring's cell `p % ring`), or one pool all sequences share
//! (global layers; a forked prefix's cells shared, not copied). The host keeps the cells'
//! bookkeeping and tells each step's kernels what to read: a ring's scan range, or a pool
//! sequence's cells in position order ([`GroupScan`]). Dropping tokens from the middle of a
//! sequence ([`GpuKvStore::discard`], rare: a context shift) moves rows through the host, keys
//! rotated there as the CPU rotates its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::device::{GpuDevice, GpuError};
use super::readback::read_range;
use crate::backend::{BackendError, KvLayer};
use crate::kv_cells::{PoolFull, SeqCells};
use crate::memory::OutOfMemory;
use crate::rope::KeyRotation;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// K and V of one attention layer, on the GPU, for every sequence.
pub struct GpuKvStore {
    pub(crate) id: u64,
    dev: Arc<GpuDevice>,
    k_width: usize,
    v_width: usize,
    pub(crate) k: wgpu::Buffer,
    pub(crate) v: wgpu::Buffer,
    pub(crate) cell_pos: wgpu::Buffer,
    cells: SeqCells,
}

/// Where a step's sequence group reads its cached tokens in a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupScan<'a> {
    /// The positions `[lo, lo + n)` of the ring of `ring` cells at cell `base` (each cell
    /// checked against its stored position).
    Ring {
        /// First position scanned.
        lo: u32,
        /// Positions scanned.
        n: u32,
        /// The ring's first cell.
        base: u32,
        /// Cells per ring.
        ring: u32,
    },
    /// These `(position, cell)`s of a pool, in position order: the cached tokens, then the
    /// step's own (whose cells the step writes).
    Pool(&'a [(i32, u32)]),
}

impl GpuKvStore {
    /// An empty store for one sequence: a ring (or plain cache) of `n_cells` cells of
    /// `k_width` key and `v_width` value elements (both even: the cache holds f16 pairs).
    pub fn new(
        dev: &Arc<GpuDevice>,
        n_cells: usize,
        k_width: usize,
        v_width: usize,
    ) -> Result<GpuKvStore, GpuError> {
        Self::rings(dev, n_cells, 1, k_width, v_width)
    }

    /// A ring of `ring` cells for each of `n_seq` sequences.
    pub fn rings(
        dev: &Arc<GpuDevice>,
        ring: usize,
        n_seq: usize,
        k_width: usize,
        v_width: usize,
    ) -> Result<GpuKvStore, GpuError> {
        if ring == 0 {
            return Err(GpuError::Unsupported("a KV ring of 0 cells".into()));
        }
        Self::with(dev, k_width, v_width, SeqCells::try_rings(ring, n_seq))
    }

    /// A pool of `n_cells` cells shared by `n_seq` sequences of up to `n_ctx` tokens each.
    pub fn pool(
        dev: &Arc<GpuDevice>,
        n_cells: usize,
        n_seq: usize,
        n_ctx: usize,
        k_width: usize,
        v_width: usize,
    ) -> Result<GpuKvStore, GpuError> {
        Self::with(
            dev,
            k_width,
            v_width,
            SeqCells::try_pool(n_cells, n_seq, n_ctx),
        )
    }

    fn with(
        dev: &Arc<GpuDevice>,
        k_width: usize,
        v_width: usize,
        cells: Result<SeqCells, OutOfMemory>,
    ) -> Result<GpuKvStore, GpuError> {
        let cells = cells.map_err(|e| GpuError::Unsupported(e.to_string()))?;
        let n_cells = cells.n_cells();
        if !k_width.is_multiple_of(2) || !v_width.is_multiple_of(2) || n_cells == 0 {
            return Err(GpuError::Unsupported(format!(
                "KV widths must be even and cells at least 1 (got {k_width}, {v_width}, {n_cells} cells)"
            )));
        }
        let max = dev.max_binding();
        let bytes = |width: usize| (n_cells as u64).saturating_mul(width as u64 * 2);
        let (kb, vb) = (bytes(k_width), bytes(v_width));
        if kb > max || vb > max {
            return Err(GpuError::Unsupported(format!(
                "a KV cache of {n_cells} cells needs {} MiB per layer, over the adapter's \
                 {} MiB binding limit (use a smaller -c)",
                kb.max(vb) >> 20,
                max >> 20
            )));
        }
        let buffer = |label: &str, bytes: u64| {
            dev.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                // A store without values still binds a (16-byte, vec4-sized) value buffer.
                size: bytes.max(16),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let store = GpuKvStore {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            dev: dev.clone(),
            k_width,
            v_width,
            k: buffer("kv.k", kb),
            v: buffer("kv.v", vb),
            cell_pos: buffer("kv.pos", n_cells as u64 * 4),
            cells,
        };
        store.upload_positions();
        Ok(store)
    }

    /// Write the rings' cell positions to the GPU (a pool's are not read: the step tells each
    /// cell's position).
    fn upload_positions(&self) {
        if let SeqCells::Rings { seqs, .. } = &self.cells {
            let all: Vec<i32> = seqs.iter().flat_map(|s| s.as_slice()).copied().collect();
            self.dev
                .queue
                .write_buffer(&self.cell_pos, 0, bytemuck::cast_slice(&all));
        }
    }

    /// Number of cells (every sequence's).
    pub fn n_cells(&self) -> usize {
        self.cells.n_cells()
    }

    /// Sequences served.
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

    /// Bytes of GPU memory held by keys, values and positions.
    pub fn bytes(&self) -> usize {
        self.n_cells() * (self.k_width + self.v_width) * 2 + self.n_cells() * 4
    }

    /// Cells holding a token (a shared cell counts once).
    pub fn used_cells(&self) -> usize {
        self.cells.used()
    }

    /// Sequence 0's ring: the position each of its cells holds (-1 = empty); empty for a pool.
    pub fn cell_positions(&self) -> &[i32] {
        match &self.cells {
            SeqCells::Rings { seqs, .. } => seqs[0].as_slice(),
            SeqCells::Pool(_) => &[],
        }
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.cells.clear();
        self.upload_positions();
    }

    /// Forget sequence `seq`'s tokens at positions `>= pos`.
    pub fn seq_truncate(&mut self, seq: u32, pos: i32) {
        self.cells.seq_truncate(seq, pos);
        self.upload_positions();
    }

    /// Make sequence `dst` hold what `src` holds at positions `< n` and nothing else: a pool
    /// shares the cells, rings copy `src`'s ring on the GPU (through a scratch buffer: a
    /// buffer cannot be copied onto itself).
    pub fn seq_copy(&mut self, src: u32, dst: u32, n: i32) {
        if let Some((from, rows, to)) = self.cells.seq_copy(src, dst, n) {
            let mut enc = self
                .dev
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("kv.copy"),
                });
            for (buf, width) in [(&self.k, self.k_width), (&self.v, self.v_width)] {
                let bytes = (rows * width * 2) as u64;
                if bytes == 0 {
                    continue;
                }
                let scratch = self.dev.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kv.copy scratch"),
                    size: bytes,
                    usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                enc.copy_buffer_to_buffer(buf, (from * width * 2) as u64, &scratch, 0, bytes);
                enc.copy_buffer_to_buffer(&scratch, 0, buf, (to * width * 2) as u64, bytes);
            }
            self.dev.queue.submit([enc.finish()]);
        }
        self.upload_positions();
    }

    /// Fails unless [`Self::discard`] can drop sequence `seq`'s positions `p0..p1` (a pool
    /// needs free cells for the later tokens it shares with other sequences).
    pub fn check_discard(&self, seq: u32, p0: i32, p1: i32) -> Result<(), PoolFull> {
        self.cells.check_discard(seq, p0, p1)
    }

    /// Drop sequence `seq`'s tokens at positions `p0..p1` and move its later ones back by
    /// `p1 - p0` ([`SeqCells::discard`]), keys rotated by `rotation` (`None`: no RoPE in this
    /// layer): the rows spanning the moved ones are read back, moved and rotated on the host
    /// and written again. After [`Self::check_discard`].
    pub fn discard(
        &mut self,
        seq: u32,
        p0: i32,
        p1: i32,
        rotation: Option<&KeyRotation>,
    ) -> Result<(), GpuError> {
        let moves = self.cells.discard(seq, p0, p1);
        let mut scratch = vec![0.0f32; self.k_width];
        self.move_rows(&self.k, self.k_width, &moves, |row| {
            if let Some(r) = rotation {
                r.apply_f16(row, &mut scratch);
            }
        })?;
        self.move_rows(&self.v, self.v_width, &moves, |_| {})?;
        self.upload_positions();
        self.dev.check()
    }

    /// Move the rows of `buf` (`width` f16 values each) by `moves`, each through `edit`: the
    /// rows spanning the sources read back first, then written by runs of consecutive
    /// targets.
    fn move_rows(
        &self,
        buf: &wgpu::Buffer,
        width: usize,
        moves: &[(usize, usize)],
        edit: impl FnMut(&mut [half::f16]),
    ) -> Result<(), GpuError> {
        let (Some(lo), Some(hi)) = (
            moves.iter().map(|m| m.0).min(),
            moves.iter().map(|m| m.0).max(),
        ) else {
            return Ok(());
        };
        if width == 0 {
            return Ok(());
        }
        let row_bytes = width * 2;
        let span: Vec<half::f16> = read_range(
            &self.dev,
            buf,
            (lo * row_bytes) as u64,
            ((hi + 1 - lo) * row_bytes) as u64,
        )?;
        let mut rows = Vec::with_capacity(moves.len() * width);
        for &(from, _) in moves {
            let at = (from - lo) * width;
            rows.extend_from_slice(&span[at..at + width]);
        }
        rows.chunks_exact_mut(width).for_each(edit);
        let mut i = 0;
        while i < moves.len() {
            let run = 1
                + (moves[i + 1..].iter().zip(&moves[i..]))
                    .take_while(|(b, a)| b.1 == a.1 + 1)
                    .count();
            self.dev.queue.write_buffer(
                buf,
                (moves[i].1 * row_bytes) as u64,
                bytemuck::cast_slice(&rows[i * width..(i + run) * width]),
            );
            i += run;
        }
        Ok(())
    }

    /// Whether a step fits: each `(sequence, first position, tokens)` of it (only a pool can
    /// run out).
    pub(crate) fn check_step(
        &self,
        groups: impl Iterator<Item = (u32, i32, usize)>,
    ) -> Result<(), PoolFull> {
        self.cells.check_step(groups)
    }

    /// Give sequence `seq`'s step tokens at `positions` their cells of a pool (after
    /// [`Self::check_step`]), before the step runs; rings wait for [`Self::note_written`].
    pub(crate) fn take_cells(&mut self, seq: u32, positions: &[i32]) {
        if let SeqCells::Pool(pool) = &mut self.cells {
            pool.extend(seq, positions);
        }
    }

    /// Record that the step wrote sequence `seq`'s tokens at `positions` into its ring (a
    /// pool took them before the step).
    pub(crate) fn note_written(&mut self, seq: u32, positions: &[i32]) {
        if let SeqCells::Rings { seqs, .. } = &mut self.cells {
            for &p in positions {
                seqs[seq as usize].note_written(p);
            }
        }
    }

    /// What a step's group of sequence `seq` starting at `pmin` reads (under `window`), between
    /// [`Self::take_cells`] and [`Self::note_written`]: a pool sequence's cells (the cached
    /// ones before `pmin`, then the step's), or a ring's scan range.
    pub(crate) fn group_scan(&self, seq: u32, pmin: i32, window: Option<u32>) -> GroupScan<'_> {
        match &self.cells {
            SeqCells::Pool(pool) => GroupScan::Pool(pool.cells(seq)),
            SeqCells::Rings { ring, seqs } => {
                let (lo, n) = seqs[seq as usize].scan_range(pmin, window);
                GroupScan::Ring {
                    lo,
                    n,
                    base: (seq as usize * ring) as u32,
                    ring: *ring as u32,
                }
            }
        }
    }
}

impl KvLayer for GpuKvStore {
    fn n_cells(&self) -> usize {
        GpuKvStore::n_cells(self)
    }

    fn bytes(&self) -> usize {
        GpuKvStore::bytes(self)
    }

    fn used_cells(&self) -> usize {
        self.cells.used()
    }

    fn seq_used_cells(&self, seq: u32) -> usize {
        self.cells.seq_used(seq)
    }

    fn free_cells(&self) -> Option<usize> {
        self.cells.free_cells()
    }

    fn clear(&mut self) {
        GpuKvStore::clear(self);
    }

    fn seq_truncate(&mut self, seq: u32, pos: i32) {
        GpuKvStore::seq_truncate(self, seq, pos);
    }

    fn seq_copy(&mut self, src: u32, dst: u32, n: i32) {
        GpuKvStore::seq_copy(self, src, dst, n);
    }

    fn check_discard(&self, seq: u32, p0: i32, p1: i32) -> Result<(), BackendError> {
        Ok(GpuKvStore::check_discard(self, seq, p0, p1)?)
    }

    fn seq_discard(
        &mut self,
        seq: u32,
        p0: i32,
        p1: i32,
        rotation: Option<&KeyRotation>,
    ) -> Result<(), BackendError> {
        Ok(GpuKvStore::discard(self, seq, p0, p1, rotation)?)
    }
}
