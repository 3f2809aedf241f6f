// Flash attention for decoding (split-K): the sources of one query are split across
// `n_split()` workgroups per head (chosen by the host each step from the number of sources); each walks its share 64 sources at a time (one score per
// invocation, max and sum by trees in workgroup memory, online softmax across tiles) and
// writes its partial max, sum and unnormalised output to `PT`; attention_reduce.wgsl combines
// them. Query head `h` reads KV head `h / (n_head / n_head_kv)`.
// Expects attention_common.wgsl before it.

@group(0) @binding(6) var<storage, read_write> PT: array<f32>;

const WG: u32 = 64u;

var<workgroup> q: array<f32, 256>;
var<workgroup> red: array<f32, 64>;
var<workgroup> pw: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let split = wg.x;
    let h = wg.y;
    let t = wg.z;
    let kvh = h / (P.n_head / P.n_head_kv);
    let lo = S[P.info_off];
    let n_scan = S[P.info_off + 1u];
    let n_src = n_scan + t + 1u;
    let chunk = (n_src + n_split() - 1u) / n_split();
    let s_begin = split * chunk;
    let s_end = min(n_src, s_begin + chunk);
    let pq = position(t);
    let xq = P.q_off + t * P.n_head * P.dk + h * P.dk;
    for (var d = lid.x; d < P.dk; d += WG) {
        q[d] = unpack2x16float(pack_f32(A[xq + d], 0.0)).x;
    }
    var m = NEG;
    var l = 0.0;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    let dk2 = P.dk / 2u;
    for (var s0 = s_begin; s0 < s_end; s0 += WG) {
        workgroupBarrier();
        let j = s0 + lid.x;
        var s = NEG;
        if (j < s_end) {
            let pk = source_pos(j, lo, n_scan);
            if (visible(pq, pk)) {
                var dot = 0.0;
                for (var w = 0u; w < dk2; w++) {
                    let k = unpack2x16float(key_word(j, n_scan, lo, kvh, w));
                    dot += q[2u * w] * k.x + q[2u * w + 1u] * k.y;
                }
                s = cap(dot * P.scale);
            }
        }
        red[lid.x] = s;
        workgroupBarrier();
        for (var st = WG / 2u; st > 0u; st >>= 1u) {
            if (lid.x < st) {
                red[lid.x] = max(red[lid.x], red[lid.x + st]);
            }
            workgroupBarrier();
        }
        let m_new = max(m, red[0]);
        var p = 0.0;
        if (s > NEG) {
            p = exp(s - m_new);
        }
        workgroupBarrier();
        pw[lid.x] = p;
        red[lid.x] = p;
        workgroupBarrier();
        for (var st = WG / 2u; st > 0u; st >>= 1u) {
            if (lid.x < st) {
                red[lid.x] += red[lid.x + st];
            }
            workgroupBarrier();
        }
        let r = exp(m - m_new);
        l = l * r + red[0];
        m = m_new;
        let n_here = min(WG, s_end - s0);
        for (var i = 0u; i < P.dv / WG + select(0u, 1u, P.dv % WG != 0u); i++) {
            let d = lid.x + WG * i;
            if (d < P.dv) {
                var a = acc[i] * r;
                for (var k = 0u; k < n_here; k++) {
                    let pk = pw[k];
                    if (pk > 0.0) {
                        let v = unpack2x16float(value_word(s0 + k, n_scan, lo, kvh, d / 2u));
                        a += pk * select(v.x, v.y, (d & 1u) == 1u);
                    }
                }
                acc[i] = a;
            }
        }
    }
    let stride = P.dv + 2u;
    let o = ((t * P.n_head + h) * 16u + split) * stride;
    if (lid.x == 0u) {
        PT[o] = m;
        PT[o + 1u] = l;
    }
    for (var i = 0u; i < 4u; i++) {
        let d = lid.x + WG * i;
        if (d < P.dv) {
            PT[o + 2u + d] = acc[i];
        }
    }
}
