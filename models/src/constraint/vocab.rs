//! Our tokenizer as llguidance's vocabulary: the byte string of every token in a token trie,
//! and a parser factory that compiles grammars against it.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{
    InferenceCapabilities, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv,
};
use llguidance::{Matcher, ParserFactory};

use super::digits::DigitTable;
use super::{Constraint, ConstraintError, Grammar, gbnf};
use crate::tokenizer::{Tokenizer, attr};

/// A tokenizer's vocabulary prepared for grammars: build it once per model (it walks every
/// token) and compile any number of grammars with [`Self::compile`].
pub struct ConstraintVocab {
    factory: ParserFactory,
    n_vocab: usize,
    /// Leading/trailing digits per token, for the digit-run bound of JSON output.
    digits: Arc<DigitTable>,
}

impl std::fmt::Debug for ConstraintVocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintVocab")
            .field("n_vocab", &self.n_vocab)
            .finish()
    }
}

/// The token bytes llguidance sees, as llama.cpp's llguidance sampler builds them: ordinary,
/// byte and user-defined tokens are their bytes; control, unknown and unused tokens are
/// "special" (the marker byte 0xFF, then their text), which a grammar only produces when it
/// names them (`<|im_end|>` in Lark).
fn token_bytes(tok: &Tokenizer, id: u32) -> Vec<u8> {
    let a = tok.token_attr(id);
    let text = tok.token_text(id).unwrap_or("");
    if a & (attr::NORMAL | attr::BYTE | attr::USER_DEFINED) != 0 {
        let piece = tok.token_to_piece(id);
        if !piece.is_empty() {
            return piece;
        }
    }
    let mut v = Vec::with_capacity(text.len() + 1);
    v.push(TokTrie::SPECIAL_TOKEN_MARKER);
    v.extend_from_slice(text.as_bytes());
    v
}

/// llguidance's view of our tokenizer: the trie, and tokenization of plain bytes (used for
/// forced text; not on the sampling path).
struct TesseraTokEnv {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerEnv for TesseraTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.tokenizer
            .encode(&String::from_utf8_lossy(s), false, false)
    }
}

impl ConstraintVocab {
    /// Prepare `tokenizer`'s vocabulary. Its end-of-generation ids are the tokens that end a
    /// grammar; a vocabulary without any cannot be used with grammars.
    pub fn new(tokenizer: &Tokenizer) -> Result<Arc<ConstraintVocab>, ConstraintError> {
        let n = tokenizer.n_vocab();
        let eog: Vec<u32> = tokenizer
            .eog_ids()
            .iter()
            .copied()
            .filter(|&t| (t as usize) < n)
            .collect();
        let Some(&first) = tokenizer
            .eot()
            .filter(|&t| (t as usize) < n)
            .as_ref()
            .or(eog.first())
        else {
            return Err(ConstraintError::Vocabulary(
                "the vocabulary has no end-of-generation token".into(),
            ));
        };
        let words: Vec<Vec<u8>> = (0..n as u32).map(|i| token_bytes(tokenizer, i)).collect();
        let digits = Arc::new(DigitTable::new(&words));
        let mut info = TokRxInfo::new(n as u32, first);
        info.tok_bos = tokenizer.bos();
        info.tok_unk = tokenizer.unk();
        info.tok_pad = tokenizer.pad();
        let mut ends = vec![first];
        ends.extend(eog.iter().copied().filter(|&t| t != first));
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&ends);
        let env: TokEnv = Arc::new(TesseraTokEnv {
            trie,
            tokenizer: tokenizer.clone(),
        });
        let mut factory = ParserFactory::new(
            &env,
            InferenceCapabilities::default(),
            &llguidance::earley::SlicedBiasComputer::general_slices(),
        )
        .map_err(|e| ConstraintError::Vocabulary(e.to_string()))?;
        // llguidance's default limits bound the work per mask and the grammar size, so a
        // hostile grammar fails with an error instead of stalling the engine.
        factory.quiet();
        Ok(Arc::new(ConstraintVocab {
            factory,
            digits,
            n_vocab: n,
        }))
    }

    /// The number of tokens (the masks' length).
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Compile `grammar` into a fresh constraint (at the start of the output).
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint, ConstraintError> {
        let top = match grammar {
            Grammar::JsonSchema(schema) => {
                let mut schema = schema.clone();
                close_objects(&mut schema);
                TopLevelGrammar::from_json_schema(with_compact_json(schema))
            }
            Grammar::JsonObject => TopLevelGrammar::from_json_schema(with_compact_json(
                serde_json::json!({"type": "object"}),
            )),
            Grammar::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Grammar::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
            Grammar::Gbnf(text) => TopLevelGrammar::from_lark(
                gbnf::to_lark(text).map_err(|e| ConstraintError::Invalid(format!("GBNF: {e}")))?,
            ),
        };
        let parser = self
            .factory
            .create_parser(top)
            .map_err(|e| ConstraintError::Invalid(format!("{}: {e}", grammar.kind())))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Invalid(format!("{}: {e}", grammar.kind())));
        }
        let json = matches!(grammar, Grammar::JsonSchema(_) | Grammar::JsonObject);
        Ok(Constraint::new(
            matcher,
            self.n_vocab,
            json.then(|| self.digits.clone()),
        ))
    }
}

/// JSON output without free whitespace: the model cannot pad forever with spaces or newlines,
/// and the text is what `json.dumps` writes. A schema's own `x-guidance` options win.
fn with_compact_json(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(obj) = schema.as_object_mut()
        && !obj.contains_key("x-guidance")
    {
        obj.insert(
            "x-guidance".into(),
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            }),
        );
    }
    schema
}

/// Objects whose schema lists `properties` but says nothing of `additionalProperties` get
/// none: the model writes the listed keys only, as llama.cpp's schema converter and OpenAI's
/// strict mode do (JSON Schema itself would allow any further key, and a small model then
/// keeps adding keys until it runs out of tokens). Every output is still valid under the
/// schema as given. `additionalProperties: true` (or a schema, or `patternProperties`) keeps
/// extra keys allowed. Members of `allOf` are left alone: closing each part would make
/// their combination unsatisfiable.
pub(super) fn close_objects(schema: &mut serde_json::Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if obj.contains_key("properties")
        && !obj.contains_key("additionalProperties")
        && !obj.contains_key("patternProperties")
        && !obj.contains_key("unevaluatedProperties")
    {
        obj.insert(
            "additionalProperties".into(),
            serde_json::Value::Bool(false),
        );
    }
    for (key, value) in obj.iter_mut() {
        match key.as_str() {
            // Maps of name → schema.
            "properties" | "$defs" | "definitions" => {
                if let Some(m) = value.as_object_mut() {
                    m.values_mut().for_each(close_objects);
                }
            }
            // Lists of schemas.
            "anyOf" | "oneOf" | "prefixItems" => {
                if let Some(a) = value.as_array_mut() {
                    a.iter_mut().for_each(close_objects);
                }
            }
            // One schema.
            "items" | "additionalProperties" | "not" | "then" | "else" | "if" | "contains" => {
                close_objects(value)
            }
            _ => {}
        }
    }
}
