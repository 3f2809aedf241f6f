//! Shared helpers of the server's integration tests: an in-process server on a loopback port
//! (synthetic tiny model or SmolLM2) and a minimal HTTP/1.1 client on plain sockets.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_models::hparams::RopeOverrides;
use tessera_models::{Device, Model};
use tessera_server::{DEFAULT_BODY_LIMIT, EngineConfig, ModelLoader, Server, ServerConfig};

/// Engine settings for tests: `parallel` slots of `n_ctx_slot` tokens, one thread.
pub fn engine(parallel: usize, n_ctx_slot: usize) -> EngineConfig {
    EngineConfig {
        parallel,
        n_ctx_slot,
        n_batch: 64,
        n_threads: 1,
        kv_ring: true,
        device: Device::Cpu,
        kv_cells: 0,
        queue_capacity: 16,
    }
}

/// Server settings on 127.0.0.1, any free port.
pub fn config(engine: EngineConfig) -> ServerConfig {
    ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        model_name: "test-model".into(),
        api_key: None,
        body_limit: DEFAULT_BODY_LIMIT,
        handle_signals: false,
        engine,
    }
}

/// A loader of the synthetic tiny llama model.
pub fn tiny_loader() -> ModelLoader {
    Box::new(|| {
        let bytes = tessera_models::testing::TinyLlama::default().bytes();
        tessera_models::testing::load_bytes(&bytes)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    })
}

/// A loader of SmolLM2, or `None` (skip) when it is missing and that is allowed.
pub fn smollm2_loader() -> Option<ModelLoader> {
    let path = tessera_model_files::model_file(tessera_model_files::SMOLLM2)?;
    Some(Box::new(move || {
        Model::load(&path, &RopeOverrides::default())
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }))
}

/// Start a server and wait until `/health` says the model is loaded.
pub fn start(config: ServerConfig, loader: ModelLoader) -> Server {
    let server = Server::start(config, loader).expect("server starts");
    wait_healthy(server.addr());
    server
}

/// Poll `/health` until 200 (panics after 60 s).
pub fn wait_healthy(addr: SocketAddr) {
    let t0 = Instant::now();
    while request(addr, "GET", "/health", None, &[]).status != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the model never loaded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A response.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of a server-sent event stream.
    pub fn events(&self) -> Vec<String> {
        self.body
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }
}

/// Send one request (`Connection: close`) and read the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    if let Some(b) = body {
        // The server may answer (413) before reading it all.
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_reply(&raw)
}

/// POST a JSON value.
pub fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    request(addr, "POST", path, Some(body.to_string().as_bytes()), &[])
}

/// GET a path.
pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, None, &[])
}

/// Parse a raw HTTP/1.1 response.
fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

/// Decode a chunked body.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// A value of `/metrics`.
pub fn metric(addr: SocketAddr, name: &str) -> i64 {
    let m = get(addr, "/metrics");
    assert_eq!(m.status, 200);
    m.body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("tessera_{name} ")))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .parse()
        .unwrap()
}

/// Poll until `f` holds (panics after `secs`).
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Open a streamed request, read its first `n_events` events, and return the open socket.
pub fn open_stream(addr: SocketAddr, path: &str, body: &Value, n_events: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let b = body.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut seen = 0;
    let mut line = String::new();
    while seen < n_events {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("the stream ended after {seen} events");
        }
        if line.contains("data: ") {
            seen += 1;
        }
    }
    s
}

/// The text of a completion response (chat or text).
pub fn answer_text(v: &Value) -> String {
    let c = &v["choices"][0];
    c["text"]
        .as_str()
        .or(c["message"]["content"].as_str())
        .unwrap_or_else(|| panic!("no text in {v}"))
        .to_string()
}

/// The text of a stream's events (chat deltas or text pieces).
pub fn stream_text(events: &[String]) -> String {
    let mut s = String::new();
    for e in events {
        if e == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(e).unwrap();
        if let Some(c) = v["choices"].get(0)
            && let Some(t) = c["delta"]["content"].as_str().or(c["text"].as_str())
        {
            s.push_str(t);
        }
    }
    s
}
