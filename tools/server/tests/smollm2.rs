//! The server on SmolLM2 (skipped when the model is missing and
//! `TESSERA_ALLOW_MISSING_MODELS=1`): greedy answers equal a lone session's (what `tessera run
//! --temp 0` computes) token for token, alone and among 8 concurrent requests; stop strings;
//! `max_tokens`; a full queue; a client that disconnects mid-stream.

mod common;

use std::io::Write;
use std::sync::Arc;

use common::*;
use serde_json::json;
use tessera_models::hparams::RopeOverrides;
use tessera_models::sampler::SamplerParams;
use tessera_models::{ContextParams, Model, Session, SessionParams};

/// Prompts of different lengths.
const PROMPTS: [&str; 8] = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "1, 2, 3, 4, 5,",
    "The three primary colors are",
    "Water boils at",
    "My favourite fruit is the banana because it is sweet, soft and",
    "In 1969, the first humans",
];

/// What `tessera run -p PROMPT -n N --temp 0` generates: the prompt tokenized with BOS and
/// control tokens parsed, evaluated at once, then greedy tokens fed back one by one.
fn solo_greedy(model: &Arc<Model>, prompt: &str, n: usize) -> String {
    let params = SessionParams {
        context: ContextParams {
            n_ctx: 512,
            n_threads: 1,
            ..Default::default()
        },
        sampler: SamplerParams::greedy(),
        ..Default::default()
    };
    let mut s = Session::new(model.clone(), &params).unwrap();
    let tokens = s.tokenize(prompt, true, true);
    for &t in &tokens {
        s.accept(t);
    }
    s.eval(&tokens).unwrap();
    let mut text = String::new();
    let model = s.model().clone();
    let mut dec = model.tokenizer().stream_decoder();
    for i in 0..n {
        let id = s.sample();
        s.accept(id);
        if model.tokenizer().is_eog(id) {
            break;
        }
        text.push_str(&dec.push(id));
        if i + 1 < n {
            s.eval(&[id]).unwrap();
        }
    }
    text
}

fn greedy_body(prompt: &str, n: usize) -> serde_json::Value {
    json!({"prompt": prompt, "max_tokens": n, "temperature": 0})
}

#[test]
fn greedy_answers_equal_a_lone_session_alone_and_among_8_concurrent() {
    let Some(path) = tessera_model_files::model_file(tessera_model_files::SMOLLM2) else {
        return;
    };
    let model = Arc::new(Model::load(&path, &RopeOverrides::default()).unwrap());
    let m2 = model.clone();
    let server = start(config(engine(8, 256)), Box::new(move || Ok(m2)));
    let a = server.addr();
    let n = 24;
    let solo: Vec<String> = PROMPTS
        .iter()
        .map(|p| {
            let r = post(a, "/v1/completions", &greedy_body(p, n));
            assert_eq!(r.status, 200, "{}", r.body);
            answer_text(&r.json())
        })
        .collect();
    for (p, got) in PROMPTS.iter().zip(&solo).take(3) {
        assert_eq!(got, &solo_greedy(&model, p, n), "prompt {p:?}");
    }
    // 8 at once (half of them streamed), each equal to its solo answer.
    let threads: Vec<_> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let p = p.to_string();
            std::thread::spawn(move || {
                let mut body = greedy_body(&p, n);
                if i % 2 == 1 {
                    body["stream"] = json!(true);
                    stream_text(&post(a, "/v1/completions", &body).events())
                } else {
                    answer_text(&post(a, "/v1/completions", &body).json())
                }
            })
        })
        .collect();
    for ((t, want), p) in threads.into_iter().zip(&solo).zip(PROMPTS) {
        assert_eq!(&t.join().unwrap(), want, "prompt {p:?}");
    }
    // The chat endpoint streams what it answers whole.
    let chat = json!({"messages": [{"role": "user", "content": "What is the capital of France?"}],
                      "max_tokens": 16, "temperature": 0});
    let whole = answer_text(&post(a, "/v1/chat/completions", &chat).json());
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    assert_eq!(
        stream_text(&post(a, "/v1/chat/completions", &streamed).events()),
        whole
    );
    assert!(!whole.is_empty());
    server.stop().unwrap();
}

#[test]
fn stop_strings_and_max_tokens_end_generation() {
    let Some(loader) = smollm2_loader() else {
        return;
    };
    let server = start(config(engine(1, 256)), loader);
    let a = server.addr();
    // Greedy: " Paris.\n\nThe United States has …"
    let base = greedy_body("The capital of France is", 16);
    let full = post(a, "/v1/completions", &base).json();
    assert!(answer_text(&full).starts_with(" Paris."), "{full}");
    assert_eq!(full["choices"][0]["finish_reason"], "length");
    assert_eq!(full["usage"]["completion_tokens"], 16);

    let mut stop = base.clone();
    stop["stop"] = json!(["\n\n", "."]);
    let v = post(a, "/v1/completions", &stop).json();
    assert_eq!(answer_text(&v), " Paris");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Streamed, a stop string that spans tokens is held back and never sent.
    stop["stop"] = json!("is.\n\nThe Un");
    stop["stream"] = json!(true);
    let mut want = answer_text(&full);
    let cut = want.find("is.\n\nThe Un");
    if let Some(cut) = cut {
        want.truncate(cut);
    }
    let events = post(a, "/v1/completions", &stop).events();
    assert_eq!(stream_text(&events), want);
    server.stop().unwrap();
}

#[test]
fn a_full_queue_is_503_and_a_dropped_stream_frees_its_slot() {
    let Some(loader) = smollm2_loader() else {
        return;
    };
    let mut cfg = config(engine(1, 1024));
    cfg.engine.queue_capacity = 1;
    let server = start(cfg, loader);
    let a = server.addr();
    let long =
        json!({"prompt": "1, 2, 3, 4, 5,", "max_tokens": 900, "temperature": 0, "stream": true});
    let mut first = open_stream(a, "/v1/completions", &long, 3);
    eventually(10, "the slot is busy", || metric(a, "busy_slots") == 1);
    // The slot is busy: one request waits in the queue, the next is refused.
    let queued = open_stream_pending(a, &long);
    eventually(10, "one request queued", || metric(a, "queue_depth") == 1);
    let r = post(a, "/v1/completions", &long);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("queue")
    );
    // Both clients go away: the slot is freed at once, and the queued job is never run.
    first.flush().unwrap();
    drop(first);
    drop(queued);
    eventually(10, "the slot is freed", || {
        metric(a, "busy_slots") == 0 && metric(a, "queue_depth") == 0
    });
    let generated = metric(a, "tokens_generated_total");
    assert!(generated < 900, "{generated} tokens were generated");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(metric(a, "tokens_generated_total"), generated);
    // And it serves again.
    assert_eq!(
        post(a, "/v1/completions", &greedy_body("Hi", 2)).status,
        200
    );
    server.stop().unwrap();
}

/// Send a streamed request without reading its answer.
fn open_stream_pending(
    addr: std::net::SocketAddr,
    body: &serde_json::Value,
) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let b = body.to_string();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    s
}

/// Read a streamed answer's events from `s`, returning when each arrived (until `[DONE]` or
/// the socket is shut down).
fn event_times(s: std::net::TcpStream) -> Vec<std::time::Instant> {
    use std::io::BufRead;
    let mut r = std::io::BufReader::new(s);
    let mut times = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return times,
            Ok(_) if line.contains("data: [DONE]") => return times,
            Ok(_) if line.contains("data: ") => times.push(std::time::Instant::now()),
            Ok(_) => {}
        }
    }
}

#[test]
fn a_long_prompt_is_interleaved_with_another_stream() {
    let Some(loader) = smollm2_loader() else {
        return;
    };
    let server = start(config(engine(2, 1024)), loader);
    let a = server.addr();
    let counting = json!({"prompt": "1, 2, 3, 4, 5,", "max_tokens": 900, "temperature": 0,
                          "stream": true});
    let first = open_stream(a, "/v1/completions", &counting, 2);
    let closer = first.try_clone().unwrap();
    let reader = std::thread::spawn(move || event_times(first));
    // About 900 prompt tokens: 15 chunks of 64 (the tests' n_batch).
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(90);
    let submitted = std::time::Instant::now();
    let r = post(
        a,
        "/v1/completions",
        &json!({"prompt": long, "max_tokens": 1, "temperature": 0}),
    );
    let answered = std::time::Instant::now();
    assert_eq!(r.status, 200, "{}", r.body);
    let prompt_tokens = r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 800, "{prompt_tokens}");
    closer.shutdown(std::net::Shutdown::Both).unwrap();
    let times = reader.join().unwrap();
    // The stream went on while the long prompt was read, about one token per chunk (all of
    // the prompt at once would have let through one or two).
    let during = times
        .iter()
        .filter(|&&t| t > submitted && t < answered)
        .count();
    assert!(
        during >= 8,
        "{during} tokens streamed during the long prompt"
    );
    server.stop().unwrap();
}
