//! A loaded model: the mapped GGUF file, its hyper-parameters and the architecture's weights.
//! A `Model` is immutable and can be shared by many [`Context`](crate::context::Context)s.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tessera_engine::GgufFile;
use tessera_engine::gguf::Metadata;

use crate::arch::{self, Architecture};
use crate::chat::ChatTemplate;
use crate::constraint::{Constraint, ConstraintError, ConstraintVocab, Grammar};
use crate::error::{ModelError, Result};
use crate::hparams::{HParams, RopeOverrides};
use crate::tokenizer::Tokenizer;

/// A model ready to run: weights, tokenizer and chat template.
pub struct Model {
    file: GgufFile,
    arch: Box<dyn Architecture>,
    tokenizer: Tokenizer,
    chat_template: ChatTemplate,
    /// The vocabulary prepared for grammars, built on first use ([`Self::constraint_vocab`]).
    constraint_vocab: OnceLock<Result<Arc<ConstraintVocab>, ConstraintError>>,
}

impl Model {
    /// Map `path` and load its weights (zero-copy), applying `rope` overrides.
    pub fn load(path: impl AsRef<Path>, rope: &RopeOverrides) -> Result<Model> {
        Self::load_with(path, rope, true)
    }

    /// [`Self::load`], mapping the file (`mmap`) or reading it whole into memory (no SIGBUS
    /// if the file is truncated while in use, at the cost of its size in memory; see
    /// [`GgufFile::read`]).
    pub fn load_with(path: impl AsRef<Path>, rope: &RopeOverrides, mmap: bool) -> Result<Model> {
        let file = GgufFile::open_with(path.as_ref(), mmap)?;
        Self::from_file(file, rope)
    }

    /// Load from an opened file.
    pub fn from_file(file: GgufFile, rope: &RopeOverrides) -> Result<Model> {
        let mut hp = HParams::from_gguf(file.metadata())?;
        hp.apply_rope_overrides(rope)?;
        check_special_token_ids(file.metadata())?;
        let tokenizer = Tokenizer::from_gguf(file.metadata())
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        if tokenizer.n_vocab() != hp.n_vocab {
            return Err(ModelError::InvalidHParam {
                key: "tokenizer.ggml.tokens".into(),
                why: format!(
                    "{} tokens, but the embedding has {} rows",
                    tokenizer.n_vocab(),
                    hp.n_vocab
                ),
            });
        }
        let text = |id: Option<u32>| {
            id.and_then(|i| tokenizer.token_text(i))
                .unwrap_or("")
                .to_string()
        };
        let chat_template = ChatTemplate::from_gguf(
            file.metadata(),
            &text(tokenizer.bos()),
            &text(tokenizer.eos()),
        );
        let arch = arch::load(&file, hp)?;
        Ok(Model {
            file,
            arch,
            tokenizer,
            chat_template,
            constraint_vocab: OnceLock::new(),
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The vocabulary prepared for grammar constraints (a token trie over every token), built
    /// on the first call and shared by every later one.
    pub fn constraint_vocab(&self) -> Result<Arc<ConstraintVocab>> {
        self.constraint_vocab
            .get_or_init(|| ConstraintVocab::new(&self.tokenizer))
            .clone()
            .map_err(ModelError::from)
    }

    /// Compile `grammar` against this model's vocabulary (see [`crate::constraint`]).
    pub fn compile_grammar(&self, grammar: &Grammar) -> Result<Constraint> {
        Ok(self.constraint_vocab()?.compile(grammar)?)
    }

    /// The chat template (the file's, or a fallback).
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat_template
    }

    /// The GGUF file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Hyper-parameters (with overrides applied).
    pub fn hparams(&self) -> &HParams {
        self.arch.hparams()
    }

    /// The architecture.
    pub fn arch(&self) -> &dyn Architecture {
        &*self.arch
    }
}

/// Every `tokenizer.ggml.*_token_id` key (bos, eos, unk, pad, eot, eom, sep, fim …) must name a
/// token of the vocabulary: an id past its end would be fed to the embedding or stop nothing.
/// (llama.cpp warns and falls back to a default; a file that disagrees with itself is refused
/// here, naming the key.)
fn check_special_token_ids(meta: &Metadata) -> Result<()> {
    let Ok(tokens) = meta.str_array("tokenizer.ggml.tokens") else {
        return Ok(()); // the tokenizer reports the missing vocabulary
    };
    let n = tokens.len();
    for (key, value) in meta.entries() {
        if !(key.starts_with("tokenizer.ggml.") && key.ends_with("_token_id")) {
            continue;
        }
        match value.as_int() {
            Some(id) if id >= 0 && id < n as i128 => {}
            _ => {
                return Err(ModelError::InvalidHParam {
                    key: key.clone(),
                    why: format!("{value} is not a token id of the vocabulary of {n} tokens"),
                });
            }
        }
    }
    Ok(())
}
