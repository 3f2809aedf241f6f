//! GGUF metadata values: the 13 value types, typed arrays (nested to any depth), and the
//! key → value table with getters that accept every integer width a file may use.

use std::collections::HashMap;
use std::fmt;

use super::error::{GgufError, Result};

/// The on-disk id of a metadata value type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    /// u8
    U8 = 0,
    /// i8
    I8 = 1,
    /// u16
    U16 = 2,
    /// i16
    I16 = 3,
    /// u32
    U32 = 4,
    /// i32
    I32 = 5,
    /// f32
    F32 = 6,
    /// bool (one byte, 0 or 1)
    Bool = 7,
    /// length-prefixed UTF-8 string
    String = 8,
    /// typed array
    Array = 9,
    /// u64
    U64 = 10,
    /// i64
    I64 = 11,
    /// f64
    F64 = 12,
}

impl ValueType {
    /// The type with on-disk id `id`.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Smallest number of bytes one value of this type occupies on disk.
    pub fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// u8
    U8(u8),
    /// i8
    I8(i8),
    /// u16
    U16(u16),
    /// i16
    I16(i16),
    /// u32
    U32(u32),
    /// i32
    I32(i32),
    /// f32
    F32(f32),
    /// bool
    Bool(bool),
    /// string
    String(String),
    /// array
    Array(MetaArray),
    /// u64
    U64(u64),
    /// i64
    I64(i64),
    /// f64
    F64(f64),
}

/// A metadata array, stored by element type so large arrays (262k tokens) stay compact.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaArray {
    /// u8 elements
    U8(Vec<u8>),
    /// i8 elements
    I8(Vec<i8>),
    /// u16 elements
    U16(Vec<u16>),
    /// i16 elements
    I16(Vec<i16>),
    /// u32 elements
    U32(Vec<u32>),
    /// i32 elements
    I32(Vec<i32>),
    /// f32 elements
    F32(Vec<f32>),
    /// bool elements
    Bool(Vec<bool>),
    /// string elements
    String(Vec<String>),
    /// nested arrays
    Array(Vec<MetaArray>),
    /// u64 elements
    U64(Vec<u64>),
    /// i64 elements
    I64(Vec<i64>),
    /// f64 elements
    F64(Vec<f64>),
}

impl MetaArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        use MetaArray::*;
        match self {
            U8(v) => v.len(),
            I8(v) => v.len(),
            U16(v) => v.len(),
            I16(v) => v.len(),
            U32(v) => v.len(),
            I32(v) => v.len(),
            F32(v) => v.len(),
            Bool(v) => v.len(),
            String(v) => v.len(),
            Array(v) => v.len(),
            U64(v) => v.len(),
            I64(v) => v.len(),
            F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type's name, e.g. `string`.
    pub fn elem_type_name(&self) -> &'static str {
        use MetaArray::*;
        match self {
            U8(_) => "u8",
            I8(_) => "i8",
            U16(_) => "u16",
            I16(_) => "i16",
            U32(_) => "u32",
            I32(_) => "i32",
            F32(_) => "f32",
            Bool(_) => "bool",
            String(_) => "string",
            Array(_) => "array",
            U64(_) => "u64",
            I64(_) => "i64",
            F64(_) => "f64",
        }
    }

    /// Element `i` as an i64 when the array holds integers.
    fn int_at(&self, i: usize) -> Option<i128> {
        use MetaArray::*;
        Some(match self {
            U8(v) => v[i] as i128,
            I8(v) => v[i] as i128,
            U16(v) => v[i] as i128,
            I16(v) => v[i] as i128,
            U32(v) => v[i] as i128,
            I32(v) => v[i] as i128,
            U64(v) => v[i] as i128,
            I64(v) => v[i] as i128,
            Bool(v) => v[i] as i128,
            _ => return None,
        })
    }
}

impl MetaValue {
    /// The type's name as GGUF documents it (`u32`, `string`, `array<string>` ...).
    pub fn type_name(&self) -> String {
        use MetaValue::*;
        match self {
            U8(_) => "u8".into(),
            I8(_) => "i8".into(),
            U16(_) => "u16".into(),
            I16(_) => "i16".into(),
            U32(_) => "u32".into(),
            I32(_) => "i32".into(),
            F32(_) => "f32".into(),
            Bool(_) => "bool".into(),
            String(_) => "string".into(),
            Array(a) => format!("array<{}>[{}]", a.elem_type_name(), a.len()),
            U64(_) => "u64".into(),
            I64(_) => "i64".into(),
            F64(_) => "f64".into(),
        }
    }

    /// The value as an integer, whatever its integer width.
    pub fn as_int(&self) -> Option<i128> {
        use MetaValue::*;
        Some(match *self {
            U8(v) => v as i128,
            I8(v) => v as i128,
            U16(v) => v as i128,
            I16(v) => v as i128,
            U32(v) => v as i128,
            I32(v) => v as i128,
            U64(v) => v as i128,
            I64(v) => v as i128,
            _ => return None,
        })
    }

    /// The value as a float, from f32, f64 or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_int().map(|v| v as f64),
        }
    }

    /// The string, when this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MetaValue::*;
        match self {
            U8(v) => write!(f, "{v}"),
            I8(v) => write!(f, "{v}"),
            U16(v) => write!(f, "{v}"),
            I16(v) => write!(f, "{v}"),
            U32(v) => write!(f, "{v}"),
            I32(v) => write!(f, "{v}"),
            F32(v) => write!(f, "{v}"),
            Bool(v) => write!(f, "{v}"),
            String(s) => write!(f, "{s:?}"),
            Array(a) => write!(f, "[{} × {}]", a.len(), a.elem_type_name()),
            U64(v) => write!(f, "{v}"),
            I64(v) => write!(f, "{v}"),
            F64(v) => write!(f, "{v}"),
        }
    }
}

/// The key → value table of a GGUF file, in file order, with typed getters.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    entries: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a key; returns `false` (and changes nothing) when the key already exists.
    pub fn insert(&mut self, key: String, value: MetaValue) -> bool {
        if self.index.contains_key(&key) {
            return false;
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        true
    }

    /// All entries in file order.
    pub fn entries(&self) -> &[(String, MetaValue)] {
        &self.entries
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    fn require(&self, key: &str) -> Result<&MetaValue> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey { key: key.into() })
    }

    fn wrong(key: &str, expected: &'static str, v: &MetaValue) -> GgufError {
        GgufError::WrongType {
            key: key.into(),
            expected,
            found: v.type_name(),
        }
    }

    fn int_in_range<T: TryFrom<i128>>(&self, key: &str, expected: &'static str) -> Result<T> {
        let v = self.require(key)?;
        v.as_int()
            .and_then(|i| T::try_from(i).ok())
            .ok_or_else(|| Self::wrong(key, expected, v))
    }

    /// An integer key (stored as any integer type) that fits a u32.
    pub fn u32(&self, key: &str) -> Result<u32> {
        self.int_in_range(key, "an integer in u32 range")
    }

    /// An integer key (stored as any integer type) that fits a u64.
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.int_in_range(key, "an integer in u64 range")
    }

    /// An integer key (stored as any integer type) that fits an i64.
    pub fn i64(&self, key: &str) -> Result<i64> {
        self.int_in_range(key, "an integer in i64 range")
    }

    /// A float key (f32, f64, or an integer).
    pub fn f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        v.as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| Self::wrong(key, "a number", v))
    }

    /// A bool key.
    pub fn bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            MetaValue::Bool(b) => Ok(*b),
            v => Err(Self::wrong(key, "a bool", v)),
        }
    }

    /// A string key.
    pub fn str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong(key, "a string", v))
    }

    /// An array key of any element type.
    pub fn array(&self, key: &str) -> Result<&MetaArray> {
        match self.require(key)? {
            MetaValue::Array(a) => Ok(a),
            v => Err(Self::wrong(key, "an array", v)),
        }
    }

    /// An array of strings.
    pub fn str_array(&self, key: &str) -> Result<&[String]> {
        match self.array(key)? {
            MetaArray::String(v) => Ok(v),
            _ => Err(Self::wrong(key, "an array of strings", self.require(key)?)),
        }
    }

    /// An array of f32 (f64 arrays are converted).
    pub fn f32_array(&self, key: &str) -> Result<Vec<f32>> {
        match self.array(key)? {
            MetaArray::F32(v) => Ok(v.clone()),
            MetaArray::F64(v) => Ok(v.iter().map(|&x| x as f32).collect()),
            _ => Err(Self::wrong(key, "an array of floats", self.require(key)?)),
        }
    }

    /// An array of integers of any width, as i64.
    pub fn int_array(&self, key: &str) -> Result<Vec<i64>> {
        let a = self.array(key)?;
        (0..a.len())
            .map(|i| {
                a.int_at(i)
                    .and_then(|x| i64::try_from(x).ok())
                    .ok_or_else(|| Self::wrong(key, "an array of integers", self.get(key).unwrap()))
            })
            .collect()
    }

    /// `u32(key)` when the key exists, `None` when it does not.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.get(key).map(|_| self.u32(key)).transpose()
    }

    /// `u64(key)` when the key exists, `None` when it does not.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(|_| self.u64(key)).transpose()
    }

    /// `f32(key)` when the key exists, `None` when it does not.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.get(key).map(|_| self.f32(key)).transpose()
    }

    /// `bool(key)` when the key exists, `None` when it does not.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key).map(|_| self.bool(key)).transpose()
    }

    /// `str(key)` when the key exists, `None` when it does not.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key).map(|_| self.str(key)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_getters_accept_any_width() {
        let mut m = Metadata::new();
        m.insert("a".into(), MetaValue::U64(512));
        m.insert("b".into(), MetaValue::I32(7));
        m.insert("c".into(), MetaValue::I32(-1));
        m.insert("s".into(), MetaValue::String("x".into()));
        assert_eq!(m.u32("a").unwrap(), 512);
        assert_eq!(m.u64("b").unwrap(), 7);
        assert!(matches!(m.u32("c"), Err(GgufError::WrongType { .. })));
        assert!(matches!(m.u32("s"), Err(GgufError::WrongType { .. })));
        assert!(matches!(m.u32("zz"), Err(GgufError::MissingKey { .. })));
        assert_eq!(m.opt_u32("zz").unwrap(), None);
        assert!(!m.insert("a".into(), MetaValue::U8(1)));
    }
}
