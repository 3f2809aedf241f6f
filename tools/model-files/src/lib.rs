//! Where the real model files live (`$TESSERA_MODELS`, else `~/.cache/tessera/models`) and the
//! one rule for a test that needs one: a missing file fails the test, unless
//! `TESSERA_ALLOW_MISSING_MODELS=1`, in which case the test is skipped with a note on stderr.
//!
//! `tessera pull` fills the same directory (the registry uses [`models_dir`] too). This crate
//! depends on no other Tessera crate, so the engine's tests can use it as well as the tools'.
//!
//! ```no_run
//! let Some(path) = tessera_model_files::model_file(tessera_model_files::SMOLLM2) else {
//!     return; // skipped: missing, and TESSERA_ALLOW_MISSING_MODELS=1
//! };
//! ```

use std::path::{Path, PathBuf};

/// File name of SmolLM2 135M Instruct, Q4_1 (registry name `smollm2-135m`).
pub const SMOLLM2: &str = "smollm2-135m-instruct-q4_1.gguf";
/// File name of Gemma 3 270M, Q4_K_M (registry name `gemma3-270m`).
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// The variable that names the models directory.
pub const MODELS_DIR_VAR: &str = "TESSERA_MODELS";
/// The variable that, set to `1`, turns a missing model file into a skipped test.
pub const ALLOW_MISSING_VAR: &str = "TESSERA_ALLOW_MISSING_MODELS";

/// Where models are stored: `$TESSERA_MODELS` when set (and not empty), else
/// `~/.cache/tessera/models` (`.tessera-models` in the current directory without a home).
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(MODELS_DIR_VAR).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Path::new(&home).join(".cache/tessera/models"),
        None => PathBuf::from(".tessera-models"),
    }
}

/// Whether `TESSERA_ALLOW_MISSING_MODELS=1`: tests then skip instead of failing when a model
/// file (or a fixture that goes with it) is missing.
pub fn missing_models_allowed() -> bool {
    std::env::var(ALLOW_MISSING_VAR).as_deref() == Ok("1")
}

/// The path of model file `file_name` in [`models_dir`], for a test.
///
/// # Panics
/// When the file is missing, unless `TESSERA_ALLOW_MISSING_MODELS=1`: then a note goes to
/// stderr and `None` is returned, and the test should return (skip).
#[track_caller]
pub fn model_file(file_name: &str) -> Option<PathBuf> {
    let path = models_dir().join(file_name);
    if path.exists() {
        return Some(path);
    }
    skip_or_panic(
        &path,
        "run `tessera pull --all` (models are looked for in $TESSERA_MODELS, default \
         ~/.cache/tessera/models)",
    )
}

/// `path` when it exists, for a test that needs it (a model, or a fixture made from one).
///
/// # Panics
/// When it is missing, unless `TESSERA_ALLOW_MISSING_MODELS=1`: then a note goes to stderr and
/// `None` is returned, and the test should return (skip).
#[track_caller]
pub fn require(path: impl AsRef<Path>) -> Option<PathBuf> {
    let path = path.as_ref();
    if path.exists() {
        return Some(path.to_path_buf());
    }
    skip_or_panic(
        path,
        "models come from `tessera pull --all` (into $TESSERA_MODELS), llama.cpp's fixtures \
         from $TESSERA_FIXTURES",
    )
}

/// The one reaction to a missing file: `None` after a note when missing models are allowed,
/// else a panic that says what is missing and what to do (`hint`).
#[track_caller]
fn skip_or_panic(path: &Path, hint: &str) -> Option<PathBuf> {
    if missing_models_allowed() {
        eprintln!(
            "skipped: {} is missing ({ALLOW_MISSING_VAR}=1)",
            path.display()
        );
        return None;
    }
    panic!(
        "{} is missing: {hint}; or set {ALLOW_MISSING_VAR}=1 to skip the tests that need it",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_file_is_returned() {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        assert_eq!(require(&p), Some(p.clone()));
        let dir = p.parent().unwrap();
        assert_eq!(require(dir).as_deref(), Some(dir));
    }

    #[test]
    fn a_missing_file_fails_or_is_skipped() {
        let p = Path::new("/nonexistent/tessera/model.gguf");
        let result = std::panic::catch_unwind(|| require(p));
        if missing_models_allowed() {
            assert_eq!(result.ok(), Some(None));
        } else {
            let msg = result.unwrap_err();
            let msg = msg.downcast_ref::<String>().expect("a formatted message");
            assert!(
                msg.contains("/nonexistent/tessera/model.gguf is missing"),
                "{msg}"
            );
            assert!(msg.contains(ALLOW_MISSING_VAR), "{msg}");
        }
    }

    #[test]
    fn a_missing_model_names_the_pull_command() {
        let result = std::panic::catch_unwind(|| model_file("no-such-model.gguf"));
        if let Err(msg) = result {
            let msg = msg.downcast_ref::<String>().expect("a formatted message");
            assert!(msg.contains("no-such-model.gguf is missing"), "{msg}");
            assert!(msg.contains("tessera pull"), "{msg}");
        } else {
            assert!(missing_models_allowed());
        }
    }

    #[test]
    fn the_directory_ends_with_the_cache_path_or_the_variable() {
        let d = models_dir();
        match std::env::var_os(MODELS_DIR_VAR).filter(|d| !d.is_empty()) {
            Some(v) => assert_eq!(d, PathBuf::from(v)),
            None => assert!(
                d.ends_with(".cache/tessera/models") || d.ends_with(".tessera-models"),
                "{}",
                d.display()
            ),
        }
    }
}
