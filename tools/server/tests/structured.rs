//! Structured output and tool calls on SmolLM2 (skipped when the model is missing and
//! `TESSERA_ALLOW_MISSING_MODELS=1`): `response_format` json_schema and json_object, the
//! `json_schema` and `grammar` extensions, streamed and whole; `tool_choice` required and
//! named (arguments that follow the tool's schema, streamed deltas that join to the whole
//! answer's arguments), tool messages in the history; an invalid schema is a 400; a schema
//! that cannot end within `max_tokens` ends with "length"; on Gemma 3, a call ends after the
//! call and a history with tool messages renders through its strict template.

mod common;

use common::*;
use serde_json::{Value, json};

/// A person: nested object, bounded string, integer range, enum, bounded array.
fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 16},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "role": {"enum": ["admin", "user", "guest"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                     "minItems": 1, "maxItems": 2},
        },
        "required": ["name", "age", "role", "tags"],
        "additionalProperties": false,
    })
}

/// Check `v` against [`person_schema`] by hand.
fn check_person(v: &Value) {
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    assert_eq!(o.len(), 4, "{v}");
    assert!(o["name"].as_str().unwrap().chars().count() <= 16, "{v}");
    let age = o["age"].as_i64().unwrap();
    assert!((0..=120).contains(&age), "{v}");
    assert!(["admin", "user", "guest"].contains(&o["role"].as_str().unwrap()));
    let tags = o["tags"].as_array().unwrap();
    assert!((1..=2).contains(&tags.len()), "{v}");
}

fn chat(content: &str, max_tokens: u64) -> Value {
    json!({"messages": [{"role": "user", "content": content}],
           "max_tokens": max_tokens, "temperature": 0})
}

/// A chat answer whole and streamed: (whole response, streamed text, streamed finish reason).
fn whole_and_streamed(
    a: std::net::SocketAddr,
    path: &str,
    body: &Value,
) -> (Value, String, String) {
    let r = post(a, path, body);
    assert_eq!(r.status, 200, "{}", r.body);
    let whole = r.json();
    let mut s = body.clone();
    s["stream"] = json!(true);
    let events = post(a, path, &s).events();
    let reason = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| {
            let v: Value = serde_json::from_str(e).unwrap();
            v["choices"][0]["finish_reason"]
                .as_str()
                .map(str::to_string)
        })
        .next_back()
        .unwrap_or_default();
    (whole, stream_text(&events), reason)
}

#[test]
fn response_formats_give_valid_json_streamed_and_whole() {
    let Some(loader) = smollm2_loader() else {
        return;
    };
    let server = start(config(engine(2, 512)), loader);
    let a = server.addr();

    let mut body = chat("Describe a user of a web site as JSON.", 96);
    body["response_format"] = json!({"type": "json_schema",
        "json_schema": {"name": "person", "schema": person_schema(), "strict": true}});
    let (whole, streamed, reason) = whole_and_streamed(a, "/v1/chat/completions", &body);
    let text = answer_text(&whole);
    assert_eq!(whole["choices"][0]["finish_reason"], "stop", "{whole}");
    check_person(&serde_json::from_str(&text).unwrap());
    assert_eq!(
        (streamed.as_str(), reason.as_str()),
        (text.as_str(), "stop")
    );

    // json_object: any object.
    let mut body = chat("Give me a JSON object about Paris.", 64);
    body["response_format"] = json!({"type": "json_object"});
    let r = post(a, "/v1/chat/completions", &body).json();
    let text = answer_text(&r);
    if r["choices"][0]["finish_reason"] == "stop" {
        assert!(
            serde_json::from_str::<Value>(&text).unwrap().is_object(),
            "{text}"
        );
    } else {
        assert!(text.starts_with('{'), "{text}");
    }

    // llama-server's extensions on the text endpoint: json_schema and a GBNF grammar.
    let body = json!({"prompt": "Is the sky blue? Answer:", "max_tokens": 8, "temperature": 0,
                      "json_schema": {"enum": ["yes", "no"]}});
    let (whole, streamed, _) = whole_and_streamed(a, "/v1/completions", &body);
    let text = answer_text(&whole);
    assert!(text == "\"yes\"" || text == "\"no\"", "{text}");
    assert_eq!(streamed, text);
    let body = json!({"prompt": "Count: one, two,", "max_tokens": 8, "temperature": 0,
                      "grammar": "root ::= \" \" [a-z]{1,8} \",\""});
    let r = post(a, "/v1/completions", &body).json();
    let text = answer_text(&r);
    assert!(
        text.starts_with(' ')
            && text.ends_with(',')
            && text[1..text.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_lowercase()),
        "{text:?}"
    );
    server.stop().unwrap();
}

#[test]
fn bad_grammars_are_400_and_unfinishable_schemas_end_with_length() {
    let Some(loader) = smollm2_loader() else {
        return;
    };
    let server = start(config(engine(1, 256)), loader);
    let a = server.addr();
    let mut body = chat("hi", 8);
    body["response_format"] = json!({"type": "json_schema",
        "json_schema": {"name": "bad", "schema": {"type": "object",
            "properties": {"a": {"type": "no-such-type"}}}}});
    let r = post(a, "/v1/chat/completions", &body);
    assert_eq!(r.status, 400, "{}", r.body);
    let e = r.json();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(e["error"]["param"], "response_format");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-type"),
        "{e}"
    );
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": "x", "grammar": "root ::= undefined-rule"}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["param"], "grammar");
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": "x", "grammar": "root ::= \"a\"", "json_schema": {}}),
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // 40 digits at least cannot be written in 6 tokens: the partial text, "length".
    let mut body = chat("Write a long number.", 6);
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "n",
        "schema": {"type": "string", "pattern": "^[0-9]{40,}$"}}});
    for stream in [false, true] {
        body["stream"] = json!(stream);
        let r = post(a, "/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        let (text, reason) = if stream {
            let ev = r.events();
            let last = ev.iter().rev().find(|e| *e != "[DONE]").unwrap();
            let v: Value = serde_json::from_str(last).unwrap();
            (stream_text(&ev), v["choices"][0]["finish_reason"].clone())
        } else {
            let v = r.json();
            (answer_text(&v), v["choices"][0]["finish_reason"].clone())
        };
        assert_eq!(reason, "length");
        assert!(
            text.starts_with('"') && text[1..].bytes().all(|b| b.is_ascii_digit()),
            "{text:?}"
        );
    }
    server.stop().unwrap();
}

/// A weather tool.
fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather", "description": "The current weather in a city",
        "parameters": {"type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24},
                           "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": false}}})
}

/// A second tool.
fn time_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_time", "description": "The time in a time zone",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 16}},
            "required": ["zone"]}}})
}

/// The tool calls of a streamed answer: (id, name, joined arguments) per index, and the
/// finish reason.
fn streamed_calls(events: &[String]) -> (Vec<(String, String, String)>, String) {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut reason = String::new();
    for e in events.iter().filter(|e| *e != "[DONE]") {
        let v: Value = serde_json::from_str(e).unwrap();
        let c = &v["choices"][0];
        if let Some(r) = c["finish_reason"].as_str() {
            reason = r.to_string();
        }
        for d in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = d["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                assert_eq!(d["type"], "function", "{d}");
                calls.push((
                    d["id"].as_str().unwrap().to_string(),
                    d["function"]["name"].as_str().unwrap().to_string(),
                    String::new(),
                ));
            }
            calls[i]
                .2
                .push_str(d["function"]["arguments"].as_str().unwrap());
        }
    }
    (calls, reason)
}

#[test]
fn required_tool_calls_follow_the_schema_and_stream_as_deltas() {
    let Some(loader) = smollm2_loader() else {
        return;
    };
    let server = start(config(engine(2, 1024)), loader);
    let a = server.addr();
    let mut body = chat("What is the weather like in Paris?", 64);
    body["tools"] = json!([weather_tool(), time_tool()]);
    body["tool_choice"] = json!("required");
    let r = post(a, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    assert!(choice["message"]["content"].is_null(), "{v}");
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{v}");
    assert_eq!(call["type"], "function");
    let name = call["function"]["name"].as_str().unwrap();
    let arguments = call["function"]["arguments"].as_str().unwrap();
    let args: Value = serde_json::from_str(arguments).unwrap();
    match name {
        "get_weather" => {
            assert!(args["city"].as_str().unwrap().chars().count() <= 24);
            assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()));
        }
        "get_time" => assert!(args["zone"].is_string()),
        other => panic!("unknown tool {other}"),
    }
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (calls, reason) = streamed_calls(&post(a, "/v1/chat/completions", &streamed).events());
    assert_eq!(reason, "tool_calls");
    assert_eq!(calls.len(), 1);
    assert!(calls[0].0.starts_with("call_"));
    assert_eq!(
        (calls[0].1.as_str(), calls[0].2.as_str()),
        (name, arguments)
    );

    // Cut by max_tokens inside the arguments: the call so far, "length", whole and streamed.
    let mut cut = body.clone();
    cut["max_tokens"] = json!(22);
    let v = post(a, "/v1/chat/completions", &cut).json();
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    let partial = &v["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(partial["name"].as_str(), Some(name), "{v}");
    cut["stream"] = json!(true);
    let (calls, reason) = streamed_calls(&post(a, "/v1/chat/completions", &cut).events());
    assert_eq!(reason, "length");
    assert_eq!(Some(calls[0].2.as_str()), partial["arguments"].as_str());
    assert!(arguments.starts_with(&calls[0].2), "{arguments} {calls:?}");

    // A named function; the history carries a call and its result.
    let mut body = json!({"messages": [
        {"role": "user", "content": "What is the weather like in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather",
                         "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 21}"},
        {"role": "user", "content": "And what time is it in Tokyo?"}],
        "max_tokens": 48, "temperature": 0,
        "tools": [weather_tool(), time_tool()],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}}});
    let v = post(a, "/v1/chat/completions", &body).json();
    let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_time", "{v}");
    assert!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap()["zone"]
            .is_string()
    );
    // tool_choice none: plain text, even with the tools.
    body["tool_choice"] = json!("none");
    body["max_tokens"] = json!(4);
    let v = post(a, "/v1/chat/completions", &body).json();
    assert!(v["choices"][0]["message"]["tool_calls"].is_null(), "{v}");
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    server.stop().unwrap();
}

#[test]
fn gemma_tool_calls_end_after_the_call_and_history_renders() {
    // Gemma 3's template only takes alternating user/assistant turns (the system prompt goes
    // into the first user turn): the rewritten history must render. Its answer, unlike
    // SmolLM2's, went on after the call until the wrapper objects refused other properties.
    let Some(path) = tessera_model_files::model_file(tessera_model_files::GEMMA3) else {
        return;
    };
    let loader: tessera_server::ModelLoader = Box::new(move || {
        tessera_models::Model::load(&path, &Default::default())
            .map(std::sync::Arc::new)
            .map_err(|e| e.to_string())
    });
    let server = start(config(engine(1, 1024)), loader);
    let a = server.addr();
    let mut body = chat("What is the weather in Berlin?", 60);
    body["tools"] = json!([weather_tool()]);
    body["tool_choice"] = json!("required");
    let v = post(a, "/v1/chat/completions", &body).json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_weather");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(
        args["city"].is_string() && args["unit"].is_string(),
        "{args}"
    );

    let body = json!({"messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the weather in Berlin?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 18}"}],
        "max_tokens": 24, "temperature": 0, "tools": [weather_tool()]});
    let r = post(a, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let m = &r.json()["choices"][0]["message"];
    assert!(
        m["content"].is_string() || m["tool_calls"].is_array(),
        "{m}"
    );
    server.stop().unwrap();
}
