//! A loaded model: the mapped GGUF file, its hyper-parameters and the architecture's weights.
//! A `Model` is immutable and can be shared by many [`Context`](crate::context::Context)s.

use std::path::Path;

use tessera_engine::GgufFile;

use crate::arch::{self, Architecture};
use crate::error::Result;
use crate::hparams::{HParams, RopeOverrides};

/// A model ready to run.
pub struct Model {
    file: GgufFile,
    arch: Box<dyn Architecture>,
}

impl Model {
    /// Map `path` and load its weights (zero-copy), applying `rope` overrides.
    pub fn load(path: impl AsRef<Path>, rope: &RopeOverrides) -> Result<Model> {
        let file = GgufFile::open(path)?;
        Self::from_file(file, rope)
    }

    /// Load from an opened file.
    pub fn from_file(file: GgufFile, rope: &RopeOverrides) -> Result<Model> {
        let mut hp = HParams::from_gguf(file.metadata())?;
        hp.apply_rope_overrides(rope)?;
        let arch = arch::load(&file, hp)?;
        Ok(Model { file, arch })
    }

    /// The GGUF file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Hyper-parameters (with overrides applied).
    pub fn hparams(&self) -> &HParams {
        self.arch.hparams()
    }

    /// The architecture.
    pub fn arch(&self) -> &dyn Architecture {
        &*self.arch
    }
}
