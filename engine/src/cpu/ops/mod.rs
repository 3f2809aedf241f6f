//! CPU kernels of the graph ops. Each kernel works on plain slices; the executor hands every
//! thread its share (the mat-mul and KV attention kernels take the thread pool and split
//! their work over it themselves).

pub mod attention;
pub mod attention_tiled;
pub mod elementwise;
pub mod kv_attention;
pub mod matmul;
pub mod moe;
pub mod norm;
pub mod rope;
mod shared;

pub use shared::SharedMut;

/// Ops on fewer elements than this run on the calling thread only.
pub const PARALLEL_MIN_ELEMS: usize = 1 << 14;

/// Grow `v` to at least `n` elements (a no-op once it is that long).
pub fn grow<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}
