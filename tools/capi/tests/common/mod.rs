//! Helpers shared by the C ABI's integration tests: temporary directories, the C compiler,
//! the static library built by this `cargo test` run, and the real model.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory named after `tag`, the process and a counter.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "tessera-capi-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The C compiler: `$CC` or `gcc`.
pub fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "gcc".into())
}

/// Run `cmd`, panicking with its output when it fails; return the output.
pub fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The crate's directory.
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `libtessera.a` built by the same `cargo test` invocation as this test binary. Cargo
/// compiles the library target with all its crate types (staticlib included) before the
/// integration tests, into `deps/` beside this binary (it copies it up to the profile
/// directory only for `cargo build`). Take the newest candidate, so that a stale
/// `target/<profile>/libtessera.a` from an older build never wins.
pub fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps directory");
    let profile = deps.parent().expect("profile directory");
    let mut candidates = vec![deps.join("libtessera.a"), profile.join("libtessera.a")];
    candidates.extend(
        std::fs::read_dir(deps)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libtessera-") && n.ends_with(".a"))
            }),
    );
    candidates
        .into_iter()
        .filter_map(|p| Some((p.metadata().and_then(|m| m.modified()).ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            panic!(
                "libtessera.a not found in {} or {} (build it with `cargo build -p tessera-capi`)",
                deps.display(),
                profile.display()
            )
        })
}

/// `libtessera.so` built by the same `cargo test` invocation (see [`static_lib`]).
pub fn shared_lib() -> PathBuf {
    let a = static_lib();
    let so = a.with_extension("so");
    assert!(
        so.is_file(),
        "{} not found beside {}",
        so.display(),
        a.display()
    );
    so
}

/// Compile C sources against the static library into `out`, as strict C99 with
/// `-pedantic -Wall -Wextra -Werror`.
pub fn build_c(sources: &[PathBuf], out: &Path, extra: &[&str]) {
    let mut cmd = Command::new(cc());
    cmd.args([
        "-std=c99",
        "-pedantic",
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
    ])
    .args(extra)
    .arg("-I")
    .arg(crate_dir().join("include"))
    .args(sources)
    .arg(static_lib())
    .args(["-lpthread", "-ldl", "-lm", "-o"])
    .arg(out);
    run_ok(&mut cmd, "compiling C against libtessera.a");
}

/// The real SmolLM2 model: `$TESSERA_MODELS` or `~/.cache/tessera/models`. Missing → panic,
/// unless `TESSERA_ALLOW_MISSING_MODELS=1` (then `None`: the test is skipped).
pub fn smollm2() -> Option<PathBuf> {
    tessera_model_files::model_file(tessera_model_files::SMOLLM2)
}

/// The greedy fixture's expected continuation (" Paris." …) for "The capital of France is":
/// the concatenated pieces of its first `n` steps.
pub fn capital_fixture(n: usize) -> (String, String) {
    let dir = std::env::var_os("TESSERA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir().join("../../../shared/fixtures"));
    let p = dir.join("greedy/smollm2-135m-instruct-q4_1--capital.json");
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", p.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let prompt = v["prompt"].as_str().unwrap().to_string();
    let pieces: String = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .take(n)
        .map(|s| s["piece"].as_str().unwrap())
        .collect();
    (prompt, pieces)
}
