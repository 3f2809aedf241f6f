//! A load test on the synthetic model, over loopback: 64 greedy requests from 8 concurrent
//! clients with mixed prompt lengths (long ones split over several batches), some cancelled
//! mid-stream by dropping the connection. Every other answer is complete and equal to the
//! prompt's answer served alone; the process's resident memory does not grow from round to
//! round; at the end no slot is busy and busy slots hold no KV cell.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Clients at once, and slots.
const CLIENTS: usize = 8;
/// Requests per client and round.
const PER_CLIENT: usize = 8;
/// Rounds (the first is the warm-up).
const ROUNDS: usize = 4;
/// Tokens generated per request at most.
const MAX_TOKENS: usize = 64;

/// 16 prompts of 1 to 70 words (up to about 160 tokens); they share beginnings (prefix reuse and copies).
fn prompts() -> Vec<String> {
    let words = [
        "hello", "world", "the", "cat", "sat", "on", "mat", "a", "dog",
    ];
    (0..16)
        .map(|i| {
            let n = [1, 3, 8, 20, 35, 50, 70, 5, 12, 40, 2, 25, 45, 60, 16, 7][i];
            (0..n)
                .map(|j| words[(j * (i % 4 + 1) + i / 4) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn body(prompt: &str, stream: bool) -> Value {
    json!({"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": stream})
}

/// Resident memory of this process (the server runs in it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Start a streamed request, read at most two events, and drop the connection.
fn cancel_mid_stream(addr: SocketAddr, prompt: &str) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let b = body(prompt, true).to_string();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let (mut seen, mut line) = (0, String::new());
    while seen < 2 {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen += line.contains("data: ") as usize;
    }
}

/// One round: every client sends its requests one after another; every fifth is cancelled.
fn round(addr: SocketAddr, prompts: &Arc<Vec<String>>, solo: &Arc<Vec<String>>, r: usize) {
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (prompts, solo) = (prompts.clone(), solo.clone());
            std::thread::spawn(move || {
                for k in 0..PER_CLIENT {
                    let n = c * PER_CLIENT + k + r;
                    let p = n % prompts.len();
                    if n.is_multiple_of(5) {
                        cancel_mid_stream(addr, &prompts[p]);
                        continue;
                    }
                    let stream = n % 2 == 1;
                    let reply = post(addr, "/v1/completions", &body(&prompts[p], stream));
                    assert_eq!(reply.status, 200, "{}", reply.body);
                    let text = if stream {
                        let events = reply.events();
                        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
                        stream_text(&events)
                    } else {
                        answer_text(&reply.json())
                    };
                    assert_eq!(text, solo[p], "round {r}, client {c}, prompt {p}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn sixty_four_requests_from_8_clients_with_cancellations_stay_exact_and_bounded() {
    let t0 = Instant::now();
    let mut cfg = config(engine(CLIENTS, 256));
    cfg.engine.n_batch = 32;
    let server = start(cfg, tiny_loader());
    let a = server.addr();
    let prompts = Arc::new(prompts());
    // Each prompt served alone.
    let solo: Arc<Vec<String>> = Arc::new(
        prompts
            .iter()
            .map(|p| answer_text(&post(a, "/v1/completions", &body(p, false)).json()))
            .collect(),
    );
    let answered = solo.iter().filter(|t| !t.is_empty()).count();
    assert!(answered >= solo.len() / 2, "too few answers: {solo:?}");
    let mut rss = Vec::new();
    for r in 0..ROUNDS {
        round(a, &prompts, &solo, r);
        eventually(10, "every slot is free", || metric(a, "busy_slots") == 0);
        rss.push(rss_kib());
    }
    // After the warm-up round, memory stays within 10% of its level.
    let base = rss[1];
    for (r, &kib) in rss.iter().enumerate().skip(2) {
        assert!(
            kib <= base + base / 10,
            "resident memory grew from {base} KiB to {kib} KiB by round {r}: {rss:?}"
        );
    }
    assert_eq!(metric(a, "busy_slots"), 0);
    assert_eq!(metric(a, "kv_cells_busy"), 0);
    assert_eq!(metric(a, "queue_depth"), 0);
    assert!(metric(a, "kv_cells_used") <= metric(a, "kv_cells_total"));
    server.stop().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t0.elapsed()
    );
}
