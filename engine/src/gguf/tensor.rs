//! [`Tensor`]: a typed, shaped view of bytes that lives in a memory map (or, for tensors built
//! in memory, in an owned aligned buffer). Cloning a tensor shares the bytes.

use std::sync::Arc;

use crate::DType;

/// 64-byte aligned storage unit for owned tensor bytes.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct AlignedChunk([u8; 64]);

/// The memory behind tensors: a read-only file map or an owned, 64-byte aligned buffer.
pub struct Backing(Storage);

enum Storage {
    Mmap(memmap2::Mmap),
    Owned { buf: Vec<AlignedChunk>, len: usize },
}

impl Backing {
    /// Memory from a file map.
    pub fn mmap(map: memmap2::Mmap) -> Backing {
        Backing(Storage::Mmap(map))
    }

    /// Copy `bytes` into a new aligned owned buffer.
    pub fn owned(bytes: &[u8]) -> Backing {
        let mut buf = vec![AlignedChunk([0; 64]); bytes.len().div_ceil(64)];
        // SAFETY: AlignedChunk is 64 plain bytes with no padding; the slice covers `buf` exactly.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, buf.len() * 64) };
        dst[..bytes.len()].copy_from_slice(bytes);
        Backing(Storage::Owned {
            buf,
            len: bytes.len(),
        })
    }

    /// Read `len` bytes from `reader` into a new aligned owned buffer (for loading without a
    /// map); a size the system refuses is an [`std::io::ErrorKind::OutOfMemory`] error.
    pub fn read(reader: &mut impl std::io::Read, len: usize) -> std::io::Result<Backing> {
        let mut buf = Vec::new();
        buf.try_reserve_exact(len.div_ceil(64)).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot allocate {len} bytes to read the file into: {e}"),
            )
        })?;
        buf.resize(len.div_ceil(64), AlignedChunk([0; 64]));
        // SAFETY: AlignedChunk is 64 plain bytes with no padding; `len` bytes lie within the
        // buffer's `buf.len() * 64` bytes.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, len) };
        reader.read_exact(dst)?;
        Ok(Backing(Storage::Owned { buf, len }))
    }

    /// All bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.0 {
            Storage::Mmap(m) => m,
            // SAFETY: as in `owned`; `len` never exceeds the buffer's byte length.
            Storage::Owned { buf, len } => unsafe {
                std::slice::from_raw_parts(buf.as_ptr() as *const u8, *len)
            },
        }
    }
}

/// A tensor: name, element type, ggml-order shape, and its bytes (shared, never copied).
#[derive(Clone)]
pub struct Tensor {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    backing: Arc<Backing>,
    start: usize,
    len: usize,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor({:?}, {}, {:?})",
            self.name, self.dtype, self.shape
        )
    }
}

impl Tensor {
    /// A view of `len` bytes of `backing` from `start`. The caller guarantees the range is in
    /// bounds and holds a whole number of rows of `dtype` for `shape`.
    pub fn from_backing(
        name: String,
        dtype: DType,
        shape: Vec<usize>,
        backing: Arc<Backing>,
        start: usize,
        len: usize,
    ) -> Tensor {
        assert!(
            start + len <= backing.bytes().len(),
            "tensor view out of bounds"
        );
        Tensor {
            name,
            dtype,
            shape,
            backing,
            start,
            len,
        }
    }

    /// A tensor that owns a copy of `bytes` (already encoded as `dtype`).
    ///
    /// Returns `None` when the byte count does not match the shape and type.
    pub fn from_bytes(name: &str, dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Option<Tensor> {
        let n: usize = shape.iter().product();
        if dtype.row_bytes(n as u64)? != bytes.len() as u64 {
            return None;
        }
        let backing = Arc::new(Backing::owned(bytes));
        Some(Tensor::from_backing(
            name.into(),
            dtype,
            shape,
            backing,
            0,
            bytes.len(),
        ))
    }

    /// An F32 tensor owning `values`.
    pub fn from_f32(name: &str, shape: Vec<usize>, values: &[f32]) -> Tensor {
        Tensor::from_bytes(name, DType::F32, shape, bytemuck::cast_slice(values))
            .expect("shape matches the number of values")
    }

    /// A zero-copy view of rows `rows` of a matrix (e.g. Q, K and V of a fused QKV weight),
    /// named `name`; `None` when the range is empty or past the last row, or the tensor is not
    /// 2-D.
    pub fn row_view(&self, name: &str, rows: std::ops::Range<usize>) -> Option<Tensor> {
        if self.shape.len() != 2 || rows.start >= rows.end || rows.end > self.n_rows() {
            return None;
        }
        let rb = self.row_bytes();
        Some(Tensor::from_backing(
            name.into(),
            self.dtype,
            vec![self.row_len(), rows.len()],
            self.backing.clone(),
            self.start + rows.start * rb,
            rows.len() * rb,
        ))
    }

    /// A zero-copy view of matrix `i` of a 3-D tensor `[n_in, n_out, n]` (one expert of a
    /// mixture-of-experts weight), shaped `[n_in, n_out]` and named `name[i]`; `None` when the
    /// tensor is not 3-D or `i` is past the last matrix.
    pub fn matrix(&self, i: usize) -> Option<Tensor> {
        if self.shape.len() != 3 || i >= self.shape[2] {
            return None;
        }
        let bytes = self.row_bytes() * self.shape[1];
        Some(Tensor::from_backing(
            format!("{}[{i}]", self.name),
            self.dtype,
            vec![self.shape[0], self.shape[1]],
            self.backing.clone(),
            self.start + i * bytes,
            bytes,
        ))
    }

    /// The tensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Dimensions in ggml order (`shape()[0]` is the row length).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Row length (`shape[0]`).
    pub fn row_len(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of all dimensions but the first).
    pub fn n_rows(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Total number of elements.
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.dtype.row_bytes(self.row_len() as u64).unwrap_or(0) as usize
    }

    /// All the tensor's bytes.
    pub fn data(&self) -> &[u8] {
        &self.backing.bytes()[self.start..self.start + self.len]
    }

    /// The bytes of row `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data()[i * rb..(i + 1) * rb]
    }

    /// The data as f32 values (only for F32 tensors).
    pub fn as_f32(&self) -> Option<&[f32]> {
        if self.dtype != DType::F32 {
            return None;
        }
        bytemuck::try_cast_slice(self.data()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_views_share_the_bytes_of_their_rows() {
        let values: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let t = Tensor::from_f32("qkv", vec![3, 4], &values);
        let k = t.row_view("k", 1..3).unwrap();
        assert_eq!(k.shape(), [3, 2]);
        assert_eq!(k.as_f32().unwrap(), &values[3..9]);
        assert_eq!(k.row(1), t.row(2));
        assert!(t.row_view("x", 2..5).is_none());
        assert!(t.row_view("x", 4..4).is_none());
    }

    #[test]
    fn matrix_views_are_the_experts_of_a_3d_tensor() {
        let values: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let t = Tensor::from_f32("exps", vec![3, 2, 4], &values);
        let e2 = t.matrix(2).unwrap();
        assert_eq!(e2.shape(), [3, 2]);
        assert_eq!(e2.name(), "exps[2]");
        assert_eq!(e2.as_f32().unwrap(), &values[12..18]);
        assert!(t.matrix(4).is_none());
        assert!(e2.matrix(0).is_none());
    }
}
