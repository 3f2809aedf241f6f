//! KV storage in GPU memory: `n_cells` cells of f16 keys and values (stored as pairs in u32
//! words) and each cell's position, with the same `pos % n_cells` placement as the CPU store,
//! so `n_ctx` cells make a plain cache and `window` cells a ring. The host keeps a mirror of the
//! cell positions to plan each step's scan without reading the GPU back. Dropping tokens from
//! the middle of a sequence ([`GpuKvStore::discard`], rare: a context shift) moves the later
//! cells through the host, their keys rotated there as the CPU rotates its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::device::{GpuDevice, GpuError};
use super::readback::read_range;
use crate::backend::{BackendError, KvLayer};
use crate::kv_cells::CellPositions;
use crate::rope::KeyRotation;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// K and V of one attention layer, on the GPU.
pub struct GpuKvStore {
    pub(crate) id: u64,
    dev: Arc<GpuDevice>,
    n_cells: usize,
    k_width: usize,
    v_width: usize,
    pub(crate) k: wgpu::Buffer,
    pub(crate) v: wgpu::Buffer,
    pub(crate) cell_pos: wgpu::Buffer,
    /// The host's mirror of `cell_pos`.
    host_pos: CellPositions,
}

impl GpuKvStore {
    /// An empty store of `n_cells` cells of `k_width` key and `v_width` value elements (both
    /// even: the cache holds f16 pairs).
    pub fn new(
        dev: &Arc<GpuDevice>,
        n_cells: usize,
        k_width: usize,
        v_width: usize,
    ) -> Result<GpuKvStore, GpuError> {
        if !k_width.is_multiple_of(2) || !v_width.is_multiple_of(2) || n_cells == 0 {
            return Err(GpuError::Unsupported(format!(
                "KV widths must be even and cells at least 1 (got {k_width}, {v_width}, {n_cells} cells)"
            )));
        }
        let max = dev.max_binding();
        let (kb, vb) = (
            (n_cells * k_width * 2) as u64,
            (n_cells * v_width * 2) as u64,
        );
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
            n_cells,
            k_width,
            v_width,
            k: buffer("kv.k", kb),
            v: buffer("kv.v", vb),
            cell_pos: buffer("kv.pos", n_cells as u64 * 4),
            host_pos: CellPositions::new(n_cells),
        };
        store.upload_positions();
        Ok(store)
    }

    fn upload_positions(&self) {
        self.dev.queue.write_buffer(
            &self.cell_pos,
            0,
            bytemuck::cast_slice(self.host_pos.as_slice()),
        );
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

    /// Bytes of GPU memory held by keys, values and positions.
    pub fn bytes(&self) -> usize {
        self.n_cells * (self.k_width + self.v_width) * 2 + self.n_cells * 4
    }

    /// Cells holding a token.
    pub fn used_cells(&self) -> usize {
        self.host_pos.used()
    }

    /// Position held by each cell (-1 = empty).
    pub fn cell_positions(&self) -> &[i32] {
        self.host_pos.as_slice()
    }

    /// The cell position `pos` goes to.
    pub fn cell_of(&self, pos: i32) -> usize {
        self.host_pos.cell_of(pos)
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.host_pos.clear();
        self.upload_positions();
    }

    /// Forget the tokens at positions `>= pos`.
    pub fn truncate(&mut self, pos: i32) {
        self.host_pos.truncate(pos);
        self.upload_positions();
    }

    /// Make this store (of the same shape, on the same device) hold what `src` holds: keys and
    /// values copied on the GPU, cell positions on both sides.
    pub fn copy_from(&mut self, src: &GpuKvStore) {
        assert_eq!(
            (self.n_cells, self.k_width, self.v_width),
            (src.n_cells, src.k_width, src.v_width),
            "KV stores of one shape"
        );
        let mut enc = self
            .dev
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("kv.copy"),
            });
        enc.copy_buffer_to_buffer(&src.k, 0, &self.k, 0, src.k.size());
        enc.copy_buffer_to_buffer(&src.v, 0, &self.v, 0, src.v.size());
        self.dev.queue.submit([enc.finish()]);
        self.host_pos.clone_from(&src.host_pos);
        self.upload_positions();
    }

    /// Drop the tokens at positions `p0..p1` and move the later ones back by `p1 - p0`, each
    /// to the cell of its new position ([`CellPositions::discard`]), keys rotated by
    /// `rotation` (`None`: no RoPE in this layer): the cells spanning the moved tokens are read
    /// back, the rows moved and rotated on the host and written again.
    pub fn discard(
        &mut self,
        p0: i32,
        p1: i32,
        rotation: Option<&KeyRotation>,
    ) -> Result<(), GpuError> {
        let moves = self.host_pos.discard(p0, p1);
        if !moves.is_empty() {
            let lo = moves.iter().map(|m| m.0).min().expect("some");
            let hi = moves.iter().map(|m| m.0).max().expect("some") + 1;
            let mut scratch = vec![0.0f32; self.k_width];
            self.move_rows(&self.k, self.k_width, &moves, lo..hi, |row| {
                if let Some(r) = rotation {
                    r.apply_f16(row, &mut scratch);
                }
            })?;
            if self.v_width > 0 {
                self.move_rows(&self.v, self.v_width, &moves, lo..hi, |_| {})?;
            }
        }
        self.upload_positions();
        self.dev.check()
    }

    /// Move the rows of `buf` (`width` f16 values each) by `moves` (sources within
    /// `sources`), each through `edit`: all read back first, then written by runs of
    /// consecutive targets.
    fn move_rows(
        &self,
        buf: &wgpu::Buffer,
        width: usize,
        moves: &[(usize, usize)],
        sources: std::ops::Range<usize>,
        mut edit: impl FnMut(&mut [half::f16]),
    ) -> Result<(), GpuError> {
        let row_bytes = width * 2;
        let read: Vec<half::f16> = read_range(
            &self.dev,
            buf,
            (sources.start * row_bytes) as u64,
            (sources.len() * row_bytes) as u64,
        )?;
        let mut rows = Vec::with_capacity(moves.len() * width);
        for &(from, _) in moves {
            let at = (from - sources.start) * width;
            rows.extend_from_slice(&read[at..at + width]);
        }
        rows.chunks_exact_mut(width).for_each(&mut edit);
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

    /// Record (host side) that the kernels wrote position `pos`.
    pub(crate) fn note_written(&mut self, pos: i32) {
        self.host_pos.note_written(pos);
    }

    /// The positions `[lo, lo + n)` a step starting at `pmin` must scan
    /// ([`CellPositions::scan_range`]).
    pub(crate) fn scan_range(&self, pmin: i32, window: Option<u32>) -> (u32, u32) {
        self.host_pos.scan_range(pmin, window)
    }
}

/// A slot's store holds one sequence, numbered 0 within it.
impl KvLayer for GpuKvStore {
    fn n_cells(&self) -> usize {
        self.n_cells
    }

    fn bytes(&self) -> usize {
        GpuKvStore::bytes(self)
    }

    fn used_cells(&self) -> usize {
        self.host_pos.used()
    }

    fn seq_used_cells(&self, seq: u32) -> usize {
        if seq == 0 { self.host_pos.used() } else { 0 }
    }

    fn clear(&mut self) {
        GpuKvStore::clear(self);
    }

    fn seq_truncate(&mut self, _seq: u32, pos: i32) {
        GpuKvStore::truncate(self, pos);
    }

    /// Within one slot there is one sequence: only truncation (`src == dst`) applies; slots
    /// copy each other by [`GpuKvStore::copy_from`].
    fn seq_copy(&mut self, _src: u32, _dst: u32, n: i32) {
        GpuKvStore::truncate(self, n);
    }

    fn check_discard(&self, _seq: u32, _p0: i32, _p1: i32) -> Result<(), BackendError> {
        Ok(())
    }

    fn seq_discard(
        &mut self,
        _seq: u32,
        p0: i32,
        p1: i32,
        rotation: Option<&KeyRotation>,
    ) -> Result<(), BackendError> {
        Ok(GpuKvStore::discard(self, p0, p1, rotation)?)
    }
}
