//! Test fixtures: a tiny but complete llama model (2 layers, width 64, a ~300-token byte-level
//! BPE vocabulary) built in memory with [`GgufWriter`], and helpers to tweak one thing of it.
//!
//! Compiled for this crate's tests and with the `testing` feature (other crates' tests, the
//! fuzz targets' seed writer). Typical use: start from [`TinyLlama::default`], call
//! [`TinyLlama::writer`], change one key or tensor with [`set_kv`], [`remove_kv`],
//! [`remove_tensor`] or [`tensor_mut`], and [`load`] the result.

use tessera_engine::gguf::writer::WriterTensor;
use tessera_engine::gguf::{GgufWriter, MetaArray, MetaValue};
use tessera_engine::{DType, GgufFile};

use crate::error::Result;
use crate::hparams::RopeOverrides;
use crate::model::Model;

/// Settings of the tiny llama model; every field may be changed before [`Self::writer`].
#[derive(Clone, Debug)]
pub struct TinyLlama {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Embedding width.
    pub n_embd: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// Training context length written in the metadata.
    pub n_ctx_train: u32,
    /// Type of the weight matrices and the embedding (norms are F32).
    pub matrix_dtype: DType,
    /// Write a separate `output.weight` instead of tying it to the embedding.
    pub separate_output: bool,
    /// Seed of the weights' pseudo-random values.
    pub seed: u64,
}

impl Default for TinyLlama {
    fn default() -> Self {
        TinyLlama {
            n_layer: 2,
            n_embd: 64,
            n_head: 4,
            n_head_kv: 2,
            n_ff: 128,
            n_ctx_train: 256,
            matrix_dtype: DType::Q8_0,
            separate_output: false,
            seed: 1,
        }
    }
}

/// Words whose pieces become the merges of the tiny vocabulary.
const WORDS: &[&str] = &[
    "the", "hello", "world", "token", "tiny", "model", "and", "test",
];

/// Special tokens appended after the byte tokens and the merges.
pub const SPECIAL_TOKENS: &[&str] = &["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// GPT-2's byte → printable character mapping (bytes that are printable stay themselves, the
/// others are moved to U+0100 and up in order).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, 33..=126 | 161..=172 | 174..=255);
    if printable(b) {
        return b as char;
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).expect("below U+0200")
}

/// The tiny vocabulary: token texts, token types and merges.
pub fn tiny_vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut merges = Vec::new();
    for word in WORDS {
        // Merge left to right: "t h" → "th", "th e" → "the"; with and without the space mark.
        for prefix in ["", "Ġ"] {
            let chars: Vec<String> = word.chars().map(|c| c.to_string()).collect();
            let mut acc = format!("{prefix}{}", chars[0]);
            if !prefix.is_empty() {
                let m = format!("Ġ {}", chars[0]);
                if !merges.contains(&m) {
                    merges.push(m);
                    tokens.push(acc.clone());
                }
            }
            for c in &chars[1..] {
                let m = format!("{acc} {c}");
                acc.push_str(c);
                if !merges.contains(&m) {
                    merges.push(m);
                    tokens.push(acc.clone());
                }
            }
        }
    }
    let mut types = vec![1; tokens.len()];
    for s in SPECIAL_TOKENS {
        tokens.push(s.to_string());
        types.push(3);
    }
    (tokens, types, merges)
}

/// A small deterministic generator (SplitMix64) for weights.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-scale, scale).
    fn uniform(&mut self, scale: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
}

/// Encode `values` (a whole number of rows of `row` elements) as `dtype`.
fn encode(dtype: DType, row: usize, values: &[f32]) -> Vec<u8> {
    let ops = tessera_engine::quant::reference(dtype).expect("a type with kernels");
    let row_bytes = dtype.row_bytes(row as u64).expect("whole blocks") as usize;
    let mut out = vec![0u8; values.len() / row * row_bytes];
    for (src, dst) in values.chunks(row).zip(out.chunks_mut(row_bytes)) {
        (ops.quantize_row)(src, dst);
    }
    out
}

impl TinyLlama {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Number of tokens of the vocabulary (rows of the embedding).
    pub fn n_vocab(&self) -> usize {
        tiny_vocab().0.len()
    }

    /// A complete, valid GGUF file description of this model.
    pub fn writer(&self) -> GgufWriter {
        let (tokens, types, merges) = tiny_vocab();
        let n_vocab = tokens.len();
        let eot = n_vocab as u32 - 3;
        let (e, hd) = (self.n_embd, self.head_dim());
        let u32v = |v: usize| MetaValue::U32(v as u32);
        let mut w = GgufWriter::new()
            .kv("general.architecture", MetaValue::String("llama".into()))
            .kv("general.name", MetaValue::String("tiny".into()))
            .kv("llama.block_count", u32v(self.n_layer))
            .kv("llama.context_length", MetaValue::U32(self.n_ctx_train))
            .kv("llama.embedding_length", u32v(e))
            .kv("llama.feed_forward_length", u32v(self.n_ff))
            .kv("llama.attention.head_count", u32v(self.n_head))
            .kv("llama.attention.head_count_kv", u32v(self.n_head_kv))
            .kv(
                "llama.attention.layer_norm_rms_epsilon",
                MetaValue::F32(1e-5),
            )
            .kv("llama.rope.freq_base", MetaValue::F32(10_000.0))
            .kv("llama.rope.dimension_count", u32v(hd))
            .kv("llama.vocab_size", u32v(n_vocab))
            .kv("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
            .kv("tokenizer.ggml.pre", MetaValue::String("smollm".into()))
            .kv(
                "tokenizer.ggml.tokens",
                MetaValue::Array(MetaArray::String(tokens)),
            )
            .kv(
                "tokenizer.ggml.token_type",
                MetaValue::Array(MetaArray::I32(types)),
            )
            .kv(
                "tokenizer.ggml.merges",
                MetaValue::Array(MetaArray::String(merges)),
            )
            .kv("tokenizer.ggml.bos_token_id", MetaValue::U32(eot))
            .kv("tokenizer.ggml.eos_token_id", MetaValue::U32(eot))
            .kv("tokenizer.ggml.padding_token_id", MetaValue::U32(eot))
            .kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(false));

        let mut rng = Rng(self.seed);
        let mut matrix = |w: GgufWriter, name: &str, cols: usize, rows: usize| {
            let scale = 1.0 / (cols as f32).sqrt();
            let values: Vec<f32> = (0..cols * rows).map(|_| rng.uniform(scale)).collect();
            let data = encode(self.matrix_dtype, cols, &values);
            w.tensor(name, self.matrix_dtype, &[cols as u64, rows as u64], data)
        };
        let norm = |w: GgufWriter, name: &str, n: usize| {
            let values: Vec<f32> = (0..n).map(|i| 1.0 + 0.01 * (i % 7) as f32).collect();
            w.tensor(
                name,
                DType::F32,
                &[n as u64],
                encode(DType::F32, n, &values),
            )
        };
        w = matrix(w, "token_embd.weight", e, n_vocab);
        for il in 0..self.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}.weight");
            w = norm(w, &n("attn_norm"), e);
            w = matrix(w, &n("attn_q"), e, self.n_head * hd);
            w = matrix(w, &n("attn_k"), e, self.n_head_kv * hd);
            w = matrix(w, &n("attn_v"), e, self.n_head_kv * hd);
            w = matrix(w, &n("attn_output"), self.n_head * hd, e);
            w = norm(w, &n("ffn_norm"), e);
            w = matrix(w, &n("ffn_gate"), e, self.n_ff);
            w = matrix(w, &n("ffn_up"), e, self.n_ff);
            w = matrix(w, &n("ffn_down"), self.n_ff, e);
        }
        w = norm(w, "output_norm.weight", e);
        if self.separate_output {
            w = matrix(w, "output.weight", e, n_vocab);
        }
        w
    }

    /// The file's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.writer().to_bytes()
    }
}

/// Set metadata `key` to `value` (replacing it in place, or appending it).
pub fn set_kv(w: &mut GgufWriter, key: &str, value: MetaValue) {
    match w.metadata.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => w.metadata.push((key.into(), value)),
    }
}

/// Remove metadata `key`.
pub fn remove_kv(w: &mut GgufWriter, key: &str) {
    w.metadata.retain(|(k, _)| k != key);
}

/// Remove tensor `name`.
pub fn remove_tensor(w: &mut GgufWriter, name: &str) {
    w.tensors.retain(|t| t.name != name);
}

/// Tensor `name`, to change its type, shape or bytes.
///
/// # Panics
/// When the writer has no such tensor.
pub fn tensor_mut<'a>(w: &'a mut GgufWriter, name: &str) -> &'a mut WriterTensor {
    w.tensors
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no tensor {name:?}"))
}

/// Load the model `w` describes, with no RoPE overrides.
pub fn load(w: &GgufWriter) -> Result<Model> {
    load_bytes(&w.to_bytes())
}

/// Load a model from a GGUF image in memory, with no RoPE overrides.
pub fn load_bytes(bytes: &[u8]) -> Result<Model> {
    Model::from_file(GgufFile::from_bytes(bytes)?, &RopeOverrides::default())
}
