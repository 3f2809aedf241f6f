//! A working copy of a real model for the mutated-model tests: copied once into a temporary
//! directory, damaged in place by a seed ([`crate::mutate`]), and restored before the next
//! case, so a test runs hundreds of cases on a 250 MB model without writing hundreds of copies.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tessera_engine::GgufFile;

use crate::mutate::{HeaderMap, Patch, Rng, map_header, mutate_data, mutate_fields};

/// What a seed did to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// 1–3 header fields rewritten or bytes flipped.
    Header,
    /// A few bytes of tensor data, f16 scales included, overwritten.
    Data,
    /// Both of the above.
    HeaderAndData,
    /// A copy of the header cut short (a separate small file).
    CutHeader,
    /// The working copy cut in its last 8 MiB of tensor data.
    CutData,
}

/// A model copied into a temporary directory (removed on drop), damaged by [`Self::apply`].
pub struct WorkingCopy {
    original: File,
    size: u64,
    data_offset: usize,
    header: Vec<u8>,
    map: HeaderMap,
    dir: PathBuf,
    work: PathBuf,
    small: PathBuf,
    writer: File,
    /// Original bytes under the patches of the current case.
    undo: Vec<Patch>,
    /// Where the working copy was cut, in the current case.
    cut: Option<u64>,
}

impl WorkingCopy {
    /// Copy the valid GGUF file `path` into a new temporary directory named after `tag`, this
    /// process and the file's name.
    ///
    /// # Panics
    /// When the file is not a readable GGUF file or the copy cannot be written.
    pub fn new(path: &Path, tag: &str) -> WorkingCopy {
        let name = path.file_name().expect("a file name").to_string_lossy();
        let original = File::open(path).unwrap();
        let size = original.metadata().unwrap().len();
        let data_offset = GgufFile::open(path).unwrap().header().data_offset as usize;
        let mut header = vec![0u8; data_offset];
        original.read_exact_at(&mut header, 0).unwrap();
        let map = map_header(&header);
        let dir = std::env::temp_dir().join(format!("{tag}-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let work = dir.join(&*name);
        std::fs::copy(path, &work).unwrap();
        let writer = OpenOptions::new().write(true).open(&work).unwrap();
        WorkingCopy {
            original,
            size,
            data_offset,
            header,
            map,
            small: dir.join("truncated.gguf"),
            dir,
            work,
            writer,
            undo: Vec::new(),
            cut: None,
        }
    }

    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.original.read_exact_at(&mut b, offset).unwrap();
        b
    }

    /// Restore the previous case, then damage the copy as `seed` says: header fields (4 in
    /// 10), tensor data (4 in 10), both (1 in 10), or a truncation (1 in 10: of a copy of the
    /// header, or of the working copy's tensor data). Returns the file to load and the damage.
    pub fn apply(&mut self, seed: u64) -> (PathBuf, Damage) {
        self.restore();
        let mut rng = Rng::new(seed);
        let size = self.size as usize;
        let (patches, damage) = match rng.below(10) {
            0..=3 => (
                mutate_fields(&mut rng, &self.header, &self.map),
                Damage::Header,
            ),
            4..=7 => (mutate_data(&mut rng, self.data_offset, size), Damage::Data),
            8 => {
                let mut p = mutate_fields(&mut rng, &self.header, &self.map);
                p.extend(mutate_data(&mut rng, self.data_offset, size));
                (p, Damage::HeaderAndData)
            }
            _ => {
                if rng.one_in(2) {
                    let cut = rng.below(self.data_offset as u64) as usize;
                    std::fs::write(&self.small, &self.header[..cut]).unwrap();
                    return (self.small.clone(), Damage::CutHeader);
                }
                let span = (self.size - self.data_offset as u64).min(8 << 20);
                let cut = self.size - 1 - rng.below(span);
                self.writer.set_len(cut).unwrap();
                self.cut = Some(cut);
                return (self.work.clone(), Damage::CutData);
            }
        };
        self.undo = patches
            .iter()
            .map(|p| Patch {
                offset: p.offset,
                bytes: self.read(p.offset as u64, p.bytes.len()),
            })
            .collect();
        for p in &patches {
            self.writer.write_all_at(&p.bytes, p.offset as u64).unwrap();
        }
        (self.work.clone(), damage)
    }

    /// Put the original bytes back (patches undone in reverse order, a cut tail rewritten).
    pub fn restore(&mut self) {
        for p in std::mem::take(&mut self.undo).iter().rev() {
            self.writer.write_all_at(&p.bytes, p.offset as u64).unwrap();
        }
        if let Some(cut) = self.cut.take() {
            let tail = self.read(cut, (self.size - cut) as usize);
            self.writer.write_all_at(&tail, cut).unwrap();
        }
    }

    /// Whether the working copy is byte for byte the original (slow: reads both files).
    pub fn is_pristine(&self) -> bool {
        let a = std::fs::read(&self.work).unwrap();
        a.len() as u64 == self.size && a == self.read(0, self.size as usize)
    }
}

impl Drop for WorkingCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_models::testing::TinyLlama;

    #[test]
    fn every_case_is_undone() {
        let src = std::env::temp_dir().join(format!("tessera-wc-{}.gguf", std::process::id()));
        std::fs::write(&src, TinyLlama::default().bytes()).unwrap();
        let mut copy = WorkingCopy::new(&src, "tessera-wc-test");
        let mut seen = Vec::new();
        let mut changed = 0;
        for seed in 0..60 {
            let (path, damage) = copy.apply(seed);
            assert!(path.exists());
            if !seen.contains(&damage) {
                seen.push(damage);
            }
            changed += usize::from(!copy.is_pristine());
            copy.restore();
            assert!(copy.is_pristine(), "seed {seed} ({damage:?}) not undone");
        }
        assert_eq!(seen.len(), 5, "all kinds of damage: {seen:?}");
        assert!(
            changed > 40,
            "only {changed} of 60 cases changed the working copy"
        );
        let dir = copy.dir.clone();
        drop(copy);
        assert!(!dir.exists());
        std::fs::remove_file(&src).unwrap();
    }
}
