//! Errors of the GGUF reader: one variant per way a file can be wrong, each naming the field
//! and the byte offset where the problem was found.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong reading a GGUF file or its metadata.
#[derive(Debug, Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot open {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The path names a directory, a FIFO, a device or a socket: opening a FIFO would wait
    /// for a writer forever, and a device has no end.
    #[error("cannot open {path}: it is {kind}, not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// `a directory`, `a FIFO (named pipe)`, ….
        kind: &'static str,
    },
    /// The file ends before a field it must contain.
    #[error(
        "file truncated: {what} at offset {offset} needs {needed} bytes, only {available} left"
    )]
    Truncated {
        /// The field being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The four bytes found at offset 0.
        found: [u8; 4],
    },
    /// Only versions 2 and 3 are read.
    #[error("unsupported GGUF version {version} at offset 4 (supported: 2, 3)")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// A count (tensors, key/value pairs, array length) cannot fit in the file.
    #[error("{what} = {count} at offset {offset} is impossible: at most {limit} fit in the file")]
    CountTooLarge {
        /// What is being counted.
        what: String,
        /// The count found.
        count: u64,
        /// Where it was read.
        offset: u64,
        /// The largest count the remaining bytes could hold.
        limit: u64,
    },
    /// A string's bytes are not UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        what: String,
        /// Where its bytes start.
        offset: u64,
    },
    /// A metadata value has a type id outside the 13 GGUF value types.
    #[error("metadata key {key:?}: unknown value type {type_id} at offset {offset}")]
    UnknownValueType {
        /// The key whose value is bad.
        key: String,
        /// The type id found.
        type_id: u32,
        /// Where it was read.
        offset: u64,
    },
    /// Arrays nested deeper than the reader allows.
    #[error("metadata key {key:?}: arrays nested deeper than {limit} at offset {offset}")]
    NestingTooDeep {
        /// The key whose value is bad.
        key: String,
        /// The deepest nesting allowed.
        limit: usize,
        /// Where the too-deep array starts.
        offset: u64,
    },
    /// The same metadata key appears twice.
    #[error("metadata key {key:?} appears twice (second at offset {offset})")]
    DuplicateKey {
        /// The repeated key.
        key: String,
        /// Where the second copy starts.
        offset: u64,
    },
    /// `general.alignment` is not an integer, or not a power of two between 8 and 65536.
    #[error("general.alignment = {value} is not a power of two between 8 and 65536")]
    BadAlignment {
        /// The value found, as the metadata holds it (a string value is quoted).
        value: String,
    },
    /// A tensor has more than four dimensions.
    #[error("tensor {tensor:?}: {n_dims} dimensions at offset {offset} (at most 4)")]
    TooManyDims {
        /// The tensor's name.
        tensor: String,
        /// The count found.
        n_dims: u32,
        /// Where it was read.
        offset: u64,
    },
    /// A tensor's element count or byte size overflows.
    #[error("tensor {tensor:?}: shape {shape:?} at offset {offset} overflows")]
    ShapeOverflow {
        /// The tensor's name.
        tensor: String,
        /// Its dimensions as stored.
        shape: Vec<u64>,
        /// Where the shape was read.
        offset: u64,
    },
    /// A tensor type id that ggml does not define.
    #[error("tensor {tensor:?}: unknown type id {type_id} at offset {offset}")]
    UnknownDType {
        /// The tensor's name.
        tensor: String,
        /// The id found.
        type_id: u32,
        /// Where it was read.
        offset: u64,
    },
    /// A tensor's rows are not a whole number of blocks of its type.
    #[error("tensor {tensor:?}: row length {ne0} is not a multiple of {dtype}'s block of {block}")]
    PartialBlock {
        /// The tensor's name.
        tensor: String,
        /// Its type name.
        dtype: &'static str,
        /// Its row length.
        ne0: u64,
        /// The block size in elements.
        block: usize,
    },
    /// A tensor's data offset is not a multiple of the alignment.
    #[error(
        "tensor {tensor:?}: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        /// The tensor's name.
        tensor: String,
        /// Its offset inside the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor's bytes run past the end of the file.
    #[error(
        "tensor {tensor:?}: data [{start}, {end}) lies outside the data section of {data_size} bytes"
    )]
    TensorOutOfBounds {
        /// The tensor's name.
        tensor: String,
        /// Start offset inside the data section.
        start: u64,
        /// End offset inside the data section.
        end: u64,
        /// Size of the data section.
        data_size: u64,
    },
    /// Two tensors with the same name.
    #[error("tensor {tensor:?} appears twice")]
    DuplicateTensor {
        /// The repeated name.
        tensor: String,
    },
    /// A metadata key that a caller requires is missing.
    #[error("metadata key {key:?} is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value has a type the caller cannot use.
    #[error("metadata key {key:?} holds {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What the caller wanted.
        expected: &'static str,
        /// What the file has.
        found: String,
    },
}

/// Result type of the GGUF reader.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
