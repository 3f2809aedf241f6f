//! Oracle: the `gguf` PyPI package's numpy (de)quantizers (`engine/tests/oracle/dequant.py`).
//!
//! Dequantization of random blocks must match bit for bit for F32/F16/BF16 and within 1e-6
//! relative (of max(|x|, 1e-30)) for every quantized weight format; quantization of random floats
//! must give identical bytes for the formats the package can quantize (F16, BF16, Q4_0, Q4_1,
//! Q5_0, Q5_1, Q8_0, MXFP4). Without python3 + gguf + numpy the test fails, unless
//! `TESSERA_SKIP_PY_ORACLE=1` is set.

use super::{Rng, dequant, random_floats, random_row, row_bytes};
use crate::DType;
use crate::quant::{reference, weight_formats};
use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracle/dequant.py");

/// `None` when the oracle may be skipped and is unavailable; panics when it is required.
fn python() -> Option<String> {
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let ok = Command::new(&py)
        .args(["-c", "import gguf, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(py);
    }
    if std::env::var("TESSERA_SKIP_PY_ORACLE").as_deref() == Ok("1") {
        eprintln!("SKIPPED: python oracle unavailable and TESSERA_SKIP_PY_ORACLE=1");
        return None;
    }
    panic!(
        "the python oracle needs `{py}` with the gguf and numpy modules \
         (`python3 -m pip install gguf numpy`); set TESSERA_SKIP_PY_ORACLE=1 to skip it"
    );
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("tessera-oracle-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_jobs(py: &str, dir: &Path, jobs: &str) {
    let job_file = dir.join("jobs.txt");
    std::fs::write(&job_file, jobs).unwrap();
    let out = Command::new(py)
        .arg(SCRIPT)
        .arg(&job_file)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "oracle script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_f32(p: &Path) -> Vec<f32> {
    let b = std::fs::read(p).unwrap();
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Random F16/BF16 rows as raw bit patterns, every finite value possible (subnormals included).
fn random_bits_row(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u8> {
    let exp_mask: u16 = if dtype == DType::F16 { 0x7c00 } else { 0x7f80 };
    let mut out = Vec::with_capacity(2 * n);
    while out.len() < 2 * n {
        let v = rng.next_u64() as u16;
        if v & exp_mask != exp_mask {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

#[test]
fn dequantize_matches_gguf_numpy() {
    let Some(py) = python() else { return };
    let dir = TempDir::new();
    let mut rng = Rng::new(0x0dd_ba11);
    let mut jobs = String::new();
    let mut cases = Vec::new();
    let mut formats: Vec<DType> = weight_formats().collect();
    formats.push(DType::Q8_0);
    for (i, t) in formats.into_iter().enumerate() {
        let n = if t.block_elems() == 1 {
            4096
        } else {
            64 * t.block_elems()
        };
        let data = if matches!(t, DType::F16 | DType::BF16) && i < 3 {
            random_bits_row(&mut rng, t, n)
        } else {
            random_row(&mut rng, t, n)
        };
        let (src, dst) = (
            dir.0.join(format!("{i}.bin")),
            dir.0.join(format!("{i}.out")),
        );
        std::fs::write(&src, &data).unwrap();
        jobs += &format!("deq {} {} {}\n", t.name(), src.display(), dst.display());
        cases.push((t, n, data, dst));
    }
    run_jobs(&py, &dir.0, &jobs);
    for (t, n, data, dst) in cases {
        let want = read_f32(&dst);
        let got = dequant(t, &data, n);
        assert_eq!(want.len(), n, "{t}: oracle length");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if matches!(t, DType::F32 | DType::F16 | DType::BF16) {
                assert_eq!(g.to_bits(), w.to_bits(), "{t} element {i}: {g} vs {w}");
            } else {
                let tol = 1e-6 * w.abs().max(1e-30);
                assert!((g - w).abs() <= tol, "{t} element {i}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn quantize_matches_gguf_numpy() {
    let Some(py) = python() else { return };
    let dir = TempDir::new();
    let mut rng = Rng::new(0xfeed);
    // The formats the `gguf` package can quantize (a fact about the oracle, not about ours).
    let formats = [
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::MXFP4,
    ];
    let n = 64 * 32;
    let mut x = random_floats(&mut rng, n);
    x[64..96].iter_mut().for_each(|v| *v = 0.0); // an all-zero block
    x[96..128].iter_mut().for_each(|v| *v = 1.5); // a constant block
    x[130] = 1e-3;
    let src = dir.0.join("x.f32");
    std::fs::write(
        &src,
        x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    let mut jobs = String::new();
    for t in formats {
        jobs += &format!(
            "quant {} {} {}\n",
            t.name(),
            src.display(),
            dir.0.join(t.name()).display()
        );
    }
    run_jobs(&py, &dir.0, &jobs);
    for t in formats {
        let want = std::fs::read(dir.0.join(t.name())).unwrap();
        let mut got = vec![0u8; row_bytes(t, n)];
        (reference(t).unwrap().quantize_row)(&x, &mut got);
        assert_eq!(want.len(), got.len(), "{t}: oracle length");
        let bb = t.block_bytes();
        for (i, (g, w)) in got.chunks(bb).zip(want.chunks(bb)).enumerate() {
            assert_eq!(g, w, "{t}: block {i} differs");
        }
    }
}

#[test]
fn mxfp4_quantize_edge_cases_match_gguf_numpy() {
    // Blocks whose maximum is a power of two or just below one (where `floor(log2 amax)`
    // changes), exact ties between FP4 values, ±0, tiny and huge scales.
    let Some(py) = python() else { return };
    let dir = TempDir::new();
    let mut rng = Rng::new(0xf4);
    let mut x = Vec::new();
    for amax in [
        1.0f32,
        0.999_999_9,
        2.0,
        1.999_999_9,
        6.0,
        0.75,
        1e-20,
        3e20,
        4096.0,
    ] {
        let mut blk = random_floats(&mut rng, 32);
        let m = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        blk.iter_mut().for_each(|v| *v *= amax / m * 0.999);
        blk[(rng.next_u64() % 32) as usize] = if rng.sign() > 0.0 { amax } else { -amax };
        x.extend(blk);
    }
    // Ties with step 1 (amax 6): halfway between neighbouring values of the grid.
    let ties = [0.25f32, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0];
    let mut blk = vec![6.0f32];
    blk.extend(ties);
    blk.extend(ties.map(|v| -v));
    blk.extend([0.0, -0.0]);
    blk.resize(32, -6.0);
    x.extend(blk);
    let n = x.len();
    let src = dir.0.join("x.f32");
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&src, bytes).unwrap();
    let dst = dir.0.join("mxfp4");
    run_jobs(
        &py,
        &dir.0,
        &format!("quant MXFP4 {} {}\n", src.display(), dst.display()),
    );
    let want = std::fs::read(dst).unwrap();
    let mut got = vec![0u8; row_bytes(DType::MXFP4, n)];
    (reference(DType::MXFP4).unwrap().quantize_row)(&x, &mut got);
    for (i, (g, w)) in got.chunks(17).zip(want.chunks(17)).enumerate() {
        assert_eq!(g, w, "MXFP4 block {i} differs");
    }
}
