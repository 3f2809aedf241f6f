//! The request bodies of the completion endpoints, parsed with serde (a wrong type is a 400),
//! and their checks: sampling settings in range, `n` = 1, `stop` as a string or a list, at
//! most one grammar (`response_format`, `json_schema` or `grammar`).

use serde::Deserialize;
use serde_json::Value;
use tessera_models::constraint::{ConstraintError, Grammar};
use tessera_models::sampler::{RANDOM_SEED, SamplerParams};

use crate::error::ApiError;

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the token counts.
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// Settings both completion endpoints take.
#[derive(Debug, Default, Deserialize)]
pub struct CommonParams {
    /// The model name (ignored: one model is served).
    pub model: Option<String>,
    /// Stream the answer as server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Tokens to generate at most.
    pub max_tokens: Option<u64>,
    /// The newer name of `max_tokens` (wins when both are given).
    pub max_completion_tokens: Option<u64>,
    /// Temperature (0 = greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k (0 = off).
    pub top_k: Option<i64>,
    /// Min-p (0 = off).
    pub min_p: Option<f32>,
    /// RNG seed (negative: random).
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Option<StopField>,
    /// OpenAI presence penalty.
    pub presence_penalty: Option<f32>,
    /// OpenAI frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// llama.cpp's repetition penalty (1 = off).
    pub repeat_penalty: Option<f32>,
    /// Choices to generate: only 1.
    pub n: Option<u64>,
    /// OpenAI's output format: text, any JSON object, or JSON under a schema.
    pub response_format: Option<ResponseFormat>,
    /// llama-server's extension: a JSON schema the output must follow.
    pub json_schema: Option<Value>,
    /// llama-server's extension: a GBNF (or Lark) grammar the output must follow.
    pub grammar: Option<String>,
}

/// `response_format`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text (no constraint).
    Text,
    /// Any JSON object (llama-server also takes a `schema` here).
    JsonObject {
        /// llama-server's extension: a schema for the object.
        schema: Option<Value>,
    },
    /// JSON under a schema.
    JsonSchema {
        /// The schema and its name.
        json_schema: JsonSchemaFormat,
    },
}

/// `response_format.json_schema`.
#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat {
    /// The schema's name (not used).
    pub name: Option<String>,
    /// What the schema is for (not used).
    pub description: Option<String>,
    /// The schema (`null`: any JSON object).
    pub schema: Option<Value>,
    /// OpenAI's strict mode (the output always follows the schema here).
    pub strict: Option<bool>,
}

/// One tool in `tools`.
#[derive(Debug, Clone, Deserialize)]
pub struct Tool {
    /// `function` (the only kind).
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDef,
}

/// A function the model may call.
#[derive(Debug, Clone, Deserialize)]
pub struct FunctionDef {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// A JSON schema of its arguments (`null`: any object).
    pub parameters: Option<Value>,
    /// OpenAI's strict mode (not used: the arguments always follow the schema).
    pub strict: Option<bool>,
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"` or one function by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `none`, `auto` or `required`.
    Mode(String),
    /// `{"type": "function", "function": {"name": …}}`.
    Named {
        /// `function`.
        #[serde(rename = "type")]
        kind: String,
        /// The function.
        function: NamedFunction,
    },
}

/// The function `tool_choice` names.
#[derive(Debug, Clone, Deserialize)]
pub struct NamedFunction {
    /// Its name.
    pub name: String,
}

/// A tool call in an assistant message of the history.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolCallIn {
    /// Its id.
    pub id: Option<String>,
    /// The function called.
    pub function: FunctionCallIn,
}

/// The function of a tool call in the history.
#[derive(Debug, Clone, Deserialize)]
pub struct FunctionCallIn {
    /// Its name.
    pub name: String,
    /// The arguments: JSON text (OpenAI's shape) or a JSON value.
    #[serde(default)]
    pub arguments: Value,
}

/// A chat message's content: text, or a list of parts of which the text ones are joined.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type":"text","text":…}`).
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    /// `text` (others are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` …
    pub role: String,
    /// The content (`null` = empty).
    pub content: Option<Content>,
    /// The tool calls of an assistant message.
    pub tool_calls: Option<Vec<ToolCallIn>>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
    /// The tool's name in a `tool` message (optional).
    pub name: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// Report log-probabilities.
    #[serde(default)]
    pub logprobs: bool,
    /// Alternatives per token with `logprobs` (0–20).
    pub top_logprobs: Option<u32>,
    /// Functions the model may call.
    pub tools: Option<Vec<Tool>>,
    /// Whether and which tool to call (`auto` when tools are given).
    pub tool_choice: Option<ToolChoice>,
    /// Several calls in one answer (ignored: at most one call is made).
    pub parallel_tool_calls: Option<bool>,
    /// The shared settings.
    #[serde(flatten)]
    pub common: CommonParams,
}

/// `prompt` of `/v1/completions`: a text, a list of one text, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// A text.
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
    /// Texts (only one is served).
    Texts(Vec<String>),
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Alternatives per token (0–20); present = report log-probabilities.
    pub logprobs: Option<u32>,
    /// The shared settings.
    #[serde(flatten)]
    pub common: CommonParams,
}

/// Most alternatives per token the logprobs may list.
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// Parse a JSON body; the message of a 400 says what is wrong.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

impl Message {
    /// The content as one text.
    pub fn text(&self) -> Result<String, ApiError> {
        match &self.content {
            None => Ok(String::new()),
            Some(Content::Text(t)) => Ok(t.clone()),
            Some(Content::Parts(parts)) => {
                let mut s = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => s.push_str(t),
                        _ => {
                            return Err(ApiError::bad_param(
                                "messages",
                                format!("content parts of type {:?} are not supported", p.kind),
                            ));
                        }
                    }
                }
                Ok(s)
            }
        }
    }
}

impl CommonParams {
    /// Whether to stream.
    pub fn streaming(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streamed answer ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// `max_completion_tokens`, else `max_tokens`; 0 is refused.
    pub fn max_tokens(&self) -> Result<Option<usize>, ApiError> {
        match self.max_completion_tokens.or(self.max_tokens) {
            Some(0) => Err(ApiError::bad_param(
                "max_tokens",
                "max_tokens must be at least 1",
            )),
            n => Ok(n.map(|n| usize::try_from(n).unwrap_or(usize::MAX))),
        }
    }

    /// The stop strings.
    pub fn stops(&self) -> Result<Vec<String>, ApiError> {
        let stops = match &self.stop {
            None => Vec::new(),
            Some(StopField::One(s)) => vec![s.clone()],
            Some(StopField::Many(v)) => v.clone(),
        };
        if stops.len() > 16 {
            return Err(ApiError::bad_param("stop", "at most 16 stop strings"));
        }
        Ok(stops)
    }

    /// The grammar the output must follow, from `response_format`, `json_schema` or `grammar`
    /// (at most one of them): `(grammar, the field it came from)`.
    pub fn grammar(&self) -> Result<Option<(Grammar, &'static str)>, ApiError> {
        let mut found = Vec::new();
        match &self.response_format {
            None | Some(ResponseFormat::Text) => {}
            Some(ResponseFormat::JsonObject { schema: None }) => {
                found.push((Grammar::JsonObject, "response_format"))
            }
            Some(ResponseFormat::JsonObject { schema: Some(s) }) => {
                found.push((schema_grammar(s, "response_format")?, "response_format"))
            }
            Some(ResponseFormat::JsonSchema { json_schema }) => {
                let g = match &json_schema.schema {
                    None | Some(Value::Null) => Grammar::JsonObject,
                    Some(s) => schema_grammar(s, "response_format")?,
                };
                found.push((g, "response_format"));
            }
        }
        if let Some(s) = &self.json_schema {
            found.push((schema_grammar(s, "json_schema")?, "json_schema"));
        }
        if let Some(g) = &self.grammar {
            found.push((Grammar::from_grammar_text(g), "grammar"));
        }
        if found.len() > 1 {
            return Err(ApiError::bad_param(
                found[1].1,
                "give at most one of response_format (json), json_schema and grammar",
            ));
        }
        Ok(found.pop())
    }

    /// Check `n` and the sampling settings; the sampler parameters (llama.cpp's defaults for
    /// what is not given).
    pub fn sampling(&self) -> Result<SamplerParams, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_param("n", "only n = 1 is supported"));
        }
        let mut p = SamplerParams::default();
        let range = |name: &str, v: Option<f32>, lo: f32, hi: f32| -> Result<(), ApiError> {
            match v {
                Some(x) if !(x.is_finite() && (lo..=hi).contains(&x)) => Err(ApiError::bad_param(
                    name,
                    format!("{name} {x} must be between {lo} and {hi}"),
                )),
                _ => Ok(()),
            }
        };
        range("temperature", self.temperature, 0.0, 100.0)?;
        range("top_p", self.top_p, 0.0, 1.0)?;
        range("min_p", self.min_p, 0.0, 1.0)?;
        range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        range("repeat_penalty", self.repeat_penalty, 0.01, 100.0)?;
        if let Some(k) = self.top_k {
            if k < 0 {
                return Err(ApiError::bad_param("top_k", "top_k must be >= 0"));
            }
            p.top_k = k.min(i32::MAX as i64) as i32;
        }
        p.temp = self.temperature.unwrap_or(p.temp);
        p.top_p = self.top_p.unwrap_or(p.top_p);
        p.min_p = self.min_p.unwrap_or(p.min_p);
        p.presence_penalty = self.presence_penalty.unwrap_or(0.0);
        p.frequency_penalty = self.frequency_penalty.unwrap_or(0.0);
        p.repeat_penalty = self.repeat_penalty.unwrap_or(1.0);
        p.seed = match self.seed {
            Some(s) if s >= 0 => s as u64,
            _ => RANDOM_SEED,
        };
        p.validate().map_err(ApiError::bad_request)?;
        Ok(p)
    }
}

/// A schema value as a grammar (an object or a boolean).
fn schema_grammar(schema: &Value, param: &str) -> Result<Grammar, ApiError> {
    Grammar::json_schema(schema.clone()).map_err(|e| match e {
        ConstraintError::Invalid(why) => ApiError::bad_param(param, why),
        other => ApiError::bad_param(param, other.to_string()),
    })
}

/// Alternatives per token asked for, checked.
pub fn top_logprobs(n: u32, param: &str) -> Result<usize, ApiError> {
    if n > MAX_TOP_LOGPROBS {
        return Err(ApiError::bad_param(
            param,
            format!("{param} {n} must be at most {MAX_TOP_LOGPROBS}"),
        ));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_is_a_string_or_a_list() {
        let r: CompletionRequest = parse(br#"{"prompt":"x","stop":"a"}"#).unwrap();
        assert_eq!(r.common.stops().unwrap(), ["a"]);
        let r: CompletionRequest = parse(br#"{"prompt":"x","stop":["a","b"]}"#).unwrap();
        assert_eq!(r.common.stops().unwrap(), ["a", "b"]);
    }

    #[test]
    fn wrong_types_and_ranges_are_refused() {
        assert!(parse::<CompletionRequest>(br#"{"prompt":"x","max_tokens":"many"}"#).is_err());
        assert!(parse::<ChatRequest>(br#"{"messages":"hi"}"#).is_err());
        assert!(parse::<ChatRequest>(b"{").is_err());
        let r: CompletionRequest = parse(br#"{"prompt":"x","n":2}"#).unwrap();
        assert_eq!(r.common.sampling().unwrap_err().param.as_deref(), Some("n"));
        let r: CompletionRequest = parse(br#"{"prompt":"x","top_p":1.5}"#).unwrap();
        assert!(r.common.sampling().is_err());
        let r: CompletionRequest = parse(br#"{"prompt":"x","temperature":-1}"#).unwrap();
        assert!(r.common.sampling().is_err());
    }

    #[test]
    fn sampling_defaults_are_llama_cpp_s_and_seeds_carry() {
        let r: CompletionRequest =
            parse(br#"{"prompt":[1,2],"temperature":0,"seed":7,"max_completion_tokens":3}"#)
                .unwrap();
        let p = r.common.sampling().unwrap();
        assert_eq!((p.temp, p.seed, p.top_k), (0.0, 7, 40));
        assert_eq!(r.common.max_tokens().unwrap(), Some(3));
        let zero: CompletionRequest = parse(br#"{"prompt":"x","max_tokens":0}"#).unwrap();
        assert!(zero.common.max_tokens().is_err());
        assert!(matches!(r.prompt, Prompt::Tokens(ref t) if t == &[1, 2]));
    }

    #[test]
    fn grammars_come_from_one_field() {
        let g = |body: &[u8]| parse::<CompletionRequest>(body).unwrap().common.grammar();
        assert!(g(br#"{"prompt":"x"}"#).unwrap().is_none());
        assert!(
            g(br#"{"prompt":"x","response_format":{"type":"text"}}"#)
                .unwrap()
                .is_none()
        );
        let (j, from) = g(br#"{"prompt":"x","response_format":{"type":"json_object"}}"#)
            .unwrap()
            .unwrap();
        assert_eq!((j, from), (Grammar::JsonObject, "response_format"));
        let (s, _) = g(br#"{"prompt":"x","response_format":{"type":"json_schema",
            "json_schema":{"name":"n","schema":{"type":"integer"},"strict":true}}}"#)
        .unwrap()
        .unwrap();
        assert_eq!(
            s,
            Grammar::JsonSchema(serde_json::json!({"type": "integer"}))
        );
        let (s, from) = g(br#"{"prompt":"x","grammar":"root ::= \"a\""}"#)
            .unwrap()
            .unwrap();
        assert!(matches!(s, Grammar::Gbnf(_)) && from == "grammar");
        let both = g(br#"{"prompt":"x","json_schema":{},"grammar":"root ::= \"a\""}"#);
        assert_eq!(both.unwrap_err().param.as_deref(), Some("grammar"));
        assert!(g(br#"{"prompt":"x","json_schema":3}"#).is_err());
        assert!(
            parse::<CompletionRequest>(br#"{"prompt":"x","response_format":{"type":"xml"}}"#)
                .is_err()
        );
    }

    #[test]
    fn message_parts_are_joined() {
        let r: ChatRequest = parse(
            br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null}]}"#,
        )
        .unwrap();
        assert_eq!(r.messages[0].text().unwrap(), "ab");
        assert_eq!(r.messages[1].text().unwrap(), "");
    }
}
