// Flash attention for prompts: one workgroup per tile of 8 queries of one head. Queries, keys
// and values pass through workgroup memory as f16, eight values to a vec4<u32>, 8 sources at
// a time and 256 values of a head at a time (wider heads, up to 1024, in chunks: the scores
// summed over key chunks, the outputs accumulated per value chunk); each of the 64 invocations
// scores one (query, source) pair, one invocation per query updates that query's running max
// and sum (online softmax), and every invocation rescales and accumulates 8-value groups of
// its query's output (groups kj, kj + 8, … of every chunk). Reading eight values per load
// keeps workgroup-memory traffic low (and software rasterisers, which load one lane at a
// time, fast); the chunks keep workgroup memory at 12 KiB whatever the head width. Query head
// `h` reads KV head `h / (n_head / n_head_kv)`. Head widths are multiples of 8 up to 256·VCH
// for the values (the host sets VCH per variant) and 1024 for the keys. An attention sink (one
// logit per query head, `has_sinks`) joins each query's running max and sum once, after the
// last tile, with no value (as the CPU folds it in). Expects attention_common.wgsl before it.

// The sinks' f32 bits, one per query head (a placeholder without sinks).
@group(0) @binding(6) var<storage, read> SK: array<u32>;

const QT: u32 = 8u;
const KT: u32 = 8u;
// vec4<u32>s per chunk of a query, key or value row (256 f16 values).
const ROW: u32 = 32u;
// Value chunks of this variant (set by the host), and output groups per invocation.
const VCH: u32 = 1u;
const NACC: u32 = 4u;

var<workgroup> qs: array<vec4<u32>, 256>;
var<workgroup> ks: array<vec4<u32>, 256>;
var<workgroup> vs: array<vec4<u32>, 256>;
// ps[qi·2 + k/4][k%4]: query qi's score, then weight, of the tile's source k.
var<workgroup> ps: array<vec4<f32>, 16>;
var<workgroup> kpos: array<i32, 8>;
var<workgroup> mrow: array<f32, 8>;
var<workgroup> lrow: array<f32, 8>;
var<workgroup> rrow: array<f32, 8>;

// Eight output values of one query (an 8-value group of its head).
struct Acc8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// `a` plus the tile's weighted values of group `g` of the loaded value chunk, weights p0
// (sources 0..4) and p1 (4..8).
fn pv_group(a: Acc8, g: u32, p0: vec4<f32>, p1: vec4<f32>) -> Acc8 {
    var lo = a.lo;
    var hi = a.hi;
    for (var k = 0u; k < KT; k++) {
        let v = vs[k * ROW + g];
        let pk = select(p1[k & 3u], p0[k & 3u], k < 4u);
        lo += pk * vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y));
        hi += pk * vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w));
    }
    return Acc8(lo, hi);
}

// Writes 8-value group `g` of the normalised output of the sequence group's query `tq`.
fn store_group(tq: u32, h: u32, g: u32, a: Acc8, inv: f32) {
    let o = P.out_off + (tok0() + tq) * P.n_head * P.dv + h * P.dv + 8u * g;
    for (var c = 0u; c < 4u; c++) {
        A[o + c] = a.lo[c] * inv;
        A[o + 4u + c] = a.hi[c] * inv;
    }
}

// Loads chunk `c` (`cw` words) of the tile's queries into `qs`.
fn load_queries(lid: u32, t0: u32, h: u32, c: u32, cw: u32) {
    let qw = P.n_head * P.dk;
    for (var idx = lid; idx < QT * cw; idx += 64u) {
        let qi = idx / cw;
        let w4 = idx % cw;
        let t = t0 + qi;
        var words = vec4<u32>(0u);
        if (t < n_tok()) {
            words = pack8(P.q_off + (tok0() + t) * qw + h * P.dk + 8u * (c * ROW + w4));
        }
        qs[qi * ROW + w4] = words;
    }
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wg.y;
    let kvh = h / (P.n_head / P.n_head_kv);
    let t0 = wg.x * QT;
    let lo = S[P.info_off];
    let n_scan = S[P.info_off + 1u];
    let dk8 = P.dk / 8u;
    let dv8 = P.dv / 8u;
    let kch = (dk8 + ROW - 1u) / ROW;
    if (kch == 1u) {
        load_queries(lid.x, t0, h, 0u, dk8);
    }
    if (lid.x < QT) {
        mrow[lid.x] = NEG;
        lrow[lid.x] = 0.0;
    }
    let qi = lid.x / KT;
    let kj = lid.x % KT;
    let tq = t0 + qi;
    var pq = -1;
    if (tq < n_tok()) {
        pq = position(tq);
    }
    var acc: array<Acc8, NACC>;
    for (var i = 0u; i < NACC; i++) {
        acc[i] = Acc8(vec4<f32>(0.0), vec4<f32>(0.0));
    }
    // Batch positions increase, so no query of this tile sees batch sources past its last one.
    let src_end = n_scan + min(n_tok(), t0 + QT);
    for (var s0 = 0u; s0 < src_end; s0 += KT) {
        var qk = 0.0;
        for (var c = 0u; c < kch; c++) {
            let cw = min(ROW, dk8 - c * ROW);
            workgroupBarrier();
            if (kch > 1u) {
                load_queries(lid.x, t0, h, c, cw);
            }
            for (var idx = lid.x; idx < KT * cw; idx += 64u) {
                let j = s0 + idx / cw;
                var words = vec4<u32>(0u);
                if (j < src_end) {
                    words = key_words4(j, n_scan, lo, kvh, c * ROW + idx % cw);
                }
                ks[(idx / cw) * ROW + idx % cw] = words;
            }
            if (c == 0u && lid.x < KT) {
                var p = -1;
                if (s0 + lid.x < src_end) {
                    p = source_pos(s0 + lid.x, lo, n_scan);
                }
                kpos[lid.x] = p;
            }
            workgroupBarrier();
            if (tq < n_tok() && visible(pq, kpos[kj])) {
                for (var w = 0u; w < cw; w++) {
                    qk += dot8(qs[qi * ROW + w], ks[kj * ROW + w]);
                }
            }
        }
        var s = NEG;
        if (tq < n_tok() && visible(pq, kpos[kj])) {
            s = cap(qk * P.scale);
        }
        ps[lid.x / 4u][lid.x % 4u] = s;
        workgroupBarrier();
        if (lid.x < QT) {
            let m_old = mrow[lid.x];
            let s0v = ps[lid.x * 2u];
            let s1v = ps[lid.x * 2u + 1u];
            let m_new = max(m_old, max(max(max(s0v.x, s0v.y), max(s0v.z, s0v.w)),
                max(max(s1v.x, s1v.y), max(s1v.z, s1v.w))));
            // Masked sources (NEG) weigh nothing, also while every score so far is masked.
            let e0 = select(vec4<f32>(0.0), exp(s0v - m_new), s0v > vec4<f32>(NEG));
            let e1 = select(vec4<f32>(0.0), exp(s1v - m_new), s1v > vec4<f32>(NEG));
            ps[lid.x * 2u] = e0;
            ps[lid.x * 2u + 1u] = e1;
            let r = exp(m_old - m_new);
            rrow[lid.x] = r;
            lrow[lid.x] = lrow[lid.x] * r + dot(e0 + e1, vec4<f32>(1.0));
            mrow[lid.x] = m_new;
        }
        workgroupBarrier();
        let r = rrow[qi];
        let p0 = ps[qi * 2u];
        let p1 = ps[qi * 2u + 1u];
        for (var i = 0u; i < NACC; i++) {
            acc[i] = Acc8(acc[i].lo * r, acc[i].hi * r);
        }
        for (var c = 0u; c < VCH; c++) {
            if (c * ROW < dv8) {
                let cw = min(ROW, dv8 - c * ROW);
                workgroupBarrier();
                for (var idx = lid.x; idx < KT * cw; idx += 64u) {
                    let j = s0 + idx / cw;
                    var words = vec4<u32>(0u);
                    if (j < src_end) {
                        words = value_words4(j, n_scan, lo, kvh, c * ROW + idx % cw);
                    }
                    vs[(idx / cw) * ROW + idx % cw] = words;
                }
                workgroupBarrier();
                for (var i = 0u; i < 4u; i++) {
                    if (kj + 8u * i < cw) {
                        acc[4u * c + i] = pv_group(acc[4u * c + i], kj + 8u * i, p0, p1);
                    }
                }
            }
        }
    }
    workgroupBarrier();
    // The sink: a score with no value, after every key. rrow becomes the factor that rescales
    // the outputs to the new max.
    if (lid.x < QT) {
        var r = 1.0;
        if (P.has_sinks != 0u) {
            let sink = bitcast<f32>(SK[h]);
            let m_old = mrow[lid.x];
            let m_new = max(m_old, sink);
            r = exp(m_old - m_new);
            lrow[lid.x] = lrow[lid.x] * r + exp(sink - m_new);
            mrow[lid.x] = m_new;
        }
        rrow[lid.x] = r;
    }
    workgroupBarrier();
    if (tq < n_tok()) {
        let l = lrow[qi];
        var inv = 0.0;
        if (l > 0.0) {
            inv = rrow[qi] / l;
        }
        for (var c = 0u; c < VCH; c++) {
            for (var i = 0u; i < 4u; i++) {
                let g = c * ROW + kj + 8u * i;
                if (kj + 8u * i < ROW && g < dv8) {
                    store_group(tq, h, g, acc[4u * c + i], inv);
                }
            }
        }
    }
}
