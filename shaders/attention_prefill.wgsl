// Flash attention for prompts: one workgroup per tile of 8 queries of one head. Keys and values
// pass through workgroup memory 8 sources at a time (as f16 pairs); each of the 64
// invocations scores one (query, source) pair, one invocation per query updates that query's
// running max and sum (online softmax), and every invocation rescales and accumulates its
// share of the outputs. Query head `h` reads KV head `h / (n_head / n_head_kv)`.
// Expects attention_common.wgsl before it.

const QT: u32 = 8u;
const KT: u32 = 8u;
const WORDS: u32 = 128u;

var<workgroup> qs: array<u32, 1024>;
var<workgroup> ks: array<u32, 1024>;
var<workgroup> vs: array<u32, 1024>;
var<workgroup> ps: array<f32, 64>;
var<workgroup> kpos: array<i32, 8>;
var<workgroup> mrow: array<f32, 8>;
var<workgroup> lrow: array<f32, 8>;
var<workgroup> rrow: array<f32, 8>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wg.y;
    let kvh = h / (P.n_head / P.n_head_kv);
    let t0 = wg.x * QT;
    let lo = S[P.info_off];
    let n_scan = S[P.info_off + 1u];
    let dk2 = P.dk / 2u;
    let dv2 = P.dv / 2u;
    let qw = P.n_head * P.dk;
    for (var idx = lid.x; idx < QT * dk2; idx += 64u) {
        let qi = idx / dk2;
        let w = idx % dk2;
        let t = t0 + qi;
        var word = 0u;
        if (t < P.n_tok) {
            let x = P.q_off + t * qw + h * P.dk + 2u * w;
            word = pack_f32(A[x], A[x + 1u]);
        }
        qs[qi * WORDS + w] = word;
    }
    if (lid.x < QT) {
        mrow[lid.x] = NEG;
        lrow[lid.x] = 0.0;
    }
    let qi = lid.x / KT;
    let kj = lid.x % KT;
    let tq = t0 + qi;
    var pq = -1;
    if (tq < P.n_tok) {
        pq = position(tq);
    }
    var acc: array<f32, 32>;
    // Batch positions increase, so no query of this tile sees batch sources past its last one.
    let src_end = n_scan + min(P.n_tok, t0 + QT);
    for (var s0 = 0u; s0 < src_end; s0 += KT) {
        workgroupBarrier();
        for (var idx = lid.x; idx < KT * dk2; idx += 64u) {
            let j = s0 + idx / dk2;
            var word = 0u;
            if (j < src_end) {
                word = key_word(j, n_scan, lo, kvh, idx % dk2);
            }
            ks[(idx / dk2) * WORDS + idx % dk2] = word;
        }
        for (var idx = lid.x; idx < KT * dv2; idx += 64u) {
            let j = s0 + idx / dv2;
            var word = 0u;
            if (j < src_end) {
                word = value_word(j, n_scan, lo, kvh, idx % dv2);
            }
            vs[(idx / dv2) * WORDS + idx % dv2] = word;
        }
        if (lid.x < KT) {
            var p = -1;
            if (s0 + lid.x < src_end) {
                p = source_pos(s0 + lid.x, lo, n_scan);
            }
            kpos[lid.x] = p;
        }
        workgroupBarrier();
        var s = NEG;
        if (tq < P.n_tok && visible(pq, kpos[kj])) {
            var dot = 0.0;
            for (var w = 0u; w < dk2; w++) {
                let a = unpack2x16float(qs[qi * WORDS + w]);
                let b = unpack2x16float(ks[kj * WORDS + w]);
                dot += a.x * b.x + a.y * b.y;
            }
            s = cap(dot * P.scale);
        }
        ps[lid.x] = s;
        workgroupBarrier();
        if (lid.x < QT) {
            let m_old = mrow[lid.x];
            var m_new = m_old;
            for (var k = 0u; k < KT; k++) {
                m_new = max(m_new, ps[lid.x * KT + k]);
            }
            var sum = 0.0;
            for (var k = 0u; k < KT; k++) {
                let sk = ps[lid.x * KT + k];
                var p = 0.0;
                if (sk > NEG) {
                    p = exp(sk - m_new);
                }
                ps[lid.x * KT + k] = p;
                sum += p;
            }
            let r = exp(m_old - m_new);
            rrow[lid.x] = r;
            lrow[lid.x] = lrow[lid.x] * r + sum;
            mrow[lid.x] = m_new;
        }
        workgroupBarrier();
        let r = rrow[qi];
        for (var i = 0u; i < P.dv / KT; i++) {
            let d = kj + KT * i;
            var a = acc[i] * r;
            for (var k = 0u; k < KT; k++) {
                let v = unpack2x16float(vs[k * WORDS + d / 2u]);
                a += ps[qi * KT + k] * select(v.x, v.y, (d & 1u) == 1u);
            }
            acc[i] = a;
        }
    }
    workgroupBarrier();
    if (tq < P.n_tok) {
        let l = lrow[qi];
        var inv = 0.0;
        if (l > 0.0) {
            inv = 1.0 / l;
        }
        let o = P.out_off + tq * P.n_head * P.dv + h * P.dv;
        for (var i = 0u; i < P.dv / KT; i++) {
            A[o + kj + KT * i] = acc[i] * inv;
        }
    }
}
