//! The JSON the completion endpoints answer with: whole responses, stream chunks (OpenAI's
//! shapes for chat and for text completions) and the server-sent event stream built from a
//! job's [`Event`]s. Answers to requests with tools are read as tool calls
//! ([`crate::tool_calls`]): `message.tool_calls`, or `delta.tool_calls` while streaming.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::Event as SseEvent;
use futures_util::Stream;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine_loop::{Event, FinishReason, TokenLogprob, Usage};
use crate::error::ApiError;
use crate::tool_calls::{self, ToolDelta, ToolOutput, ToolStream};

/// Which endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Text,
}

/// What every response and chunk of one request carries.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// Endpoint.
    pub kind: Kind,
    /// `chatcmpl-…` / `cmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// Model name.
    pub model: String,
}

/// The `usage` object.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": { "cached_tokens": u.cached_tokens },
    })
}

/// One token's entry in chat logprobs.
fn chat_logprob(lp: &TokenLogprob) -> Value {
    json!({
        "token": lp.token,
        "logprob": lp.logprob,
        "bytes": lp.bytes,
        "top_logprobs": lp.top.iter().map(|(t, b, l)| json!({
            "token": t, "logprob": l, "bytes": b,
        })).collect::<Vec<_>>(),
    })
}

/// Text-completion logprobs of `tokens` whose text starts at `offset` bytes of the answer.
fn text_logprobs(tokens: &[TokenLogprob], mut offset: usize) -> Value {
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        offsets.push(offset);
        offset += t.token.len();
    }
    json!({
        "tokens": tokens.iter().map(|t| t.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.top.iter().map(|(s, _, l)| (s.clone(), json!(l))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

/// Logprobs in the endpoint's shape (`null` when none were asked for).
fn logprobs_json(kind: Kind, tokens: &[TokenLogprob], offset: usize, asked: bool) -> Value {
    if !asked {
        return Value::Null;
    }
    match kind {
        Kind::Chat => json!({ "content": tokens.iter().map(chat_logprob).collect::<Vec<_>>() }),
        Kind::Text => text_logprobs(tokens, offset),
    }
}

impl Envelope {
    /// A stream chunk with one choice.
    fn chunk(&self, choice: Value) -> Value {
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Text => "text_completion",
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [choice],
        })
    }

    /// The first chat chunk (the role); `None` for text completions.
    pub fn opening_chunk(&self) -> Option<Value> {
        (self.kind == Kind::Chat).then(|| {
            self.chunk(json!({
                "index": 0, "delta": { "role": "assistant", "content": "" },
                "logprobs": null, "finish_reason": null,
            }))
        })
    }

    /// A chunk of text (and its token's logprobs).
    pub fn text_chunk(&self, text: &str, lp: Option<&TokenLogprob>, offset: usize) -> Value {
        let tokens: Vec<TokenLogprob> = lp.into_iter().cloned().collect();
        let logprobs = logprobs_json(self.kind, &tokens, offset, lp.is_some());
        self.chunk(match self.kind {
            Kind::Chat => json!({
                "index": 0, "delta": { "content": text }, "logprobs": logprobs,
                "finish_reason": null,
            }),
            Kind::Text => json!({
                "index": 0, "text": text, "logprobs": logprobs, "finish_reason": null,
            }),
        })
    }

    /// A chunk that starts tool call `id` of function `name` (its arguments follow).
    pub fn call_start_chunk(&self, id: &str, name: &str) -> Value {
        self.chunk(json!({
            "index": 0,
            "delta": {"tool_calls": [{
                "index": 0, "id": id, "type": "function",
                "function": {"name": name, "arguments": ""},
            }]},
            "logprobs": null, "finish_reason": null,
        }))
    }

    /// A chunk with more of the tool call's arguments.
    pub fn arguments_chunk(&self, arguments: &str) -> Value {
        self.chunk(json!({
            "index": 0,
            "delta": {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]},
            "logprobs": null, "finish_reason": null,
        }))
    }

    /// A whole chat response to a request with tools: a call becomes `message.tool_calls`
    /// (`content` null, finish reason `tool_calls` when it ended by itself), a response its
    /// text.
    pub fn tool_response(
        &self,
        text: &str,
        logprobs: &[TokenLogprob],
        asked_logprobs: bool,
        reason: FinishReason,
        usage: &Usage,
    ) -> Value {
        match tool_calls::parse_output(text) {
            ToolOutput::Call { name, arguments } => {
                // A call cut by max_tokens right at its end keeps "length", as streamed.
                let reason = match reason {
                    FinishReason::Stop => FinishReason::ToolCalls,
                    r => r,
                };
                let mut v = self.response("", logprobs, asked_logprobs, reason, usage);
                v["choices"][0]["message"] = json!({
                    "role": "assistant", "content": null,
                    "tool_calls": [{
                        "id": tool_calls::call_id(), "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }],
                });
                v
            }
            ToolOutput::Response(r) => self.response(&r, logprobs, asked_logprobs, reason, usage),
            ToolOutput::Unparsed(t) => self.response(&t, logprobs, asked_logprobs, reason, usage),
        }
    }

    /// The chunk that gives the finish reason.
    pub fn final_chunk(&self, reason: FinishReason) -> Value {
        self.chunk(match self.kind {
            Kind::Chat => json!({
                "index": 0, "delta": {}, "logprobs": null, "finish_reason": reason.as_str(),
            }),
            Kind::Text => json!({
                "index": 0, "text": "", "logprobs": null, "finish_reason": reason.as_str(),
            }),
        })
    }

    /// The last chunk, with the token counts and no choices.
    pub fn usage_chunk(&self, usage: &Usage) -> Value {
        let mut v = self.chunk(Value::Null);
        v["choices"] = json!([]);
        v["usage"] = usage_json(usage);
        v
    }

    /// A whole (non-streamed) response.
    pub fn response(
        &self,
        text: &str,
        logprobs: &[TokenLogprob],
        asked_logprobs: bool,
        reason: FinishReason,
        usage: &Usage,
    ) -> Value {
        let lp = logprobs_json(self.kind, logprobs, 0, asked_logprobs);
        let (object, choice) = match self.kind {
            Kind::Chat => (
                "chat.completion",
                json!({
                    "index": 0, "message": { "role": "assistant", "content": text },
                    "logprobs": lp, "finish_reason": reason.as_str(),
                }),
            ),
            Kind::Text => (
                "text_completion",
                json!({
                    "index": 0, "text": text, "logprobs": lp, "finish_reason": reason.as_str(),
                }),
            ),
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [choice], "usage": usage_json(usage),
        })
    }
}

/// Collect a job's events into a whole response.
pub async fn collect(
    env: &Envelope,
    mut rx: UnboundedReceiver<Event>,
    asked_logprobs: bool,
    tools: bool,
) -> Result<Value, ApiError> {
    let mut text = String::new();
    let mut logprobs = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token { text: t, logprob } => {
                text.push_str(&t);
                logprobs.extend(logprob);
            }
            Event::Done { reason, usage } if tools => {
                return Ok(env.tool_response(&text, &logprobs, asked_logprobs, reason, &usage));
            }
            Event::Done { reason, usage } => {
                return Ok(env.response(&text, &logprobs, asked_logprobs, reason, &usage));
            }
            Event::Error(message) => return Err(engine_error(message)),
        }
    }
    Err(engine_error("the engine stopped".into()))
}

/// An engine failure as an error response (503 while shutting down).
fn engine_error(message: String) -> ApiError {
    let status = if message.contains("shutting down") {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    } else {
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    };
    ApiError::new(status, message)
}

/// State of an event stream.
struct StreamState {
    env: Envelope,
    rx: Option<UnboundedReceiver<Event>>,
    pending: VecDeque<String>,
    include_usage: bool,
    /// Bytes of text sent so far (text-completion logprob offsets).
    offset: usize,
    /// The answer is read as a tool call or response (requests with tools).
    tools: Option<ToolStream>,
    /// A tool call was started.
    called: bool,
}

impl StreamState {
    /// Queue the chunks of tool-format deltas.
    fn push_deltas(&mut self, deltas: Vec<ToolDelta>) {
        for d in deltas {
            let c = match d {
                ToolDelta::Content(t) => self.env.text_chunk(&t, None, 0),
                ToolDelta::CallStart(name) => {
                    self.called = true;
                    self.env.call_start_chunk(&tool_calls::call_id(), &name)
                }
                ToolDelta::Arguments(a) => self.env.arguments_chunk(&a),
            };
            self.pending.push_back(c.to_string());
        }
    }
}

/// The server-sent events of a streamed answer: `data: {chunk}` … `data: [DONE]`; with
/// `tools`, the answer is sent as tool-call deltas or decoded response text. Dropping the
/// stream (the client went away) drops the receiver, which cancels the job.
pub fn sse_stream(
    env: Envelope,
    rx: UnboundedReceiver<Event>,
    include_usage: bool,
    tools: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let mut pending = VecDeque::new();
    if let Some(c) = env.opening_chunk() {
        pending.push_back(c.to_string());
    }
    let state = StreamState {
        env,
        rx: Some(rx),
        pending,
        include_usage,
        offset: 0,
        tools: tools.then(ToolStream::default),
        called: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(data) = s.pending.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), s));
            }
            let ev = s.rx.as_mut()?.recv().await;
            match ev {
                Some(Event::Token { text, .. }) if s.tools.is_some() => {
                    let deltas = s.tools.as_mut().map(|t| t.push(&text)).unwrap_or_default();
                    s.push_deltas(deltas);
                }
                Some(Event::Token { text, logprob }) => {
                    let c = s.env.text_chunk(&text, logprob.as_ref(), s.offset);
                    s.offset += text.len();
                    s.pending.push_back(c.to_string());
                }
                Some(Event::Done { mut reason, usage }) => {
                    if let Some(deltas) = s.tools.as_mut().map(ToolStream::finish) {
                        s.push_deltas(deltas);
                        if s.called && reason == FinishReason::Stop {
                            reason = FinishReason::ToolCalls;
                        }
                    }
                    s.pending.push_back(s.env.final_chunk(reason).to_string());
                    if s.include_usage {
                        s.pending.push_back(s.env.usage_chunk(&usage).to_string());
                    }
                    s.pending.push_back("[DONE]".into());
                    s.rx = None;
                }
                Some(Event::Error(message)) => {
                    s.pending
                        .push_back(engine_error(message).body().to_string());
                    s.rx = None;
                }
                None => s.rx = None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(kind: Kind) -> Envelope {
        Envelope {
            kind,
            id: "x-1".into(),
            created: 5,
            model: "m".into(),
        }
    }

    #[test]
    fn chunks_have_openai_shapes() {
        let c = env(Kind::Chat).text_chunk("hi", None, 0);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["choices"][0]["delta"]["content"], "hi");
        let t = env(Kind::Text).final_chunk(FinishReason::Length);
        assert_eq!(t["choices"][0]["finish_reason"], "length");
        let u = env(Kind::Chat).usage_chunk(&Usage {
            prompt_tokens: 3,
            cached_tokens: 1,
            completion_tokens: 2,
        });
        assert_eq!(u["usage"]["total_tokens"], 5);
        assert_eq!(u["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
        assert_eq!(u["choices"], json!([]));
    }

    #[test]
    fn text_logprobs_carry_offsets() {
        let lp = |t: &str| TokenLogprob {
            token: t.into(),
            bytes: t.as_bytes().to_vec(),
            logprob: -0.5,
            top: vec![(t.into(), t.as_bytes().to_vec(), -0.5)],
        };
        let v = text_logprobs(&[lp("ab"), lp("c")], 3);
        assert_eq!(v["text_offset"], json!([3, 5]));
        assert_eq!(v["top_logprobs"][1]["c"], -0.5);
    }
}
