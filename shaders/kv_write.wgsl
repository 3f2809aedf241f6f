// Stores one sequence group's keys and values (its `n_tok` tokens from `tok0`, the seventh
// and sixth words of the scan info; rounded to f16 pairs) in their cells, and records each
// cell's position: in a pool the cells the host gave the group's tokens, listed after its
// cached ones (the ninth word of the scan info: the list; the second: how many cached); in a
// ring of `n_cells` cells at cell `base` (third and eighth words) the cell
// `base + pos % n_cells`. Runs after the layer's attention, which read the batch's K/V from
// the activations, so a ring never overwrites a cell that a query of the same batch still
// needs. A step of more tokens than a ring has cells maps several of its tokens to one cell:
// only the last of them writes it (tokens are written in parallel, so "the last write wins"
// would be a race).

// `KvWriteUniforms`: declared by the host from engine/src/gpu/params.rs, prepended.
@group(0) @binding(0) var<storage, read_write> A: array<f32>;
@group(0) @binding(1) var<storage, read_write> KC: array<u32>;
@group(0) @binding(2) var<storage, read_write> VC: array<u32>;
@group(0) @binding(3) var<storage, read_write> CP: array<i32>;
@group(0) @binding(4) var<storage, read> S: array<u32>;
@group(0) @binding(5) var<uniform> P: KvWriteUniforms;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;
    let t = gid.y;
    let t0 = S[P.info_off + 5u];
    let n_tok = S[P.info_off + 6u];
    if (t >= n_tok) {
        return;
    }
    let pos = bitcast<i32>(S[P.pos_off + t0 + t]);
    let list = S[P.info_off + 8u];
    var cell = 0u;
    if (list != 0xffffffffu) {
        cell = S[list + 2u * (S[P.info_off + 1u] + t)];
    } else {
        let n_cells = S[P.info_off + 2u];
        cell = S[P.info_off + 7u] + u32(pos) % n_cells;
        // Positions increase: only tokens at least `n_cells` later can share the cell.
        for (var u = n_tok - 1u; u > t; u--) {
            let d = u32(bitcast<i32>(S[P.pos_off + t0 + u]) - pos);
            if (d < n_cells) {
                break;
            }
            if (d % n_cells == 0u) {
                return;
            }
        }
    }
    let kw2 = P.kw / 2u;
    let vw2 = P.vw / 2u;
    if (w < kw2) {
        let x = P.k_off + (t0 + t) * P.kw + 2u * w;
        KC[cell * kw2 + w] = pack2x16float(vec2<f32>(A[x], A[x + 1u]));
    }
    // A store without values (the fifth scan-info word set) gets keys only.
    if (w < vw2 && S[P.info_off + 4u] == 0u) {
        let x = P.v_off + (t0 + t) * P.vw + 2u * w;
        VC[cell * vw2 + w] = pack2x16float(vec2<f32>(A[x], A[x + 1u]));
    }
    if (w == 0u) {
        CP[cell] = pos;
    }
}
