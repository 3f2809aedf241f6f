//! Tiled prompt attention ([`TileKernel`]) on 512-bit vectors (AVX-512 F): the 16 query rows
//! of a tile are the 16 lanes of a `zmm`, so a block's scores are 16 accumulators (one per
//! key) fed by one query load and 16 broadcast key elements per dimension, the softmax runs
//! down the lanes, and the value product is 16 accumulators (one per output dimension) fed by
//! one load of weights and 16 broadcast value elements per key. Bit for bit [`TILE_SCALAR`]
//! (the same fused multiply-adds in the same order, the same `exp`).
//!
//! [`TILE_SCALAR`]: super::super::TILE_SCALAR

use super::super::attn_tile::{EXP_MIN, EXP_TAYLOR, LN2_HI, LN2_LO};
use super::super::{FEW_ROWS, FewState, Isa, TILE_KEYS, TILE_ROWS, TileKernel, TileState};
use half::f16;
use std::arch::x86_64::*;

const R: usize = TILE_ROWS;

/// The AVX-512 tiled-attention kernels (handed out only where [`available`]).
pub(in crate::cpu::dot) static TILE_ZMM: TileKernel = TileKernel {
    isa: Isa::Avx2,
    widen,
    scores,
    softmax_pv,
    few_scores,
    few_softmax_pv,
};

/// Whether this CPU runs these kernels (AVX-512 F and F16C; checked once).
pub(in crate::cpu::dot) fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("f16c"))
}

fn widen(rows: &[&[f16]], width: usize, dst: &mut [f32]) {
    assert!(width.is_multiple_of(16), "rows of whole vectors");
    assert!(rows.iter().all(|r| r.len() >= width) && dst.len() >= rows.len() * width);
    // SAFETY: `available()` was checked before this table was handed out; the asserts keep
    // every read inside a row and every write inside `dst`.
    unsafe { widen_impl(rows, width, dst.as_mut_ptr()) }
}

/// # Safety
/// AVX-512 F present; every row holds `width` (a multiple of 16), `dst` `rows.len() · width`.
#[target_feature(enable = "avx512f")]
unsafe fn widen_impl(rows: &[&[f16]], width: usize, dst: *mut f32) {
    for (j, row) in rows.iter().enumerate() {
        let src = row.as_ptr() as *const __m256i;
        for i in 0..width / 16 {
            // SAFETY: the 16 halves `16i..16i + 16 ≤ width` of row `j` and the same 16
            // floats of row `j` of `dst` (precondition).
            unsafe {
                let x = _mm512_cvtph_ps(_mm256_loadu_si256(src.add(i)));
                _mm512_storeu_ps(dst.add(j * width + 16 * i), x);
            }
        }
    }
}

fn scores(qt: &[f32], dk: usize, k: &[f32], n: usize, scale: f32, s: &mut [f32]) {
    assert!(n <= TILE_KEYS, "at most a block of keys");
    assert!(qt.len() >= dk * R && k.len() >= n.next_multiple_of(16) * dk);
    assert!(s.len() >= TILE_KEYS * R);
    // SAFETY: `available()` holds (see `widen`); the asserts bound every access below.
    unsafe { scores_impl(qt.as_ptr(), dk, k.as_ptr(), n, scale, s.as_mut_ptr()) }
}

/// # Safety
/// AVX-512 F present; `qt` holds `dk · R`, `k` `n` rounded up to 16 rows of `dk`, `s` `n`
/// rounded up to 16 rows of `R`.
#[target_feature(enable = "avx512f")]
unsafe fn scores_impl(qt: *const f32, dk: usize, k: *const f32, n: usize, scale: f32, s: *mut f32) {
    let sc = _mm512_set1_ps(scale);
    for j0 in (0..n).step_by(16) {
        // SAFETY: keys `j0..j0 + 16` and their score rows lie inside `k` and `s`, and the
        // queries' `d < dk` rows inside `qt` (precondition).
        unsafe {
            let kp = k.add(j0 * dk);
            let mut acc = [_mm512_setzero_ps(); 16];
            for d in 0..dk {
                let q = _mm512_loadu_ps(qt.add(d * R));
                for (jj, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(q, _mm512_set1_ps(*kp.add(jj * dk + d)), *acc);
                }
            }
            for (jj, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(s.add((j0 + jj) * R), _mm512_mul_ps(*acc, sc));
            }
        }
    }
}

fn softmax_pv(
    s: &mut [f32],
    pk: &[i32],
    window: Option<u32>,
    v: &[f32],
    dv: usize,
    st: &mut TileState,
) {
    let n = pk.len();
    assert!(n <= TILE_KEYS && s.len() >= n * R, "a block's scores");
    assert!(dv.is_multiple_of(16) && v.len() >= n * dv && st.ot.len() >= dv * R);
    // SAFETY: `available()` holds (see `widen`); the asserts bound every access below.
    unsafe { softmax_pv_impl(s.as_mut_ptr(), pk, window, v.as_ptr(), dv, st) }
}

/// # Safety
/// AVX-512 F present; `s` holds `pk.len() ≤ TILE_KEYS` rows of `R`, `v` as many rows of `dv`
/// (a multiple of 16), `st.ot` `dv · R`.
#[target_feature(enable = "avx512f")]
unsafe fn softmax_pv_impl(
    s: *mut f32,
    pk: &[i32],
    window: Option<u32>,
    v: *const f32,
    dv: usize,
    st: &mut TileState,
) {
    let n = pk.len();
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let one = _mm512_set1_ps(1.0);
    // SAFETY: `pq` is `R` i32s.
    let pq = unsafe { _mm512_loadu_si512(st.pq.as_ptr() as *const __m512i) };
    // A window past i32::MAX hides nothing a position can reach.
    let w = window
        .filter(|&w| w <= i32::MAX as u32)
        .map(|w| _mm512_set1_epi32(w as i32));
    // Which rows see each key, and the block's maximum over what they see.
    let mut vis = [0 as __mmask16; TILE_KEYS];
    let mut bm = ninf;
    for (j, &pkj) in pk.iter().enumerate() {
        let kv = _mm512_set1_epi32(pkj);
        let mut mk = if pkj < 0 {
            0
        } else {
            _mm512_cmple_epi32_mask(kv, pq)
        };
        if let Some(w) = w {
            mk &= _mm512_cmplt_epi32_mask(_mm512_sub_epi32(pq, kv), w);
        }
        vis[j] = mk;
        // SAFETY: score row `j < n` (precondition).
        let sj = unsafe { _mm512_loadu_ps(s.add(j * R)) };
        bm = _mm512_max_ps(bm, _mm512_mask_blend_ps(mk, ninf, sj));
    }
    // SAFETY: `m` and `l` are `R` floats.
    let (m_old, l_old) = unsafe {
        (
            _mm512_loadu_ps(st.m.as_ptr()),
            _mm512_loadu_ps(st.l.as_ptr()),
        )
    };
    let m = _mm512_max_ps(m_old, bm);
    // Rows that have seen no key yet keep everything as it is.
    let dead = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(m, ninf);
    let c = _mm512_mask_blend_ps(dead, exp512(_mm512_sub_ps(m_old, m)), one);
    let mut sum = _mm512_setzero_ps();
    for (j, &mk) in vis.iter().enumerate().take(n) {
        // SAFETY: score row `j < n` (precondition).
        unsafe {
            let p =
                _mm512_maskz_mov_ps(mk, exp512(_mm512_sub_ps(_mm512_loadu_ps(s.add(j * R)), m)));
            _mm512_storeu_ps(s.add(j * R), p);
            sum = _mm512_add_ps(sum, p);
        }
    }
    let l = _mm512_add_ps(_mm512_mul_ps(l_old, c), sum);
    // SAFETY: as above.
    unsafe {
        _mm512_storeu_ps(st.l.as_mut_ptr(), l);
        _mm512_storeu_ps(st.m.as_mut_ptr(), m);
    }
    let ot = st.ot.as_mut_ptr();
    if _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(c, one) != 0 {
        for d in 0..dv {
            // SAFETY: row `d < dv` of the `dv · R` outputs (precondition).
            unsafe {
                _mm512_storeu_ps(
                    ot.add(d * R),
                    _mm512_mul_ps(_mm512_loadu_ps(ot.add(d * R)), c),
                )
            };
        }
    }
    for d0 in (0..dv).step_by(16) {
        // SAFETY: output rows `d0..d0 + 16 ≤ dv`, weight rows `j < n` and value elements
        // `j·dv + d0 + dd` with `dd < 16` (precondition).
        unsafe {
            let mut acc: [__m512; 16] =
                std::array::from_fn(|dd| _mm512_loadu_ps(ot.add((d0 + dd) * R)));
            for j in 0..n {
                let p = _mm512_loadu_ps(s.add(j * R));
                let vj = v.add(j * dv + d0);
                for (dd, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(p, _mm512_set1_ps(*vj.add(dd)), *acc);
                }
            }
            for (dd, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(ot.add((d0 + dd) * R), *acc);
            }
        }
    }
}

fn few_scores(q: &[f32], dk: usize, keys: &[&[f16]], scale: f32, s: &mut [f32], kt: &mut [f32]) {
    let g = q.len() / dk;
    assert!((1..=FEW_ROWS).contains(&g) && keys.len() <= TILE_KEYS && dk.is_multiple_of(16));
    assert!(
        keys.iter().all(|k| k.len() >= dk),
        "key rows of the head width"
    );
    assert!(s.len() >= g * TILE_KEYS && kt.len() >= dk * TILE_KEYS);
    // SAFETY: `available()` holds (see `widen`); the asserts bound every access below.
    unsafe {
        transpose_keys(keys, dk, kt.as_mut_ptr());
        let (q, kt, s) = (q.as_ptr(), kt.as_ptr(), s.as_mut_ptr());
        match g {
            1 => few_scores_rows::<1>(q, dk, kt, scale, s),
            2 => few_scores_rows::<2>(q, dk, kt, scale, s),
            3 => few_scores_rows::<3>(q, dk, kt, scale, s),
            4 => few_scores_rows::<4>(q, dk, kt, scale, s),
            5 => few_scores_rows::<5>(q, dk, kt, scale, s),
            6 => few_scores_rows::<6>(q, dk, kt, scale, s),
            7 => few_scores_rows::<7>(q, dk, kt, scale, s),
            _ => few_scores_rows::<8>(q, dk, kt, scale, s),
        }
    }
}

/// `kt[d·TILE_KEYS + j] = keys[j][d]` as f32 for `d < dk` and every `j < TILE_KEYS` (zero
/// past the keys): 16 keys × 16 elements at a time, widened then transposed in registers.
///
/// # Safety
/// AVX-512 F present; `keys.len() ≤ TILE_KEYS`, each `dk` (a multiple of 16) long; `kt` holds
/// `dk · TILE_KEYS`.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_keys(keys: &[&[f16]], dk: usize, kt: *mut f32) {
    for h in 0..TILE_KEYS / 16 {
        for d0 in (0..dk).step_by(16) {
            let mut r: [__m512; 16] = std::array::from_fn(|i| match keys.get(16 * h + i) {
                // SAFETY: halves `d0..d0 + 16 ≤ dk` of a key row (precondition).
                Some(k) => _mm512_cvtph_ps(unsafe {
                    _mm256_loadu_si256(k.as_ptr().add(d0) as *const __m256i)
                }),
                None => _mm512_setzero_ps(),
            });
            transpose16(&mut r);
            for (dd, x) in r.iter().enumerate() {
                // SAFETY: row `d0 + dd < dk` of `kt`, keys `16h..16h + 16 ≤ TILE_KEYS`.
                unsafe { _mm512_storeu_ps(kt.add((d0 + dd) * TILE_KEYS + 16 * h), *x) };
            }
        }
    }
}

/// The 16×16 matrix in `r` (row `i` in `r[i]`) transposed in place.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; 16]) {
    // Pairs of rows interleaved, then pairs of pairs: r[4k + e] holds, in 128-bit lane L,
    // element 4L + e of rows 4k..4k + 4.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    let pd = _mm512_castps_pd;
    for k in 0..4 {
        let (a, b, c, d) = (t[4 * k], t[4 * k + 1], t[4 * k + 2], t[4 * k + 3]);
        r[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        r[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        r[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        r[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    // Then a 4×4 transpose of 128-bit lanes for each e: element 4L + e of all 16 rows.
    for e in 0..4 {
        let (a0, a1, a2, a3) = (r[e], r[4 + e], r[8 + e], r[12 + e]);
        let u0 = _mm512_shuffle_f32x4::<0x44>(a0, a1);
        let u1 = _mm512_shuffle_f32x4::<0xEE>(a0, a1);
        let u2 = _mm512_shuffle_f32x4::<0x44>(a2, a3);
        let u3 = _mm512_shuffle_f32x4::<0xEE>(a2, a3);
        let out = [
            _mm512_shuffle_f32x4::<0x88>(u0, u2),
            _mm512_shuffle_f32x4::<0xDD>(u0, u2),
            _mm512_shuffle_f32x4::<0x88>(u1, u3),
            _mm512_shuffle_f32x4::<0xDD>(u1, u3),
        ];
        // Written after all four are read: r[4L + e] for L = 0..4 are the inputs of e only.
        for (l, x) in out.into_iter().enumerate() {
            r[4 * l + e] = x;
        }
    }
}

/// [`few_scores`] of `G` rows: per dimension, the two vectors of 32 keys' elements times each
/// row's broadcast query element.
///
/// # Safety
/// AVX-512 F present; `q` holds `G · dk`, `kt` `dk · TILE_KEYS`, `s` `G · TILE_KEYS`.
#[target_feature(enable = "avx512f")]
unsafe fn few_scores_rows<const G: usize>(
    q: *const f32,
    dk: usize,
    kt: *const f32,
    scale: f32,
    s: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; G];
    // SAFETY: `d < dk` rows of `kt` and query elements `g·dk + d` (precondition).
    unsafe {
        for d in 0..dk {
            let k0 = _mm512_loadu_ps(kt.add(d * TILE_KEYS));
            let k1 = _mm512_loadu_ps(kt.add(d * TILE_KEYS + 16));
            for (g, acc) in acc.iter_mut().enumerate() {
                let qv = _mm512_set1_ps(*q.add(g * dk + d));
                acc[0] = _mm512_fmadd_ps(qv, k0, acc[0]);
                acc[1] = _mm512_fmadd_ps(qv, k1, acc[1]);
            }
        }
        let sc = _mm512_set1_ps(scale);
        for (g, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(s.add(g * TILE_KEYS), _mm512_mul_ps(acc[0], sc));
            _mm512_storeu_ps(s.add(g * TILE_KEYS + 16), _mm512_mul_ps(acc[1], sc));
        }
    }
}

fn few_softmax_pv(
    s: &mut [f32],
    pk: &[i32],
    window: Option<u32>,
    values: &[&[f16]],
    dv: usize,
    st: &mut FewState,
) {
    let (n, g) = (pk.len(), st.pq.len());
    assert!(n <= TILE_KEYS && values.len() >= n && (1..=FEW_ROWS).contains(&g));
    assert!(s.len() >= g * TILE_KEYS && st.m.len() == g && st.l.len() == g);
    assert!(dv.is_multiple_of(16) && st.o.len() >= g * dv);
    assert!(
        values[..n].iter().all(|v| v.len() >= dv),
        "value rows of the head width"
    );
    // SAFETY: `available()` holds (see `widen`); the asserts bound every access below.
    unsafe { few_softmax_pv_impl(s.as_mut_ptr(), pk, window, values, dv, st) }
}

/// # Safety
/// AVX-512 F present; `s` holds `g · TILE_KEYS` (`g = st.pq.len() ≤ FEW_ROWS`), `values`
/// `pk.len() ≤ TILE_KEYS` rows of at least `dv` (a multiple of 16), `st.o` `g · dv`.
#[target_feature(enable = "avx512f")]
unsafe fn few_softmax_pv_impl(
    s: *mut f32,
    pk: &[i32],
    window: Option<u32>,
    values: &[&[f16]],
    dv: usize,
    st: &mut FewState,
) {
    let (n, g) = (pk.len(), st.pq.len());
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let w = window
        .filter(|&w| w <= i32::MAX as u32)
        .map(|w| _mm512_set1_epi32(w as i32));
    // The keys' positions, two vectors of 16, and which lanes hold a key.
    let mut pkb = [-1i32; TILE_KEYS];
    pkb[..n].copy_from_slice(pk);
    // SAFETY: `pkb` is TILE_KEYS = 32 i32s.
    let pkv = unsafe {
        [
            _mm512_loadu_si512(pkb.as_ptr() as *const __m512i),
            _mm512_loadu_si512(pkb.as_ptr().add(16) as *const __m512i),
        ]
    };
    for r in 0..g {
        let pq = _mm512_set1_epi32(st.pq[r]);
        // SAFETY: row `r < g` of the `g · TILE_KEYS` scores (precondition).
        let sr = unsafe { s.add(r * TILE_KEYS) };
        let mut vis = [0 as __mmask16; 2];
        let mut sv = [_mm512_setzero_ps(); 2];
        let mut bm = ninf;
        for h in 0..2 {
            // A padding lane's position −1 is never visible.
            let mut mk = _mm512_cmpge_epi32_mask(pkv[h], _mm512_setzero_si512())
                & _mm512_cmple_epi32_mask(pkv[h], pq);
            if let Some(w) = w {
                mk &= _mm512_cmplt_epi32_mask(_mm512_sub_epi32(pq, pkv[h]), w);
            }
            vis[h] = mk;
            // SAFETY: scores `16h..16h + 16` of row `r` (precondition).
            sv[h] = unsafe { _mm512_loadu_ps(sr.add(16 * h)) };
            bm = _mm512_max_ps(bm, _mm512_mask_blend_ps(mk, ninf, sv[h]));
        }
        let m_old = st.m[r];
        let bmax = _mm512_reduce_max_ps(bm);
        // `_mm512_max_ps(m_old, bm)` of the tile, lane by lane (no NaN among the scores).
        let m = if m_old > bmax { m_old } else { bmax };
        if m == f32::NEG_INFINITY {
            // Nothing seen yet: as in the tile, weights 0 and everything kept.
            for h in 0..2 {
                // SAFETY: as above.
                unsafe { _mm512_storeu_ps(sr.add(16 * h), _mm512_setzero_ps()) };
            }
            continue;
        }
        let c = _mm_cvtss_f32(_mm512_castps512_ps128(exp512(_mm512_set1_ps(m_old - m))));
        let mv = _mm512_set1_ps(m);
        for h in 0..2 {
            let p = _mm512_maskz_mov_ps(vis[h], exp512(_mm512_sub_ps(sv[h], mv)));
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(sr.add(16 * h), p) };
        }
        // The weights summed key by key, as the tile's lanes do.
        let mut sum = 0.0f32;
        for j in 0..n {
            // SAFETY: weight `j < n ≤ TILE_KEYS` of row `r`.
            sum += unsafe { *sr.add(j) };
        }
        st.l[r] = st.l[r] * c + sum;
        st.m[r] = m;
        if c != 1.0 {
            let cv = _mm512_set1_ps(c);
            for d0 in (0..dv).step_by(16) {
                // SAFETY: outputs `r·dv + d0..+16` inside `st.o` (precondition).
                unsafe {
                    let o = st.o.as_mut_ptr().add(r * dv + d0);
                    _mm512_storeu_ps(o, _mm512_mul_ps(_mm512_loadu_ps(o), cv));
                }
            }
        }
    }
    // SAFETY: rows `< g` of weights and outputs, value elements `d0..d0 + 16 ≤ dv` of rows
    // `j < n` (precondition).
    unsafe {
        match g {
            1 => few_pv_rows::<1>(s, n, values, dv, st.o.as_mut_ptr()),
            2 => few_pv_rows::<2>(s, n, values, dv, st.o.as_mut_ptr()),
            3 => few_pv_rows::<3>(s, n, values, dv, st.o.as_mut_ptr()),
            4 => few_pv_rows::<4>(s, n, values, dv, st.o.as_mut_ptr()),
            5 => few_pv_rows::<5>(s, n, values, dv, st.o.as_mut_ptr()),
            6 => few_pv_rows::<6>(s, n, values, dv, st.o.as_mut_ptr()),
            7 => few_pv_rows::<7>(s, n, values, dv, st.o.as_mut_ptr()),
            _ => few_pv_rows::<8>(s, n, values, dv, st.o.as_mut_ptr()),
        }
    }
}

/// `o[g·dv + d] += Σ_j s[g·TILE_KEYS + j]·values[j][d]` for `G` rows, key by key (each row's
/// fused multiply-adds in the tile's order), 16 dimensions of every row in registers.
///
/// # Safety
/// AVX-512 F present; `s` holds `G · TILE_KEYS`, `o` `G · dv`, `values` `n` rows of `dv` (a
/// multiple of 16).
#[target_feature(enable = "avx512f")]
unsafe fn few_pv_rows<const G: usize>(
    s: *const f32,
    n: usize,
    values: &[&[f16]],
    dv: usize,
    o: *mut f32,
) {
    // SAFETY: the bounds of the precondition.
    unsafe {
        for d0 in (0..dv).step_by(16) {
            let mut acc: [__m512; G] = std::array::from_fn(|g| _mm512_loadu_ps(o.add(g * dv + d0)));
            for (j, vj) in values[..n].iter().enumerate() {
                let v = _mm512_cvtph_ps(_mm256_loadu_si256(vj.as_ptr().add(d0) as *const __m256i));
                for (g, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*s.add(g * TILE_KEYS + j)), v, *acc);
                }
            }
            for (g, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(o.add(g * dv + d0), *acc);
            }
        }
    }
}

/// [`exp_poly`](super::super::attn_tile::exp_poly) of 16 lanes, bit for bit.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp512(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(EXP_MIN));
    let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(
        k,
        _mm512_set1_ps(LN2_LO),
        _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_HI), x),
    );
    let mut e = _mm512_set1_ps(EXP_TAYLOR[0]);
    for &c in &EXP_TAYLOR[1..] {
        e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(c));
    }
    let two_k = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(k),
        _mm512_set1_epi32(127),
    )));
    _mm512_mul_ps(e, two_k)
}
