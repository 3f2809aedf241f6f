//! The quantizing pass: plan every tensor's type, write the header, then stream the tensors
//! one slab of rows at a time (memory ≈ one slab, not the model), rows quantized in parallel,
//! into a temporary file renamed over the output at the end, so an interrupted or failed run
//! leaves no half-written model.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tessera_engine::DType;
use tessera_engine::gguf::{GgufError, GgufFile, MetaValue, TensorEntry, writer};
use tessera_engine::quant;

use super::choose::{
    Choice, ChoiceError, Choices, ModelFacts, choose_types, llama_order, requires_imatrix,
};
use super::file_type::FileType;
use super::imatrix::Imatrix;
use crate::temp_output::TempOutput;

/// ggml's `GGML_QNT_VERSION`, written to `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// Bytes of f32 values converted at a time per tensor.
const SLAB_BYTES: usize = 32 << 20;

/// What to make.
#[derive(Clone, Debug)]
pub struct QuantizeParams {
    /// The target file type (a single type or a mix).
    pub file_type: FileType,
    /// llama-quantize's per-tensor flags.
    pub choices: Choices,
    /// Threads quantizing rows (0: all cores).
    pub threads: usize,
    /// Allow tensors that are already quantized to be quantized again (which loses quality).
    pub allow_requantize: bool,
    /// An importance matrix to quantize with (`--imatrix`), and the name to record for it in
    /// the output (`quantize.imatrix.file`: llama-quantize records the path as given).
    pub imatrix: Option<(Imatrix, String)>,
}

/// Why quantizing failed. The output file is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// The input is not a valid GGUF file.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The mix cannot be made for this model.
    #[error(transparent)]
    Choice(#[from] ChoiceError),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A tensor's type cannot be converted to the one chosen.
    #[error("tensor {tensor}: cannot convert {from} to {to} (Tessera has no kernels for {from})")]
    Unsupported {
        /// Tensor name.
        tensor: String,
        /// Its type.
        from: DType,
        /// The type chosen.
        to: DType,
    },
    /// A tensor is already quantized and requantizing was not allowed.
    #[error(
        "tensor {tensor} is already {from}: quantizing it again to {to} loses more quality than \
         quantizing the original; pass --allow-requantize to do it anyway"
    )]
    Requantize {
        /// Tensor name.
        tensor: String,
        /// Its type.
        from: DType,
        /// The type chosen.
        to: DType,
    },
    /// A tensor holds NaN or infinity.
    #[error("tensor {tensor} holds a non-finite value (NaN or infinity) at element {index}")]
    NonFinite {
        /// Tensor name.
        tensor: String,
        /// Element index.
        index: u64,
    },
    /// The importance matrix does not fit a tensor, or lacks one that needs it.
    #[error("importance matrix: {0}")]
    Imatrix(String),
    /// The thread pool could not be started.
    #[error("cannot start {0} threads")]
    Threads(usize),
}

/// Progress: one tensor written.
#[derive(Clone, Debug)]
pub struct TensorDone<'a> {
    /// 0-based position in the output.
    pub index: usize,
    /// Tensors in all.
    pub count: usize,
    /// What was chosen for it.
    pub choice: &'a Choice,
    /// Bytes in the input.
    pub bytes_in: u64,
    /// Bytes in the output.
    pub bytes_out: u64,
}

/// What a finished run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Tensors written.
    pub n_tensors: usize,
    /// Tensors that fell back to a smaller-block type.
    pub n_fallback: usize,
    /// Tensors quantized from an already quantized type.
    pub n_requantized: usize,
    /// Elements of all tensors.
    pub n_elements: u64,
    /// Tensor bytes in the input.
    pub bytes_in: u64,
    /// Tensor bytes in the output.
    pub bytes_out: u64,
}

/// The type every tensor of `file` gets for `params`, in output order.
pub fn plan(file: &GgufFile, params: &QuantizeParams) -> Result<Vec<Choice>, QuantizeError> {
    let facts = ModelFacts::from_metadata(file.metadata());
    let order = llama_order(file.tensor_infos());
    let mut flags = params.choices.clone();
    flags.has_imatrix |= params.imatrix.is_some();
    let choices = choose_types(&order, &facts, params.file_type, &flags)?;
    for c in &choices {
        if c.from == c.to {
            continue;
        }
        let readable = quant::reference(c.from).is_some();
        let writable = quant::reference(c.to).is_some();
        if !readable || !writable {
            return Err(QuantizeError::Unsupported {
                tensor: c.name.clone(),
                from: c.from,
                to: c.to,
            });
        }
        if c.from.is_quantized() && !params.allow_requantize {
            return Err(QuantizeError::Requantize {
                tensor: c.name.clone(),
                from: c.from,
                to: c.to,
            });
        }
    }
    Ok(choices)
}

/// Quantize `input` into `output` as `params` say, calling `on_tensor` after each tensor.
/// Every tensor's bytes are those llama-quantize writes for the same file and type (ggml's
/// reference quantizers, no importance matrix), and so is the file as a whole.
pub fn quantize(
    input: &Path,
    output: &Path,
    params: &QuantizeParams,
    mut on_tensor: impl FnMut(&TensorDone),
) -> Result<Summary, QuantizeError> {
    let file = GgufFile::open(input)?;
    let choices = plan(&file, params)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(params.threads)
        .build()
        .map_err(|_| QuantizeError::Threads(params.threads))?;

    // Metadata as it is, but for the two keys llama-quantize sets (removed, then appended).
    let mut metadata: Vec<(String, MetaValue)> = file
        .metadata()
        .entries()
        .iter()
        .filter(|(k, _)| k != "general.quantization_version" && k != "general.file_type")
        .cloned()
        .collect();
    metadata.push((
        "general.quantization_version".into(),
        MetaValue::U32(QUANTIZATION_VERSION),
    ));
    metadata.push((
        "general.file_type".into(),
        MetaValue::U32(params.file_type.id()),
    ));
    if let Some((m, name)) = &params.imatrix {
        // llama-quantize's key overrides, in its order (strings cut at 127 bytes).
        metadata.retain(|(k, _)| !k.starts_with("quantize.imatrix."));
        let cut = |s: &str| {
            let mut end = s.len().min(127);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        };
        metadata.push(("quantize.imatrix.file".into(), MetaValue::String(cut(name))));
        if let Some(d) = m.datasets.first() {
            metadata.push(("quantize.imatrix.dataset".into(), MetaValue::String(cut(d))));
        }
        metadata.push((
            "quantize.imatrix.entries_count".into(),
            MetaValue::U32(m.entries.len() as u32),
        ));
        if m.chunk_count > 0 {
            metadata.push((
                "quantize.imatrix.chunks_count".into(),
                MetaValue::U32(m.chunk_count),
            ));
        }
    }
    let alignment = file.header().alignment;
    // ggml_n_dims: trailing dimensions of 1 are not written.
    let shapes: Vec<&[u64]> = choices
        .iter()
        .map(|c| {
            let n = c.shape.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1);
            &c.shape[..n]
        })
        .collect();
    let sizes: Vec<u64> = choices.iter().map(output_bytes).collect();
    let entries: Vec<TensorEntry> = choices
        .iter()
        .zip(&shapes)
        .zip(&sizes)
        .map(|((c, shape), &len)| TensorEntry {
            name: &c.name,
            dtype: c.to,
            shape,
            len,
        })
        .collect();
    let (head, _, _) = writer::header(file.header().version.max(3), alignment, &metadata, &entries);

    let tmp = TempOutput::new(output).map_err(|e| QuantizeError::Io {
        path: output.to_path_buf(),
        source: e,
    })?;
    let io = |e| QuantizeError::Io {
        path: tmp.path.clone(),
        source: e,
    };
    let mut out = BufWriter::with_capacity(8 << 20, File::create(&tmp.path).map_err(io)?);
    out.write_all(&head).map_err(io)?;
    let mut summary = Summary {
        n_tensors: choices.len(),
        ..Default::default()
    };
    let mut buf = Vec::new();
    for (index, (c, &size)) in choices.iter().zip(&sizes).enumerate() {
        let info = file.tensor_info(&c.name).expect("planned from this file");
        let tensor = file.view(info);
        let data = tensor.data();
        check_finite(&c.name, c.from, data)?;
        if c.from == c.to {
            out.write_all(data).map_err(io)?;
        } else {
            let weights = importance(params, c)?;
            convert(&pool, c, data, weights.as_deref(), &mut buf)?;
            debug_assert_eq!(buf.len() as u64, size);
            out.write_all(&buf).map_err(io)?;
            summary.n_requantized += c.from.is_quantized() as usize;
        }
        let pad = size.next_multiple_of(alignment) - size;
        out.write_all(&vec![0u8; pad as usize]).map_err(io)?;
        summary.n_fallback += c.fell_back as usize;
        summary.n_elements += info.n_elements();
        summary.bytes_in += data.len() as u64;
        summary.bytes_out += size;
        on_tensor(&TensorDone {
            index,
            count: choices.len(),
            choice: c,
            bytes_in: data.len() as u64,
            bytes_out: size,
        });
    }
    let f = out.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)?;
    drop(f);
    tmp.finish().map_err(|e| QuantizeError::Io {
        path: output.to_path_buf(),
        source: e,
    })?;
    Ok(summary)
}

/// Bytes of a tensor in its chosen type.
fn output_bytes(c: &Choice) -> u64 {
    let rows: u64 = c.shape[1..].iter().product();
    c.to.row_bytes(c.shape[0])
        .expect("the planner chose a type that fits the rows")
        * rows
}

/// Fail on NaN or infinity in a float tensor (quantized ones are not scanned).
fn check_finite(name: &str, dtype: DType, data: &[u8]) -> Result<(), QuantizeError> {
    let bad = match dtype {
        DType::F32 => first_bad(data.as_chunks::<4>().0, |b| {
            !f32::from_le_bytes(*b).is_finite()
        }),
        DType::F16 => first_bad(data.as_chunks::<2>().0, |b| {
            u16::from_le_bytes(*b) & 0x7c00 == 0x7c00
        }),
        DType::BF16 => first_bad(data.as_chunks::<2>().0, |b| {
            u16::from_le_bytes(*b) & 0x7f80 == 0x7f80
        }),
        _ => None,
    };
    match bad {
        Some(i) => Err(QuantizeError::NonFinite {
            tensor: name.to_string(),
            index: i as u64,
        }),
        None => Ok(()),
    }
}

/// The index of the first item that is `bad`. Runs of items are first checked without
/// stopping early (a loop the compiler vectorizes: this runs on one thread between the
/// parallel conversions); only a run with a bad item is searched item by item.
fn first_bad<T>(items: &[T], bad: impl Fn(&T) -> bool) -> Option<usize> {
    const RUN: usize = 4096;
    for (r, run) in items.chunks(RUN).enumerate() {
        if run.iter().fold(false, |any, v| any | bad(v)) {
            return run.iter().position(&bad).map(|i| r * RUN + i);
        }
    }
    None
}

/// The importance of each column of tensor `c` (one set per matrix of a 3-D tensor), as
/// llama-quantize takes it from the imatrix: `None` without an imatrix or an entry for it.
fn importance(params: &QuantizeParams, c: &Choice) -> Result<Option<Vec<f32>>, QuantizeError> {
    let needed = requires_imatrix(&c.name, c.to, params.file_type);
    let Some((m, _)) = &params.imatrix else {
        return Ok(None);
    };
    let Some(w) = m.weights(&c.name) else {
        if needed {
            return Err(QuantizeError::Imatrix(format!(
                "no entry for {}, which {} quantizes to {} only with one",
                c.name, params.file_type, c.to
            )));
        }
        return Ok(None);
    };
    let n_mat = c.shape.get(2).copied().unwrap_or(1) as usize;
    if w.len() != c.shape[0] as usize * n_mat {
        if c.name == "token_embd.weight" || c.name == "per_layer_token_embd.weight" {
            return Ok(None);
        }
        return Err(QuantizeError::Imatrix(format!(
            "{} has {} values, the tensor {} columns × {n_mat} matrices",
            c.name,
            w.len(),
            c.shape[0]
        )));
    }
    Ok(Some(w))
}

/// Convert a whole tensor into `out`, slab by slab, rows in parallel (with the importance
/// `weights` of its columns, per matrix, when given).
fn convert(
    pool: &rayon::ThreadPool,
    c: &Choice,
    data: &[u8],
    weights: Option<&[f32]>,
    out: &mut Vec<u8>,
) -> Result<(), QuantizeError> {
    let n = c.shape[0] as usize;
    let src_row = c.from.row_bytes(n as u64).expect("a valid file's rows") as usize;
    let dst_row = c.to.row_bytes(n as u64).expect("planned to fit") as usize;
    let rows = data.len() / src_row.max(1);
    let read = quant::reference(c.from)
        .expect("checked by plan")
        .dequantize_row;
    let ops = quant::reference(c.to).expect("checked by plan");
    let rows_per_matrix = c.shape.get(1).copied().unwrap_or(1).max(1) as usize;
    out.clear();
    out.resize(rows * dst_row, 0);
    let slab = (SLAB_BYTES / (4 * n).max(1)).max(1);
    for (s, dst) in out.chunks_mut(slab * dst_row).enumerate() {
        let first = s * slab;
        pool.install(|| {
            dst.par_chunks_mut(dst_row).enumerate().for_each_init(
                || vec![0f32; n],
                |x, (r, d)| {
                    let row = first + r;
                    read(&data[row * src_row..(row + 1) * src_row], x);
                    match weights {
                        Some(w) => {
                            let m = row / rows_per_matrix;
                            (ops.quantize_row_weighted)(x, d, &w[m * n..(m + 1) * n]);
                        }
                        None => (ops.quantize_row)(x, d),
                    }
                },
            );
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TinyLlama, tensor_mut};

    fn params(ft: FileType) -> QuantizeParams {
        QuantizeParams {
            file_type: ft,
            choices: Choices::default(),
            threads: 2,
            allow_requantize: false,
            imatrix: None,
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tessera-q-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn partials(d: &Path) -> usize {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".partial")
            })
            .count()
    }

    #[test]
    fn a_quantized_model_loads_and_the_output_replaces_the_old_one() {
        let d = dir("ok");
        let src = d.join("in.gguf");
        let tiny = TinyLlama {
            matrix_dtype: DType::F32,
            ..Default::default()
        };
        std::fs::write(&src, tiny.bytes()).unwrap();
        let out = d.join("out.gguf");
        std::fs::write(&out, b"an older file").unwrap();
        let mut seen = 0;
        let s = quantize(&src, &out, &params(FileType::Q8_0), |t| {
            assert_eq!(t.index, seen);
            seen += 1;
        })
        .unwrap();
        assert_eq!(seen, s.n_tensors);
        assert!(s.bytes_out < s.bytes_in);
        let m = crate::Model::load(&out, &Default::default()).expect("the output loads");
        drop(m);
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.metadata().u32("general.file_type").unwrap(), 7);
        assert_eq!(
            f.tensor_info("blk.0.attn_q.weight").unwrap().dtype,
            DType::Q8_0
        );
        assert_eq!(partials(&d), 0);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn the_first_non_finite_value_is_found_in_every_run() {
        let n = 3 * 4096 + 100;
        for at in [0, 1, 4095, 4096, 4097, 8191, 3 * 4096 + 99] {
            let mut f16 = vec![0x3c00u16; n];
            f16[at] = 0x7c00;
            f16[n - 1] = 0xfe00;
            let bytes: Vec<u8> = f16.iter().flat_map(|v| v.to_le_bytes()).collect();
            let got = check_finite("t", DType::F16, &bytes);
            assert!(
                matches!(got, Err(QuantizeError::NonFinite { index, .. }) if index == at as u64),
                "F16 at {at}"
            );
            let mut f32s = vec![1.0f32; n];
            f32s[at] = f32::INFINITY;
            let bytes: Vec<u8> = f32s.iter().flat_map(|v| v.to_le_bytes()).collect();
            let got = check_finite("t", DType::F32, &bytes);
            assert!(
                matches!(got, Err(QuantizeError::NonFinite { index, .. }) if index == at as u64),
                "F32 at {at}"
            );
        }
        let ok: Vec<u8> = vec![0x3c00u16; n]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(check_finite("t", DType::F16, &ok).is_ok());
        assert!(check_finite("t", DType::BF16, &ok).is_ok());
    }

    #[test]
    fn non_finite_weights_are_an_error_and_nothing_is_written() {
        let d = dir("nan");
        let tiny = TinyLlama {
            matrix_dtype: DType::F32,
            ..Default::default()
        };
        let mut w = tiny.writer();
        let t = tensor_mut(&mut w, "blk.1.ffn_down.weight");
        t.data[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
        let src = d.join("in.gguf");
        std::fs::write(&src, w.to_bytes()).unwrap();
        let out = d.join("out.gguf");
        std::fs::write(&out, b"keep me").unwrap();
        let e = quantize(&src, &out, &params(FileType::Q4_0), |_| {}).unwrap_err();
        assert!(
            matches!(&e, QuantizeError::NonFinite { tensor, index: 10 } if tensor == "blk.1.ffn_down.weight"),
            "{e}"
        );
        assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
        assert_eq!(partials(&d), 0);
        // A directory that does not exist: an I/O error naming it, no panic.
        let e = quantize(
            &src,
            &d.join("no/such/dir/out.gguf"),
            &params(FileType::Q4_0),
            |_| {},
        )
        .unwrap_err();
        assert!(matches!(e, QuantizeError::Io { .. }), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn requantizing_needs_to_be_asked_for() {
        let d = dir("requant");
        let src = d.join("in.gguf");
        std::fs::write(&src, TinyLlama::default().bytes()).unwrap();
        let out = d.join("out.gguf");
        let e = quantize(&src, &out, &params(FileType::Q4_0), |_| {}).unwrap_err();
        assert!(matches!(e, QuantizeError::Requantize { .. }), "{e}");
        assert!(!out.exists());
        let p = QuantizeParams {
            allow_requantize: true,
            ..params(FileType::Q4_0)
        };
        let s = quantize(&src, &out, &p, |_| {}).unwrap();
        assert!(s.n_requantized > 0);
        std::fs::remove_dir_all(&d).ok();
    }
}
