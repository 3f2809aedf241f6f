//! Watching the inputs of weight products as a graph runs: what llama.cpp's imatrix tool does
//! through its evaluation callback. A [`MatMulTap`] set on a backend
//! ([`super::Backend::set_mat_mul_tap`]) is shown, for every product of a weight matrix it
//! asks for, the activations multiplied by it (`rows` tokens × `cols` values, f32, before any
//! quantization for the dot products).

/// An observer of the inputs of weight-matrix products.
pub trait MatMulTap: Send + Sync {
    /// Whether the inputs of products with the weight named `weight` are wanted.
    fn wants(&self, weight: &str) -> bool;
    /// The input `x` (`rows × cols`, row-major) of a product with weight `weight`.
    fn observe(&self, weight: &str, x: &[f32], rows: usize, cols: usize);
}
