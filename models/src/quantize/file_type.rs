//! The file types `tessera quantize` makes: llama.cpp's `LLAMA_FTYPE_*` mixes by name, each
//! with the number it writes to `general.file_type` and the tensor type most weights get.
//! One table, [`FILE_TYPES`]; everything else reads it.

use tessera_engine::DType;

/// A target of `tessera quantize`: a single type (`Q8_0`, `F16`) or one of llama.cpp's mixes
/// (`Q4_K_M`, `IQ4_XS`), whose per-tensor choices are in [`super::choose`].
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// All tensors F32.
    F32,
    /// Mostly F16.
    F16,
    /// Mostly BF16.
    BF16,
    /// Mostly Q4_0.
    Q4_0,
    /// Mostly Q4_1.
    Q4_1,
    /// Mostly Q5_0.
    Q5_0,
    /// Mostly Q5_1.
    Q5_1,
    /// Mostly Q8_0.
    Q8_0,
    /// Q2_K with Q3_K/Q4_K where it matters.
    Q2_K,
    /// Q2_K, smaller (needs an importance matrix in llama.cpp).
    Q2_K_S,
    /// Q3_K, small.
    Q3_K_S,
    /// Q3_K, medium.
    Q3_K_M,
    /// Q3_K, large.
    Q3_K_L,
    /// Q4_K, small.
    Q4_K_S,
    /// Q4_K, medium.
    Q4_K_M,
    /// Q5_K, small.
    Q5_K_S,
    /// Q5_K, medium.
    Q5_K_M,
    /// Q6_K.
    Q6_K,
    /// Mostly IQ4_NL (non-linear 4-bit, blocks of 32).
    IQ4_NL,
    /// Mostly IQ4_XS (non-linear 4-bit, super-blocks of 256).
    IQ4_XS,
}

/// One row of [`FILE_TYPES`].
#[derive(Clone, Copy, Debug)]
pub struct FileTypeInfo {
    /// The file type.
    pub file_type: FileType,
    /// Its name, as llama-quantize spells it.
    pub name: &'static str,
    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub id: u32,
    /// The type of most weight matrices.
    pub default_type: DType,
}

const fn row(
    file_type: FileType,
    name: &'static str,
    id: u32,
    default_type: DType,
) -> FileTypeInfo {
    FileTypeInfo {
        file_type,
        name,
        id,
        default_type,
    }
}

/// Every file type, with llama.cpp's numbers (`llama.h`, `enum llama_ftype`).
pub const FILE_TYPES: &[FileTypeInfo] = &[
    row(FileType::F32, "F32", 0, DType::F32),
    row(FileType::F16, "F16", 1, DType::F16),
    row(FileType::BF16, "BF16", 32, DType::BF16),
    row(FileType::Q4_0, "Q4_0", 2, DType::Q4_0),
    row(FileType::Q4_1, "Q4_1", 3, DType::Q4_1),
    row(FileType::Q5_0, "Q5_0", 8, DType::Q5_0),
    row(FileType::Q5_1, "Q5_1", 9, DType::Q5_1),
    row(FileType::Q8_0, "Q8_0", 7, DType::Q8_0),
    row(FileType::Q2_K, "Q2_K", 10, DType::Q2_K),
    row(FileType::Q2_K_S, "Q2_K_S", 21, DType::Q2_K),
    row(FileType::Q3_K_S, "Q3_K_S", 11, DType::Q3_K),
    row(FileType::Q3_K_M, "Q3_K_M", 12, DType::Q3_K),
    row(FileType::Q3_K_L, "Q3_K_L", 13, DType::Q3_K),
    row(FileType::Q4_K_S, "Q4_K_S", 14, DType::Q4_K),
    row(FileType::Q4_K_M, "Q4_K_M", 15, DType::Q4_K),
    row(FileType::Q5_K_S, "Q5_K_S", 16, DType::Q5_K),
    row(FileType::Q5_K_M, "Q5_K_M", 17, DType::Q5_K),
    row(FileType::Q6_K, "Q6_K", 18, DType::Q6_K),
    row(FileType::IQ4_NL, "IQ4_NL", 25, DType::IQ4_NL),
    row(FileType::IQ4_XS, "IQ4_XS", 30, DType::IQ4_XS),
];

/// llama-quantize's aliases: a K type's bare name means its `_M` mix.
const ALIASES: &[(&str, FileType)] = &[
    ("Q3_K", FileType::Q3_K_M),
    ("Q4_K", FileType::Q4_K_M),
    ("Q5_K", FileType::Q5_K_M),
];

impl FileType {
    /// Its row of [`FILE_TYPES`].
    pub fn info(self) -> &'static FileTypeInfo {
        FILE_TYPES
            .iter()
            .find(|r| r.file_type == self)
            .expect("every file type has a row")
    }

    /// The name, e.g. `Q4_K_M`.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The number written to `general.file_type`.
    pub fn id(self) -> u32 {
        self.info().id
    }

    /// The type of most weight matrices.
    pub fn default_type(self) -> DType {
        self.info().default_type
    }

    /// Parse a name (case-insensitive; `Q4_K` is `Q4_K_M` as in llama-quantize).
    pub fn parse(name: &str) -> Option<FileType> {
        FILE_TYPES
            .iter()
            .map(|r| (r.name, r.file_type))
            .chain(ALIASES.iter().copied())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, t)| t)
    }

    /// The names [`FileType::parse`] accepts, for help texts.
    pub fn names() -> Vec<&'static str> {
        FILE_TYPES
            .iter()
            .map(|r| r.name)
            .chain(ALIASES.iter().map(|a| a.0))
            .collect()
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ids_and_aliases() {
        assert_eq!(FileType::parse("q4_k_m"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::parse("Q4_K"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::parse("Q4_K_M").unwrap().id(), 15);
        assert_eq!(FileType::BF16.id(), 32);
        assert_eq!(FileType::Q2_K_S.default_type(), DType::Q2_K);
        assert_eq!(FileType::parse("IQ2_XXS"), None);
        for r in FILE_TYPES {
            assert_eq!(FileType::parse(r.name), Some(r.file_type));
            assert!(r.default_type.is_supported(), "{}", r.name);
        }
    }
}
