// Shared by the flash-attention kernels: bindings, and where source `j` of a step
// comes from. A dispatch attends for one sequence's tokens of the step, its group: the
// `n_tok()` tokens from `tok0()` (a step may mix sequences; token `t` below is the group's
// `t`-th). The sources of a group are, in position order, its cached tokens, then the
// group's own keys and values (rounded to f16 as the cache will hold them). The cached tokens
// are, per the group's scan info (written by the host), either the positions
// `lo .. lo + n_scan` of the sequence's ring of `n_cells()` cells at cell `base()` (cell
// `base + pos % n_cells`, checked against the cell's stored position, which covers wrapped
// rings), or the `n_scan` pool cells listed at `list()` as (cell, position) pairs. A store
// without values (MLA's latent cache, `values_in_keys`) gives each value as the first `dv`
// elements of the key head, for the batch's sources too.

// `AttentionUniforms`: declared by the host from engine/src/gpu/params.rs, prepended.
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
// The cache's f16 pairs, four words (eight values) a vec4: head widths are multiples of 8.
@group(0) @binding(1) var<storage, read> KC: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> VC: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> CP: array<i32>;
@group(0) @binding(4) var<storage, read> S: array<u32>;
@group(0) @binding(5) var<uniform> P: AttentionUniforms;

const NEG: f32 = -1.0e30;

// Cells of the group's ring (the third word of the scan info).
fn n_cells() -> u32 {
    return S[P.info_off + 2u];
}

// The ring's first cell (the eighth word of the scan info).
fn base() -> u32 {
    return S[P.info_off + 7u];
}

// Step-buffer offset of the pool's (cell, position) list, or NO_LIST for a ring (the ninth
// word of the scan info).
const NO_LIST: u32 = 0xffffffffu;
fn list() -> u32 {
    return S[P.info_off + 8u];
}

// The cell of cached source `j` (`j < n_scan`), the scan starting at position `lo`.
fn source_cell(j: u32, lo: u32) -> u32 {
    if (list() != NO_LIST) {
        return S[list() + 2u * j];
    }
    return base() + (lo + j) % n_cells();
}

// Split-K workgroups per head this step (the fourth word of the scan info).
fn n_split() -> u32 {
    return S[P.info_off + 3u];
}

// The step's first token of the group (the sixth word of the scan info).
fn tok0() -> u32 {
    return S[P.info_off + 5u];
}

// Tokens in the group (the seventh word of the scan info).
fn n_tok() -> u32 {
    return S[P.info_off + 6u];
}

// Position of the group's token `t`.
fn position(t: u32) -> i32 {
    return bitcast<i32>(S[P.pos_off + tok0() + t]);
}

fn visible(pq: i32, pk: i32) -> bool {
    return pk >= 0 && pk <= pq && (P.window == 0u || u32(pq - pk) < P.window);
}

fn cap(s: f32) -> f32 {
    if (P.softcap > 0.0) {
        return P.softcap * tanh(s / P.softcap);
    }
    return s;
}

fn pack_f32(a: f32, b: f32) -> u32 {
    return pack2x16float(vec2<f32>(a, b));
}

// Position of source `j` (-1 when the cell no longer holds it), given the scan start `lo` and
// length `n_scan`.
fn source_pos(j: u32, lo: u32, n_scan: u32) -> i32 {
    if (j < n_scan) {
        if (list() != NO_LIST) {
            return bitcast<i32>(S[list() + 2u * j + 1u]);
        }
        let pos = lo + j;
        if (CP[source_cell(j, lo)] == i32(pos)) {
            return i32(pos);
        }
        return -1;
    }
    return position(j - n_scan);
}

// Words `4·w4 .. 4·w4 + 4` (eight f16 values) of KV head `kvh`'s key of source `j`.
fn key_words4(j: u32, n_scan: u32, lo: u32, kvh: u32, w4: u32) -> vec4<u32> {
    if (j < n_scan) {
        let cell = source_cell(j, lo);
        return KC[cell * (P.n_head_kv * P.dk / 8u) + kvh * P.dk / 8u + w4];
    }
    let x = P.k_off + (tok0() + j - n_scan) * P.n_head_kv * P.dk + kvh * P.dk + 8u * w4;
    return pack8(x);
}

// 1 when the store has no values: each value is the first `dv` elements of its key head (the
// fifth word of the scan info).
fn values_in_keys() -> bool {
    return S[P.info_off + 4u] != 0u;
}

// Words `4·w4 .. 4·w4 + 4` of KV head `kvh`'s value of source `j`.
fn value_words4(j: u32, n_scan: u32, lo: u32, kvh: u32, w4: u32) -> vec4<u32> {
    if (values_in_keys()) {
        return key_words4(j, n_scan, lo, kvh, w4);
    }
    if (j < n_scan) {
        let cell = source_cell(j, lo);
        return VC[cell * (P.n_head_kv * P.dv / 8u) + kvh * P.dv / 8u + w4];
    }
    let x = P.v_off + (tok0() + j - n_scan) * P.n_head_kv * P.dv + kvh * P.dv + 8u * w4;
    return pack8(x);
}

// A[x .. x + 8] as f16 pairs.
fn pack8(x: u32) -> vec4<u32> {
    return vec4<u32>(
        pack_f32(A[x], A[x + 1u]),
        pack_f32(A[x + 2u], A[x + 3u]),
        pack_f32(A[x + 4u], A[x + 5u]),
        pack_f32(A[x + 6u], A[x + 7u]),
    );
}

// The dot product of two sets of eight f16 values.
fn dot8(a: vec4<u32>, b: vec4<u32>) -> f32 {
    let s = unpack2x16float(a.x) * unpack2x16float(b.x) + unpack2x16float(a.y) * unpack2x16float(b.y)
        + unpack2x16float(a.z) * unpack2x16float(b.z) + unpack2x16float(a.w) * unpack2x16float(b.w);
    return s.x + s.y;
}
