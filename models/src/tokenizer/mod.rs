//! Tokenizers built from GGUF metadata alone: byte-level BPE (`gpt2`), SentencePiece-style
//! (`llama`) and Gemma 4's BPE on raw UTF-8 (`gemma4`), reproducing llama.cpp's
//! `llama_tokenize` and `token_to_piece` id for id.
//!
//! Encoding runs in three steps: special tokens are cut out of the text (`special.rs`), each
//! remaining raw fragment is tokenized by the model's algorithm (`bpe.rs` after the
//! pre-tokenizer of `pretokenize.rs`, or `spm.rs`), and BOS/EOS are added when asked. Decoding maps
//! each id to the bytes it stands for; [`StreamDecoder`] does so incrementally.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gguf = tessera_engine::GgufFile::open("model.gguf")?;
//! let tok = tessera_models::tokenizer::Tokenizer::from_gguf(gguf.metadata())?;
//! let ids = tok.encode("Hello world", true, true);
//! assert_eq!(tok.decode(&ids[usize::from(tok.add_bos())..]), "Hello world");
//! # Ok(()) }
//! ```

mod bpe;
mod pretokenize;
mod special;
mod spm;
mod stream;
#[cfg(test)]
mod tests;
mod unicode;
mod unicode_tables;
mod vocab;

pub use pretokenize::PreTokenizer;
pub use stream::StreamDecoder;
pub use vocab::attr;

use bpe::{Bpe, BpeScratch};
use special::{Fragment, SpecialTokens};
use spm::SpmScratch;
use tessera_engine::gguf::{GgufError, MetaArray, Metadata};
use vocab::Vocab;

/// Why a tokenizer could not be built from GGUF metadata.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A key is missing or has the wrong type (the message names the key).
    #[error("tokenizer metadata: {0}")]
    Metadata(#[from] GgufError),
    /// `tokenizer.ggml.model` names an algorithm this crate does not implement.
    #[error(
        "unsupported tokenizer model {0:?} in `tokenizer.ggml.model` (supported: \"gpt2\", \"llama\", \"gemma4\")"
    )]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not know (as llama.cpp, the
    /// vocabulary is refused rather than split by guessed rules, which would give wrong ids).
    #[error(
        "unknown pre-tokenizer {0:?} in `tokenizer.ggml.pre` (supported: {list})",
        list = PreTokenizer::SUPPORTED.join(", ")
    )]
    UnknownPreTokenizer(String),
    /// `tokenizer.ggml.tokens` has no entries.
    #[error("`tokenizer.ggml.tokens` is empty")]
    EmptyVocab,
    /// A per-token array is shorter than the token list.
    #[error("`{key}` has {found} entries but `tokenizer.ggml.tokens` has {expected}")]
    LengthMismatch {
        /// The array's key.
        key: &'static str,
        /// Its length.
        found: usize,
        /// The number of tokens.
        expected: usize,
    },
    /// A per-token array has an element type that cannot be used.
    #[error("`{key}` must be an array of {expected}")]
    BadArray {
        /// The array's key.
        key: &'static str,
        /// The element types accepted.
        expected: &'static str,
    },
    /// The metadata asks for a special token to be added but does not say which.
    #[error("`{add_key}` is true but `{id_key}` is not set (or out of range)")]
    MissingSpecialToken {
        /// The `add_*_token` key.
        add_key: &'static str,
        /// The token id key.
        id_key: &'static str,
    },
}

/// The tokenization algorithm of a vocabulary.
#[derive(Clone, Debug)]
enum Model {
    /// Byte-level BPE with merges.
    Bpe(Box<Bpe>),
    /// SentencePiece-style merges by score, with `<0xNN>` byte fallback.
    Spm {
        byte_tokens: Box<[Option<u32>; 256]>,
    },
}

/// Token texts that end generation (llama.cpp marks these EOG by text).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Token texts taken as end-of-turn when `tokenizer.ggml.eot_token_id` is absent.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<end_of_utterance>",
];

/// A tokenizer for one model's vocabulary.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    special: SpecialTokens,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    /// Sorted end-of-generation ids.
    eog: Vec<u32>,
}

/// Reads a per-token float array (f32, f64 or integers).
fn float_array(meta: &Metadata, key: &'static str) -> Result<Option<Vec<f32>>, TokenizerError> {
    let Some(_) = meta.get(key) else {
        return Ok(None);
    };
    Ok(Some(match meta.array(key)? {
        MetaArray::F32(_) | MetaArray::F64(_) => meta.f32_array(key)?,
        MetaArray::Array(_) | MetaArray::String(_) | MetaArray::Bool(_) => {
            return Err(TokenizerError::BadArray {
                key,
                expected: "numbers",
            });
        }
        _ => meta.int_array(key)?.into_iter().map(|x| x as f32).collect(),
    }))
}

fn check_len<T>(key: &'static str, v: &Option<Vec<T>>, n: usize) -> Result<(), TokenizerError> {
    match v {
        Some(v) if v.len() < n => Err(TokenizerError::LengthMismatch {
            key,
            found: v.len(),
            expected: n,
        }),
        _ => Ok(()),
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by the `tokenizer.ggml.*` keys of a GGUF file.
    ///
    /// Defaults follow llama.cpp: `llama` vocabularies add BOS and a space prefix unless the
    /// metadata says otherwise (special ids default to bos 1, eos 2, unk 0); `gpt2` vocabularies
    /// add nothing by default except for the llama3 pre-tokenizer (which adds BOS). An unknown
    /// `tokenizer.ggml.pre` is an error ([`TokenizerError::UnknownPreTokenizer`]), as in
    /// llama.cpp; a missing one means llama.cpp's `default` split.
    pub fn from_gguf(meta: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let model_name = meta.str("tokenizer.ggml.model")?;
        if !matches!(model_name, "gpt2" | "llama" | "gemma4") {
            return Err(TokenizerError::UnsupportedModel(model_name.to_owned()));
        }
        let tokens = meta.str_array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        let scores = float_array(meta, "tokenizer.ggml.scores")?;
        check_len("tokenizer.ggml.scores", &scores, n)?;
        let types = match meta.get("tokenizer.ggml.token_type") {
            Some(_) => Some(meta.int_array("tokenizer.ggml.token_type")?),
            None => None,
        };
        check_len("tokenizer.ggml.token_type", &types, n)?;
        let mut vocab = Vocab::new(tokens, scores, types.as_deref());

        let pre_name = meta.opt_str("tokenizer.ggml.pre")?;
        let (model, mut bos, mut eos, mut unk, mut add_bos, mut add_space_prefix);
        match model_name {
            "gpt2" => {
                let merges = meta.str_array("tokenizer.ggml.merges")?;
                let cfg = PreTokenizer::config(pre_name).ok_or_else(|| {
                    TokenizerError::UnknownPreTokenizer(pre_name.unwrap_or_default().to_owned())
                })?;
                model = Model::Bpe(Box::new(Bpe::new(
                    &vocab,
                    merges,
                    cfg.pre,
                    cfg.ignore_merges,
                )));
                (bos, eos, unk) = (Some(11), Some(11), None);
                add_bos = cfg.add_bos;
                add_space_prefix = false;
            }
            "gemma4" => {
                // BPE on raw UTF-8 with spaces written '▁', merged over whole lines; no default
                // special ids; BOS always added (llama.cpp overrides add_bos_token = false).
                let merges = meta.str_array("tokenizer.ggml.merges")?;
                let mut bpe = Bpe::new(&vocab, merges, PreTokenizer::Newlines, false);
                bpe.use_raw_utf8(&vocab);
                model = Model::Bpe(Box::new(bpe));
                (bos, eos, unk) = (None, None, None);
                add_bos = true;
                add_space_prefix = false;
            }
            "llama" => {
                let mut byte_tokens = Box::new([None; 256]);
                for (b, slot) in byte_tokens.iter_mut().enumerate() {
                    *slot = vocab
                        .lookup(format!("<0x{b:02X}>").as_bytes())
                        .or_else(|| vocab.lookup(&[b as u8]));
                }
                model = Model::Spm { byte_tokens };
                (bos, eos, unk) = (Some(1), Some(2), Some(0));
                add_bos = true;
                add_space_prefix = true;
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_owned())),
        }
        let mut add_eos = false;
        if let Some(v) = meta.opt_bool("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }

        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let read_id = |key: &str, default: Option<u32>| -> Result<Option<u32>, TokenizerError> {
            let default = in_range(default);
            Ok(match meta.opt_u32(key)? {
                Some(id) if (id as usize) < n => Some(id),
                Some(id) => {
                    eprintln!("warning: {key} = {id} is outside the vocabulary; ignoring it");
                    default
                }
                None => default,
            })
        };
        bos = read_id("tokenizer.ggml.bos_token_id", bos)?;
        eos = read_id("tokenizer.ggml.eos_token_id", eos)?;
        unk = read_id("tokenizer.ggml.unknown_token_id", unk)?;
        let mut eot = read_id("tokenizer.ggml.eot_token_id", None)?;
        let eom = read_id("tokenizer.ggml.eom_token_id", None)?;
        let pad = read_id("tokenizer.ggml.padding_token_id", None)?;
        if let Some(v) = meta.opt_bool("tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        if let Some(v) = meta.opt_bool("tokenizer.ggml.add_eos_token")? {
            add_eos = v;
        }
        if model_name == "gemma4" {
            add_bos = true;
        }
        if add_bos && bos.is_none() {
            return Err(TokenizerError::MissingSpecialToken {
                add_key: "tokenizer.ggml.add_bos_token",
                id_key: "tokenizer.ggml.bos_token_id",
            });
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::MissingSpecialToken {
                add_key: "tokenizer.ggml.add_eos_token",
                id_key: "tokenizer.ggml.eos_token_id",
            });
        }

        // End-of-turn / end-of-generation tokens recognised by their text; they are made control
        // tokens so that they render verbatim and are parsed only with `parse_special`.
        if eot.is_none() {
            eot = EOT_TEXTS.iter().find_map(|t| vocab.lookup(t.as_bytes()));
        }
        let mut eog: Vec<u32> = EOG_TEXTS
            .iter()
            .filter_map(|t| vocab.lookup(t.as_bytes()))
            .chain([eos, eot, eom].into_iter().flatten())
            .collect();
        eog.sort_unstable();
        eog.dedup();
        for &id in &eog {
            if EOG_TEXTS.contains(&vocab.text(id)) {
                vocab.add_attr(id, attr::CONTROL);
            }
        }
        for id in 0..n as u32 {
            if vocab.attr(id) & attr::CONTROL != 0 && vocab.text(id).contains("unused") {
                vocab.add_attr(id, attr::UNUSED);
            }
        }

        strip_attributes(meta, &mut vocab);
        let special = SpecialTokens::new(&vocab);
        Ok(Tokenizer {
            vocab,
            model,
            special,
            bos,
            eos,
            eot,
            unk,
            pad,
            add_bos,
            add_eos,
            add_space_prefix,
            eog,
        })
    }

    /// Tokenizes `text` exactly as llama.cpp's `llama_tokenize`: with `add_special`, BOS/EOS are
    /// added as the metadata asks; with `parse_special`, control tokens written in the text (such
    /// as `<|im_start|>`) become their ids, otherwise they are tokenized as plain text.
    /// User-defined tokens are always recognised.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        let frags = self.special.partition(&self.vocab, text, parse_special);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match &self.model {
            Model::Bpe(bpe) => {
                let mut scratch = BpeScratch::default();
                for f in frags {
                    match f {
                        Fragment::Text(r) if bpe.is_raw_utf8() => {
                            let escaped = text[r].replace(' ', spm::SPACE_MARK);
                            bpe.encode(&self.vocab, &escaped, &mut scratch, &mut out)
                        }
                        Fragment::Text(r) => {
                            bpe.encode(&self.vocab, &text[r], &mut scratch, &mut out)
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Model::Spm { byte_tokens } => {
                let mut scratch = SpmScratch::default();
                let mut prev_special = true;
                for f in frags {
                    match f {
                        Fragment::Text(r) => {
                            let prefix = self.add_space_prefix && prev_special;
                            let escaped = spm::escape_whitespace(&text[r], prefix);
                            spm::encode(&self.vocab, byte_tokens, &escaped, &mut scratch, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// The bytes token `id` stands for, as llama.cpp's `token_to_piece` with `special = true`:
    /// control, unknown and user-defined tokens render their text; SentencePiece pieces have '▁'
    /// turned into spaces; `<0xNN>` byte tokens give that byte; byte-level BPE tokens are mapped
    /// back to raw bytes. Unused and undefined tokens, and ids out of range, give nothing.
    pub fn token_to_piece(&self, id: u32) -> Vec<u8> {
        if id as usize >= self.vocab.len() {
            return Vec::new();
        }
        let a = self.vocab.attr(id);
        let text = self.vocab.text(id);
        if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            return text.as_bytes().to_vec();
        }
        if a & attr::NORMAL != 0 {
            return match self.model {
                Model::Spm { .. } => text.replace(spm::SPACE_MARK, " ").into_bytes(),
                Model::Bpe(ref bpe) if bpe.is_raw_utf8() => {
                    text.replace(spm::SPACE_MARK, " ").into_bytes()
                }
                Model::Bpe(_) => {
                    let mut out = Vec::with_capacity(text.len());
                    for c in text.chars() {
                        match unicode::char_to_byte(c) {
                            Some(b) => out.push(b),
                            None => {
                                // As llama.cpp: mark characters outside the byte mapping.
                                out.extend_from_slice(b"[UNK_BYTE_0x");
                                let mut buf = [0u8; 4];
                                for b in c.encode_utf8(&mut buf).bytes() {
                                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                                }
                                out.extend_from_slice(text.as_bytes());
                                out.push(b']');
                            }
                        }
                    }
                    out
                }
            };
        }
        if a & attr::BYTE != 0
            && let Some(b) = text
                .strip_prefix("<0x")
                .and_then(|h| h.strip_suffix('>'))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            return vec![b];
        }
        Vec::new()
    }

    /// The text of `ids`: their pieces concatenated, decoded as UTF-8 with invalid sequences
    /// replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            bytes.extend_from_slice(&self.token_to_piece(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A decoder that turns ids into text incrementally.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    /// The beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// The end-of-turn token (from metadata, else found by its text, e.g. `<|im_end|>`).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    /// The unknown token.
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    /// The padding token.
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether SentencePiece text gets a leading space (`tokenizer.ggml.add_space_prefix`).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// Whether generation should stop at `id`: EOS, EOT, EOM and the tokens llama.cpp marks as
    /// end-of-generation by their text (`<|im_end|>`, `<end_of_turn>`, `<|endoftext|>`, …).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// The longest vocabulary text, in bytes: no token stands for more input bytes than its
    /// text holds (byte-level BPE and SentencePiece store each input byte as one to three
    /// bytes, special tokens as their text), so a text of `b` bytes has at least
    /// `b / max_token_bytes()` tokens. Lets a caller refuse a text too long for a context
    /// without tokenizing it.
    pub fn max_token_bytes(&self) -> usize {
        (0..self.vocab.len())
            .map(|id| self.vocab.text(id as u32).len())
            .max()
            .unwrap_or(0)
            .max(1)
    }

    /// The raw vocabulary text of `id`.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.vocab.len()).then(|| self.vocab.text(id))
    }

    /// The id whose vocabulary text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.lookup(text.as_bytes())
    }

    /// The attribute bits of `id` (see [`attr`]); 0 when out of range.
    pub fn token_attr(&self, id: u32) -> u8 {
        if (id as usize) < self.vocab.len() {
            self.vocab.attr(id)
        } else {
            0
        }
    }

    /// The score of `id` (SentencePiece vocabularies; 0 elsewhere or when out of range).
    pub fn token_score(&self, id: u32) -> f32 {
        if (id as usize) < self.vocab.len() {
            self.vocab.score(id)
        } else {
            0.0
        }
    }

    /// Whether `id` is a control token (rendered verbatim, parsed only with `parse_special`).
    pub fn is_control(&self, id: u32) -> bool {
        self.token_attr(id) & attr::CONTROL != 0
    }

    /// Number of tokens that may be matched in text as special tokens.
    pub fn n_special(&self) -> usize {
        self.special.len()
    }
}

/// The whitespace-stripping attributes llama.cpp gives special tokens by model family (its
/// `llama_vocab::impl::load`; GGUF files do not carry them): when the lowercased `general.name`
/// contains "phi-3" or "phi3", every control, user-defined and unknown token and `</s>` drop the
/// whitespace that follows them in a text, except `<unk>`, `<s>` and `<|endoftext|>`. So a
/// rendered Phi-3 chat's `<|user|>\nHi` tokenizes as `<|user|>`, `▁Hi`. (llama.cpp's other
/// rules of this kind are for BERT-style vocabularies, which Tessera does not load.)
fn strip_attributes(meta: &Metadata, vocab: &mut Vocab) {
    let name = meta
        .opt_str("general.name")
        .ok()
        .flatten()
        .unwrap_or("")
        .to_lowercase();
    if !(name.contains("phi-3") || name.contains("phi3")) {
        return;
    }
    let special = attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN;
    for id in 0..vocab.len() as u32 {
        if vocab.attr(id) & special != 0 {
            vocab.add_attr(id, attr::RSTRIP);
        }
    }
    if let Some(id) = vocab.lookup(b"</s>") {
        vocab.add_attr(id, attr::RSTRIP);
    }
    for text in ["<unk>", "<s>", "<|endoftext|>"] {
        if let Some(id) = vocab.lookup(text.as_bytes()) {
            vocab.clear_attr(id, attr::RSTRIP);
        }
    }
}
