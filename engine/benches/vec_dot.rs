//! Criterion benchmarks of the hot mat_mul kernels, one thread, on synthetic weights:
//!
//! - `decode/<type>`: one token against a 64 MiB weight matrix (far beyond the caches), as a
//!   decode step's mat_muls and output projection stream their weights; reported in bytes of
//!   weights per second next to `decode/memread`, a plain read of the same bytes (the ceiling).
//! - `decode_cached/<type>`: the same against 256 KiB (in L2): the kernel's own speed, the
//!   ceiling on decode speed when two threads share the memory bandwidth.
//! - `prefill/<type>`: 64 tokens against 64 rows of 1024 elements (all in L2), as a prefill
//!   tile sees them; reported in multiply-adds per second.
//!
//! `cargo bench -p tessera-engine --bench vec_dot [-- FILTER]`

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use tessera_engine::DType;
use tessera_engine::cpu::dot::{GemmArgs, kernel};
use tessera_engine::quant::{self, reference};

/// The quantized weight formats (the format table's weight formats but the float ones), in
/// table order; `-- FILTER` narrows them down.
fn types() -> impl Iterator<Item = DType> {
    quant::weight_formats().filter(|t| t.block_elems() > 1)
}

/// Elements per row.
const N: usize = 1024;

/// Deterministic values in about [-1, 1).
fn floats(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `rows` weight rows of `N` elements in `dtype` (one quantized 256-row block, repeated).
fn weights(dtype: DType, rows: usize) -> (Vec<u8>, usize) {
    let q = reference(dtype).unwrap();
    let rb = dtype.row_bytes(N as u64).unwrap() as usize;
    let unit = 256.min(rows);
    let mut block = vec![0u8; unit * rb];
    for r in 0..unit {
        (q.quantize_row)(&floats(r as u64, N), &mut block[r * rb..(r + 1) * rb]);
    }
    let mut w = Vec::with_capacity(rows * rb);
    while w.len() < rows * rb {
        w.extend_from_slice(&block);
    }
    w.truncate(rows * rb);
    (w, rb)
}

/// `tokens` activation rows quantized for `dtype`'s kernel.
fn activations(dtype: DType, tokens: usize) -> (Vec<u8>, usize) {
    let k = kernel(dtype).unwrap();
    let ab = k.vec_dot_type.row_bytes(N as u64).unwrap() as usize;
    let mut a = vec![0u8; tokens * ab];
    for t in 0..tokens {
        (k.quantize_row)(&floats(1000 + t as u64, N), &mut a[t * ab..(t + 1) * ab]);
    }
    (a, ab)
}

fn decode(c: &mut Criterion) {
    decode_over(c, "decode", 64 << 20);
    decode_over(c, "decode_cached", 256 << 10);
}

/// One token against `bytes` of weights, in blocks of 16 rows.
fn decode_over(c: &mut Criterion, name: &str, bytes: usize) {
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    for dtype in types() {
        let rb = dtype.row_bytes(N as u64).unwrap() as usize;
        let rows = bytes / rb / 16 * 16;
        let (w, rb) = weights(dtype, rows);
        let (a, ab) = activations(dtype, 1);
        let k = kernel(dtype).unwrap();
        let mut out = vec![0.0f32; 16];
        g.throughput(Throughput::Bytes(w.len() as u64));
        g.bench_function(format!("{dtype}"), |b| {
            b.iter(|| {
                // In blocks of 16 rows, as the executor calls it.
                for r0 in (0..rows).step_by(16) {
                    let args = GemmArgs {
                        n: N,
                        w: &w[r0 * rb..(r0 + 16) * rb],
                        w_stride: rb,
                        rows: 16,
                        a: &a,
                        a_stride: ab,
                        tokens: 1,
                    };
                    k.gemm(&args, &mut out);
                }
                black_box(&out);
            })
        });
        if dtype == DType::Q8_0 {
            g.bench_function("memread", |b| {
                b.iter(|| {
                    let mut s = 0u64;
                    for c in w.chunks_exact(8) {
                        s = s.wrapping_add(u64::from_le_bytes(c.try_into().unwrap()));
                    }
                    black_box(s)
                })
            });
        }
    }
    g.finish();
}

fn prefill(c: &mut Criterion) {
    let mut g = c.benchmark_group("prefill");
    g.sample_size(20);
    let (rows, tokens) = (64, 64);
    for dtype in types() {
        let (w, rb) = weights(dtype, rows);
        let (a, ab) = activations(dtype, tokens);
        let k = kernel(dtype).unwrap();
        let mut out = vec![0.0f32; 16 * tokens];
        g.throughput(Throughput::Elements((rows * tokens * N) as u64));
        g.bench_function(format!("{dtype}"), |b| {
            b.iter(|| {
                for r0 in (0..rows).step_by(16) {
                    let args = GemmArgs {
                        n: N,
                        w: &w[r0 * rb..(r0 + 16) * rb],
                        w_stride: rb,
                        rows: 16,
                        a: &a,
                        a_stride: ab,
                        tokens,
                    };
                    k.gemm(&args, &mut out);
                }
                black_box(&out);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decode, prefill);
criterion_main!(benches);
