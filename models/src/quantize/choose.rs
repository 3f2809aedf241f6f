//! Which type each tensor gets: llama.cpp's rules (`src/llama-quant.cpp`, version 0.3.36 of
//! llama-cpp-python), so that a mix such as `Q4_K_M` picks, tensor by tensor, what
//! llama-quantize picks. Tensors are visited in llama.cpp's order ([`llama_order`]) because
//! some rules count the tensors of a kind seen so far.

use tessera_engine::DType;
use tessera_engine::gguf::{Metadata, TensorInfo};

use super::file_type::FileType;

/// What the rules need to know about the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFacts {
    /// `general.architecture`.
    pub arch: String,
    /// Layers (`block_count`).
    pub n_layer: usize,
    /// Query heads per KV head in layer 0 (0 when the file has no KV heads).
    pub n_gqa: usize,
    /// Experts (`expert_count`, 0 without).
    pub n_expert: usize,
    /// llama.cpp's `LLM_TYPE_70B`: on it, `attn_v` gets more bits.
    pub is_70b: bool,
}

impl ModelFacts {
    /// Read the facts from a file's metadata.
    pub fn from_metadata(md: &Metadata) -> ModelFacts {
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let first = |key: &str| -> Option<usize> {
            let v = md.get(&format!("{arch}.{key}"))?;
            match v {
                tessera_engine::gguf::MetaValue::Array(a) => match a {
                    tessera_engine::gguf::MetaArray::U32(x) => x.first().map(|&n| n as usize),
                    tessera_engine::gguf::MetaArray::I32(x) => x.first().map(|&n| n as usize),
                    _ => None,
                },
                _ => v.as_int().map(|n| n.max(0) as usize),
            }
        };
        let n_layer = first("block_count").unwrap_or(0);
        let n_head = first("attention.head_count").unwrap_or(0);
        let n_head_kv = first("attention.head_count_kv").unwrap_or(n_head);
        let n_gqa = n_head.checked_div(n_head_kv).unwrap_or(0);
        let is_70b = match arch.as_str() {
            "llama" => n_layer == 80 && n_head != n_head_kv,
            "qwen2" | "deci" | "olmo" => n_layer == 80,
            "jais2" => n_layer == 68,
            _ => false,
        };
        ModelFacts {
            n_expert: first("expert_count").unwrap_or(0),
            arch,
            n_layer,
            n_gqa,
            is_70b,
        }
    }
}

/// What the user asked for besides the file type (llama-quantize's flags).
#[derive(Clone, Debug, Default)]
pub struct Choices {
    /// Every quantizable tensor gets the file type's default type (`--pure`).
    pub pure: bool,
    /// `output.weight` stays as it is (`--leave-output-tensor`).
    pub leave_output: bool,
    /// The type of `output.weight` (`--output-tensor-type`).
    pub output_type: Option<DType>,
    /// The type of the token embeddings (`--token-embedding-type`).
    pub embedding_type: Option<DType>,
    /// An importance matrix is given (`--imatrix`): some rules change, and the types that
    /// need one are allowed.
    pub has_imatrix: bool,
}

/// The type chosen for one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// Tensor name.
    pub name: String,
    /// Its type in the source file.
    pub from: DType,
    /// Its type in the output.
    pub to: DType,
    /// ggml-order shape.
    pub shape: Vec<u64>,
    /// Its rows did not fit the wanted type's blocks, so it got a smaller-block type.
    pub fell_back: bool,
}

/// Tensors in the order llama.cpp visits (and writes) them: by layer number (tensors outside
/// `blk.N.` first), then by name.
pub fn llama_order(infos: &[TensorInfo]) -> Vec<&TensorInfo> {
    let mut v: Vec<&TensorInfo> = infos.iter().collect();
    v.sort_by(|a, b| (layer_of(&a.name), &a.name).cmp(&(layer_of(&b.name), &b.name)));
    v
}

/// The `N` of `blk.N.…`, or -1 (as llama.cpp's `sscanf(name, "blk.%d.")` leaves it).
fn layer_of(name: &str) -> i64 {
    let Some(rest) = name.strip_prefix("blk.") else {
        return -1;
    };
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().unwrap_or(-1)
}

/// Broad kinds of tensors the rules tell apart (llama.cpp's `tensor_category`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        return Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return TokenEmbd;
    }
    const BY_PART: &[(&str, Category)] = &[
        ("attn_qkv.weight", AttnQkv),
        ("attn_kv_b.weight", AttnKvB),
        ("attn_v.weight", AttnV),
        ("attn_k.weight", AttnK),
        ("attn_q.weight", AttnQ),
        ("attn_output.weight", AttnOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ];
    BY_PART
        .iter()
        .find(|(part, _)| name.contains(part))
        .map_or(Other, |&(_, c)| c)
}

fn is_attn_v_like(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

/// Name parts of tensors that are never quantized although 2-D and named `…weight`
/// (llama.cpp's `tensor_allows_quantization`).
const NEVER_QUANTIZED: &[&str] = &[
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// Whether the tensor may change type at all.
fn allows_quantization(t: &TensorInfo, choices: &Choices) -> bool {
    // ggml_n_dims: trailing dimensions of 1 do not count.
    let n_dims = t.shape.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1);
    n_dims >= 2
        && t.name.ends_with("weight")
        && !(choices.leave_output && t.name == "output.weight")
        && t.name != "position_embd.weight"
        && t.name != "token_types.weight"
        && !NEVER_QUANTIZED.iter().any(|p| t.name.contains(p))
}

fn block_elems(t: DType) -> u64 {
    t.block_elems() as u64
}

/// The rules' running state: how many tensors of some kinds were seen.
struct Counters {
    has_tied_embeddings: bool,
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
    i_ffn_gate: usize,
    i_ffn_up: usize,
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third
/// between them.
fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Why a file cannot be quantized as asked.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChoiceError {
    /// A rule needs a layer number the tensor name does not give.
    #[error("cannot tell the layer of tensor {0} (expected `blk.N.…`)")]
    NoLayer(String),
    /// The mix needs an importance matrix for some tensors.
    #[error(
        "{mix} needs an importance matrix for {tensor} (Q2_K in a Q2_K_S file); importance \
         matrices are not supported yet: use Q2_K or a larger type"
    )]
    NeedsImatrix {
        /// The file type.
        mix: FileType,
        /// The first tensor that needs it.
        tensor: String,
    },
}

/// llama.cpp's `tensor_requires_imatrix`, for the types Tessera makes: Q2_K tensors of a
/// Q2_K_S file, but for the embeddings and the output.
pub fn requires_imatrix(name: &str, to: DType, ft: FileType) -> bool {
    to == DType::Q2_K
        && ft == FileType::Q2_K_S
        && !matches!(category(name), Category::Output | Category::TokenEmbd)
}

/// The type of every tensor of a file (in llama.cpp's order, see [`llama_order`]) for `ft`.
pub fn choose_types(
    tensors: &[&TensorInfo],
    facts: &ModelFacts,
    ft: FileType,
    choices: &Choices,
) -> Result<Vec<Choice>, ChoiceError> {
    let mut c = Counters {
        has_tied_embeddings: !tensors.iter().any(|t| t.name == "output.weight"),
        n_attention_wv: tensors
            .iter()
            .filter(|t| is_attn_v_like(category(&t.name)))
            .count(),
        i_attention_wv: 0,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
    };
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        let (to, fell_back) = if allows_quantization(t, choices) {
            let (to, fell_back) = tensor_type(t, facts, ft, choices, &mut c)?;
            if requires_imatrix(&t.name, to, ft) && !choices.has_imatrix {
                return Err(ChoiceError::NeedsImatrix {
                    mix: ft,
                    tensor: t.name.clone(),
                });
            }
            (to, fell_back)
        } else {
            (t.dtype, false)
        };
        out.push(Choice {
            name: t.name.clone(),
            from: t.dtype,
            to,
            shape: t.shape.clone(),
            fell_back,
        });
    }
    Ok(out)
}

/// llama.cpp's `llama_tensor_get_type` for a tensor that may be quantized: the type, and
/// whether it fell back to a smaller block.
fn tensor_type(
    t: &TensorInfo,
    facts: &ModelFacts,
    ft: FileType,
    choices: &Choices,
    c: &mut Counters,
) -> Result<(DType, bool), ChoiceError> {
    let cat = category(&t.name);
    if let (Some(e), Category::TokenEmbd) = (choices.embedding_type, cat) {
        return Ok((e, false));
    }
    if let (Some(o), Category::Output) = (choices.output_type, cat) {
        return Ok((o, false));
    }
    let default = ft.default_type();
    if !default.is_quantized() {
        return Ok((default, false));
    }
    let mut new = default;
    if !choices.pure {
        new = mix_rule(t, facts, ft, choices, cat, default, c)?;
    }
    Ok(fallback(t, new))
}

/// A type whose blocks fit the tensor's rows: llama.cpp's `tensor_type_fallback`.
fn fallback(t: &TensorInfo, want: DType) -> (DType, bool) {
    let ncols = t.shape[0];
    if ncols.is_multiple_of(block_elems(want)) {
        return (want, false);
    }
    let smaller = match want {
        DType::IQ4_XS => DType::IQ4_NL,
        DType::Q2_K | DType::Q3_K => DType::Q4_0,
        DType::Q4_K => DType::Q5_0,
        DType::Q5_K => DType::Q5_1,
        DType::Q6_K => DType::Q8_0,
        other => other,
    };
    if ncols.is_multiple_of(block_elems(smaller)) {
        (smaller, true)
    } else {
        (DType::F16, true)
    }
}

/// The mix's choice for one tensor (llama.cpp's `llama_tensor_get_type_impl`, for the file
/// types Tessera makes).
fn mix_rule(
    t: &TensorInfo,
    facts: &ModelFacts,
    ft: FileType,
    choices: &Choices,
    cat: Category,
    mut new: DType,
    c: &mut Counters,
) -> Result<DType, ChoiceError> {
    use DType::*;
    use FileType as F;
    let falcon = facts.arch == "falcon";
    // The layer a ffn tensor belongs to: its count so far, or (with experts, which are not
    // consecutive in the file) the number in its name.
    let layer_info = |i: usize, name: &str| -> Result<(usize, usize), ChoiceError> {
        let n = facts.n_layer;
        if facts.n_expert.max(1) > 1 {
            let l = layer_of(name);
            if l < 0 || l as usize >= n {
                return Err(ChoiceError::NoLayer(name.to_string()));
            }
            return Ok((l as usize, n));
        }
        Ok((i, n))
    };
    if cat == Category::Output || (c.has_tied_embeddings && cat == Category::TokenEmbd) {
        if let Some(o) = choices.output_type {
            return Ok(o);
        }
        let nx = t.shape[0];
        if falcon || !nx.is_multiple_of(block_elems(new)) {
            new = Q8_0;
        } else if new != Q8_0 {
            new = Q6_K;
        }
    } else if cat == Category::TokenEmbd {
        if let Some(e) = choices.embedding_type {
            new = e;
        }
    } else if is_attn_v_like(cat) {
        let (i, n) = (c.i_attention_wv, c.n_attention_wv);
        match ft {
            F::Q2_K => new = if facts.n_gqa >= 4 { Q4_K } else { Q3_K },
            F::Q2_K_S if facts.n_gqa >= 4 => new = Q4_K,
            F::Q3_K_M => new = if i < 2 { Q5_K } else { Q4_K },
            F::Q3_K_L => new = Q5_K,
            F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => new = Q6_K,
            F::Q4_K_S if i < 4 => new = Q5_K,
            F::IQ4_NL | F::IQ4_XS if facts.n_gqa >= 4 => new = Q5_K,
            _ => {}
        }
        if facts.is_70b && (new == Q3_K || new == Q4_K) {
            new = Q5_K;
        }
        if facts.n_expert == 8 {
            new = Q8_0;
        }
        c.i_attention_wv += 1;
    } else if cat == Category::AttnK {
        if facts.n_expert == 8 {
            new = Q8_0;
        }
    } else if cat == Category::FfnDown {
        let (i, n) = layer_info(c.i_ffn_down, &t.name)?;
        match ft {
            F::Q2_K => new = Q3_K,
            F::Q2_K_S if i < n / 8 => new = Q4_K,
            F::Q3_K_M => {
                new = if i < n / 16 {
                    Q5_K
                } else if !falcon || use_more_bits(i, n) {
                    Q4_K
                } else {
                    Q3_K
                }
            }
            F::Q3_K_L => new = if falcon { Q4_K } else { Q5_K },
            F::Q4_K_M => {
                if falcon {
                    new = if i < n / 16 {
                        Q6_K
                    } else if use_more_bits(i, n) {
                        Q5_K
                    } else {
                        Q4_K
                    };
                } else if use_more_bits(i, n) {
                    new = Q6_K;
                }
            }
            F::IQ4_NL | F::IQ4_XS if i < n / 8 && !choices.has_imatrix => new = Q5_K,
            F::Q5_K_M if use_more_bits(i, n) => new = Q6_K,
            F::Q4_K_S if !falcon && i < n / 8 => new = Q5_K,
            // With an imatrix, the first eighth of ffn_down gets the type with a minimum.
            F::Q4_0 if choices.has_imatrix && i < n / 8 => new = Q4_1,
            F::Q5_0 if choices.has_imatrix && i < n / 8 => new = Q5_1,
            _ => {}
        }
        c.i_ffn_down += 1;
    } else if cat == Category::AttnOutput {
        if !falcon {
            if facts.n_expert == 8 {
                if matches!(
                    ft,
                    F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::Q4_K_S | F::Q4_K_M | F::IQ4_NL | F::IQ4_XS
                ) {
                    new = Q5_K;
                }
            } else {
                match ft {
                    F::Q2_K => new = Q3_K,
                    F::Q3_K_M => new = Q4_K,
                    F::Q3_K_L => new = Q5_K,
                    _ => {}
                }
            }
        } else if ft == F::Q3_K_L {
            new = Q4_K;
        }
    } else if cat == Category::AttnQkv {
        match ft {
            F::Q3_K_M | F::Q3_K_L => new = Q4_K,
            F::Q4_K_M => new = Q5_K,
            F::Q5_K_M => new = Q6_K,
            _ => {}
        }
    } else if cat == Category::FfnGate {
        layer_info(c.i_ffn_gate, &t.name)?;
        c.i_ffn_gate += 1;
    } else if cat == Category::FfnUp {
        layer_info(c.i_ffn_up, &t.name)?;
        c.i_ffn_up += 1;
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, dtype: DType, shape: &[u64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            offset: 0,
            n_bytes: 0,
        }
    }

    /// A llama-shaped list of tensors: `n_layer` layers, rows of 256, ffn_down rows of `ff`.
    fn model(n_layer: usize, ff: u64, tied: bool) -> Vec<TensorInfo> {
        let mut v = vec![
            info("token_embd.weight", DType::F16, &[256, 1000]),
            info("output_norm.weight", DType::F32, &[256]),
        ];
        if !tied {
            v.push(info("output.weight", DType::F16, &[256, 1000]));
        }
        for l in 0..n_layer {
            for (n, s) in [
                ("attn_norm.weight", vec![256]),
                ("attn_q.weight", vec![256, 256]),
                ("attn_k.weight", vec![256, 64]),
                ("attn_v.weight", vec![256, 64]),
                ("attn_output.weight", vec![256, 256]),
                ("ffn_gate.weight", vec![256, ff]),
                ("ffn_up.weight", vec![256, ff]),
                ("ffn_down.weight", vec![ff, 256]),
            ] {
                v.push(info(&format!("blk.{l}.{n}"), DType::F16, &s));
            }
        }
        v
    }

    fn facts(n_layer: usize, n_gqa: usize) -> ModelFacts {
        ModelFacts {
            arch: "llama".into(),
            n_layer,
            n_gqa,
            n_expert: 0,
            is_70b: false,
        }
    }

    fn types(v: &[TensorInfo], f: &ModelFacts, ft: FileType, c: &Choices) -> Vec<(String, DType)> {
        choose_types(&llama_order(v), f, ft, c)
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.to))
            .collect()
    }

    fn type_of(t: &[(String, DType)], name: &str) -> DType {
        t.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn order_is_by_layer_number_then_name() {
        let v = model(12, 512, false);
        let names: Vec<&str> = llama_order(&v).iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            &names[..3],
            ["output.weight", "output_norm.weight", "token_embd.weight"]
        );
        assert_eq!(names[3], "blk.0.attn_k.weight");
        // blk.2 before blk.10 (by number, not by text).
        let p2 = names.iter().position(|n| n.starts_with("blk.2.")).unwrap();
        let p10 = names.iter().position(|n| n.starts_with("blk.10.")).unwrap();
        assert!(p2 < p10);
    }

    #[test]
    fn q4_k_m_gives_more_bits_to_some_attn_v_and_ffn_down() {
        let v = model(8, 512, false);
        let t = types(&v, &facts(8, 1), FileType::Q4_K_M, &Choices::default());
        // use_more_bits(i, 8): layers 0, 3, 6, 7.
        for l in 0..8 {
            let want = if [0, 3, 6, 7].contains(&l) {
                DType::Q6_K
            } else {
                DType::Q4_K
            };
            assert_eq!(
                type_of(&t, &format!("blk.{l}.attn_v.weight")),
                want,
                "attn_v {l}"
            );
            assert_eq!(
                type_of(&t, &format!("blk.{l}.ffn_down.weight")),
                want,
                "down {l}"
            );
            assert_eq!(type_of(&t, &format!("blk.{l}.attn_q.weight")), DType::Q4_K);
        }
        assert_eq!(type_of(&t, "output.weight"), DType::Q6_K);
        assert_eq!(type_of(&t, "token_embd.weight"), DType::Q4_K);
        assert_eq!(type_of(&t, "output_norm.weight"), DType::F32, "1-D stays");
    }

    #[test]
    fn tied_embeddings_get_the_output_type_and_gqa_changes_q2_k() {
        let v = model(4, 512, true);
        let t = types(&v, &facts(4, 1), FileType::Q2_K, &Choices::default());
        assert_eq!(type_of(&t, "token_embd.weight"), DType::Q6_K);
        assert_eq!(type_of(&t, "blk.0.attn_v.weight"), DType::Q3_K);
        assert_eq!(type_of(&t, "blk.0.ffn_down.weight"), DType::Q3_K);
        assert_eq!(type_of(&t, "blk.0.attn_output.weight"), DType::Q3_K);
        assert_eq!(type_of(&t, "blk.0.attn_q.weight"), DType::Q2_K);
        let t = types(&v, &facts(4, 4), FileType::Q2_K, &Choices::default());
        assert_eq!(type_of(&t, "blk.0.attn_v.weight"), DType::Q4_K);
    }

    #[test]
    fn rows_that_do_not_fit_fall_back() {
        // ffn_down rows of 320 (32-blocks fit) and of 336 (nothing fits: F16).
        for (ff, q4k, q6k, q2k) in [
            (320, DType::Q5_0, DType::Q8_0, DType::Q4_0),
            (336, DType::F16, DType::F16, DType::F16),
        ] {
            let v = model(8, ff, false);
            let f = facts(8, 1);
            let pure = Choices {
                pure: true,
                ..Default::default()
            };
            let down = "blk.1.ffn_down.weight";
            assert_eq!(type_of(&types(&v, &f, FileType::Q4_K_S, &pure), down), q4k);
            assert_eq!(type_of(&types(&v, &f, FileType::Q6_K, &pure), down), q6k);
            assert_eq!(type_of(&types(&v, &f, FileType::Q2_K, &pure), down), q2k);
        }
    }

    #[test]
    fn flags_pure_leave_output_and_explicit_types() {
        let v = model(8, 512, false);
        let f = facts(8, 1);
        let pure = Choices {
            pure: true,
            ..Default::default()
        };
        let t = types(&v, &f, FileType::Q4_K_M, &pure);
        assert_eq!(type_of(&t, "blk.0.attn_v.weight"), DType::Q4_K);
        assert_eq!(type_of(&t, "output.weight"), DType::Q4_K);
        let leave = Choices {
            leave_output: true,
            ..Default::default()
        };
        assert_eq!(
            type_of(&types(&v, &f, FileType::Q4_0, &leave), "output.weight"),
            DType::F16
        );
        let explicit = Choices {
            output_type: Some(DType::Q8_0),
            embedding_type: Some(DType::Q5_1),
            ..Default::default()
        };
        let t = types(&v, &f, FileType::Q4_0, &explicit);
        assert_eq!(type_of(&t, "output.weight"), DType::Q8_0);
        assert_eq!(type_of(&t, "token_embd.weight"), DType::Q5_1);
        // Single float types ignore the mix rules.
        let t = types(&v, &f, FileType::BF16, &Choices::default());
        assert_eq!(type_of(&t, "blk.0.attn_v.weight"), DType::BF16);
    }

    #[test]
    fn q2_k_s_asks_for_an_importance_matrix() {
        let v = model(8, 512, false);
        let e = choose_types(
            &llama_order(&v),
            &facts(8, 1),
            FileType::Q2_K_S,
            &Choices::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ChoiceError::NeedsImatrix { .. }), "{e}");
    }

    #[test]
    fn facts_come_from_metadata() {
        use tessera_engine::gguf::{MetaArray, MetaValue};
        let mut md = Metadata::new();
        md.insert(
            "general.architecture".into(),
            MetaValue::String("llama".into()),
        );
        md.insert("llama.block_count".into(), MetaValue::U32(80));
        md.insert("llama.attention.head_count".into(), MetaValue::U32(64));
        md.insert(
            "llama.attention.head_count_kv".into(),
            MetaValue::Array(MetaArray::U32(vec![8; 80])),
        );
        let f = ModelFacts::from_metadata(&md);
        assert_eq!((f.n_layer, f.n_gqa, f.n_expert, f.is_70b), (80, 8, 0, true));
    }
}
