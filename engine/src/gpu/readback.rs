//! Reading GPU buffers back to the host.

use super::device::{GpuDevice, GpuError};

/// Copy a whole storage buffer back to the host.
pub fn read_buffer(dev: &GpuDevice, buf: &wgpu::Buffer) -> Result<Vec<f32>, GpuError> {
    let staging = dev.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: buf.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = dev.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buf, 0, &staging, 0, buf.size());
    dev.queue.submit([enc.finish()]);
    let mut out = vec![0.0f32; (buf.size() / 4) as usize];
    map_read(dev, &staging, buf.size(), &mut out)?;
    Ok(out)
}

/// Map `size` bytes of `buf` (a MAP_READ buffer whose copy has been submitted), copy them to
/// `out` and unmap.
pub fn map_read(
    dev: &GpuDevice,
    buf: &wgpu::Buffer,
    size: u64,
    out: &mut [f32],
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
        out.copy_from_slice(bytemuck::cast_slice(&view[..]));
    }
    buf.unmap();
    Ok(())
}
