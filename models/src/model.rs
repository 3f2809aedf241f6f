//! A loaded model: the mapped GGUF file, its hyper-parameters and the architecture's weights.
//! A `Model` is immutable and can be shared by many [`Context`](crate::context::Context)s.

use std::path::Path;

use tessera_engine::GgufFile;

use crate::arch::{self, Architecture};
use crate::chat::ChatTemplate;
use crate::error::{ModelError, Result};
use crate::hparams::{HParams, RopeOverrides};
use crate::tokenizer::Tokenizer;

/// A model ready to run: weights, tokenizer and chat template.
pub struct Model {
    file: GgufFile,
    arch: Box<dyn Architecture>,
    tokenizer: Tokenizer,
    chat_template: ChatTemplate,
}

impl Model {
    /// Map `path` and load its weights (zero-copy), applying `rope` overrides.
    pub fn load(path: impl AsRef<Path>, rope: &RopeOverrides) -> Result<Model> {
        let file = GgufFile::open(path)?;
        Self::from_file(file, rope)
    }

    /// Load from an opened file.
    pub fn from_file(file: GgufFile, rope: &RopeOverrides) -> Result<Model> {
        let mut hp = HParams::from_gguf(file.metadata())?;
        hp.apply_rope_overrides(rope)?;
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
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
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
