//! AVX2 dot products of IQ4_NL (against Q8_0) and IQ4_XS (against Q8_K) weights, and IQ4_XS's
//! tiles.
//!
//! A 32-value block's 16 bytes of indices spread to one byte each
//! ([`super::legacy::nibbles`]) and are looked up in the 16-entry table with one `pshufb`
//! (the table fills one 128-bit lane exactly); the values (|v| ≤ 127) meet the activations
//! (never −128) as signed bytes, exactly. The sums are the scalar reference's
//! (`quant::iq4`), in its order, so these give its bits:
//! - IQ4_NL: per block `acc = fma(Σ, d·d_a, acc)`, `Σ` the block's exact integer total; its
//!   tiles are `gemm_small`'s (a `WIDE` block like Q8_0's, values looked up on the way in);
//! - IQ4_XS: per super-block the eight sub-blocks' exact totals times their `ls − 32`, added
//!   as integers, then `acc += (d·d_a)·total`.
//!
//! The tile [`gemm_iq4_xs`] decodes each weight super-block once for up to [`TT`] tokens and
//! sums every (row, token) pair as the dot product does. With AVX-VNNI and 4
//! tokens or more, IQ4_XS's prompts go through [`super::packed::gemm_packed`] instead: each
//! call repacks 8 rows at a time (values + 128 as unsigned bytes, four bytes of each row
//! interleaved, [`PackedXs`]) so one `vpdpbusd` of a broadcast of four activation bytes adds
//! 8 rows' products; `128·Σa` of a sub-block (from Q8_K's block sums) comes off, the
//! sub-block totals are multiplied by the rows' `ls − 32` and added as integers, then the
//! same float steps: the same bits again.

use super::gemm_small::{store_tile, totals8};
use super::legacy::nibbles;
use super::packed::{PackedKernel, TT as PACKED_TT, gemm_packed};
use super::{
    checked_blocks, dot_i8_i8, f16_at, has_avxvnni, hsum_epi32, load, lut16, prefetch_next,
    transpose8x4,
};
use crate::cpu::dot::GemmArgs;
use crate::quant::QK_K;
use crate::quant::iq4::{IQ4_NL_BYTES, IQ4_XS_BYTES, KVALUES, QK4_NL, xs_scale};
use crate::quant::q8::Q8_0_BYTES;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Bytes of a Q8_K block.
const Q8_K_BYTES: usize = crate::DType::Q8_K.block_bytes();

/// Tokens per pass of a tile (each decoded weight block serves them all).
const TT: usize = 8;

/// How far ahead of the super-block being read the row-by-row tile prefetches, in bytes.
const PREFETCH_AHEAD: usize = 2048;

/// The 32 values of the block of indices at `q` (16 bytes) as signed bytes.
///
/// # Safety
/// `q..q + 16` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn values(table: __m256i, q: *const u8) -> __m256i {
    // SAFETY: the 16 bytes of indices are readable (precondition).
    _mm256_shuffle_epi8(table, unsafe { nibbles(q) })
}

/// An IQ4_XS super-block decoded: its eight sub-blocks' values, their `ls − 32` (lane `ib`)
/// and `d`.
struct XsBlock {
    v: [__m256i; 8],
    sc: __m256i,
    d: f32,
}

/// The eight `ls − 32` of the IQ4_XS super-block at `x`, lane `ib` for sub-block `ib`: low
/// nibbles from the four bytes at 4 (bit 4·ib), high bit pairs from the u16 at 2 (bit 2·ib).
///
/// # Safety
/// `x..x + 8` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn xs_scales(x: *const u8) -> __m256i {
    // SAFETY: bytes `2..8` of the block (precondition).
    let (h, l) = unsafe {
        (
            (x.add(2) as *const u16).read_unaligned() as i32,
            (x.add(4) as *const i32).read_unaligned(),
        )
    };
    let lo = _mm256_and_si256(
        _mm256_srlv_epi32(
            _mm256_set1_epi32(l),
            _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28),
        ),
        _mm256_set1_epi32(0xf),
    );
    let hi = _mm256_and_si256(
        _mm256_srlv_epi32(
            _mm256_set1_epi32(h),
            _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14),
        ),
        _mm256_set1_epi32(3),
    );
    _mm256_sub_epi32(
        _mm256_or_si256(lo, _mm256_slli_epi32::<4>(hi)),
        _mm256_set1_epi32(32),
    )
}

/// Decodes the IQ4_XS super-block at `x`.
///
/// # Safety
/// `x..x + 136` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn xs_decode(table: __m256i, x: *const u8) -> XsBlock {
    XsBlock {
        // SAFETY: sub-block `ib`'s 16 bytes of indices start at 8 + 16·ib < 136.
        v: std::array::from_fn(|ib| unsafe { values(table, x.add(8 + 16 * ib)) }),
        // SAFETY: the block is readable (precondition).
        sc: unsafe { xs_scales(x) },
        // SAFETY: the f16 scale opens the block.
        d: unsafe { f16_at(x) },
    }
}

/// One IQ4_XS super-block's step against the Q8_K block at `y`: the sub-blocks' exact totals
/// (one lane each), times their scales, summed: `acc + (d·d_a)·total`.
///
/// # Safety
/// `y..y + 292` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn xs_step(b: &XsBlock, y: *const u8, acc: f32) -> f32 {
    // SAFETY: sub-block `ib`'s 32 quants at 4 + 32·ib lie inside the Q8_K block.
    let p = std::array::from_fn(|ib| dot_i8_i8(b.v[ib], unsafe { load(y.add(4 + 32 * ib)) }));
    let total = hsum_epi32(_mm256_mullo_epi32(totals8(p), b.sc));
    // SAFETY: the f32 scale opens the Q8_K block.
    let dy = unsafe { (y as *const f32).read_unaligned() };
    acc + (b.d * dy) * total as f32
}

pub(super) fn vec_dot_iq4_nl(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK4_NL * IQ4_NL_BYTES && a.len() >= n / QK4_NL * Q8_0_BYTES);
    let nb = (n / QK4_NL)
        .min(w.len() / IQ4_NL_BYTES)
        .min(a.len() / Q8_0_BYTES);
    // SAFETY: the table holding this fn is handed out only with AVX2/FMA/F16C present, and
    // every read below is inside the first `nb` blocks of `w` and `a`.
    unsafe { nl_impl(nb, w.as_ptr(), a.as_ptr()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nl_impl(nb: usize, w: *const u8, a: *const u8) -> f32 {
    // `gemm_small`'s sum order (IQ4_NL's tiles are there): each block's exact integer total,
    // then one fma.
    let table = lut16(&KVALUES);
    let mut acc = 0.0f32;
    for i in 0..nb {
        // SAFETY: `i < nb`: block `i` is whole in both rows, which hold `nb` whole blocks; a
        // block opens with its f16 scale, and a Q8_0 block's quants are its bytes `2..34`.
        unsafe {
            let (x, y) = (w.add(i * IQ4_NL_BYTES), a.add(i * Q8_0_BYTES));
            let p = dot_i8_i8(values(table, x.add(2)), load(y.add(2)));
            acc = (hsum_epi32(p) as f32).mul_add(f16_at(x) * f16_at(y), acc);
        }
    }
    acc
}

pub(super) fn vec_dot_iq4_xs(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK_K * IQ4_XS_BYTES && a.len() >= n / QK_K * Q8_K_BYTES);
    let nb = (n / QK_K)
        .min(w.len() / IQ4_XS_BYTES)
        .min(a.len() / Q8_K_BYTES);
    // SAFETY: as `vec_dot_iq4_nl`.
    unsafe { xs_impl(nb, w.as_ptr(), a.as_ptr()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn xs_impl(nb: usize, w: *const u8, a: *const u8) -> f32 {
    let table = lut16(&KVALUES);
    let mut acc = 0.0f32;
    for i in 0..nb {
        // SAFETY: `i < nb`: super-block `i` is whole in both rows.
        unsafe {
            let b = xs_decode(table, w.add(i * IQ4_XS_BYTES));
            acc = xs_step(&b, a.add(i * Q8_K_BYTES), acc);
        }
    }
    acc
}

pub(super) fn gemm_iq4_xs(g: &GemmArgs<'_>, out: &mut [f32]) {
    // AVX-512 VNNI without AVX-VNNI (AMD Zen 4, Intel Ice Lake) takes the 16-row kernel too.
    let vnni = super::gemm_q4k_zmm::available() || has_avxvnni();
    gemm_iq4_xs_on(g.tokens >= PACKED_TT && vnni, g, out)
}

/// [`gemm_iq4_xs`] through a packed VNNI kernel (`packed`: the 16-row one where the CPU has
/// AVX-512 VNNI, else the 8-row one where it has AVX-VNNI) or the row-by-row tile.
fn gemm_iq4_xs_on(packed: bool, g: &GemmArgs<'_>, out: &mut [f32]) {
    let Some(nb) = checked_blocks(g, out, QK_K, IQ4_XS_BYTES, Q8_K_BYTES, 0) else {
        return;
    };
    if packed && super::gemm_q4k_zmm::available() {
        // SAFETY: AVX2/FMA/F16C and AVX-512 F/BW/VNNI present; the bounds as below.
        return unsafe {
            gemm_packed::<XsZmm16>(
                nb,
                g.w.as_ptr(),
                g.w_stride,
                g.rows,
                g.a.as_ptr(),
                g.a_stride,
                g.tokens,
                out.as_mut_ptr(),
            )
        };
    }
    if packed && has_avxvnni() {
        // SAFETY: AVX2/FMA/F16C and AVX-VNNI present; `checked_blocks` keeps every row's and
        // token's `nb` super-blocks and the `rows × tokens` outputs in bounds.
        return unsafe {
            gemm_packed::<XsVnni8>(
                nb,
                g.w.as_ptr(),
                g.w_stride,
                g.rows,
                g.a.as_ptr(),
                g.a_stride,
                g.tokens,
                out.as_mut_ptr(),
            )
        };
    }
    // SAFETY: as `gemm_iq4_nl`.
    unsafe { xs_gemm(nb, g, out) }
}

/// One IQ4_XS super-block of 8 weight rows, repacked for [`XsVnni8`].
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(super) struct PackedXs {
    /// f32 `d` of each row.
    d: [f32; 8],
    /// `sc[ib]`: each row's `ls − 32` of sub-block `ib`.
    sc: [[i32; 8]; 8],
    /// `q[ib][j]`: values + 128 of elements `32·ib + 4j..32·ib + 4j + 4` of rows 0..8, row
    /// after row.
    q: [[[u8; 32]; 8]; 8],
}

const PACKED_XS_ZERO: PackedXs = PackedXs {
    d: [0.0; 8],
    sc: [[0; 8]; 8],
    q: [[[0; 32]; 8]; 8],
};

thread_local! {
    /// Each thread's repacked IQ4_XS rows; grown, never shrunk.
    static XS_SCRATCH: RefCell<Vec<PackedXs>> = const { RefCell::new(Vec::new()) };
}

/// Repacks rows `0..nr` (`nr ≤ 8`; the rest zero) at `w` (`wrb` apart) into `dst[0..nb]`.
///
/// # Safety
/// AVX2/FMA/F16C present; `nb` super-blocks readable in each of the `nr` rows; `dst` holds `nb`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn repack_xs(nb: usize, w: *const u8, wrb: usize, nr: usize, dst: *mut PackedXs) {
    let table = lut16(&KVALUES);
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    for b in 0..nb {
        prefetch_next::<8>(w, wrb, b, IQ4_XS_BYTES);
        // SAFETY: `b < nb`, and `dst` holds `nb` super-blocks (precondition); nothing else
        // refers to them.
        let p = unsafe { &mut *dst.add(b) };
        if nr < 8 {
            *p = PACKED_XS_ZERO;
        }
        // rows[ib][r]: sub-block ib of row r, values + 128.
        let mut rows = [[_mm256_setzero_si256(); 8]; 8];
        for r in 0..nr {
            // SAFETY: row `r < nr`, super-block `b < nb`: inside the rows (precondition).
            let x = unsafe { w.add(r * wrb + b * IQ4_XS_BYTES) };
            // SAFETY: the super-block's 136 bytes are readable.
            let blk = unsafe { std::slice::from_raw_parts(x, IQ4_XS_BYTES) };
            // SAFETY: the f16 scale opens the block.
            p.d[r] = unsafe { f16_at(x) };
            for (ib, sub) in rows.iter_mut().enumerate() {
                p.sc[ib][r] = xs_scale(blk, ib) - 32;
                // SAFETY: sub-block `ib`'s 16 bytes of indices start at 8 + 16·ib < 136.
                sub[r] = _mm256_xor_si256(unsafe { values(table, x.add(8 + 16 * ib)) }, flip);
            }
        }
        for (ib, sub) in rows.into_iter().enumerate() {
            for (j, chunk) in transpose8x4(sub).into_iter().enumerate() {
                // SAFETY: `p.q[ib][j]` is 32 bytes at a 32-aligned offset of the 32-aligned
                // `PackedXs`.
                unsafe { _mm256_store_si256(p.q[ib][j].as_mut_ptr() as *mut __m256i, chunk) };
            }
        }
    }
}

/// `out[t·ldo + r] = w_r · a_t` for the 8 rows of `pk` (first `nr` stored) and `N` tokens at
/// `a` (`arb` apart), over `nb` super-blocks, in [`xs_step`]'s sums.
///
/// # Safety
/// AVX2/FMA/F16C and AVX-VNNI present; `pk` holds `nb`; `nb` Q8_K blocks readable in each
/// token; `out` writable at every `t·ldo + r` for `t < N`, `r < nr`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_xs<const N: usize>(
    nb: usize,
    pk: *const PackedXs,
    a: *const u8,
    arb: usize,
    out: *mut f32,
    ldo: usize,
    nr: usize,
) {
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        // SAFETY: `b < nb`, and `pk` holds `nb` super-blocks (precondition).
        let p = unsafe { &*pk.add(b) };
        // SAFETY: token `t < N`, block `b < nb`: inside the activations (precondition).
        let y: [*const u8; N] = std::array::from_fn(|t| unsafe { a.add(t * arb + b * Q8_K_BYTES) });
        let mut iv = [_mm256_setzero_si256(); N];
        for ib in 0..8 {
            let mut even = [_mm256_setzero_si256(); N];
            let mut odd = [_mm256_setzero_si256(); N];
            for j in 0..8 {
                // SAFETY: `p.q[ib][j]` is 32 bytes at a 32-aligned offset of the 32-aligned
                // `PackedXs`.
                let wq = unsafe { _mm256_load_si256(p.q[ib][j].as_ptr() as *const __m256i) };
                for t in 0..N {
                    // SAFETY: bytes `4 + 32·ib + 4j..+4` of the block: four of its quants.
                    let u = _mm256_set1_epi32(unsafe {
                        (y[t].add(4 + 32 * ib + 4 * j) as *const i32).read_unaligned()
                    });
                    // Two chains per token: one is bound by the instruction's latency.
                    if j % 2 == 0 {
                        even[t] = _mm256_dpbusd_avx_epi32(even[t], wq, u);
                    } else {
                        odd[t] = _mm256_dpbusd_avx_epi32(odd[t], wq, u);
                    }
                }
            }
            // SAFETY: `p.sc[ib]` is 32 bytes at a 32-aligned offset of the 32-aligned `PackedXs`.
            let sc = unsafe { _mm256_load_si256(p.sc[ib].as_ptr() as *const __m256i) };
            for t in 0..N {
                // SAFETY: bytes `260 + 4·ib..264 + 4·ib` of the 292-byte Q8_K block: the i16
                // sums of the sub-block's two halves.
                let (s0, s1) = unsafe {
                    let s = y[t].add(260 + 4 * ib) as *const i16;
                    (s.read_unaligned() as i32, s.add(1).read_unaligned() as i32)
                };
                let sum = _mm256_add_epi32(even[t], odd[t]);
                let exact = _mm256_sub_epi32(sum, _mm256_set1_epi32(128 * (s0 + s1)));
                iv[t] = _mm256_add_epi32(iv[t], _mm256_mullo_epi32(exact, sc));
            }
        }
        // SAFETY: `p.d` is 32 bytes at offset 0 of the 32-aligned `PackedXs`.
        let d = unsafe { _mm256_load_ps(p.d.as_ptr()) };
        for t in 0..N {
            // SAFETY: a Q8_K block opens with its f32 scale.
            let yd = _mm256_set1_ps(unsafe { (y[t] as *const f32).read_unaligned() });
            let s = _mm256_mul_ps(_mm256_mul_ps(d, yd), _mm256_cvtepi32_ps(iv[t]));
            acc[t] = _mm256_add_ps(acc[t], s);
        }
    }
    // SAFETY: the outputs are the precondition's.
    unsafe { store_tile(&acc, out, ldo, nr) };
}

/// IQ4_XS's prompt kernel for [`gemm_packed`]: 8 rows per register, AVX-VNNI.
struct XsVnni8;

impl PackedKernel for XsVnni8 {
    type Block = PackedXs;
    const ROWS: usize = 8;

    fn scratch(len: usize) -> *mut PackedXs {
        XS_SCRATCH.with_borrow_mut(|pk| {
            if pk.len() < len {
                pk.resize(len, PACKED_XS_ZERO);
            }
            pk.as_mut_ptr()
        })
    }

    unsafe fn repack(nb: usize, w: *const u8, wrb: usize, nr: usize, dst: *mut PackedXs) {
        // SAFETY: the trait's contract is `repack_xs`'s (AVX2/FMA/F16C present).
        unsafe { repack_xs(nb, w, wrb, nr, dst) }
    }

    unsafe fn tile(
        n: usize,
        nb: usize,
        pk: *const PackedXs,
        a: *const u8,
        arb: usize,
        out: *mut f32,
        ldo: usize,
        nr: usize,
    ) {
        // SAFETY: the trait's contract is `tile_xs`'s for `n` tokens; this kernel is only
        // chosen where AVX-VNNI is present (`gemm_iq4_xs_on`).
        unsafe {
            if n == PACKED_TT {
                tile_xs::<PACKED_TT>(nb, pk, a, arb, out, ldo, nr)
            } else {
                tile_xs::<1>(nb, pk, a, arb, out, ldo, nr)
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn xs_gemm(nb: usize, g: &GemmArgs<'_>, out: &mut [f32]) {
    let table = lut16(&KVALUES);
    let (w, a) = (g.w.as_ptr(), g.a.as_ptr());
    for t0 in (0..g.tokens).step_by(TT) {
        let tt = TT.min(g.tokens - t0);
        for r in 0..g.rows {
            let mut acc = [0.0f32; TT];
            for i in 0..nb {
                let x = w.wrapping_add(r * g.w_stride + i * IQ4_XS_BYTES);
                // The rows stream from memory one after the other: fetch a few super-blocks
                // ahead (a prefetch never faults, wherever it points).
                for k in 0..3 {
                    _mm_prefetch::<_MM_HINT_T0>(
                        x.wrapping_add(PREFETCH_AHEAD + 64 * k) as *const i8
                    );
                }
                // SAFETY: as in `nl_gemm`, with super-blocks.
                unsafe {
                    let b = xs_decode(table, x);
                    for (t, acc) in acc.iter_mut().enumerate().take(tt) {
                        let y = a.add((t0 + t) * g.a_stride + i * Q8_K_BYTES);
                        *acc = xs_step(&b, y, *acc);
                    }
                }
            }
            for (t, acc) in acc.iter().enumerate().take(tt) {
                out[(t0 + t) * g.rows + r] = *acc;
            }
        }
    }
}

/// One IQ4_XS super-block of 16 weight rows, repacked for [`XsZmm16`]: as [`PackedXs`], rows
/// 0..8 in the low 32 bytes of each 64-byte chunk and rows 8..16 in the high ones.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct PackedXs16 {
    /// f32 `d` of each row.
    d: [f32; 16],
    /// `sc[ib]`: each row's `ls − 32` of sub-block `ib`.
    sc: [[i32; 16]; 8],
    /// `q[ib][j]`: values + 128 of elements `32·ib + 4j..+4` of rows 0..16, row after row.
    q: [[[u8; 64]; 8]; 8],
}

const PACKED_XS16_ZERO: PackedXs16 = PackedXs16 {
    d: [0.0; 16],
    sc: [[0; 16]; 8],
    q: [[[0; 64]; 8]; 8],
};

thread_local! {
    /// Each thread's repacked IQ4_XS rows for the 16-row tile; grown, never shrunk.
    static XS16_SCRATCH: RefCell<Vec<PackedXs16>> = const { RefCell::new(Vec::new()) };
}

/// Repacks rows `0..nr` (`nr ≤ 16`; the rest zero) at `w` (`wrb` apart) into `dst[0..nb]`.
///
/// # Safety
/// AVX2/FMA/F16C present; `nb` super-blocks readable in each of the `nr` rows; `dst` holds `nb`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn repack_xs16(nb: usize, w: *const u8, wrb: usize, nr: usize, dst: *mut PackedXs16) {
    let table = lut16(&KVALUES);
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    for b in 0..nb {
        prefetch_next::<16>(w, wrb, b, IQ4_XS_BYTES);
        // SAFETY: `b < nb`, and `dst` holds `nb` super-blocks (precondition); nothing else
        // refers to them.
        let p = unsafe { &mut *dst.add(b) };
        if nr < 16 {
            *p = PACKED_XS16_ZERO;
        }
        for half in 0..2 {
            // rows[ib][r]: sub-block ib of row 8·half + r, values + 128.
            let mut rows = [[_mm256_setzero_si256(); 8]; 8];
            for r in 0..nr.saturating_sub(8 * half).min(8) {
                let row = 8 * half + r;
                // SAFETY: row `row < nr`, super-block `b < nb`: inside the rows (precondition).
                let x = unsafe { w.add(row * wrb + b * IQ4_XS_BYTES) };
                // SAFETY: the super-block's 136 bytes are readable.
                let blk = unsafe { std::slice::from_raw_parts(x, IQ4_XS_BYTES) };
                // SAFETY: the f16 scale opens the block.
                p.d[row] = unsafe { f16_at(x) };
                for (ib, sub) in rows.iter_mut().enumerate() {
                    p.sc[ib][row] = xs_scale(blk, ib) - 32;
                    // SAFETY: sub-block `ib`'s 16 bytes of indices start at 8 + 16·ib < 136.
                    sub[r] = _mm256_xor_si256(unsafe { values(table, x.add(8 + 16 * ib)) }, flip);
                }
            }
            for (ib, sub) in rows.into_iter().enumerate() {
                for (j, chunk) in transpose8x4(sub).into_iter().enumerate() {
                    // SAFETY: bytes `32·half..32·half + 32` of the 64-byte `p.q[ib][j]`, at a
                    // 32-aligned offset of the 64-aligned `PackedXs16`.
                    unsafe {
                        _mm256_store_si256(
                            p.q[ib][j].as_mut_ptr().add(32 * half) as *mut __m256i,
                            chunk,
                        )
                    };
                }
            }
        }
    }
}

/// [`tile_xs`] on 16 rows per 512-bit register: the same integers and float steps, lane by
/// lane.
///
/// # Safety
/// AVX-512 F/BW/VNNI present; `pk` holds `nb`; `nb` Q8_K blocks readable in each token; `out`
/// writable at every `t·ldo + r` for `t < N`, `r < nr`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_xs16<const N: usize>(
    nb: usize,
    pk: *const PackedXs16,
    a: *const u8,
    arb: usize,
    out: *mut f32,
    ldo: usize,
    nr: usize,
) {
    let mut acc = [_mm512_setzero_ps(); N];
    for b in 0..nb {
        // SAFETY: `b < nb`, and `pk` holds `nb` super-blocks (precondition).
        let p = unsafe { &*pk.add(b) };
        // SAFETY: token `t < N`, block `b < nb`: inside the activations (precondition).
        let y: [*const u8; N] = std::array::from_fn(|t| unsafe { a.add(t * arb + b * Q8_K_BYTES) });
        let mut iv = [_mm512_setzero_si512(); N];
        for ib in 0..8 {
            let mut even = [_mm512_setzero_si512(); N];
            let mut odd = [_mm512_setzero_si512(); N];
            for j in 0..8 {
                // SAFETY: `p.q[ib][j]` is 64 bytes at a 64-aligned offset of the 64-aligned
                // `PackedXs16`.
                let wq = unsafe { _mm512_load_si512(p.q[ib][j].as_ptr() as *const __m512i) };
                for t in 0..N {
                    // SAFETY: bytes `4 + 32·ib + 4j..+4` of the block: four of its quants.
                    let u = _mm512_set1_epi32(unsafe {
                        (y[t].add(4 + 32 * ib + 4 * j) as *const i32).read_unaligned()
                    });
                    if j % 2 == 0 {
                        even[t] = _mm512_dpbusd_epi32(even[t], wq, u);
                    } else {
                        odd[t] = _mm512_dpbusd_epi32(odd[t], wq, u);
                    }
                }
            }
            // SAFETY: `p.sc[ib]` is 64 bytes at a 64-aligned offset of the 64-aligned
            // `PackedXs16`.
            let sc = unsafe { _mm512_load_si512(p.sc[ib].as_ptr() as *const __m512i) };
            for t in 0..N {
                // SAFETY: bytes `260 + 4·ib..264 + 4·ib` of the Q8_K block: the i16 sums of
                // the sub-block's two halves.
                let (s0, s1) = unsafe {
                    let s = y[t].add(260 + 4 * ib) as *const i16;
                    (s.read_unaligned() as i32, s.add(1).read_unaligned() as i32)
                };
                let sum = _mm512_add_epi32(even[t], odd[t]);
                let exact = _mm512_sub_epi32(sum, _mm512_set1_epi32(128 * (s0 + s1)));
                iv[t] = _mm512_add_epi32(iv[t], _mm512_mullo_epi32(exact, sc));
            }
        }
        // SAFETY: `p.d` is 64 bytes at offset 0 of the 64-aligned `PackedXs16`.
        let d = unsafe { _mm512_load_ps(p.d.as_ptr()) };
        for t in 0..N {
            // SAFETY: a Q8_K block opens with its f32 scale.
            let yd = _mm512_set1_ps(unsafe { (y[t] as *const f32).read_unaligned() });
            let s = _mm512_mul_ps(_mm512_mul_ps(d, yd), _mm512_cvtepi32_ps(iv[t]));
            acc[t] = _mm512_add_ps(acc[t], s);
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        let mut x = [0.0f32; 16];
        // SAFETY: `x` is 16 f32s, one 512-bit store.
        unsafe { _mm512_storeu_ps(x.as_mut_ptr(), *acc) };
        for (r, &x) in x.iter().enumerate().take(nr) {
            // SAFETY: `t < N`, `r < nr`: an output the precondition makes writable.
            unsafe { *out.add(t * ldo + r) = x };
        }
    }
}

/// IQ4_XS's prompt kernel for [`gemm_packed`]: 16 rows per register, AVX-512 VNNI.
struct XsZmm16;

impl PackedKernel for XsZmm16 {
    type Block = PackedXs16;
    const ROWS: usize = 16;

    fn scratch(len: usize) -> *mut PackedXs16 {
        XS16_SCRATCH.with_borrow_mut(|pk| {
            if pk.len() < len {
                pk.resize(len, PACKED_XS16_ZERO);
            }
            pk.as_mut_ptr()
        })
    }

    unsafe fn repack(nb: usize, w: *const u8, wrb: usize, nr: usize, dst: *mut PackedXs16) {
        // SAFETY: the trait's contract is `repack_xs16`'s (AVX2/FMA/F16C present).
        unsafe { repack_xs16(nb, w, wrb, nr, dst) }
    }

    unsafe fn tile(
        n: usize,
        nb: usize,
        pk: *const PackedXs16,
        a: *const u8,
        arb: usize,
        out: *mut f32,
        ldo: usize,
        nr: usize,
    ) {
        // SAFETY: the trait's contract is `tile_xs16`'s for `n` tokens; this kernel is only
        // chosen where AVX-512 VNNI is present (`gemm_iq4_xs_on`).
        unsafe {
            if n == PACKED_TT {
                tile_xs16::<PACKED_TT>(nb, pk, a, arb, out, ldo, nr)
            } else {
                tile_xs16::<1>(nb, pk, a, arb, out, ldo, nr)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;
    use crate::quant::reference;
    use crate::quant::tests::{Rng, random_activations, random_row};

    /// Both formats' dot products and tiles give the scalar reference's bits (same sums, same
    /// order), on rows of one to eight blocks and one to eleven tokens.
    #[test]
    fn avx2_iq4_is_the_reference_bit_for_bit() {
        if !crate::cpu::dot::isa_available(crate::cpu::dot::Isa::Avx2) {
            return;
        }
        let mut rng = Rng::new(44);
        type Pair = (
            fn(usize, &[u8], &[u8]) -> f32,
            fn(&GemmArgs<'_>, &mut [f32]),
        );
        let kernels: [(DType, Pair); 2] = [
            (
                DType::IQ4_NL,
                (vec_dot_iq4_nl, super::super::gemm_small::gemm_iq4_nl),
            ),
            (DType::IQ4_XS, (vec_dot_iq4_xs, gemm_iq4_xs)),
        ];
        for (dt, (dot, gemm)) in kernels {
            let r = reference(dt).unwrap();
            for blocks in [1, 3, 8] {
                let n = blocks * dt.block_elems();
                let (rows, tokens) = (13, 11);
                let w: Vec<Vec<u8>> = (0..rows).map(|_| random_row(&mut rng, dt, n)).collect();
                let a: Vec<Vec<u8>> = (0..tokens)
                    .map(|_| random_activations(&mut rng, r.vec_dot_type, n))
                    .collect();
                let mut out = vec![f32::NAN; rows * tokens];
                let g = GemmArgs {
                    n,
                    w: &w.concat(),
                    w_stride: w[0].len(),
                    rows,
                    a: &a.concat(),
                    a_stride: a[0].len(),
                    tokens,
                };
                gemm(&g, &mut out);
                // Both packed kernels where the CPU has them (IQ4_XS only; NaN where not run).
                let mut p8 = vec![f32::NAN; rows * tokens];
                let mut p16 = vec![f32::NAN; rows * tokens];
                let xs = dt == DType::IQ4_XS;
                let (wp, ap) = (g.w.as_ptr(), g.a.as_ptr());
                let nb = n / QK_K;
                if xs && has_avxvnni() {
                    // SAFETY: AVX-VNNI present; `g` holds `rows × nb` and `tokens × nb` blocks.
                    unsafe {
                        gemm_packed::<XsVnni8>(
                            nb,
                            wp,
                            g.w_stride,
                            rows,
                            ap,
                            g.a_stride,
                            tokens,
                            p8.as_mut_ptr(),
                        )
                    };
                }
                if xs && super::super::gemm_q4k_zmm::available() {
                    // SAFETY: AVX-512 VNNI present; as above.
                    unsafe {
                        gemm_packed::<XsZmm16>(
                            nb,
                            wp,
                            g.w_stride,
                            rows,
                            ap,
                            g.a_stride,
                            tokens,
                            p16.as_mut_ptr(),
                        )
                    };
                }
                for (t, at) in a.iter().enumerate() {
                    for (i, wr) in w.iter().enumerate() {
                        let want = (r.vec_dot)(n, wr, at);
                        assert_eq!(dot(n, wr, at).to_bits(), want.to_bits(), "{dt} dot n={n}");
                        assert_eq!(
                            out[t * rows + i].to_bits(),
                            want.to_bits(),
                            "{dt} tile n={n}"
                        );
                        for (name, p) in [("8-row", &p8), ("16-row", &p16)] {
                            let got = p[t * rows + i];
                            if !got.is_nan() {
                                assert_eq!(got.to_bits(), want.to_bits(), "{dt} {name} n={n}");
                            }
                        }
                    }
                }
            }
        }
    }
}
