//! `tessera serve` as a process, with real clients: its greedy answer equals `tessera run
//! --temp 0`'s, `curl -N` sees raw server-sent events, the `openai` Python package works
//! (tools/server/tests/openai_client.py), and SIGINT in the middle of a stream exits 0.
//! Needs SmolLM2 (skipped when missing and `TESSERA_ALLOW_MISSING_MODELS=1`) and curl; the
//! Python part is skipped, with a message, when `import openai` fails.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// A `tessera serve` child and its base URL; killed if the test fails.
struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(model: &Path, extra: &[&str]) -> Serve {
    let mut child = Command::new(BIN)
        .args(["serve", "-m"])
        .arg(model)
        .args(["--port", "0", "-c", "1024", "--parallel", "2", "-t", "2"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tessera serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let s = Serve { child, url };
    let t0 = Instant::now();
    while curl(&s.url, "/health", &[]).0 != "200" {
        assert!(t0.elapsed() < Duration::from_secs(60), "never healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

/// `curl` a path: (status, body).
fn curl(url: &str, path: &str, args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("{url}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "000"));
    (status.to_string(), body.to_string())
}

fn have_curl() -> bool {
    Command::new("curl").arg("--version").output().is_ok()
}

#[test]
fn serve_answers_as_run_does_to_curl_and_the_openai_package_and_exits_0_on_sigint() {
    let Some(model) = tessera_tests::model(tessera_tests::SMOLLM2) else {
        return;
    };
    assert!(have_curl(), "curl is needed by this test");
    let prompt = "Once upon a time, in a small village,";
    let run = Command::new(BIN)
        .args(["run", "-m"])
        .arg(&model)
        .args(["-p", prompt, "-n", "24", "--temp", "0", "-t", "2", "--json"])
        .output()
        .unwrap();
    assert!(run.status.success());
    let run_json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let run_text = run_json["text"].as_str().unwrap().to_string();

    let s = serve(&model, &["--api-key", "k"]);
    let auth = [
        "-H",
        "Authorization: Bearer k",
        "-H",
        "Content-Type: application/json",
    ];
    let body = serde_json::json!({"prompt": prompt, "max_tokens": 24, "temperature": 0});
    let body = body.to_string();
    let mut args = auth.to_vec();
    args.extend(["-d", &body]);
    let (status, answer) = curl(&s.url, "/v1/completions", &args);
    assert_eq!(status, "200", "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), run_text);
    assert_eq!(curl(&s.url, "/v1/completions", &["-d", &body]).0, "401");

    // Raw SSE through curl -N: `data: {json}` events separated by blank lines, then [DONE].
    let stream_body = serde_json::json!({"prompt": prompt, "max_tokens": 24, "temperature": 0,
                                         "stream": true})
    .to_string();
    let mut args = auth.to_vec();
    args.extend(["-N", "-d", &stream_body]);
    let (status, raw) = curl(&s.url, "/v1/completions", &args);
    assert_eq!(status, "200");
    let events: Vec<&str> = raw.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.iter().all(|e| e.starts_with("data: ")), "{raw}");
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let streamed: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e["data: ".len()..]).unwrap();
            v["choices"][0]["text"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(streamed, run_text);

    // The openai package.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/tests/openai_client.py");
    let has_openai = Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_openai {
        let out = Command::new("python3")
            .arg(&script)
            .args([&s.url, "k"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    } else {
        eprintln!(
            "skipping the openai client check: `python3 -c 'import openai'` fails (pip install openai)"
        );
    }

    // SIGINT while a long stream is in flight: the stream ends, the server exits 0.
    let long = serde_json::json!({"prompt": "1, 2, 3, 4, 5,", "max_tokens": 400, "stream": true})
        .to_string();
    let mut client = Command::new("curl")
        .args(["-s", "-N", "-H", "Authorization: Bearer k", "-d", &long])
        .arg(format!("{}/v1/completions", s.url))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(client.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("data: "), "{first}");
    let mut s = s;
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "still running after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let _ = client.wait();
}
