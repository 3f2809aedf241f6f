//! Importance matrices: per weight matrix, the sum over a calibration text of each input
//! column's squared activation, and how many tokens were summed (llama.cpp's imatrix). The
//! file is llama.cpp's GGUF imatrix format, so files move between the two tools both ways:
//! `general.type = "imatrix"`, `imatrix.datasets`, `imatrix.chunk_count`,
//! `imatrix.chunk_size`, and per matrix `NAME.in_sum2` (F32, columns × matrices) and
//! `NAME.counts` (F32, one per matrix). [`ImatrixCollector`] gathers one while a context runs
//! (it is the context's [`MatMulTap`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use tessera_engine::DType;
use tessera_engine::backend::MatMulTap;
use tessera_engine::gguf::{GgufFile, GgufWriter, MetaArray, MetaValue};

/// One weight matrix's statistics (several matrices for a 3-D expert tensor).
#[derive(Clone, Debug, PartialEq)]
pub struct ImatrixEntry {
    /// Sums of squared activations, `n_mat × n_cols`.
    pub sums: Vec<f32>,
    /// Tokens summed, one per matrix.
    pub counts: Vec<f32>,
}

impl ImatrixEntry {
    /// Input columns per matrix.
    pub fn n_cols(&self) -> usize {
        self.sums.len() / self.counts.len().max(1)
    }
}

/// An importance matrix.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imatrix {
    /// The calibration texts it was computed on.
    pub datasets: Vec<String>,
    /// Chunks of `chunk_size` tokens evaluated.
    pub chunk_count: u32,
    /// Tokens per chunk.
    pub chunk_size: u32,
    /// Statistics by weight name (`blk.0.attn_q.weight`).
    pub entries: BTreeMap<String, ImatrixEntry>,
}

/// Why an imatrix file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    /// Not a GGUF file, or a corrupt one.
    #[error("{path}: {source}")]
    Gguf {
        /// The file.
        path: String,
        /// Why.
        source: tessera_engine::GgufError,
    },
    /// A GGUF file that is not an importance matrix, or a malformed one.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// Writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Imatrix {
    /// Read a GGUF imatrix file (llama.cpp's legacy `.dat` format is refused with a hint).
    pub fn read(path: &Path) -> Result<Imatrix, ImatrixError> {
        let p = path.display().to_string();
        let invalid = |why: String| ImatrixError::Invalid {
            path: p.clone(),
            why,
        };
        let file = GgufFile::open(path).map_err(|e| match e {
            tessera_engine::GgufError::BadMagic { .. } => invalid(
                "not a GGUF file (llama.cpp's legacy .dat imatrix? convert it with \
                 `llama-imatrix --in-file F.dat -o F.gguf`)"
                    .into(),
            ),
            e => ImatrixError::Gguf {
                path: p.clone(),
                source: e,
            },
        })?;
        let md = file.metadata();
        if md.get("general.type").and_then(|v| v.as_str()) != Some("imatrix") {
            return Err(invalid(
                "not an importance matrix (general.type is not \"imatrix\")".into(),
            ));
        }
        let datasets = match md.get("imatrix.datasets") {
            Some(MetaValue::Array(MetaArray::String(v))) => v.clone(),
            _ => Vec::new(),
        };
        let u32_of = |k: &str| {
            md.get(k)
                .and_then(|v| v.as_int())
                .unwrap_or(0)
                .clamp(0, u32::MAX as i128) as u32
        };
        let mut entries = BTreeMap::new();
        for info in file.tensor_infos() {
            let Some(name) = info.name.strip_suffix(".in_sum2") else {
                continue;
            };
            let counts_info = file
                .tensor_info(&format!("{name}.counts"))
                .ok_or_else(|| invalid(format!("{name}.in_sum2 has no {name}.counts")))?;
            let floats = |i: &tessera_engine::gguf::TensorInfo| -> Result<Vec<f32>, ImatrixError> {
                if i.dtype != DType::F32 {
                    return Err(invalid(format!("{} is {}, not F32", i.name, i.dtype)));
                }
                let t = file.view(i);
                let v: Vec<f32> = t
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                    return Err(invalid(format!(
                        "{} holds a non-finite value ({x})",
                        i.name
                    )));
                }
                Ok(v)
            };
            let sums = floats(info)?;
            let counts = floats(counts_info)?;
            if counts.is_empty()
                || !sums.len().is_multiple_of(counts.len())
                || counts.iter().any(|&c| c < 0.0)
            {
                return Err(invalid(format!(
                    "{name}: {} sums do not divide into {} matrices",
                    sums.len(),
                    counts.len()
                )));
            }
            entries.insert(name.to_string(), ImatrixEntry { sums, counts });
        }
        Ok(Imatrix {
            datasets,
            chunk_count: u32_of("imatrix.chunk_count"),
            chunk_size: u32_of("imatrix.chunk_size"),
            entries,
        })
    }

    /// The file's bytes, as llama-imatrix writes them (names sorted; 1-D tensors where a
    /// dimension is 1).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = GgufWriter::new()
            .kv("general.type", MetaValue::String("imatrix".into()))
            .kv(
                "imatrix.datasets",
                MetaValue::Array(MetaArray::String(self.datasets.clone())),
            )
            .kv("imatrix.chunk_count", MetaValue::U32(self.chunk_count))
            .kv("imatrix.chunk_size", MetaValue::U32(self.chunk_size));
        let shape = |cols: usize, mats: usize| -> Vec<u64> {
            if mats == 1 {
                vec![cols as u64]
            } else {
                vec![cols as u64, mats as u64]
            }
        };
        for (name, e) in &self.entries {
            let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            w = w
                .tensor(
                    &format!("{name}.in_sum2"),
                    DType::F32,
                    &shape(e.n_cols(), e.counts.len()),
                    bytes(&e.sums),
                )
                .tensor(
                    &format!("{name}.counts"),
                    DType::F32,
                    &shape(1, e.counts.len()),
                    bytes(&e.counts),
                );
        }
        let mut out = w.to_bytes();
        // ggml pads after the last tensor too.
        out.resize(out.len().next_multiple_of(32), 0);
        out
    }

    /// Write the file (to a temporary sibling renamed into place).
    pub fn write(&self, path: &Path) -> Result<(), ImatrixError> {
        let io = |e| ImatrixError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
        std::fs::write(&tmp, self.to_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }

    /// The per-column importance of weight `name` as the quantizers take it (llama-quantize's
    /// `load_imatrix`): each matrix's sums divided by its count (all ones where nothing was
    /// counted).
    pub fn weights(&self, name: &str) -> Option<Vec<f32>> {
        let e = self.entries.get(name)?;
        let n = e.n_cols();
        let mut out = vec![0f32; e.sums.len()];
        for (j, &count) in e.counts.iter().enumerate() {
            for i in 0..n {
                out[j * n + i] = if count > 0.0 {
                    e.sums[j * n + i] / count
                } else {
                    1.0
                };
            }
        }
        Some(out)
    }
}

/// Sums of one weight's inputs while collecting.
#[derive(Default)]
struct Sums {
    values: Vec<f32>,
    count: u64,
}

/// Collects an importance matrix while a context runs: set it as the context's tap
/// ([`crate::Context::set_mat_mul_tap`]). As llama-imatrix, it watches the weights of the
/// layers (`blk.…`, and `output.weight` when asked) in steps of at least 16 tokens, summing
/// each input column's square in f32 token by token.
pub struct ImatrixCollector {
    process_output: bool,
    sums: Mutex<HashMap<String, Sums>>,
    non_finite: Mutex<Option<String>>,
}

/// Steps of fewer tokens are not counted (llama-imatrix's rule).
pub const MIN_ROWS: usize = 16;

impl ImatrixCollector {
    /// An empty collector; `process_output` also watches `output.weight`.
    pub fn new(process_output: bool) -> ImatrixCollector {
        ImatrixCollector {
            process_output,
            sums: Mutex::new(HashMap::new()),
            non_finite: Mutex::new(None),
        }
    }

    /// A weight whose inputs held NaN or infinity, if any (the sums are then useless).
    pub fn non_finite(&self) -> Option<String> {
        self.non_finite
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The matrix collected so far, described as computed on `datasets` in `chunk_count`
    /// chunks of `chunk_size` tokens.
    pub fn snapshot(&self, datasets: Vec<String>, chunk_count: u32, chunk_size: u32) -> Imatrix {
        let sums = self.sums.lock().unwrap_or_else(|e| e.into_inner());
        let entries = sums
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    ImatrixEntry {
                        sums: s.values.clone(),
                        counts: vec![s.count as f32],
                    },
                )
            })
            .collect();
        Imatrix {
            datasets,
            chunk_count,
            chunk_size,
            entries,
        }
    }
}

impl MatMulTap for ImatrixCollector {
    fn wants(&self, weight: &str) -> bool {
        weight.starts_with("blk.") || (self.process_output && weight == "output.weight")
    }

    fn observe(&self, weight: &str, x: &[f32], rows: usize, cols: usize) {
        if rows < MIN_ROWS {
            return;
        }
        let mut sums = self.sums.lock().unwrap_or_else(|e| e.into_inner());
        let s = sums.entry(weight.to_string()).or_default();
        if s.values.len() != cols {
            if !s.values.is_empty() {
                // A weight seen with two widths cannot happen in one model; keep the first.
                return;
            }
            s.values = vec![0.0; cols];
        }
        for row in x.chunks_exact(cols).take(rows) {
            for (a, &v) in s.values.iter_mut().zip(row) {
                *a += v * v;
            }
        }
        s.count += rows as u64;
        if s.values.iter().any(|v| !v.is_finite()) {
            let mut nf = self.non_finite.lock().unwrap_or_else(|e| e.into_inner());
            nf.get_or_insert_with(|| weight.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_round_trips_and_weights_are_means() {
        let c = ImatrixCollector::new(false);
        assert!(c.wants("blk.0.attn_q.weight") && !c.wants("output.weight"));
        let x: Vec<f32> = (0..16 * 4).map(|i| (i % 4) as f32).collect();
        c.observe("blk.0.attn_q.weight", &x, 16, 4);
        c.observe("blk.0.attn_q.weight", &x[..8], 2, 4); // under 16 rows: not counted
        let m = c.snapshot(vec!["text.txt".into()], 1, 16);
        let e = &m.entries["blk.0.attn_q.weight"];
        assert_eq!(e.sums, [0.0, 16.0, 64.0, 144.0]);
        assert_eq!(e.counts, [16.0]);
        assert_eq!(
            m.weights("blk.0.attn_q.weight").unwrap(),
            [0.0, 1.0, 4.0, 9.0]
        );
        let dir = std::env::temp_dir().join(format!("tessera-imatrix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.gguf");
        m.write(&p).unwrap();
        assert_eq!(Imatrix::read(&p).unwrap(), m);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn other_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("tessera-imatrix-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.dat");
        std::fs::write(&p, b"\x01\x00\x00\x00legacy").unwrap();
        let e = Imatrix::read(&p).unwrap_err().to_string();
        assert!(e.contains("legacy") || e.contains("GGUF"), "{e}");
        let p = dir.join("model.gguf");
        std::fs::write(&p, crate::testing::TinyLlama::default().bytes()).unwrap();
        let e = Imatrix::read(&p).unwrap_err().to_string();
        assert!(e.contains("not an importance matrix"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
