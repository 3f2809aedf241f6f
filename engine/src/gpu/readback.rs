//! Reading GPU buffers back to the host.

use super::device::{GpuDevice, GpuError};

/// Copy a whole storage buffer back to the host.
pub fn read_buffer(dev: &GpuDevice, buf: &wgpu::Buffer) -> Result<Vec<f32>, GpuError> {
    read_range(dev, buf, 0, buf.size())
}

/// Copy `size` bytes of a storage buffer from byte `offset` back to the host, as values of
/// `T` (both multiples of 4 bytes and of `T`'s size).
pub fn read_range<T: bytemuck::Pod + Default>(
    dev: &GpuDevice,
    buf: &wgpu::Buffer,
    offset: u64,
    size: u64,
) -> Result<Vec<T>, GpuError> {
    let mut out = vec![T::default(); size as usize / std::mem::size_of::<T>()];
    if size == 0 {
        return Ok(out);
    }
    let staging = dev.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = dev.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buf, offset, &staging, 0, size);
    dev.queue.submit([enc.finish()]);
    map_read(dev, &staging, size, &mut out)?;
    Ok(out)
}

/// Map `size` bytes of `buf` (a MAP_READ buffer whose copy has been submitted), copy them to
/// `out` and unmap.
pub fn map_read<T: bytemuck::Pod>(
    dev: &GpuDevice,
    buf: &wgpu::Buffer,
    size: u64,
    out: &mut [T],
) -> Result<(), GpuError> {
    let slice = buf.slice(..size);
    slice.map_async(wgpu::MapMode::Read, |_| {});
    dev.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| GpuError::Device(e.to_string()))?;
    dev.check()?;
    {
        let view = slice
            .get_mapped_range()
            .map_err(|e| GpuError::Device(e.to_string()))?;
        bytemuck::cast_slice_mut(out).copy_from_slice(&view[..]);
    }
    buf.unmap();
    Ok(())
}
