//! Structured output: a grammar on a sampler (`tessera_sampler_set_grammar`), so that
//! `tessera_sampler_sample` picks only tokens that keep the output inside the grammar's
//! language (llama.cpp GBNF, Lark, JSON Schema, any JSON object, or a regular expression).
//!
//! The grammar advances on `tessera_sampler_accept` of the token the latest
//! `tessera_sampler_sample` returned, never on other accepted tokens (prompt tokens fed to the
//! penalties), and restarts with `tessera_sampler_reset`.

use std::ffi::c_char;

use tessera_models::ModelError;
use tessera_models::constraint::{Constraint, ConstraintError, Grammar};
use tessera_models::sampler::Sampler;

use crate::buffers::cstr;
use crate::error::{
    Error, Result, TESSERA_ERR_GRAMMAR, TESSERA_ERR_INVALID_ARGUMENT, TESSERA_ERR_UNSUPPORTED,
    guard, tessera_status,
};
use crate::handles::{self, lock};
use crate::model::{model_ref, tessera_model};
use crate::sampler::tessera_sampler;

/// Which language the `text` of `tessera_sampler_set_grammar` is in: one of the
/// `TESSERA_GRAMMAR_*` values.
pub type tessera_grammar_kind = i32;

/// `tessera_grammar_kind`: no grammar (clears the sampler's grammar; `text` is ignored).
pub const TESSERA_GRAMMAR_NONE: tessera_grammar_kind = 0;
/// `tessera_grammar_kind`: a llama.cpp GBNF grammar (`root ::= ...`), or a Lark grammar in
/// llguidance's dialect when the text has a `start:` rule or a `%llguidance` line.
pub const TESSERA_GRAMMAR_GBNF_OR_LARK: tessera_grammar_kind = 1;
/// `tessera_grammar_kind`: a JSON Schema as JSON text. The output is one JSON value valid
/// under the schema, written compactly (`", "` between items, `": "` after keys, no other
/// whitespace) unless the schema's `x-guidance` object says otherwise.
pub const TESSERA_GRAMMAR_JSON_SCHEMA: tessera_grammar_kind = 2;
/// `tessera_grammar_kind`: any JSON object (`text` is ignored and may be NULL).
pub const TESSERA_GRAMMAR_JSON_OBJECT: tessera_grammar_kind = 3;
/// `tessera_grammar_kind`: a regular expression (Rust `regex` syntax) the whole output must
/// match.
pub const TESSERA_GRAMMAR_REGEX: tessera_grammar_kind = 4;

/// A sampler's grammar: the compiled start state, the state of the current output, and the
/// token sampled but not yet accepted.
pub(crate) struct GrammarState {
    /// The constraint at the start of an output (cloned by `restart`).
    start: Constraint,
    /// The constraint after the tokens accepted so far.
    current: Constraint,
    /// The vocabulary size of the model the grammar was compiled for.
    n_vocab: usize,
    /// The token the latest sample returned, until it is accepted (or another sample runs).
    pending: Option<u32>,
}

impl GrammarState {
    /// A fresh state at the start of the output of `constraint`.
    fn new(constraint: Constraint, n_vocab: usize) -> GrammarState {
        GrammarState {
            current: constraint.clone(),
            start: constraint,
            n_vocab,
            pending: None,
        }
    }

    /// Sample with `sampler` among the tokens the grammar allows next, and remember the token
    /// for `accept`.
    pub(crate) fn sample(&mut self, sampler: &mut Sampler, logits: &[f32]) -> Result<u32> {
        if logits.len() != self.n_vocab {
            return Err(Error::invalid(format!(
                "the sampler's grammar was compiled for a model with {} tokens, but the \
                 context's model has {}",
                self.n_vocab,
                logits.len()
            )));
        }
        self.pending = None;
        let mask = self.current.allowed().map_err(grammar_error)?;
        let id = sampler.sample_masked(logits, Some(mask));
        self.pending = Some(id);
        Ok(id)
    }

    /// Advance the grammar with `token` when it is the pending sampled token; other tokens
    /// (the prompt's) leave it as it is.
    pub(crate) fn accept(&mut self, token: u32) -> Result<()> {
        if self.pending.take() == Some(token) {
            self.current.advance(token).map_err(grammar_error)?;
        }
        Ok(())
    }

    /// Go back to the start of the output.
    pub(crate) fn restart(&mut self) {
        self.current = self.start.clone();
        self.pending = None;
    }
}

/// A failure of the grammar while sampling.
fn grammar_error(e: ConstraintError) -> Error {
    Error::new(TESSERA_ERR_GRAMMAR, e.to_string())
}

/// A failure to compile a grammar: invalid text is an invalid argument (the message says where
/// and why), a vocabulary that cannot carry grammars is unsupported.
fn compile_error(e: ModelError) -> Error {
    match e {
        ModelError::Constraint(ConstraintError::Vocabulary(m)) => Error::new(
            TESSERA_ERR_UNSUPPORTED,
            format!("this model's vocabulary cannot be used with grammars: {m}"),
        ),
        e => Error::new(TESSERA_ERR_INVALID_ARGUMENT, e.to_string()),
    }
}

/// The grammar `kind` and `text` describe (`None` for `TESSERA_GRAMMAR_NONE`).
///
/// # Safety
/// `text` NULL or a NUL-terminated string.
unsafe fn parse_grammar(
    kind: tessera_grammar_kind,
    text: *const c_char,
) -> Result<Option<Grammar>> {
    // SAFETY: `cstr` checks for NULL; the terminating NUL is this fn's precondition.
    let text = || unsafe { cstr(text, "text") };
    Ok(match kind {
        TESSERA_GRAMMAR_NONE => None,
        TESSERA_GRAMMAR_JSON_OBJECT => Some(Grammar::JsonObject),
        TESSERA_GRAMMAR_GBNF_OR_LARK => Some(Grammar::from_grammar_text(text()?)),
        TESSERA_GRAMMAR_JSON_SCHEMA => Some(
            Grammar::json_schema_from_str(text()?).map_err(|e| Error::invalid(e.to_string()))?,
        ),
        TESSERA_GRAMMAR_REGEX => Some(Grammar::Regex(text()?.to_owned())),
        v => {
            return Err(Error::invalid(format!(
                "kind is {v}: use TESSERA_GRAMMAR_NONE (0), TESSERA_GRAMMAR_GBNF_OR_LARK (1), \
                 TESSERA_GRAMMAR_JSON_SCHEMA (2), TESSERA_GRAMMAR_JSON_OBJECT (3) or \
                 TESSERA_GRAMMAR_REGEX (4)"
            )));
        }
    })
}

/// Constrain what `sampler` samples to the grammar `text` of language `kind`, compiled for
/// `model`'s vocabulary, from the start of an output; or, with `TESSERA_GRAMMAR_NONE`, lift
/// the constraint (then `model` and `text` are ignored and may be NULL).
///
/// How it runs: `tessera_sampler_sample` picks only tokens the grammar allows next, and an
/// end-of-generation token only where the grammar can end (once the grammar is complete, only
/// end-of-generation tokens). The grammar advances when `tessera_sampler_accept` receives the
/// token the latest `tessera_sampler_sample` returned; prompt tokens accepted for the
/// penalties do not advance it. `tessera_sampler_reset` restarts it at the beginning of an
/// output. Use the sampler only with contexts of `model` (or of a model with the same
/// vocabulary). A new call replaces the grammar and restarts it.
///
/// Errors: `TESSERA_ERR_INVALID_ARGUMENT` for an unknown `kind` or an invalid grammar, schema
/// or expression: the message says what is wrong and, for GBNF, where (line and column);
/// `TESSERA_ERR_UNSUPPORTED` when the model's vocabulary has no end-of-generation token. On
/// error the sampler keeps the grammar it had.
///
/// The first grammar for a model builds a token trie over its vocabulary (tens of ms to a few
/// hundred for a large vocabulary); later ones reuse it.
///
/// # Safety
/// `sampler` and `model` handles or NULL; `text` NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tessera_sampler_set_grammar(
    sampler: *mut tessera_sampler,
    model: *const tessera_model,
    kind: tessera_grammar_kind,
    text: *const c_char,
) -> tessera_status {
    // SAFETY: both handles are looked up in the live-handle table before they are read, and
    // `text` is read by `cstr` (NULL-checked; NUL-terminated by this fn's contract).
    guard("tessera_sampler_set_grammar", || unsafe {
        let s = handles::get(sampler)?;
        let grammar = parse_grammar(kind, text)?;
        let state = match grammar {
            None => None,
            Some(g) => {
                let m = model_ref(model)?;
                let constraint = m.model.compile_grammar(&g).map_err(compile_error)?;
                Some(GrammarState::new(constraint, m.model.hparams().n_vocab))
            }
        };
        lock(&s.state, "sampler")?.grammar = state;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_and_bad_schemas_are_invalid_arguments() {
        // SAFETY: a NUL-terminated literal.
        let e = unsafe { parse_grammar(7, c"x".as_ptr()) }.unwrap_err();
        assert_eq!(e.status, TESSERA_ERR_INVALID_ARGUMENT);
        assert!(e.msg.starts_with("kind is 7"), "{}", e.msg);
        // SAFETY: a NUL-terminated literal.
        let e = unsafe { parse_grammar(TESSERA_GRAMMAR_JSON_SCHEMA, c"{\"type\":".as_ptr()) }
            .unwrap_err();
        assert!(e.msg.contains("not JSON"), "{}", e.msg);
        // SAFETY: NULL is allowed.
        let e = unsafe { parse_grammar(TESSERA_GRAMMAR_REGEX, std::ptr::null()) }.unwrap_err();
        assert_eq!(e.msg, "text is NULL");
        // SAFETY: NULL is allowed.
        let none = unsafe { parse_grammar(TESSERA_GRAMMAR_NONE, std::ptr::null()) }.unwrap();
        assert!(none.is_none());
        // SAFETY: NULL is allowed.
        let obj = unsafe { parse_grammar(TESSERA_GRAMMAR_JSON_OBJECT, std::ptr::null()) };
        assert_eq!(obj.unwrap(), Some(Grammar::JsonObject));
    }
}
