//! `tessera serve`'s structured output and tool calls with real clients: the `openai` Python
//! package (tools/server/tests/openai_structured.py: response_format json_schema and
//! json_object, tool_choice required, streamed and whole, validated with `jsonschema`), then a
//! reduced run of scripts/structured_eval.py (3 prompts x 5 schemas, temperature 0.8,
//! concurrent, 160 tokens at most) in which every constrained answer must validate.
//! Needs SmolLM2 (skipped when missing and `TESSERA_ALLOW_MISSING_MODELS=1`); the Python parts
//! are skipped, with a message, when `import openai, jsonschema` fails.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// Prompts per schema in the reduced evaluation.
const EVAL_PROMPTS: &str = "3";

/// A `tessera serve` child and its base URL; killed when dropped.
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

/// Start `tessera serve` on a free port and wait until it is healthy.
fn serve(model: &Path) -> Serve {
    let mut child = Command::new(BIN)
        .args(["serve", "-m"])
        .arg(model)
        .args(["--port", "0", "-c", "4096", "--parallel", "4", "-t", "2"])
        .args(["--api-key", "k"])
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
    let s = Serve { child, url };
    let t0 = Instant::now();
    loop {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{}/health", s.url))
            .output()
            .expect("curl runs");
        if out.stdout == b"200" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "never healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

/// Run a Python script; its stdout, or a panic with its output when it fails.
fn python(args: &[&str]) -> String {
    let out = Command::new("python3").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python3 {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn openai_structured_output_and_tool_calls_and_a_reduced_structured_eval() {
    let Some(model) = tessera_tests::model(tessera_tests::SMOLLM2) else {
        return;
    };
    let has_python = Command::new("python3")
        .args(["-c", "import openai, jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        eprintln!(
            "skipping: `python3 -c 'import openai, jsonschema'` fails (pip install openai jsonschema)"
        );
        return;
    }
    let s = serve(&model);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let client = root.join("tools/server/tests/openai_structured.py");
    let out = python(&[client.to_str().unwrap(), &s.url, "k"]);
    assert_eq!(out.trim(), "ok");

    // The evaluation script against the same server.
    let script = root.join("scripts/structured_eval.py");
    let label = model.to_str().unwrap();
    let table = python(&[
        script.to_str().unwrap(),
        "--server-url",
        &s.url,
        "--api-key",
        "k",
        "--model",
        label,
        "--n-prompts",
        EVAL_PROMPTS,
        "--concurrency",
        "4",
        "--max-tokens",
        "160",
        "--require-constrained",
    ]);
    eprintln!("{table}");
    for schema in ["nested", "array", "enum", "numbers", "optional"] {
        let row = table
            .lines()
            .find(|l| l.contains(&format!("| {schema} |")))
            .unwrap_or_else(|| panic!("no row for {schema} in\n{table}"));
        assert!(row.contains("| 100 |"), "{row}");
    }
}
