// The chosen experts' products of a mat_mul_id for prompts, grouped by expert: tiles as in
// matmul.wgsl but of 64 weight rows × 16 entries (an expert of a prompt chunk typically has
// a few to a few dozen entries, and a 64-wide tile would mostly multiply zeros), 64
// invocations each accumulating 8 rows × 2 entries, weights decoded by `dq_block` (appended by
// the host), over the (token, slot) entries that chose one expert, gathered on the GPU from
// the route node, so nothing goes to the host. Workgroup g (of a flat 2-D grid) takes output
// tile `g % row_groups` of entry tile `(g / row_groups) % tiles` of local expert
// `g / (row_groups · tiles)`, with `tiles` = ceil(tokens / 16) (an expert appears at most
// once per token). It counts the expert's entries
// (a counting sort over the route, in token order: each invocation scans a 64th of the
// entries, an exclusive prefix of the counts ranks them), returns at once when its entry tile
// is past the expert's count, else collects its tile's (token, slot) pair indices and runs
// the tiled product over them, gathering each entry's input row (shared: `x_slot` = 0, or the
// slot's part) and writing its outputs to `out[token][slot]`. Stacked weights in chunks of
// whole experts: one dispatch per chunk (`e0`, `n_chunk`), as in matvec_id.wgsl.

// `MatrixIdUniforms`: declared by the host from engine/src/gpu/params.rs, prepended
// (`row_groups`: output tiles of 64 rows).

// The arena as vec4s (node offsets are multiples of 16 values, rows multiples of 32).
@group(0) @binding(0) var<storage, read_write> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<uniform> P: MatrixIdUniforms;

const TILE: u32 = 64u;
// Entries per tile.
const E: u32 = 16u;
// Each invocation's count of the expert's entries, then their exclusive prefix.
var<workgroup> counts: array<u32, 64>;
// The expert's entries in all.
var<workgroup> total: u32;
// The tile's (token, slot) pair indices.
var<workgroup> entries: array<u32, 16>;
// This invocation's weight row's current 32-value block, decoded.
var<private> wv: array<vec4<f32>, 8>;

fn put4(i: u32, v: vec4<f32>) {
    wv[i / 4u] = v;
}

// The expert that pair `p` (token p / n_used, slot p % n_used) chose.
fn expert_of(p: u32) -> u32 {
    let t = p / P.n_used;
    let o = P.route_off + t * 2u * P.n_used + p % P.n_used;
    return u32(A[o / 4u][o % 4u]);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = wg.x + wg.y * P.grid_x;
    let n_tok = P.n_pairs / max(P.n_used, 1u);
    let tiles = (n_tok + E - 1u) / E;
    let ot = g % P.row_groups;
    let et = (g / P.row_groups) % tiles;
    let el = g / (P.row_groups * tiles);
    if (el >= P.n_chunk) {
        return;
    }
    let e = P.e0 + el;
    // Counting sort: this invocation's share of the pairs, in order.
    let per = (P.n_pairs + 63u) / 64u;
    let p0 = min(lid.x * per, P.n_pairs);
    let p1 = min(p0 + per, P.n_pairs);
    var c = 0u;
    for (var p = p0; p < p1; p++) {
        if (expert_of(p) == e) {
            c++;
        }
    }
    counts[lid.x] = c;
    workgroupBarrier();
    if (lid.x == 0u) {
        var s = 0u;
        for (var i = 0u; i < 64u; i++) {
            let n = counts[i];
            counts[i] = s;
            s += n;
        }
        total = s;
    }
    let n_e = workgroupUniformLoad(&total);
    let first = et * E;
    if (first >= n_e) {
        return;
    }
    let m = min(n_e - first, E);
    var rank = counts[lid.x];
    for (var p = p0; p < p1; p++) {
        if (expert_of(p) == e) {
            if (rank >= first && rank < first + E) {
                entries[rank - first] = p;
            }
            rank++;
        }
    }
    workgroupBarrier();

    // Each invocation one weight row: each block decoded once, then dotted with every
    // entry's input (no workgroup memory, no barrier in the product).
    let r = ot * TILE + lid.x;
    var xo: array<u32, 16>;
    var acc: array<f32, 16>;
    for (var t = 0u; t < m; t++) {
        let p = entries[t];
        xo[t] = (P.x_off + (p / P.n_used) * P.x_row + (p % P.n_used) * P.x_slot) / 4u;
        acc[t] = 0.0;
    }
    if (r >= P.n_out) {
        return;
    }
    let base = (el * P.n_out + r) * P.row_bytes;
    let n_blocks = P.n_in / 32u;
    for (var blk = 0u; blk < n_blocks; blk++) {
        dq_block(base, blk);
        for (var t = 0u; t < m; t++) {
            let x = xo[t] + blk * 8u;
            var s = dot(wv[0], A[x]) + dot(wv[1], A[x + 1u]);
            s += dot(wv[2], A[x + 2u]) + dot(wv[3], A[x + 3u]);
            s += dot(wv[4], A[x + 4u]) + dot(wv[5], A[x + 5u]);
            s += dot(wv[6], A[x + 6u]) + dot(wv[7], A[x + 7u]);
            acc[t] += s;
        }
    }
    for (var t = 0u; t < m; t++) {
        let o = P.out_off + entries[t] * P.n_out + r;
        A[o / 4u][o % 4u] = acc[t];
    }
}
