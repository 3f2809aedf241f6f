//! `tessera chat` through the built binary: scripted through a pipe, and interactive in a
//! pseudo-terminal (streamed replies, KV-cache reuse across turns, `/reset`, Ctrl-C).
//!
//! The model is looked up in `$TESSERA_MODELS` or `~/.cache/tessera/models` (`tessera pull`
//! puts it there). A missing model fails the test unless `TESSERA_ALLOW_MISSING_MODELS=1`.
//!
//! The chats run on one thread: the tests run side by side, and a thread pool on more threads
//! than there are free cores is much slower.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use rexpect::process::wait::WaitStatus;
use rexpect::reader::Options;
use rexpect::session::{PtySession, spawn_with_options};
use tessera_engine::GgufFile;
use tessera_models::tokenizer::Tokenizer;
use tessera_tests::{SMOLLM2, model};

/// `tessera chat ARGS` with `input` on stdin.
fn chat_piped(args: &[&str], input: &str) -> Output {
    chat_piped_bytes(args, input.as_bytes())
}

/// `tessera chat ARGS` with `input` (any bytes) on stdin.
fn chat_piped_bytes(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("chat")
        .args(["-t", "1"])
        .args(args)
        .env("TESSERA_CHAT_HISTORY", "")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tessera binary runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A model file whose chat template doubles a string in a loop (a tiny model built in
/// memory): `tessera chat` reports the template's error and exits, instead of exhausting
/// memory and aborting.
#[test]
fn piped_hostile_template_is_an_error_not_an_abort() {
    use tessera_engine::gguf::MetaValue;
    use tessera_models::testing::{TinyLlama, set_kv};
    let mut w = TinyLlama::default().writer();
    set_kv(
        &mut w,
        "tokenizer.chat_template",
        MetaValue::String(
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}\
             {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
                .into(),
        ),
    );
    let path = std::env::temp_dir().join(format!("tessera-hostile-{}.gguf", std::process::id()));
    std::fs::write(&path, w.to_bytes()).unwrap();
    let start = std::time::Instant::now();
    let out = chat_piped(&["-m", path.to_str().unwrap(), "-c", "64"], "Hi\n/quit\n");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("chat template built more than"), "{stderr}");
    assert!(start.elapsed().as_secs() < 60);
}

/// The question the answer tests ask, and a word its greedy reply contains.
///
/// These tests check the chat plumbing, not what SmolLM2-135M knows, so the question is one
/// whose greedy reply ("The opposite of hot is cold.") is the same on the scalar and the AVX2
/// kernels and across kernel changes. "Which city is the capital of France?" was not: the
/// 135M model's greedy reply flips between "The capital of France is Paris." and "Le Grand
/// Château, also known as the City of Light…" with the summation order of the mat_mul
/// (already on the scalar path before the tiled AVX2 kernels).
const QUESTION: (&str, &str) = ("What is the opposite of hot?", "cold");

#[test]
fn piped_question_gets_answer() {
    let Some(_) = model(SMOLLM2) else { return };
    let out = chat_piped(
        &["-m", "smollm2-135m", "--temp", "0", "-c", "512"],
        &format!("{}\n/quit\nThis is never read.\n", QUESTION.0),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(
        stdout.contains(QUESTION.1),
        "reply: {stdout:?}\nstderr: {stderr}"
    );
    // One reply, newline-terminated, nothing else on stdout.
    assert!(
        stdout.ends_with('\n') && !stdout.ends_with("\n\n"),
        "{stdout:?}"
    );
    assert!(
        !stdout.contains("prompt:"),
        "stats belong on stderr: {stdout:?}"
    );
    assert!(stderr.contains("prompt:"), "stats line missing: {stderr}");
}

/// A line that is not UTF-8 is answered with its bytes replaced and a warning, and the lines
/// after it still run (it used to end the session, dropping them); a message left in an
/// unclosed `"""` block at the end of input is sent, with a note.
#[test]
fn piped_bad_utf8_and_unclosed_block_are_not_dropped() {
    let Some(_) = model(SMOLLM2) else { return };
    let mut input = b"Say \xff\xfe hi.\n".to_vec();
    input.extend_from_slice(format!("{}\n\"\"\"\n{}\n", QUESTION.0, QUESTION.0).as_bytes());
    let out = chat_piped_bytes(
        &["-m", "smollm2-135m", "--temp", "0", "-c", "512", "-n", "16"],
        &input,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(
        stderr.contains("input line 1 is not valid UTF-8"),
        "{stderr}"
    );
    assert!(
        stderr.contains("input ended inside an unclosed \"\"\" block"),
        "{stderr}"
    );
    // Three turns (one stats line each): the replaced line's, the question's, the block's.
    assert_eq!(stderr.matches("prompt:").count(), 3, "{stderr}");
    assert!(stdout.contains(QUESTION.1), "{stdout:?}");
}

#[test]
fn piped_context_full_stop_refuses_and_drop_oldest_goes_on() {
    let Some(_) = model(SMOLLM2) else { return };
    let long = "Please tell me about this: ".to_string() + &"words and more words ".repeat(20);
    // `stop`: a message larger than the context is refused, with a clear message and exit 1,
    // and the next (short) turn still gets a reply line.
    let out = chat_piped(
        &[
            "-m",
            "smollm2-135m",
            "--temp",
            "0",
            "-c",
            "96",
            "--context-full",
            "stop",
        ],
        &format!("{long}\nHi\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("context full"), "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout:?}");
    assert!(stdout.starts_with('\n'), "{stdout:?}");
    assert!(stdout.trim().len() > 1, "second turn answered: {stdout:?}");

    // `drop-oldest`: many turns in a small context all get replies; old turns are dropped.
    // 96 cells overflow by the third turn whether the replies are 8 tokens or the full 24
    // (which they are hangs on near-ties in the first reply's logits).
    let questions = [
        "What is the capital of France?",
        "What is the capital of Germany?",
        "What is the capital of Italy?",
        "What is the capital of Spain?",
    ];
    let out = chat_piped(
        &["-m", "smollm2-135m", "--temp", "0", "-c", "96", "-n", "24"],
        &(questions.join("\n") + "\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.lines().filter(|l| !l.is_empty()).count() >= 4,
        "{stdout:?}"
    );
    assert!(stderr.contains("dropped"), "{stderr}");
}

/// A chat in a pseudo-terminal.
fn spawn_chat(args: &[&str]) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.arg("chat")
        .args(["-t", "1"])
        .args(args)
        .env("TESSERA_CHAT_HISTORY", "")
        .env("NO_COLOR", "1")
        .env("TERM", "xterm");
    // rexpect's escape-code stripping also eats text after escapes that end in a
    // non-letter, so the raw output is matched (NO_COLOR keeps our own lines plain).
    let opts = Options::new().timeout_ms(Some(180_000));
    spawn_with_options(cmd, opts).expect("tessera chat starts in a pty")
}

/// Wait for `re` and return every number in the text it matched, in order.
fn numbers(p: &mut PtySession, re: &str) -> Vec<usize> {
    let (_, m) = p
        .exp_regex(re)
        .unwrap_or_else(|e| panic!("no match for {re}: {e}"));
    m.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

#[test]
fn terminal_streams_reuses_cache_resets_and_interrupts() {
    let Some(path) = model(SMOLLM2) else { return };
    let mut p = spawn_chat(&[
        "-m",
        "smollm2-135m",
        "--temp",
        "0",
        "-c",
        "2048",
        "-n",
        "64",
    ]);
    p.exp_string("/help lists the commands").unwrap();
    p.exp_string("> ").unwrap();

    // Turn 1: the whole prompt is evaluated.
    p.send_line(QUESTION.0).unwrap();
    let before = p.exp_string("prompt: ").unwrap();
    assert!(before.contains(QUESTION.1), "reply: {before:?}");
    let t1 = numbers(&mut p, r"(\d+) new \+ (\d+) cached tokens");
    assert_eq!(t1[1], 0, "nothing cached on the first turn");
    p.exp_string("> ").unwrap();

    // Turn 2 (reply capped to keep the test short): only the new turn's tokens are evaluated.
    p.send_line("/set n-predict 32").unwrap();
    p.exp_string("n-predict 32").unwrap();
    p.exp_string("> ").unwrap();
    let q2 = "And what is the opposite of big?";
    p.send_line(q2).unwrap();
    let before = p.exp_string("prompt: ").unwrap();
    assert!(
        before.trim().len() > q2.len(),
        "a reply was written: {before:?}"
    );
    let t2 = numbers(&mut p, r"(\d+) new \+ (\d+) cached tokens");
    p.exp_string("> ").unwrap();
    p.send_line("/stats").unwrap();
    let s = numbers(
        &mut p,
        r"prompt (\d+) tokens \((\d+) evaluated, (\d+) reused of (\d+) cached\)",
    );
    let (total, evaluated, reused, cached) = (s[0], s[1], s[2], s[3]);
    assert_eq!((evaluated, reused), (t2[0], t2[1]));
    assert_eq!(evaluated + reused, total);
    assert!(reused >= t1[0], "turn 1's prompt is reused: {s:?} {t1:?}");
    assert!(reused + 1 >= cached, "the whole cache is reused: {s:?}");
    let tok = Tokenizer::from_gguf(GgufFile::open(&path).unwrap().metadata()).unwrap();
    let n_q2 = tok.encode(q2, false, false).len();
    assert!(
        evaluated <= n_q2 + 16,
        "turn 2 evaluated {evaluated} tokens for a {n_q2}-token message plus the template"
    );
    p.exp_string("> ").unwrap();

    // /reset empties the cache.
    p.send_line("/reset").unwrap();
    p.exp_string("cleared").unwrap();
    p.send_line("/stats").unwrap();
    p.exp_string("KV cache: 0 B used of").unwrap();
    p.exp_string("(0 of 2048 tokens)").unwrap();
    p.exp_string("> ").unwrap();

    // Ctrl-C stops a long reply once it is streaming, and the prompt comes back.
    p.send_line("/set n-predict 400").unwrap();
    p.exp_string("n-predict 400").unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("Count from 1 to 1000, separated by commas.")
        .unwrap();
    // Past the echoed prompt (which has digits of its own), the first streamed digit shows
    // the reply is under way, whatever its layout ("1, 2, 3" or "1. 1\n2. 2").
    p.exp_string("commas.").unwrap();
    p.exp_regex(r"[0-9]").unwrap();
    p.send_control('c').unwrap();
    p.exp_string("[interrupted]").unwrap();
    let t3 = numbers(&mut p, r"reply: (\d+) tokens");
    assert!(t3[0] < 400, "stopped before the cap: {t3:?}");
    p.exp_string("> ").unwrap();

    // Ctrl-C at the prompt clears the line; the chat goes on.
    p.send("half a line").unwrap();
    p.flush().unwrap();
    p.exp_string("half a line").unwrap();
    p.send_control('c').unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("/quit").unwrap();
    p.exp_eof().unwrap();
    match p.process().wait().unwrap() {
        WaitStatus::Exited(_, code) => assert_eq!(code, 0),
        other => panic!("tessera chat ended with {other:?}"),
    }
}
