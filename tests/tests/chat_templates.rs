//! The chat templates of the families Tessera runs render as Hugging Face transformers renders
//! them: each template from llama.cpp's `models/templates/` (Llama 3.1/3.2, Mistral Nemo and
//! Small 3.2, Qwen2.5, Qwen3, Phi-3.5, Gemma 2, SmolLM3, DeepSeek-V3.1, DeepSeek-R1-Distill and
//! gpt-oss's harmony format) over a few conversations, with and without the generation prompt,
//! must give exactly the text Jinja2 gave in `tests/chat/reference.py` (the fixture
//! `tests/fixtures/chat_templates.json`), or refuse the conversations Jinja2 refused.
//!
//! Where llama.cpp ships the family's vocabulary (Llama 3.x, Qwen2.5/3, Phi-3.5, Gemma 2), the
//! rendered prompt must also tokenize to llama.cpp's ids (`llama-tokenize --no-bos`, special
//! tokens parsed as a server parses a rendered chat): the prompt the model actually sees.
//!
//! The templates are read from the llama-cpp-python sdist `.ci/run` extracts (as the
//! vocabularies are); `strftime_now(FMT)` markers in the fixture become Tessera's own
//! `strftime_now(FMT)` at test time.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use tessera_engine::GgufFile;
use tessera_models::chat::{ChatMessage, ChatTemplate};
use tessera_models::tokenizer::Tokenizer;
use tessera_tests::synthetic::vocab_dir;

/// Replace each `<<strftime_now:FMT>>` with what Tessera's `strftime_now(FMT)` renders.
fn with_dates(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("<<strftime_now:") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + "<<strftime_now:".len()..];
        let end = tail.find(">>").expect("a closed marker");
        let fmt = &tail[..end];
        let t = ChatTemplate::new(&format!("{{{{ strftime_now('{fmt}') }}}}"), "", "").unwrap();
        out.push_str(&t.render_raw(&[], false).unwrap());
        rest = &tail[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The tokenizer of vocabulary `name` (`ggml-vocab-NAME.gguf` in `models`, or "gemma": the
/// pulled Gemma 3 model's); `None` when the Gemma model is missing and that is allowed.
fn tokenizer(models: &Path, name: &str) -> Option<Tokenizer> {
    let path = if name == "gemma" {
        tessera_tests::model(tessera_tests::GEMMA3)?
    } else {
        models.join(format!("ggml-vocab-{name}.gguf"))
    };
    let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(Tokenizer::from_gguf(gguf.metadata()).unwrap())
}

#[test]
fn published_templates_render_as_transformers_does() {
    let Some(models) = vocab_dir() else {
        return;
    };
    let dir = models.join("templates");
    let fixture: Value = serde_json::from_str(include_str!("../fixtures/chat_templates.json"))
        .expect("fixture parses");
    let conversations = &fixture["conversations"];
    let cases = fixture["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    let mut tokenizers: HashMap<String, Option<Tokenizer>> = HashMap::new();
    let mut tokenized = 0;
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let source = std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()));
        let conv = case["conversation"].as_str().unwrap();
        let messages: Vec<ChatMessage> = conversations[conv]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let prompt = case["add_generation_prompt"].as_bool().unwrap();
        let (bos, eos) = (case["bos"].as_str().unwrap(), case["eos"].as_str().unwrap());
        let what = format!("{name} / {conv} / generation prompt {prompt}");
        let ours = ChatTemplate::new(&source, bos, eos)
            .map_err(|e| e.to_string())
            .and_then(|t| t.render_raw(&messages, prompt).map_err(|e| e.to_string()));
        match (case.get("text").and_then(Value::as_str), ours) {
            (Some(want), Ok(got)) => {
                let want = with_dates(want);
                if got != want {
                    failures.push(format!("{what}:\n--- Jinja2\n{want}\n--- Tessera\n{got}\n"));
                }
                if let (Some(vocab), Some(ids)) = (case["vocab"].as_str(), case.get("llama_ids")) {
                    let t = tokenizers
                        .entry(vocab.to_string())
                        .or_insert_with(|| tokenizer(&models, vocab));
                    if let Some(t) = t {
                        let ours = t.encode(&got, false, true);
                        let want: Vec<u32> = ids
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_u64().unwrap() as u32)
                            .collect();
                        tokenized += 1;
                        if ours != want {
                            failures.push(format!(
                                "{what}: ids differ from llama.cpp's ({vocab}):\n{want:?}\n{ours:?}"
                            ));
                        }
                    }
                }
            }
            (Some(_), Err(e)) => failures.push(format!("{what}: Tessera refused: {e}")),
            (None, Ok(got)) => failures.push(format!(
                "{what}: Jinja2 raised {:?}, Tessera rendered:\n{got}",
                case["error"]
            )),
            (None, Err(_)) => {}
        }
    }
    eprintln!("{} renderings, {tokenized} of them tokenized", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} renderings differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
