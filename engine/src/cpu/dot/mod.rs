//! Dot-product kernels of every weight format against its activation format, chosen at run time.
//!
//! [`kernel`] returns the best [`DotKernel`] for this CPU: AVX2+FMA+F16C on x86_64 (detected once
//! with `is_x86_feature_detected!`, never assumed at compile time), NEON on aarch64, the scalar
//! reference from [`crate::quant`] otherwise and for every format without a SIMD version.
//! `TESSERA_CPU_ISA=scalar` in the environment forces the scalar kernels.
//!
//! SIMD kernels import the block formats (layouts, helpers) from `quant`; `quant` knows nothing
//! of them. Every SIMD kernel is checked against its scalar reference by the tests here, and
//! every SIMD activation quantizer must produce the same bytes as the reference one.
//!
//! Activation rows must come from the quantizers (values −127..=127, never −128): the AVX2
//! kernels use the `sign`/`maddubs` trick, which is exact on that range.

mod attn_tile;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(test)]
mod tests;

pub use attn_tile::{
    FEW_ROWS, FewState, TILE_KEYS, TILE_ROWS, TILE_SCALAR, TileKernel, TileState, tile_kernel,
    visible,
};

use crate::DType;
use crate::quant::{self, FormatInfo};
use half::f16;
use std::sync::OnceLock;

/// An instruction set a kernel is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable scalar code (the `quant` reference).
    Scalar,
    /// x86_64 AVX2 with FMA and F16C.
    Avx2,
    /// aarch64 Advanced SIMD.
    Neon,
}

/// The kernels one matrix-vector product needs for a weight format.
#[derive(Clone, Copy, Debug)]
pub struct DotKernel {
    /// The weight format.
    pub dtype: DType,
    /// The activation format `vec_dot` expects (quantize the activation row to it once).
    pub vec_dot_type: DType,
    /// The instruction set of `vec_dot` (fallback entries are the scalar reference: `Scalar`).
    pub isa: Isa,
    /// Activation quantizer `f32 → vec_dot_type`; the same bytes as the reference quantizer.
    pub quantize_row: fn(&[f32], &mut [u8]),
    /// `vec_dot(n, weights, activations)` over `n` elements.
    pub vec_dot: fn(usize, &[u8], &[u8]) -> f32,
    /// A tiled matrix product (several weight rows × several tokens per pass, no call per
    /// dot); `None`: [`DotKernel::gemm`] loops over `vec_dot`.
    pub tile: Option<GemmFn>,
}

/// One block of a matrix product: `rows` weight rows (`w_stride` bytes apart, from the start
/// of `w`) times `tokens` quantized activation rows (`a_stride` bytes apart), `n` elements each.
#[derive(Clone, Copy, Debug)]
pub struct GemmArgs<'a> {
    /// Elements per row (a whole number of blocks).
    pub n: usize,
    /// Weight rows.
    pub w: &'a [u8],
    /// Bytes from one weight row to the next.
    pub w_stride: usize,
    /// Number of weight rows.
    pub rows: usize,
    /// Activation rows in the kernel's `vec_dot_type`.
    pub a: &'a [u8],
    /// Bytes from one activation row to the next.
    pub a_stride: usize,
    /// Number of activation rows.
    pub tokens: usize,
}

/// A tiled matrix product: `out[t * rows + r] = w.row(r) · a.row(t)`.
pub type GemmFn = fn(&GemmArgs<'_>, &mut [f32]);

impl DotKernel {
    /// `out[t * g.rows + r] = w.row(r) · a.row(t)` for every row and token of `g`, with the
    /// tiled kernel when there is one, else one `vec_dot` per pair (the reference).
    pub fn gemm(&self, g: &GemmArgs<'_>, out: &mut [f32]) {
        match self.tile {
            Some(f) => f(g, out),
            None => gemm_by_dots(self.vec_dot, g, out),
        }
    }
}

/// The reference matrix product: one `vec_dot` per (row, token).
pub fn gemm_by_dots(vec_dot: fn(usize, &[u8], &[u8]) -> f32, g: &GemmArgs<'_>, out: &mut [f32]) {
    for t in 0..g.tokens {
        let a = &g.a[t * g.a_stride..];
        for r in 0..g.rows {
            out[t * g.rows + r] = vec_dot(g.n, &g.w[r * g.w_stride..], a);
        }
    }
}

impl DotKernel {
    /// The scalar reference kernel of format `f`, with its activation format's reference
    /// quantizer.
    const fn scalar(f: &FormatInfo) -> DotKernel {
        DotKernel {
            dtype: f.dtype,
            vec_dot_type: f.ops.vec_dot_type,
            isa: Isa::Scalar,
            quantize_row: f.quantize_activation,
            vec_dot: f.ops.vec_dot,
            tile: None,
        }
    }
}

/// Scalar kernels: one per entry of the format table [`quant::FORMATS`], in its order.
static SCALAR: [DotKernel; quant::FORMATS.len()] = {
    let mut table = [DotKernel::scalar(&quant::FORMATS[0]); quant::FORMATS.len()];
    let mut i = 1;
    while i < table.len() {
        table[i] = DotKernel::scalar(&quant::FORMATS[i]);
        i += 1;
    }
    table
};

/// Whether the CPU can run the kernels of `isa` (independent of `TESSERA_CPU_ISA`).
pub fn isa_available(isa: Isa) -> bool {
    match isa {
        Isa::Scalar => true,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            static OK: OnceLock<bool> = OnceLock::new();
            *OK.get_or_init(|| {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            })
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => {
            static OK: OnceLock<bool> = OnceLock::new();
            *OK.get_or_init(|| std::arch::is_aarch64_feature_detected!("neon"))
        }
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// The best instruction set of this CPU, decided once. `TESSERA_CPU_ISA=scalar` forces
/// [`Isa::Scalar`].
pub fn detected_isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var("TESSERA_CPU_ISA").is_ok_and(|v| v.eq_ignore_ascii_case("scalar")) {
            return Isa::Scalar;
        }
        [Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|i| isa_available(*i))
            .unwrap_or(Isa::Scalar)
    })
}

/// The best kernel for weight format `dtype` on this CPU, `None` for unsupported types.
pub fn kernel(dtype: DType) -> Option<&'static DotKernel> {
    kernel_for(detected_isa(), dtype)
}

/// The kernel for `dtype` written for `isa`, falling back to the scalar one where `isa` has none
/// for that format. `None` for unsupported types, and for an `isa` this CPU cannot run.
pub fn kernel_for(isa: Isa, dtype: DType) -> Option<&'static DotKernel> {
    if !isa_available(isa) {
        return None;
    }
    let simd: &'static [DotKernel] = match isa {
        Isa::Scalar => &[],
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &avx2::KERNELS,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => &neon::KERNELS,
        #[allow(unreachable_patterns)]
        _ => &[],
    };
    simd.iter().chain(SCALAR.iter()).find(|k| k.dtype == dtype)
}

/// [`F16Ops::dots`]: `(queries, head width, keys, scores, scores per query)`.
pub type DotsFn = fn(&[f32], usize, &[&[f16]], &mut [f32], usize);

/// [`F16Ops::wsums`]: `(outputs, head width, weights, weights per output, value rows)`.
pub type WsumsFn = fn(&mut [f32], usize, &[f32], usize, &[&[f16]]);

/// Kernels of attention over an F16 KV cache: keys and values are read as stored.
#[derive(Clone, Copy, Debug)]
pub struct F16Ops {
    /// The instruction set of these kernels.
    pub isa: Isa,
    /// `Σ q[i]·k[i]` over `min(len)` elements.
    pub dot: fn(&[f32], &[f16]) -> f32,
    /// `out[i] += w·v[i]` over `min(len)` elements.
    pub axpy: fn(&mut [f32], f32, &[f16]),
    /// `s[i] = exp(s[i] − max)` in place; returns the sum (softmax weights of a block of
    /// attention scores).
    pub exp_sum: fn(&mut [f32], f32) -> f32,
    /// `out[i] += Σ_j w[j]·v[j][i]` over `min(len)` elements: the same sums, in the same order,
    /// as one `axpy` per row, with the output held in registers.
    pub wsum: fn(&mut [f32], &[f32], &[&[f16]]),
    /// `dots(q, d, k, s, ld)`: `s[g·ld + j] = dot(q[g·d..(g+1)·d], k[j])` for each of the
    /// `q.len() / d` queries and every key, bit for bit as `dot` (each key is loaded once for
    /// all the queries: the heads that share a KV head).
    pub dots: DotsFn,
    /// `wsums(out, n, w, ld, v)`: `wsum(out[g·n..(g+1)·n], w[g·ld..g·ld + v.len()], v)` for each
    /// of the `out.len() / n` outputs, bit for bit (each value row is loaded once for all).
    pub wsums: WsumsFn,
}

/// The scalar reference of [`F16Ops`].
pub static F16_SCALAR: F16Ops = F16Ops {
    isa: Isa::Scalar,
    dot: dot_f16_scalar,
    axpy: axpy_f16_scalar,
    exp_sum: exp_sum_scalar,
    wsum: wsum_scalar,
    dots: dots_scalar,
    wsums: wsums_scalar,
};

/// Scalar [`F16Ops::dots`]: one `dot` per query and key.
fn dots_scalar(q: &[f32], d: usize, k: &[&[f16]], s: &mut [f32], ld: usize) {
    for (g, qg) in q.chunks_exact(d).enumerate() {
        for (j, kj) in k.iter().enumerate() {
            s[g * ld + j] = dot_f16_scalar(qg, kj);
        }
    }
}

/// Scalar [`F16Ops::wsums`]: one `wsum` per output.
fn wsums_scalar(out: &mut [f32], n: usize, w: &[f32], ld: usize, v: &[&[f16]]) {
    for (g, og) in out.chunks_exact_mut(n).enumerate() {
        wsum_scalar(og, &w[g * ld..g * ld + v.len()], v);
    }
}

/// The best [`F16Ops`] for this CPU (the scalar ones under `TESSERA_CPU_ISA=scalar`).
pub fn f16_ops() -> &'static F16Ops {
    match detected_isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &avx2::F16_OPS,
        _ => &F16_SCALAR,
    }
}

/// Scalar `Σ q[i]·k[i]` in eight partial sums.
fn dot_f16_scalar(q: &[f32], k: &[f16]) -> f32 {
    let n = q.len().min(k.len());
    let mut acc = [0.0f32; 8];
    for c in 0..n / 8 {
        for (l, acc) in acc.iter_mut().enumerate() {
            *acc += q[8 * c + l] * k[8 * c + l].to_f32();
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in n / 8 * 8..n {
        s += q[i] * k[i].to_f32();
    }
    s
}

/// Scalar `s[i] = exp(s[i] − max)`, returning the sum.
fn exp_sum_scalar(s: &mut [f32], max: f32) -> f32 {
    let mut sum = 0.0;
    for x in s {
        *x = (*x - max).exp();
        sum += *x;
    }
    sum
}

/// Scalar `out[i] += Σ_j w[j]·v[j][i]`: one `axpy` per row.
fn wsum_scalar(out: &mut [f32], w: &[f32], v: &[&[f16]]) {
    for (&wj, vj) in w.iter().zip(v) {
        axpy_f16_scalar(out, wj, vj);
    }
}

/// Scalar `out[i] += w·v[i]`.
fn axpy_f16_scalar(out: &mut [f32], w: f32, v: &[f16]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += w * x.to_f32();
    }
}
