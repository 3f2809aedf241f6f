// Embedding lookup: row `token[t]` of the table, dequantized 32 values at a time
// (`dq_block`, appended by the host for the table's type), into output row `t` (the arena is
// read as vec4s: node offsets are multiples of 16 values, rows of 32). Tables too
// large for one binding come in row chunks; each chunk's dispatch writes the tokens whose rows
// it holds.

// `GetRowsUniforms`: declared by the host from engine/src/gpu/params.rs, prepended.
@group(0) @binding(0) var<storage, read_write> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<u32>;
@group(0) @binding(3) var<uniform> P: GetRowsUniforms;

var<private> put_base: u32;

fn put4(i: u32, v: vec4<f32>) {
    A[(put_base + i) / 4u] = v;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let blk = gid.x;
    let t = gid.y;
    if (blk >= P.n_cols / 32u || t >= P.n_tok) {
        return;
    }
    let tok = S[P.tok_off + t];
    if (tok < P.row0 || tok >= P.row0 + P.n_rows) {
        return;
    }
    put_base = P.out_off + t * P.n_cols + blk * 32u;
    dq_block((tok - P.row0) * P.row_bytes, blk);
}
