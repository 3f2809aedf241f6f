//! Structured output: a grammar constrains which tokens may be sampled.
//!
//! A [`Grammar`] says what the output must be: a JSON Schema, any JSON object, a regular
//! expression, a Lark grammar, or one of llama.cpp's GBNF grammars (converted to Lark by
//! [`gbnf`]). [`ConstraintVocab`] is built once per tokenizer (a token trie over the byte
//! strings of the vocabulary, byte-level BPE and SentencePiece byte fallback alike) and compiles
//! grammars into [`Constraint`]s, one per generation.
//!
//! Each step the generation loop asks [`Constraint::allowed`] for the set of tokens that keep
//! the output a prefix of some sentence of the grammar ([`TokenMask`]), samples with it
//! ([`crate::sampler::Sampler::sample_masked`]: before every other sampler stage), and tells
//! the constraint the chosen token with [`Constraint::advance`]. End-of-generation tokens are
//! allowed only where the grammar can end; once the grammar is complete they are the only
//! tokens allowed.
//!
//! The Earley parser and the token-trie walk that computes the masks are Microsoft's
//! `llguidance` crate (the engine llama.cpp's optional `LLAMA_LLGUIDANCE` build and mistral.rs
//! use). What this module adds is our tokenizer as llguidance's vocabulary, the GBNF front
//! end, errors that name the problem, and the rule for end-of-generation tokens.

mod digits;
pub mod gbnf;
mod matcher;
mod vocab;

pub use matcher::{Constraint, TokenMask};
pub use vocab::ConstraintVocab;

/// What the output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// A JSON Schema (draft 2020-12 subset as llguidance supports it). The output is one JSON
    /// value valid under the schema, written compactly: `", "` between items, `": "` after
    /// keys and no other whitespace, unless the schema's `x-guidance` object says otherwise.
    /// Objects with `properties` and no word on `additionalProperties` get no other keys (as
    /// in llama.cpp and OpenAI's strict mode); `"additionalProperties": true` allows them.
    /// Runs of digits are at most 16 long (llama.cpp's bound per part of a number) unless the
    /// schema demands more.
    JsonSchema(serde_json::Value),
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// A regular expression the whole output must match (Rust `regex` syntax).
    Regex(String),
    /// A Lark grammar in llguidance's dialect (`start: ...`).
    Lark(String),
    /// A llama.cpp GBNF grammar (`root ::= ...`).
    Gbnf(String),
}

impl Grammar {
    /// A grammar from the text of a grammar file: Lark when it has a `start:` rule or a
    /// `%llguidance` line, GBNF otherwise (llama.cpp's `--grammar-file`).
    pub fn from_grammar_text(text: &str) -> Grammar {
        let is_lark = text.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("%llguidance") || l.starts_with("start:") || l.starts_with("start :")
        });
        if is_lark {
            Grammar::Lark(text.to_owned())
        } else {
            Grammar::Gbnf(text.to_owned())
        }
    }

    /// A JSON Schema given as JSON text.
    pub fn json_schema_from_str(text: &str) -> Result<Grammar, ConstraintError> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ConstraintError::Invalid(format!("the JSON schema is not JSON: {e}")))?;
        Grammar::json_schema(v)
    }

    /// A JSON Schema given as a JSON value, which must be an object or a boolean.
    pub fn json_schema(v: serde_json::Value) -> Result<Grammar, ConstraintError> {
        if !(v.is_object() || v.is_boolean()) {
            return Err(ConstraintError::Invalid(
                "a JSON schema must be an object (or true/false)".into(),
            ));
        }
        Ok(Grammar::JsonSchema(v))
    }

    /// A short name of the kind of grammar, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Grammar::JsonSchema(_) => "JSON schema",
            Grammar::JsonObject => "JSON object",
            Grammar::Regex(_) => "regular expression",
            Grammar::Lark(_) => "Lark grammar",
            Grammar::Gbnf(_) => "GBNF grammar",
        }
    }
}

/// Why a grammar could not be used, or a constrained generation could not go on.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ConstraintError {
    /// The grammar, schema or expression is invalid; the text says where and why.
    #[error("invalid grammar: {0}")]
    Invalid(String),
    /// The token trie could not be built from the vocabulary.
    #[error("cannot build the grammar vocabulary: {0}")]
    Vocabulary(String),
    /// The parser failed while running (e.g. a token outside the mask was forced in).
    #[error("grammar constraint failed: {0}")]
    Runtime(String),
}

#[cfg(test)]
mod tests;
