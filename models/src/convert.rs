//! `tessera convert --kv-heads G`: an MHA (or GQA) model made GQA/MQA by mean-pooling its key
//! and value heads, the starting point the GQA paper (Ainslie et al., 2023) uptrains from. The
//! `H` KV heads of every attention layer are cut into `G` groups of `H/G` consecutive heads
//! (query head `i` keeps reading the group that held its old KV head), and each group's K and V
//! projection rows, and biases, become their mean. Per-head K norms (Qwen3, Gemma 3) are shared
//! by all heads already and stay. Quantized weights are dequantized, pooled and quantized
//! again to their own type. Everything else is copied; `attention.head_count_kv` becomes `G`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use tessera_engine::gguf::{GgufFile, MetaValue, TensorEntry, TensorInfo, writer};
use tessera_engine::quant;

use crate::hparams::HParams;
use crate::temp_output::TempOutput;
use crate::{ModelError, Result};

/// What a conversion did.
#[derive(Clone, Debug, PartialEq)]
pub struct KvPoolSummary {
    /// KV heads before.
    pub from_heads: usize,
    /// KV heads after.
    pub to_heads: usize,
    /// Tensors pooled (K and V weights and biases).
    pub pooled: usize,
    /// Tensors copied as they were.
    pub copied: usize,
}

/// Pool the KV heads of `input` to `g` heads per layer and write the model to `output`.
pub fn pool_kv_heads(input: &Path, output: &Path, g: usize) -> Result<KvPoolSummary> {
    let file = GgufFile::open(input)?;
    let md = file.metadata();
    let hp = HParams::from_gguf(md)?;
    let arch = md.str("general.architecture")?.to_string();
    let key = format!("{arch}.attention.head_count_kv");
    let h = hp.n_head_kv;
    if let Some(MetaValue::Array(_)) = md.get(&key) {
        return Err(ModelError::InvalidInput(format!(
            "{key} differs by layer: pooling such a model is not supported"
        )));
    }
    if g == 0 || g >= h || !h.is_multiple_of(g) {
        return Err(ModelError::InvalidInput(format!(
            "--kv-heads {g}: the model has {h} KV heads per layer; give a divisor of {h} below it"
        )));
    }
    if file
        .tensor_infos()
        .iter()
        .any(|t| t.name.contains("attn_qkv"))
    {
        return Err(ModelError::InvalidInput(
            "this model fuses Q, K and V in one tensor (attn_qkv); pooling it is not supported"
                .into(),
        ));
    }
    if file
        .tensor_infos()
        .iter()
        .any(|t| t.name.contains("attn_kv_"))
    {
        return Err(ModelError::InvalidInput(
            "this model compresses K and V through a latent (MLA): its heads are not pooled \
             this way"
                .into(),
        ));
    }
    // Which tensors are pooled, and the head width of their rows.
    let pool_width = |name: &str| -> Option<usize> {
        let rest = name.strip_prefix("blk.")?;
        let part = &rest[rest.find('.')? + 1..];
        match part {
            "attn_k.weight" | "attn_k.bias" => Some(hp.head_dim),
            "attn_v.weight" | "attn_v.bias" => Some(hp.head_dim_v),
            // A K norm over all heads' values (not one shared head-wide norm) is per head.
            "attn_k_norm.weight"
                if file
                    .tensor_info(name)
                    .is_some_and(|t| t.shape[0] == (h * hp.head_dim) as u64) =>
            {
                Some(hp.head_dim)
            }
            _ => None,
        }
    };
    let mut metadata = md.entries().to_vec();
    for (k, v) in metadata.iter_mut() {
        if *k == key {
            *v = MetaValue::U32(g as u32);
        }
    }
    if !metadata.iter().any(|(k, _)| *k == key) {
        metadata.push((key.clone(), MetaValue::U32(g as u32)));
    }
    // Shapes after pooling: K/V rows (or bias elements) shrink by H/G.
    let infos = file.tensor_infos();
    let shapes: Vec<Vec<u64>> = infos
        .iter()
        .map(|t| {
            let mut s = t.shape.clone();
            if pool_width(&t.name).is_some() {
                let last = if s.len() >= 2 { 1 } else { 0 };
                s[last] = s[last] / h as u64 * g as u64;
            }
            s
        })
        .collect();
    for t in infos {
        if let Some(w) = pool_width(&t.name) {
            let rows = if t.shape.len() >= 2 {
                t.shape[1]
            } else {
                t.shape[0]
            };
            if rows != (h * w) as u64 || t.shape.len() > 2 {
                return Err(ModelError::BadShape {
                    name: t.name.clone(),
                    expected: vec![t.shape[0] as usize, h * w],
                    found: t.shape.iter().map(|&d| d as usize).collect(),
                });
            }
            if quant::reference(t.dtype).is_none() {
                return Err(ModelError::UnsupportedDType {
                    name: t.name.clone(),
                    dtype: t.dtype,
                });
            }
        }
    }
    let sizes: Vec<u64> = infos
        .iter()
        .zip(&shapes)
        .map(|(t, s)| {
            let rows: u64 = s[1..].iter().product();
            t.dtype.row_bytes(s[0]).unwrap_or(0) * rows
        })
        .collect();
    let entries: Vec<TensorEntry> = infos
        .iter()
        .zip(&shapes)
        .zip(&sizes)
        .map(|((t, s), &len)| TensorEntry {
            name: &t.name,
            dtype: t.dtype,
            shape: s,
            len,
        })
        .collect();
    let alignment = file.header().alignment;
    let (head, _, _) = writer::header(file.header().version.max(3), alignment, &metadata, &entries);
    let io = |e: std::io::Error| ModelError::InvalidInput(format!("{}: {e}", output.display()));
    let tmp = TempOutput::new(output).map_err(io)?;
    let mut out = BufWriter::with_capacity(8 << 20, File::create(&tmp.path).map_err(io)?);
    out.write_all(&head).map_err(io)?;
    let (mut pooled, mut copied) = (0, 0);
    for (t, &size) in infos.iter().zip(&sizes) {
        let data = file.view(t);
        match pool_width(&t.name) {
            Some(w) => {
                let bytes = pool_rows(t, data.data(), h, g, w);
                debug_assert_eq!(bytes.len() as u64, size);
                out.write_all(&bytes).map_err(io)?;
                pooled += 1;
            }
            None => {
                out.write_all(data.data()).map_err(io)?;
                copied += 1;
            }
        }
        let pad = size.next_multiple_of(alignment) - size;
        out.write_all(&vec![0u8; pad as usize]).map_err(io)?;
    }
    let f = out.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)?;
    drop(f);
    tmp.finish().map_err(io)?;
    Ok(KvPoolSummary {
        from_heads: h,
        to_heads: g,
        pooled,
        copied,
    })
}

/// The mean of each group of `h / g` consecutive heads (`w` rows each, or `w` elements of a
/// bias), encoded in the tensor's own type.
fn pool_rows(t: &TensorInfo, data: &[u8], h: usize, g: usize, w: usize) -> Vec<u8> {
    let ops = quant::reference(t.dtype).expect("checked");
    // A matrix has `h · w` rows; a bias or norm of `h · w` values is as many rows of one.
    let (row_len, n_rows) = if t.shape.len() >= 2 {
        (t.shape[0] as usize, t.shape[1] as usize)
    } else {
        (1, h * w)
    };
    let row_bytes = t.dtype.row_bytes(row_len as u64).expect("a valid file") as usize;
    let mut rows = vec![0f32; row_len * n_rows];
    for (r, dst) in rows.chunks_exact_mut(row_len).enumerate() {
        (ops.dequantize_row)(&data[r * row_bytes..(r + 1) * row_bytes], dst);
    }
    let per = h / g;
    let mut pooled = vec![0f32; row_len * w * g];
    for gi in 0..g {
        for i in 0..w {
            let dst = &mut pooled[(gi * w + i) * row_len..][..row_len];
            for hi in gi * per..(gi + 1) * per {
                let src = &rows[(hi * w + i) * row_len..][..row_len];
                for (d, s) in dst.iter_mut().zip(src) {
                    *d += s;
                }
            }
            dst.iter_mut().for_each(|d| *d /= per as f32);
        }
    }
    let mut out = vec![0u8; row_bytes * w * g];
    for (src, dst) in pooled
        .chunks_exact(row_len)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        (ops.quantize_row)(src, dst);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TinyLlama;
    use tessera_engine::DType;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tessera-kvpool-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn f32s(file: &GgufFile, name: &str) -> Vec<f32> {
        let t = file.tensor(name).unwrap();
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    #[test]
    fn mha_becomes_gqa_and_mqa_with_mean_heads() {
        let d = dir("ok");
        let src = d.join("mha.gguf");
        let tiny = TinyLlama {
            n_head: 4,
            n_head_kv: 4,
            matrix_dtype: DType::F32,
            ..Default::default()
        };
        std::fs::write(&src, tiny.bytes()).unwrap();
        let before = GgufFile::open(&src).unwrap();
        let k0 = f32s(&before, "blk.0.attn_k.weight");
        let (e, w) = (tiny.n_embd, tiny.head_dim());
        for g in [2, 1] {
            let out = d.join(format!("g{g}.gguf"));
            let s = pool_kv_heads(&src, &out, g).unwrap();
            assert_eq!(
                (s.from_heads, s.to_heads, s.pooled),
                (4, g, 2 * tiny.n_layer)
            );
            let after = GgufFile::open(&out).unwrap();
            assert_eq!(
                after
                    .metadata()
                    .u32("llama.attention.head_count_kv")
                    .unwrap(),
                g as u32
            );
            let k = f32s(&after, "blk.0.attn_k.weight");
            assert_eq!(k.len(), e * w * g);
            // Row i of new head 0 is the mean of row i of the old heads 0 .. 4/g.
            let per = 4 / g;
            for i in [0, w - 1] {
                for c in [0, e - 1] {
                    let want: f32 =
                        (0..per).map(|hh| k0[(hh * w + i) * e + c]).sum::<f32>() / per as f32;
                    assert!((k[i * e + c] - want).abs() < 1e-6);
                }
            }
            crate::Model::load(&out, &Default::default()).expect("the pooled model loads");
        }
        std::fs::remove_dir_all(&d).ok();
    }

    /// Logits of every position of a short prompt.
    fn logits(path: &std::path::Path) -> Vec<f32> {
        use crate::{Context, ContextParams, Model};
        let m = std::sync::Arc::new(Model::load(path, &Default::default()).unwrap());
        let mut ctx = Context::new(
            m,
            ContextParams {
                n_ctx: 16,
                n_threads: 1,
                ..Default::default()
            },
        )
        .unwrap();
        ctx.eval(&[1, 5, 9, 3, 7, 2], true).unwrap();
        (0..6).flat_map(|i| ctx.logits_row(i).to_vec()).collect()
    }

    #[test]
    fn pooling_equal_heads_changes_nothing() {
        // An MHA model whose KV heads come in equal pairs computes the same as its GQA
        // version with one head per pair: what proves the row layout and the query → KV head
        // mapping (pooling the wrong heads, or in the wrong order, changes the logits).
        let d = dir("equal");
        let tiny = TinyLlama {
            n_head: 4,
            n_head_kv: 4,
            matrix_dtype: DType::F32,
            ..Default::default()
        };
        let (e, hd) = (tiny.n_embd, tiny.head_dim());
        let mut w = tiny.writer();
        for l in 0..tiny.n_layer {
            for n in ["attn_k.weight", "attn_v.weight"] {
                let t = crate::testing::tensor_mut(&mut w, &format!("blk.{l}.{n}"));
                let head = hd * e * 4;
                for pair in [0, 2] {
                    let (a, b) = (pair * head, (pair + 1) * head);
                    let src = t.data[a..b].to_vec();
                    t.data[b..b + head].copy_from_slice(&src);
                }
            }
        }
        let src = d.join("pairs.gguf");
        std::fs::write(&src, w.to_bytes()).unwrap();
        let out = d.join("gqa.gguf");
        pool_kv_heads(&src, &out, 2).unwrap();
        let (a, b) = (logits(&src), logits(&out));
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff < 1e-4, "pooled equal heads moved the logits by {diff}");
        // Pooling unequal heads does move them (the comparison can fail).
        pool_kv_heads(&src, &out, 1).unwrap();
        let c = logits(&out);
        let moved = a
            .iter()
            .zip(&c)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(moved > 1e-2, "{moved}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn biases_are_pooled_per_head() {
        use tessera_engine::gguf::MetaValue;
        let d = dir("bias");
        let tiny = TinyLlama {
            n_head: 4,
            n_head_kv: 4,
            matrix_dtype: DType::F32,
            ..Default::default()
        };
        let kw = 4 * tiny.head_dim();
        let mut w = tiny.writer();
        for l in 0..tiny.n_layer {
            for (n, scale) in [("attn_k.bias", 1.0f32), ("attn_v.bias", 2.0)] {
                let v: Vec<u8> = (0..kw)
                    .flat_map(|i| (i as f32 * scale).to_le_bytes())
                    .collect();
                w = w.tensor(&format!("blk.{l}.{n}"), DType::F32, &[kw as u64], v);
            }
        }
        crate::testing::set_kv(&mut w, "general.name", MetaValue::String("biased".into()));
        let src = d.join("b.gguf");
        std::fs::write(&src, w.to_bytes()).unwrap();
        pool_kv_heads(&src, &d.join("g2.gguf"), 2).unwrap();
        let f = GgufFile::open(d.join("g2.gguf")).unwrap();
        let hd = tiny.head_dim();
        let b = f32s(&f, "blk.1.attn_v.bias");
        assert_eq!(b.len(), 2 * hd);
        // Heads 0 and 1 averaged: element i of group 0 is 2·(i + (hd + i)) / 2.
        for i in [0, hd - 1] {
            assert_eq!(b[i], (i + hd + i) as f32);
            assert_eq!(b[hd + i], (2 * hd + i + 3 * hd + i) as f32);
        }
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn impossible_poolings_are_refused() {
        let d = dir("bad");
        let src = d.join("gqa.gguf");
        std::fs::write(&src, TinyLlama::default().bytes()).unwrap(); // 4 heads on 2 KV heads
        for g in [0, 2, 3, 4] {
            let e = pool_kv_heads(&src, &d.join("x.gguf"), g).unwrap_err();
            assert!(e.to_string().contains("divisor"), "{g}: {e}");
        }
        assert!(!d.join("x.gguf").exists());
        // Quantized K/V (Q8_0) are pooled and re-encoded in Q8_0.
        let s = pool_kv_heads(&src, &d.join("mqa.gguf"), 1).unwrap();
        assert_eq!(s.to_heads, 1);
        let f = GgufFile::open(d.join("mqa.gguf")).unwrap();
        assert_eq!(
            f.tensor_info("blk.0.attn_v.weight").unwrap().dtype,
            DType::Q8_0
        );
        std::fs::remove_dir_all(&d).ok();
    }
}
