//! Writing a file so that a failed or interrupted run leaves nothing behind: the data goes to a
//! hidden sibling (`.NAME.PID.partial`), renamed over the target only once it is complete.

use std::path::{Path, PathBuf};

/// The target's temporary sibling, removed on drop unless [`TempOutput::finish`] renamed it
/// into place.
pub(crate) struct TempOutput {
    /// Where to write.
    pub(crate) path: PathBuf,
    target: PathBuf,
    done: bool,
}

impl TempOutput {
    /// A temporary sibling of `target` (nothing is created yet).
    pub(crate) fn new(target: &Path) -> std::io::Result<TempOutput> {
        let name = target
            .file_name()
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name")
            })?
            .to_string_lossy()
            .into_owned();
        let path = target.with_file_name(format!(".{name}.{}.partial", std::process::id()));
        Ok(TempOutput {
            path,
            target: target.to_path_buf(),
            done: false,
        })
    }

    /// Rename the finished file over the target.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        std::fs::rename(&self.path, &self.target)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
