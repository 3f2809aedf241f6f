//! Tool calls in OpenAI's shape for models whose chat template knows nothing of tools, the way
//! llama.cpp's "generic" format does it: the request's `tools` become a system-prompt
//! instruction plus a JSON schema that constrains the answer to
//! `{"tool_call": {"name": …, "arguments": {…}}}` (with `tool_choice` `required` or a named
//! function) or, with `auto`, to that or `{"response": "…"}`. The answer is parsed back into
//! `message.tool_calls` (or `content`), whole or as stream deltas. Tool calls and tool results
//! in the request's history are rewritten into the same JSON texts, as user and assistant
//! messages every template accepts.
//!
//! The constrained JSON is compact (`", "` and `": "` separators, properties in schema order),
//! so a call's arguments are exactly the text after `"arguments": ` less the closing `}}`.

use std::hash::{BuildHasher, Hasher};

use serde_json::{Value, json};
use tessera_models::chat::ChatMessage;
use tessera_models::constraint::Grammar;

use crate::api::{Message, Tool, ToolChoice};
use crate::error::ApiError;

/// How the answer of a request with tools is constrained and read.
#[derive(Clone, Debug)]
pub struct ToolPlan {
    /// The JSON schema of every allowed answer.
    pub schema: Value,
    /// Whether a plain `{"response": …}` answer is allowed (`auto`).
    pub allow_response: bool,
    /// The system-prompt instruction that tells the model the tools and the answer's form.
    pub instruction: String,
}

/// The plan for a request's `tools` and `tool_choice` (`None`: no tools, or `none`).
/// `response` is the request's own grammar, which an `auto` answer's `response` follows when
/// it is a JSON schema.
pub fn plan(
    tools: Option<&[Tool]>,
    choice: Option<&ToolChoice>,
    response: Option<&Grammar>,
) -> Result<Option<ToolPlan>, ApiError> {
    let tools = tools.unwrap_or_default();
    let mode = match choice {
        None => "auto",
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "none" | "auto" | "required" => m.as_str(),
            other => {
                return Err(ApiError::bad_param(
                    "tool_choice",
                    format!("tool_choice {other:?} must be none, auto, required or a function"),
                ));
            }
        },
        Some(ToolChoice::Named { .. }) => "named",
    };
    if tools.is_empty() {
        if matches!(mode, "required" | "named") {
            return Err(ApiError::bad_param(
                "tool_choice",
                "tool_choice asks for a tool call but no tools are given",
            ));
        }
        return Ok(None);
    }
    if mode == "none" {
        return Ok(None);
    }
    for t in tools {
        if t.kind != "function" {
            return Err(ApiError::bad_param(
                "tools",
                format!("tools of type {:?} are not supported", t.kind),
            ));
        }
        if let Some(p) = &t.function.parameters
            && !(p.is_object() || p.is_null())
        {
            return Err(ApiError::bad_param(
                "tools",
                format!(
                    "the parameters of {:?} are not a JSON schema",
                    t.function.name
                ),
            ));
        }
    }
    let chosen: Vec<&Tool> = match choice {
        Some(ToolChoice::Named { kind, function }) => {
            if kind != "function" {
                return Err(ApiError::bad_param(
                    "tool_choice",
                    format!("tool_choice of type {kind:?} is not supported"),
                ));
            }
            let t = tools
                .iter()
                .find(|t| t.function.name == function.name)
                .ok_or_else(|| {
                    ApiError::bad_param(
                        "tool_choice",
                        format!(
                            "tool_choice names {:?}, which is not in tools",
                            function.name
                        ),
                    )
                })?;
            vec![t]
        }
        _ => tools.iter().collect(),
    };
    let calls: Vec<Value> = chosen.iter().map(|t| call_schema(t)).collect();
    let call = json!({
        "type": "object",
        "properties": {
            "tool_call": if calls.len() == 1 { calls[0].clone() } else { json!({"anyOf": calls}) },
        },
        "required": ["tool_call"],
        "additionalProperties": false,
    });
    let allow_response = mode == "auto";
    let schema = if allow_response {
        let response = match response {
            None => json!({"type": "string"}),
            Some(Grammar::JsonSchema(s)) => s.clone(),
            Some(Grammar::JsonObject) => json!({"type": "object"}),
            Some(g) => {
                return Err(ApiError::bad_param(
                    "tools",
                    format!("tools cannot be combined with a {}", g.kind()),
                ));
            }
        };
        json!({"anyOf": [call, {
            "type": "object",
            "properties": {"response": response},
            "required": ["response"],
            "additionalProperties": false,
        }]})
    } else {
        call
    };
    let listed: Vec<Value> = chosen
        .iter()
        .map(|t| {
            json!({
                "name": t.function.name,
                "description": t.function.description,
                "parameters": t.function.parameters,
            })
        })
        .collect();
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let how = if allow_response {
        "Respond in JSON format, either with `tool_call` (a request to call a tool) or with \
         `response` (a reply to the user's request)"
    } else {
        "Respond in JSON format with `tool_call` (a request to call a tool)"
    };
    let instruction = format!(
        "You can call the following tools to satisfy the user's requests:\n{}\n\n{how}, \
         following this JSON schema:\n{}",
        pretty(&Value::Array(listed)),
        pretty(&schema)
    );
    Ok(Some(ToolPlan {
        schema,
        allow_response,
        instruction,
    }))
}

/// The schema of a call of tool `t`: its name as a constant, then its parameters. The
/// wrappers allow no other properties (JSON Schema's default would let the model go on
/// after the call).
fn call_schema(t: &Tool) -> Value {
    let parameters = match &t.function.parameters {
        None | Some(Value::Null) => json!({"type": "object"}),
        Some(p) => p.clone(),
    };
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "const": t.function.name},
            "arguments": parameters,
        },
        "required": ["name", "arguments"],
        "additionalProperties": false,
    })
}

/// The request's messages as the template's messages: an assistant message's tool calls
/// become its content, `{"tool_call": {"name", "arguments"}}` (`{"tool_calls": […]}` for
/// several), and `tool` messages become user messages `{"tool_response": {"tool", "content",
/// "tool_call_id"}}` (consecutive ones in one message).
pub fn history(messages: &[Message]) -> Result<Vec<ChatMessage>, ApiError> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    let mut last_was_tool = false;
    for m in messages {
        let text = m.text()?;
        if m.role == "tool" {
            let name = m.name.clone().or_else(|| {
                // The call it answers names the tool.
                messages
                    .iter()
                    .flat_map(|p| p.tool_calls.iter().flatten())
                    .find(|c| c.id.is_some() && c.id == m.tool_call_id)
                    .map(|c| c.function.name.clone())
            });
            let content = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
            let response = json!({"tool_response": {
                "tool": name, "content": content, "tool_call_id": m.tool_call_id,
            }})
            .to_string();
            match out.last_mut() {
                Some(prev) if last_was_tool => {
                    prev.content.push('\n');
                    prev.content.push_str(&response);
                }
                _ => out.push(ChatMessage::user(response)),
            }
            last_was_tool = true;
            continue;
        }
        last_was_tool = false;
        let calls = m.tool_calls.as_deref().unwrap_or_default();
        if calls.is_empty() {
            out.push(ChatMessage::new(m.role.clone(), text));
            continue;
        }
        let as_json: Vec<Value> = calls
            .iter()
            .map(|c| {
                let arguments = match &c.function.arguments {
                    Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
                    Value::Null => json!({}),
                    v => v.clone(),
                };
                json!({"name": c.function.name, "arguments": arguments})
            })
            .collect();
        let mut content = if as_json.len() == 1 {
            json!({"tool_call": as_json[0]}).to_string()
        } else {
            json!({"tool_calls": as_json}).to_string()
        };
        if !text.is_empty() {
            content = format!("{text}\n{content}");
        }
        out.push(ChatMessage::new(m.role.clone(), content));
    }
    Ok(out)
}

/// Add `instruction` to the system message (a new one first when there is none).
pub fn add_instruction(messages: &mut Vec<ChatMessage>, instruction: &str) {
    match messages.first_mut() {
        Some(m) if m.role == "system" => {
            if !m.content.is_empty() {
                m.content.push_str("\n\n");
            }
            m.content.push_str(instruction);
        }
        _ => messages.insert(0, ChatMessage::system(instruction)),
    }
}

/// A fresh tool-call id, `call_` and 24 random hex digits.
pub fn call_id() -> String {
    let state = std::collections::hash_map::RandomState::new();
    let mut h = state.build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let a = h.finish();
    h.write_u64(a);
    format!("call_{a:016x}{:08x}", h.finish() as u32)
}

/// What the model answered to a request with tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolOutput {
    /// A call: the function's name and its arguments as JSON text.
    Call {
        /// The function.
        name: String,
        /// Its arguments (JSON text).
        arguments: String,
    },
    /// A reply to the user.
    Response(String),
    /// Not a complete answer of the expected form (cut by `max_tokens`): the raw text.
    Unparsed(String),
}

/// How a tool call's text starts, up to its name.
const CALL_PREFIX: &str = "{\"tool_call\": {\"name\": ";
/// What follows a tool call's name.
const ARGUMENTS_KEY: &str = ", \"arguments\": ";
/// How a response's text starts.
const RESPONSE_PREFIX: &str = "{\"response\": ";

/// Read a whole answer. A call cut short after its name is still a call (with the
/// arguments text so far, as a stream sends it).
pub fn parse_output(text: &str) -> ToolOutput {
    let unparsed = || ToolOutput::Unparsed(text.to_string());
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        // A call cut short (max_tokens): its name and the arguments so far, as streamed.
        if let Some(rest) = text.strip_prefix(CALL_PREFIX)
            && let Some(at) = rest.find(ARGUMENTS_KEY)
            && let Ok(name) = serde_json::from_str::<String>(&rest[..at])
        {
            return ToolOutput::Call {
                name,
                arguments: rest[at + ARGUMENTS_KEY.len()..].to_string(),
            };
        }
        return unparsed();
    };
    if let Some(call) = v.get("tool_call") {
        let Some(name) = call.get("name").and_then(Value::as_str) else {
            return unparsed();
        };
        // The arguments exactly as generated (what a stream sends), when the text is compact.
        let arguments = text
            .find(ARGUMENTS_KEY)
            .filter(|_| text.starts_with(CALL_PREFIX) && text.ends_with("}}"))
            .map(|at| text[at + ARGUMENTS_KEY.len()..text.len() - 2].to_string())
            .filter(|a| serde_json::from_str::<Value>(a).is_ok())
            .unwrap_or_else(|| call.get("arguments").unwrap_or(&json!({})).to_string());
        return ToolOutput::Call {
            name: name.to_string(),
            arguments,
        };
    }
    match v.get("response") {
        Some(Value::String(s)) => ToolOutput::Response(s.clone()),
        Some(other) => ToolOutput::Response(other.to_string()),
        None => unparsed(),
    }
}

/// A piece of a streamed answer to a request with tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolDelta {
    /// Text for `delta.content`.
    Content(String),
    /// A call starts: its function's name.
    CallStart(String),
    /// More of the call's arguments text.
    Arguments(String),
}

/// Where a streamed answer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamMode {
    /// Not yet known whether it is a call or a response.
    Undecided,
    /// A call whose arguments start at this byte; `sent` bytes of them are out.
    Arguments { start: usize, sent: usize },
    /// A response whose string starts at this byte (after its quote); `sent` bytes out.
    Response { start: usize, sent: usize },
    /// Something else: passed through as content from byte `sent`.
    Raw { sent: usize },
}

/// Turns the streamed text of an answer into [`ToolDelta`]s as soon as they are known: the
/// call's name once complete, then its arguments holding back the last 2 characters (the
/// closing `}}`); a response's string decoded, holding back an unfinished escape and the
/// closing `"}`.
#[derive(Debug)]
pub struct ToolStream {
    text: String,
    mode: StreamMode,
}

impl Default for ToolStream {
    fn default() -> Self {
        ToolStream {
            text: String::new(),
            mode: StreamMode::Undecided,
        }
    }
}

impl ToolStream {
    /// Add generated text; returns what can be sent now.
    pub fn push(&mut self, text: &str) -> Vec<ToolDelta> {
        self.text.push_str(text);
        self.advance(false)
    }

    /// The answer is over: returns the rest.
    pub fn finish(&mut self) -> Vec<ToolDelta> {
        self.advance(true)
    }

    fn advance(&mut self, done: bool) -> Vec<ToolDelta> {
        let mut out = Vec::new();
        let t = &self.text;
        if self.mode == StreamMode::Undecided {
            if let Some(rest) = t.strip_prefix(CALL_PREFIX) {
                if let Some(at) = rest.find(ARGUMENTS_KEY) {
                    let raw_name = &rest[..at];
                    match serde_json::from_str::<String>(raw_name) {
                        Ok(name) => {
                            out.push(ToolDelta::CallStart(name));
                            self.mode = StreamMode::Arguments {
                                start: CALL_PREFIX.len() + at + ARGUMENTS_KEY.len(),
                                sent: 0,
                            };
                        }
                        Err(_) => self.mode = StreamMode::Raw { sent: 0 },
                    }
                }
            } else if t.starts_with(RESPONSE_PREFIX) && t.len() > RESPONSE_PREFIX.len() {
                self.mode = if t[RESPONSE_PREFIX.len()..].starts_with('"') {
                    StreamMode::Response {
                        start: RESPONSE_PREFIX.len() + 1,
                        sent: 0,
                    }
                } else {
                    StreamMode::Raw { sent: 0 }
                };
            } else if !(CALL_PREFIX.starts_with(t.as_str())
                || RESPONSE_PREFIX.starts_with(t.as_str()))
            {
                self.mode = StreamMode::Raw { sent: 0 };
            }
            if done && self.mode == StreamMode::Undecided {
                self.mode = StreamMode::Raw { sent: 0 };
            }
        }
        let t = &self.text;
        match &mut self.mode {
            StreamMode::Undecided => {}
            StreamMode::Raw { sent } => {
                if *sent < t.len() {
                    out.push(ToolDelta::Content(t[*sent..].to_string()));
                    *sent = t.len();
                }
            }
            StreamMode::Arguments { start, sent } => {
                let body = &t[*start..];
                let end = if done {
                    body.strip_suffix("}}").map_or(body.len(), str::len)
                } else {
                    floor_char_boundary(body, body.len().saturating_sub(2))
                };
                if end > *sent {
                    out.push(ToolDelta::Arguments(body[*sent..end].to_string()));
                    *sent = end;
                }
            }
            StreamMode::Response { start, sent } => {
                let body = &t[*start..];
                let limit = if done {
                    body.strip_suffix("\"}").map_or(body.len(), str::len)
                } else {
                    floor_char_boundary(body, body.len().saturating_sub(2))
                };
                let end = *sent + decodable_len(&body[*sent..limit]);
                if end > *sent {
                    let raw = &body[*sent..end];
                    let decoded = serde_json::from_str::<String>(&format!("\"{raw}\""))
                        .unwrap_or_else(|_| raw.to_string());
                    out.push(ToolDelta::Content(decoded));
                    *sent = end;
                }
                if done && *sent < body.len() && body.len() != limit + 2 {
                    // Cut short: the rest as it is.
                    out.push(ToolDelta::Content(body[*sent..].to_string()));
                    *sent = body.len();
                }
            }
        }
        out
    }
}

/// The largest char boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    while at > 0 && !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The length of the longest start of the JSON string body `raw` that ends with no escape
/// sequence cut in two (a `\uXXXX` high surrogate waits for its pair).
fn decodable_len(raw: &str) -> usize {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        let need = match b.get(i + 1) {
            None => return i,
            Some(b'u') => {
                let hex = raw.get(i + 2..i + 6);
                let high = hex
                    .and_then(|h| u16::from_str_radix(h, 16).ok())
                    .is_some_and(|u| (0xD800..0xDC00).contains(&u));
                if high { 12 } else { 6 }
            }
            Some(_) => 2,
        };
        if i + need > b.len() {
            return i;
        }
        i += need;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChatRequest, parse};

    fn request(body: &str) -> ChatRequest {
        parse(body.as_bytes()).unwrap()
    }

    const WEATHER: &str = r#"{"type":"function","function":{"name":"get_weather",
        "description":"Weather in a city","parameters":{"type":"object",
        "properties":{"city":{"type":"string"}},"required":["city"]}}}"#;

    fn plan_of(body: &str) -> Result<Option<ToolPlan>, ApiError> {
        let r = request(body);
        plan(r.tools.as_deref(), r.tool_choice.as_ref(), None)
    }

    #[test]
    fn required_and_auto_schemas() {
        let p = plan_of(&format!(
            r#"{{"messages":[],"tools":[{WEATHER}],"tool_choice":"required"}}"#
        ))
        .unwrap()
        .unwrap();
        assert!(!p.allow_response);
        let call = &p.schema["properties"]["tool_call"];
        assert_eq!(call["properties"]["name"]["const"], "get_weather");
        assert_eq!(call["properties"]["arguments"]["required"], json!(["city"]));
        assert_eq!(p.schema["additionalProperties"], false);
        assert_eq!(call["additionalProperties"], false);
        // Properties keep their order: the name comes before the arguments.
        let keys: Vec<&String> = call["properties"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "arguments"]);
        assert!(p.instruction.contains("get_weather"));

        let p = plan_of(&format!(r#"{{"messages":[],"tools":[{WEATHER}]}}"#))
            .unwrap()
            .unwrap();
        assert!(p.allow_response);
        assert_eq!(
            p.schema["anyOf"][1]["properties"]["response"]["type"],
            "string"
        );
        assert!(
            plan_of(&format!(
                r#"{{"messages":[],"tools":[{WEATHER}],"tool_choice":"none"}}"#
            ))
            .unwrap()
            .is_none()
        );
        let named = format!(
            r#"{{"messages":[],"tools":[{WEATHER}],
                "tool_choice":{{"type":"function","function":{{"name":"nope"}}}}}}"#
        );
        assert_eq!(
            plan_of(&named).unwrap_err().param.as_deref(),
            Some("tool_choice")
        );
        assert!(plan_of(r#"{"messages":[],"tool_choice":"required"}"#).is_err());
    }

    #[test]
    fn history_rewrites_calls_and_results() {
        let r = request(
            r#"{"messages":[{"role":"user","content":"weather?"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
              "function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"sunny"},
            {"role":"tool","tool_call_id":"call_1","content":"{\"t\": 20}"}]}"#,
        );
        let h = history(&r.messages).unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(
            h[1].content,
            r#"{"tool_call":{"name":"get_weather","arguments":{"city":"Paris"}}}"#
        );
        assert_eq!(h[2].role, "user");
        let lines: Vec<Value> = h[2]
            .content
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["tool_response"]["tool"], "get_weather");
        assert_eq!(lines[0]["tool_response"]["content"], "sunny");
        assert_eq!(lines[1]["tool_response"]["content"]["t"], 20);
        let mut h = h;
        add_instruction(&mut h, "use tools");
        assert_eq!(
            (h[0].role.as_str(), h[0].content.as_str()),
            ("system", "use tools")
        );
    }

    #[test]
    fn outputs_parse() {
        let text = r#"{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}"#;
        assert_eq!(
            parse_output(text),
            ToolOutput::Call {
                name: "get_weather".into(),
                arguments: r#"{"city": "Paris"}"#.into()
            }
        );
        assert_eq!(
            parse_output(r#"{"response": "hi \"you\""}"#),
            ToolOutput::Response("hi \"you\"".into())
        );
        assert!(matches!(
            parse_output(r#"{"tool_call": {"name": "get"#),
            ToolOutput::Unparsed(_)
        ));
        assert!(matches!(
            parse_output(r#"{"response": "cut"#),
            ToolOutput::Unparsed(_)
        ));
        // Cut inside the arguments: what a stream would have sent.
        let cut = r#"{"tool_call": {"name": "f", "arguments": {"a": [1, 2"#;
        assert_eq!(
            parse_output(cut),
            ToolOutput::Call {
                name: "f".into(),
                arguments: r#"{"a": [1, 2"#.into()
            }
        );
        assert_eq!(
            stream(cut, 3),
            [
                ToolDelta::CallStart("f".into()),
                ToolDelta::Arguments(r#"{"a": [1, 2"#.into())
            ]
        );
    }

    /// Stream `text` in pieces of `n` bytes (at char boundaries) and join the deltas.
    fn stream(text: &str, n: usize) -> Vec<ToolDelta> {
        let mut s = ToolStream::default();
        let mut out = Vec::new();
        let mut at = 0;
        while at < text.len() {
            let mut end = (at + n).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            out.extend(s.push(&text[at..end]));
            at = end;
        }
        out.extend(s.finish());
        // Join runs of the same kind.
        let mut joined: Vec<ToolDelta> = Vec::new();
        for d in out {
            match (joined.last_mut(), d) {
                (Some(ToolDelta::Arguments(a)), ToolDelta::Arguments(b)) => a.push_str(&b),
                (Some(ToolDelta::Content(a)), ToolDelta::Content(b)) => a.push_str(&b),
                (_, d) => joined.push(d),
            }
        }
        joined
    }

    #[test]
    fn streamed_calls_equal_parsed_calls() {
        let text = r#"{"tool_call": {"name": "get_weather", "arguments": {"city": "Zürich", "n": [1, 2]}}}"#;
        let ToolOutput::Call { name, arguments } = parse_output(text) else {
            panic!()
        };
        for n in [1, 2, 3, 7, 100] {
            assert_eq!(
                stream(text, n),
                [
                    ToolDelta::CallStart(name.clone()),
                    ToolDelta::Arguments(arguments.clone())
                ],
                "pieces of {n}"
            );
        }
        // The arguments never run into the closing braces while streaming.
        let mut s = ToolStream::default();
        let sent: String = s
            .push(text)
            .into_iter()
            .filter_map(|d| match d {
                ToolDelta::Arguments(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(sent, arguments);
    }

    #[test]
    fn streamed_responses_are_decoded() {
        let text = r#"{"response": "a \"q\" \u00e9\ud83d\ude00 é\n"}"#;
        let ToolOutput::Response(want) = parse_output(text) else {
            panic!()
        };
        for n in [1, 2, 5, 100] {
            assert_eq!(stream(text, n), [ToolDelta::Content(want.clone())], "{n}");
        }
        // Anything else passes through.
        assert_eq!(stream("plain", 2), [ToolDelta::Content("plain".into())]);
        assert_eq!(
            stream(r#"{"tool_call": {"na"#, 3),
            [ToolDelta::Content(r#"{"tool_call": {"na"#.into())]
        );
    }
}
