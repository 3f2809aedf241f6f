//! Checking a model file: its SHA-256, and the stamp beside it (`.NAME.verified`: hash, size,
//! modification time) that lets a later run trust an unchanged file without hashing it again.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::catalog::RegistryEntry;
use crate::error::{Result, io_err};

/// Lowercase hex of some bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// The stamp file beside `path`: `.NAME.verified`.
fn stamp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{}.verified", name.unwrap_or_default()))
}

/// `sha256 size mtime-ns` of a file as it is now.
fn stamp_line(entry: &RegistryEntry, path: &Path) -> Option<String> {
    let md = fs::metadata(path).ok()?;
    let mtime = md.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(format!(
        "{} {} {}",
        entry.sha256,
        md.len(),
        mtime.as_nanos()
    ))
}

/// Whether the stamp beside `path` describes the file as it is now (so it needs no re-hash).
pub(crate) fn stamp_matches(entry: &RegistryEntry, path: &Path) -> bool {
    match (
        stamp_line(entry, path),
        fs::read_to_string(stamp_path(path)),
    ) {
        (Some(now), Ok(saved)) => saved.trim() == now,
        _ => false,
    }
}

/// Record that `path` was just checked against `entry`.
pub(crate) fn write_stamp(entry: &RegistryEntry, path: &Path) {
    // A read-only models directory only costs a re-hash next time.
    if let Some(line) = stamp_line(entry, path) {
        let _ = fs::write(stamp_path(path), line + "\n");
    }
}

/// Hash an existing file; `true` when it matches the entry (the stamp is then refreshed).
pub(crate) fn verify_existing(entry: &RegistryEntry, path: &Path) -> Result<bool> {
    eprintln!("{}: checking {}", entry.name, path.display());
    let found = sha256_file(path).map_err(io_err(format!("reading {}", path.display())))?;
    if found == entry.sha256 {
        eprintln!("{}: up to date", entry.name);
        write_stamp(entry, path);
        Ok(true)
    } else {
        eprintln!(
            "{}: SHA-256 {found} does not match {}, pulling again",
            entry.name, entry.sha256
        );
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp::temp_dir;

    #[test]
    fn sha256_of_a_file() {
        let d = temp_dir();
        let p = d.0.join("x");
        fs::write(&p, b"hello world").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }
}
