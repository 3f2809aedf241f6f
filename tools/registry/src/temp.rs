//! Temporary files and folders of a pull, removed however the pull ends.

use std::fs;
use std::path::PathBuf;

/// Removes a temporary file or directory when dropped (on success it was renamed away).
pub(crate) struct Cleanup(pub(crate) PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = fs::remove_dir_all(&self.0);
        } else {
            let _ = fs::remove_file(&self.0);
        }
    }
}

/// A fresh empty directory under the system temp dir, removed on drop (for tests).
#[cfg(test)]
pub(crate) fn temp_dir() -> Cleanup {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "tessera-registry-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    Cleanup(d)
}
