//! A small GGUF writer: builds v3 (or v2) files in memory. Tests use it to make valid and
//! hostile files; tools may use it to save converted tensors.

use super::value::{MetaArray, MetaValue};
use crate::DType;

/// A tensor to be written: name, type, ggml-order shape and already-encoded bytes.
#[derive(Clone, Debug)]
pub struct WriterTensor {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// ggml-order dimensions.
    pub shape: Vec<u64>,
    /// Encoded data.
    pub data: Vec<u8>,
}

/// Builds a GGUF image.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    /// Format version written in the header.
    pub version: u32,
    /// Alignment of the data section.
    pub alignment: u64,
    /// Metadata in order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensors in order.
    pub tensors: Vec<WriterTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter {
            version: 3,
            alignment: 32,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }
}

/// Where the parts of a written file start, for tests that corrupt them.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// Offset of each metadata entry (its key's length field).
    pub kv_offsets: Vec<usize>,
    /// Offset of each tensor info (its name's length field).
    pub tensor_info_offsets: Vec<usize>,
    /// Offset of the data section.
    pub data_offset: usize,
}

impl GgufWriter {
    /// An empty v3 file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a metadata entry.
    pub fn kv(mut self, key: &str, value: MetaValue) -> Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Add a tensor.
    pub fn tensor(mut self, name: &str, dtype: DType, shape: &[u64], data: Vec<u8>) -> Self {
        self.tensors.push(WriterTensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            data,
        });
        self
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_with_layout().0
    }

    /// The file's bytes and where its parts start.
    pub fn to_bytes_with_layout(&self) -> (Vec<u8>, Layout) {
        let infos: Vec<TensorEntry> = self
            .tensors
            .iter()
            .map(|t| TensorEntry {
                name: &t.name,
                dtype: t.dtype,
                shape: &t.shape,
                len: t.data.len() as u64,
            })
            .collect();
        let (mut out, offsets, layout) =
            header(self.version, self.alignment, &self.metadata, &infos);
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize(layout.data_offset + off as usize, 0);
            out.extend_from_slice(&t.data);
        }
        (out, layout)
    }
}

/// A tensor's entry in a GGUF header, its data written elsewhere (see [`header`]).
#[derive(Clone, Copy, Debug)]
pub struct TensorEntry<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// ggml-order dimensions.
    pub shape: &'a [u64],
    /// Bytes of data.
    pub len: u64,
}

/// The header of a GGUF file (magic, counts, metadata, tensor infos, padding up to the data
/// section) for tensors whose data will follow, each at its returned offset from the start of
/// the data section (`alignment`-aligned, in order, zero padding between): what a tool that
/// streams tensor data writes first. Also returns where the header's parts start.
pub fn header(
    version: u32,
    alignment: u64,
    metadata: &[(String, MetaValue)],
    tensors: &[TensorEntry],
) -> (Vec<u8>, Vec<u64>, Layout) {
    let mut out = Vec::new();
    let mut layout = Layout::default();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        layout.kv_offsets.push(out.len());
        write_str(&mut out, k);
        out.extend_from_slice(&value_type(v).to_le_bytes());
        write_value(&mut out, v);
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        layout.tensor_info_offsets.push(out.len());
        write_str(&mut out, t.name);
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in t.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.dtype.id().to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.len).div_ceil(alignment) * alignment;
    }
    while !(out.len() as u64).is_multiple_of(alignment) {
        out.push(0);
    }
    layout.data_offset = out.len();
    (out, offsets, layout)
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value_type(v: &MetaValue) -> u32 {
    use MetaValue::*;
    match v {
        U8(_) => 0,
        I8(_) => 1,
        U16(_) => 2,
        I16(_) => 3,
        U32(_) => 4,
        I32(_) => 5,
        F32(_) => 6,
        Bool(_) => 7,
        String(_) => 8,
        Array(_) => 9,
        U64(_) => 10,
        I64(_) => 11,
        F64(_) => 12,
    }
}

fn array_type(a: &MetaArray) -> u32 {
    use MetaArray::*;
    match a {
        U8(_) => 0,
        I8(_) => 1,
        U16(_) => 2,
        I16(_) => 3,
        U32(_) => 4,
        I32(_) => 5,
        F32(_) => 6,
        Bool(_) => 7,
        String(_) => 8,
        Array(_) => 9,
        U64(_) => 10,
        I64(_) => 11,
        F64(_) => 12,
    }
}

fn write_value(out: &mut Vec<u8>, v: &MetaValue) {
    use MetaValue::*;
    match v {
        U8(x) => out.push(*x),
        I8(x) => out.push(*x as u8),
        U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Bool(x) => out.push(*x as u8),
        String(s) => write_str(out, s),
        Array(a) => write_array(out, a),
        U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn write_array(out: &mut Vec<u8>, a: &MetaArray) {
    use MetaArray::*;
    out.extend_from_slice(&array_type(a).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        U8(v) => out.extend_from_slice(v),
        I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        Bool(v) => out.extend(v.iter().map(|&x| x as u8)),
        U16(v) => each!(v),
        I16(v) => each!(v),
        U32(v) => each!(v),
        I32(v) => each!(v),
        F32(v) => each!(v),
        U64(v) => each!(v),
        I64(v) => each!(v),
        F64(v) => each!(v),
        String(v) => v.iter().for_each(|s| write_str(out, s)),
        Array(v) => v.iter().for_each(|x| write_array(out, x)),
    }
}
