// Flash attention for decoding (split-K): the sources of one query are split across
// `n_split()` workgroups per head (chosen by the host each step from the number of sources);
// each walks its share 64 sources at a time (one score per invocation, eight key values per
// load; max and sum by trees in workgroup memory; online softmax across tiles; invocation g
// accumulates the 8-value output groups g and g + 64, eight values per load; heads up to 1024
// wide) and writes its partial max,
// sum and unnormalised output to `PT`; attention_reduce.wgsl combines them. Query head `h` reads KV head `h / (n_head / n_head_kv)`.
// Expects attention_common.wgsl before it.

@group(0) @binding(6) var<storage, read_write> PT: array<f32>;

const WG: u32 = 64u;

// The query, rounded to f16 as the CPU rounds it: q[w][c] is value 4·w + c (up to 1024).
var<workgroup> q: array<vec4<f32>, 256>;
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
    let xq = P.q_off + (tok0() + t) * P.n_head * P.dk + h * P.dk;
    for (var w = lid.x; w < P.dk / 4u; w += WG) {
        let x = xq + 4u * w;
        q[w] = vec4<f32>(
            unpack2x16float(pack_f32(A[x], A[x + 1u])),
            unpack2x16float(pack_f32(A[x + 2u], A[x + 3u])),
        );
    }
    var m = NEG;
    var l = 0.0;
    var acc_lo = vec4<f32>(0.0);
    var acc_hi = vec4<f32>(0.0);
    // Groups 64 .. 128 (value heads over 512 wide).
    var acc2_lo = vec4<f32>(0.0);
    var acc2_hi = vec4<f32>(0.0);
    let dk8 = P.dk / 8u;
    let dv8 = P.dv / 8u;
    for (var s0 = s_begin; s0 < s_end; s0 += WG) {
        workgroupBarrier();
        let j = s0 + lid.x;
        var s = NEG;
        if (j < s_end) {
            let pk = source_pos(j, lo, n_scan);
            if (visible(pq, pk)) {
                var qk = 0.0;
                for (var w = 0u; w < dk8; w++) {
                    let k = key_words4(j, n_scan, lo, kvh, w);
                    let a = q[2u * w];
                    let b = q[2u * w + 1u];
                    qk += dot(a, vec4<f32>(unpack2x16float(k.x), unpack2x16float(k.y)))
                        + dot(b, vec4<f32>(unpack2x16float(k.z), unpack2x16float(k.w)));
                }
                s = cap(qk * P.scale);
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
        if (lid.x < dv8) {
            let n_here = min(WG, s_end - s0);
            var a_lo = acc_lo * r;
            var a_hi = acc_hi * r;
            for (var k = 0u; k < n_here; k++) {
                let pk = pw[k];
                if (pk > 0.0) {
                    let v = value_words4(s0 + k, n_scan, lo, kvh, lid.x);
                    a_lo += pk * vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y));
                    a_hi += pk * vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w));
                }
            }
            acc_lo = a_lo;
            acc_hi = a_hi;
        }
        if (lid.x + WG < dv8) {
            let n_here = min(WG, s_end - s0);
            var a_lo = acc2_lo * r;
            var a_hi = acc2_hi * r;
            for (var k = 0u; k < n_here; k++) {
                let pk = pw[k];
                if (pk > 0.0) {
                    let v = value_words4(s0 + k, n_scan, lo, kvh, lid.x + WG);
                    a_lo += pk * vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y));
                    a_hi += pk * vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w));
                }
            }
            acc2_lo = a_lo;
            acc2_hi = a_hi;
        }
    }
    let stride = P.dv + 2u;
    let o = ((t * P.n_head + h) * 16u + split) * stride;
    if (lid.x == 0u) {
        PT[o] = m;
        PT[o + 1u] = l;
    }
    if (lid.x < dv8) {
        for (var c = 0u; c < 4u; c++) {
            PT[o + 2u + 8u * lid.x + c] = acc_lo[c];
            PT[o + 6u + 8u * lid.x + c] = acc_hi[c];
        }
    }
    if (lid.x + WG < dv8) {
        let g = lid.x + WG;
        for (var c = 0u; c < 4u; c++) {
            PT[o + 2u + 8u * g + c] = acc2_lo[c];
            PT[o + 6u + 8u * g + c] = acc2_hi[c];
        }
    }
}
