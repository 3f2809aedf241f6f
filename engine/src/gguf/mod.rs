//! Zero-copy GGUF (v2/v3) reading: [`GgufFile::open`] maps a file with memmap2, parses and
//! validates its header, and hands out [`Tensor`]s that borrow their bytes from the map.
//! [`GgufFile::read`] reads the whole file into memory instead (`--no-mmap`).
//!
//! A mapped file must not be truncated or rewritten while it is open: reading a page that
//! is no longer backed by the file raises SIGBUS, which kills the process (llama.cpp shares
//! the hazard). Replacing the file by renaming a new one over it is safe; the map keeps the
//! old file. [`GgufFile::read`] has no such hazard, at the cost of the file's size in memory.

mod error;
mod reader;
mod tensor;
mod value;
pub mod writer;

use std::path::Path;
use std::sync::Arc;

pub use error::{GgufError, Result};
pub use reader::{DEFAULT_ALIGNMENT, MAX_ARRAY_NESTING, MAX_DIMS, parse};
pub use tensor::{Backing, Tensor};
pub use value::{MetaArray, MetaValue, Metadata, ValueType};
pub use writer::{GgufWriter, TensorEntry};

use crate::DType;

/// One tensor's description from the header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions in ggml order: `shape[0]` is the contiguous row length.
    pub shape: Vec<u64>,
    /// Offset of its bytes inside the data section.
    pub offset: u64,
    /// Number of bytes of data.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Total number of elements.
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// Everything in a GGUF file before the tensor data.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    /// GGUF format version (2 or 3).
    pub version: u32,
    /// The key → value table.
    pub metadata: Metadata,
    /// Tensor descriptions in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section and of every tensor in it.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Size of the whole file in bytes.
    pub file_size: u64,
}

/// An open GGUF file: its validated header and the bytes behind it.
pub struct GgufFile {
    header: GgufHeader,
    backing: Arc<Backing>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.header.version)
            .field("n_tensors", &self.header.tensors.len())
            .field("n_kv", &self.header.metadata.len())
            .finish()
    }
}

/// What a path that is not a regular file names, for [`GgufError::NotAFile`].
fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

impl GgufFile {
    /// Map `path` and parse it; a path that is not a regular file (a directory, FIFO, device)
    /// is refused before it is opened. Tensor data is not read.
    /// The file must not be truncated or rewritten while the result lives (see the module
    /// documentation: SIGBUS); [`Self::read`] is the safe alternative.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        Self::open_with(path.as_ref(), true)
    }

    /// Read `path` whole into memory and parse it: nothing stays mapped, so a file truncated
    /// or rewritten afterwards cannot crash the process. Same checks as [`Self::open`].
    pub fn read(path: impl AsRef<Path>) -> Result<GgufFile> {
        Self::open_with(path.as_ref(), false)
    }

    /// [`Self::open`] (`mmap`) or [`Self::read`].
    pub fn open_with(path: &Path, mmap: bool) -> Result<GgufFile> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let kind = std::fs::metadata(path).map_err(io)?.file_type();
        if !kind.is_file() {
            return Err(GgufError::NotAFile {
                path: path.to_path_buf(),
                kind: file_kind(&kind),
            });
        }
        let mut file = std::fs::File::open(path).map_err(io)?;
        if !mmap {
            let len = file.metadata().map_err(io)?.len();
            let len = usize::try_from(len).map_err(|_| {
                io(std::io::Error::new(
                    std::io::ErrorKind::OutOfMemory,
                    format!("{len} bytes do not fit in this address space"),
                ))
            })?;
            return Self::from_backing(Backing::read(&mut file, len).map_err(io)?);
        }
        // SAFETY: the map is read-only; like every mmap-based loader we rely on the file not
        // being truncated by another process while it is open (the module documentation says
        // so, and `read` is offered instead).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_backing(Backing::mmap(map))
    }

    /// Parse a GGUF image held in memory (tests, fuzzing, files built on the fly).
    pub fn from_bytes(bytes: &[u8]) -> Result<GgufFile> {
        Self::from_backing(Backing::owned(bytes))
    }

    fn from_backing(backing: Backing) -> Result<GgufFile> {
        let header = parse(backing.bytes())?;
        Ok(GgufFile {
            header,
            backing: Arc::new(backing),
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The metadata table.
    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    /// Tensor descriptions in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The description of tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensors.iter().find(|t| t.name == name)
    }

    /// A zero-copy view of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<Tensor> {
        self.tensor_info(name).map(|info| self.view(info))
    }

    /// A zero-copy view of the tensor described by `info` (which must come from this file).
    pub fn view(&self, info: &TensorInfo) -> Tensor {
        let start = (self.header.data_offset + info.offset) as usize;
        Tensor::from_backing(
            info.name.clone(),
            info.dtype,
            info.shape.iter().map(|&d| d as usize).collect(),
            self.backing.clone(),
            start,
            info.n_bytes as usize,
        )
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.header.file_size
    }
}

#[cfg(test)]
mod tests;
