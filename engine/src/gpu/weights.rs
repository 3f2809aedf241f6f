//! Weights on the GPU: each tensor uploaded once as its raw GGUF bytes (u32 words, the blocks
//! decoded inside the kernels), split into row chunks when it exceeds the adapter's largest
//! storage binding (a 262k-vocabulary embedding does on lavapipe's 128 MiB); a 3-D tensor (the
//! stacked experts of a mat_mul_id) is split between experts only, so that each expert's
//! matrix lies in one chunk, and one expert larger than a binding is an error. Uploads are shared
//! by every executor on a device through [`GpuDevice::shared_weight`].

use std::sync::Arc;

use super::device::{GpuDevice, GpuError};
use crate::{DType, Tensor};

/// One chunk of rows of a weight, in its own buffer.
pub struct WeightChunk {
    /// The bytes of rows `row0 .. row0 + n_rows`.
    pub buffer: wgpu::Buffer,
    /// First row held.
    pub row0: usize,
    /// Rows held.
    pub n_rows: usize,
}

/// A weight tensor in GPU memory.
pub struct GpuWeight {
    /// Element type.
    pub dtype: DType,
    /// Bytes per row.
    pub row_bytes: usize,
    /// Rows (the slowest dimension).
    pub n_rows: usize,
    /// Elements per row.
    pub n_cols: usize,
    /// Row chunks in order.
    pub chunks: Vec<WeightChunk>,
    /// The source tensor, kept alive while the upload is: its bytes' address is the key of
    /// the device's cache, and must not be reused by another tensor meanwhile.
    _source: Tensor,
}

/// The cache key of `t`'s upload: the address and length of its bytes (an upload keeps its
/// tensor alive, so the key cannot be reused by another tensor while the upload lives).
pub fn weight_key(t: &Tensor) -> (usize, usize) {
    (t.data().as_ptr() as usize, t.data().len())
}

impl GpuWeight {
    /// Upload `t`.
    pub fn upload(dev: &Arc<GpuDevice>, t: &Tensor) -> Result<GpuWeight, GpuError> {
        let row_bytes = t.row_bytes();
        let n_rows = t.n_rows();
        let max = dev.max_weight_chunk() as usize;
        if row_bytes == 0 || row_bytes > max {
            return Err(GpuError::Unsupported(format!(
                "tensor {:?} has rows of {row_bytes} bytes",
                t.name()
            )));
        }
        let rows_per_chunk = rows_per_chunk(t.name(), t.shape(), row_bytes, max)?;
        let data = t.data();
        let mut chunks = Vec::new();
        let mut row0 = 0;
        while row0 < n_rows.max(1) {
            let n = rows_per_chunk.min(n_rows - row0);
            let bytes = &data[row0 * row_bytes..(row0 + n) * row_bytes];
            let size = (bytes.len() as u64).div_ceil(4).max(1) * 4;
            let buffer = dev.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(t.name()),
                size,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: true,
            });
            {
                let mut view = buffer
                    .get_mapped_range_mut(..)
                    .map_err(|e| GpuError::Device(e.to_string()))?;
                view.slice(..bytes.len()).copy_from_slice(bytes);
            }
            buffer.unmap();
            chunks.push(WeightChunk {
                buffer,
                row0,
                n_rows: n,
            });
            row0 += n;
            if n == 0 {
                break;
            }
        }
        Ok(GpuWeight {
            dtype: t.dtype(),
            row_bytes,
            n_rows,
            n_cols: t.row_len(),
            chunks,
            _source: t.clone(),
        })
    }

    /// Bytes of GPU memory held.
    pub fn bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.buffer.size()).sum()
    }
}

/// Rows per chunk of a tensor of `shape` with rows of `row_bytes`, for bindings of at most
/// `max` bytes: as many as fit, and for a 3-D tensor `[n_in, n_out, n_expert]` a whole number
/// of experts (`n_out` rows each); an error when one expert's matrix does not fit.
fn rows_per_chunk(
    name: &str,
    shape: &[usize],
    row_bytes: usize,
    max: usize,
) -> Result<usize, GpuError> {
    let fit = (max / row_bytes).max(1);
    let &[_, n_out, _] = shape else {
        return Ok(fit);
    };
    let n_out = n_out.max(1);
    if n_out > fit {
        return Err(GpuError::Unsupported(format!(
            "tensor {name:?}: one expert's matrix ({n_out} rows of {row_bytes} bytes) exceeds \
             the adapter's {} MiB storage binding limit",
            max >> 20
        )));
    }
    Ok(fit / n_out * n_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_fill_chunks_row_by_row() {
        assert_eq!(rows_per_chunk("w", &[64, 100], 72, 720).unwrap(), 10);
        assert_eq!(rows_per_chunk("w", &[64, 100], 72, 10).unwrap(), 1);
    }

    #[test]
    fn stacked_experts_are_split_between_experts() {
        // 7 rows fit, experts of 3 rows: two experts a chunk.
        assert_eq!(rows_per_chunk("w", &[64, 3, 9], 72, 7 * 72).unwrap(), 6);
        assert_eq!(rows_per_chunk("w", &[64, 3, 9], 72, 3 * 72).unwrap(), 3);
        let e = rows_per_chunk("w", &[64, 3, 9], 72, 2 * 72).unwrap_err();
        assert!(e.to_string().contains("one expert's matrix"), "{e}");
    }
}
