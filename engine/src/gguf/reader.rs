//! The GGUF byte parser: a bounds-checked cursor over the file's bytes that reads the header,
//! the metadata table and the tensor infos, validating every count, length and offset.

use super::error::{GgufError, Result};
use super::value::{MetaArray, MetaValue, Metadata, ValueType};
use super::{GgufHeader, TensorInfo};
use crate::DType;

/// Arrays may nest at most this deep (GGUF allows nesting; real files use one level).
pub const MAX_ARRAY_NESTING: usize = 8;
/// Largest tensor rank ggml supports.
pub const MAX_DIMS: u32 = 4;
/// Default `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A position in the file's bytes; every read checks the bounds first.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                available: self.remaining(),
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: impl FnOnce() -> String) -> Result<[u8; N]> {
        let b = self.take(N as u64, what)?;
        Ok(b.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that must describe at least `min_each` bytes per item in what is left.
    fn count(&mut self, what: &str, min_each: u64) -> Result<u64> {
        let offset = self.pos as u64;
        let count = self.u64(|| what.to_string())?;
        let limit = self.remaining() / min_each.max(1);
        if count > limit {
            return Err(GgufError::CountTooLarge {
                what: what.to_string(),
                count,
                offset,
                limit,
            });
        }
        Ok(count)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len_offset = self.pos as u64;
        let len = self.u64(|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err(GgufError::CountTooLarge {
                what: format!("length of {}", what()),
                count: len,
                offset: len_offset,
                limit: self.remaining(),
            });
        }
        let start = self.pos as u64;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            what: what(),
            offset: start,
        })
    }
}

/// Parse the header, metadata and tensor infos of a GGUF file held in `bytes`.
///
/// Tensor data is not touched; its bounds are checked against `bytes.len()`.
pub fn parse(bytes: &[u8]) -> Result<GgufHeader> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic: [u8; 4] = c.array(|| "magic".into())?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32(|| "version".into())?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion { version });
    }
    // A tensor info is at least: name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
    let n_tensors = c.count("tensor count", 32)?;
    // A key/value pair is at least: key length (8) + type (4) + a one-byte value.
    let n_kv = c.count("metadata key/value count", 13)?;

    let mut metadata = Metadata::new();
    for i in 0..n_kv {
        let offset = c.pos as u64;
        let key = c.string(&|| format!("metadata key #{i}"))?;
        let value = read_value(&mut c, &key)?;
        if !metadata.insert(key.clone(), value) {
            return Err(GgufError::DuplicateKey { key, offset });
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_int() {
            Some(a) if (8..=65536).contains(&a) && (a as u64).is_power_of_two() => a as u64,
            _ => {
                let mut value = v.to_string();
                if let Some((cut, _)) = value.char_indices().nth(64) {
                    value.truncate(cut);
                    value.push('…');
                }
                return Err(GgufError::BadAlignment { value });
            }
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = std::collections::HashSet::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let info = read_tensor_info(&mut c, i)?;
        if !names.insert(info.name.clone()) {
            return Err(GgufError::DuplicateTensor { tensor: info.name });
        }
        tensors.push(info);
    }

    let header_end = c.pos as u64;
    let data_offset = header_end.div_ceil(alignment) * alignment;
    let file_size = bytes.len() as u64;
    let data_size = file_size.saturating_sub(data_offset);
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let end = t.offset.checked_add(t.n_bytes);
        match end {
            Some(end) if data_offset <= file_size && end <= data_size => {}
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    tensor: t.name.clone(),
                    start: t.offset,
                    end: end.unwrap_or(u64::MAX),
                    data_size,
                });
            }
        }
    }

    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
        file_size,
    })
}

fn read_value(c: &mut Cursor<'_>, key: &str) -> Result<MetaValue> {
    let offset = c.pos as u64;
    let type_id = c.u32(|| format!("value type of {key:?}"))?;
    let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.into(),
        type_id,
        offset,
    })?;
    read_typed(c, key, ty, 0)
}

fn read_typed(c: &mut Cursor<'_>, key: &str, ty: ValueType, depth: usize) -> Result<MetaValue> {
    let what = || format!("value of {key:?}");
    Ok(match ty {
        ValueType::U8 => MetaValue::U8(c.array::<1>(what)?[0]),
        ValueType::I8 => MetaValue::I8(c.array::<1>(what)?[0] as i8),
        ValueType::U16 => MetaValue::U16(u16::from_le_bytes(c.array(what)?)),
        ValueType::I16 => MetaValue::I16(i16::from_le_bytes(c.array(what)?)),
        ValueType::U32 => MetaValue::U32(c.u32(what)?),
        ValueType::I32 => MetaValue::I32(i32::from_le_bytes(c.array(what)?)),
        ValueType::F32 => MetaValue::F32(f32::from_le_bytes(c.array(what)?)),
        ValueType::Bool => MetaValue::Bool(c.array::<1>(what)?[0] != 0),
        ValueType::String => MetaValue::String(c.string(&what)?),
        ValueType::U64 => MetaValue::U64(c.u64(what)?),
        ValueType::I64 => MetaValue::I64(i64::from_le_bytes(c.array(what)?)),
        ValueType::F64 => MetaValue::F64(f64::from_le_bytes(c.array(what)?)),
        ValueType::Array => MetaValue::Array(read_array(c, key, depth)?),
    })
}

fn read_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<MetaArray> {
    let offset = c.pos as u64;
    if depth >= MAX_ARRAY_NESTING {
        return Err(GgufError::NestingTooDeep {
            key: key.into(),
            limit: MAX_ARRAY_NESTING,
            offset,
        });
    }
    let type_id = c.u32(|| format!("array element type of {key:?}"))?;
    let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.into(),
        type_id,
        offset,
    })?;
    let n = c.count(&format!("array length of {key:?}"), ty.min_size())? as usize;
    let what = || format!("array {key:?}");
    macro_rules! fixed {
        ($variant:ident, $t:ty) => {{
            let size = std::mem::size_of::<$t>();
            let raw = c.take((n * size) as u64, what)?;
            MetaArray::$variant(
                raw.chunks_exact(size)
                    .map(|b| <$t>::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            )
        }};
    }
    Ok(match ty {
        ValueType::U8 => MetaArray::U8(c.take(n as u64, what)?.to_vec()),
        ValueType::I8 => MetaArray::I8(c.take(n as u64, what)?.iter().map(|&b| b as i8).collect()),
        ValueType::Bool => {
            MetaArray::Bool(c.take(n as u64, what)?.iter().map(|&b| b != 0).collect())
        }
        ValueType::U16 => fixed!(U16, u16),
        ValueType::I16 => fixed!(I16, i16),
        ValueType::U32 => fixed!(U32, u32),
        ValueType::I32 => fixed!(I32, i32),
        ValueType::F32 => fixed!(F32, f32),
        ValueType::U64 => fixed!(U64, u64),
        ValueType::I64 => fixed!(I64, i64),
        ValueType::F64 => fixed!(F64, f64),
        ValueType::String => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(c.string(&|| format!("element {i} of {key:?}"))?);
            }
            MetaArray::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            MetaArray::Array(v)
        }
    })
}

fn read_tensor_info(c: &mut Cursor<'_>, i: u64) -> Result<TensorInfo> {
    let name = c.string(&|| format!("name of tensor #{i}"))?;
    let dims_offset = c.pos as u64;
    let n_dims = c.u32(|| format!("n_dims of tensor {name:?}"))?;
    if n_dims > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name,
            n_dims,
            offset: dims_offset,
        });
    }
    let mut shape = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        shape.push(c.u64(|| format!("dimension {d} of tensor {name:?}"))?);
    }
    let type_offset = c.pos as u64;
    let type_id = c.u32(|| format!("type of tensor {name:?}"))?;
    let offset = c.u64(|| format!("data offset of tensor {name:?}"))?;
    let dtype = DType::from_id(type_id).ok_or_else(|| GgufError::UnknownDType {
        tensor: name.clone(),
        type_id,
        offset: type_offset,
    })?;
    let overflow = || GgufError::ShapeOverflow {
        tensor: name.clone(),
        shape: shape.clone(),
        offset: dims_offset,
    };
    let n_elements = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(overflow)?;
    let ne0 = shape.first().copied().unwrap_or(1);
    if ne0 % dtype.block_elems() as u64 != 0 {
        return Err(GgufError::PartialBlock {
            tensor: name,
            dtype: dtype.name(),
            ne0,
            block: dtype.block_elems(),
        });
    }
    let n_bytes = dtype.row_bytes(n_elements).ok_or_else(overflow)?;
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        offset,
        n_bytes,
    })
}
