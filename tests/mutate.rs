//! Seeded mutation of GGUF files for the robustness tests: a small PRNG, a map of a header's
//! fields (counts, lengths, type ids, dimensions, offsets, metadata scalars) and mutators that
//! rewrite those fields with boundary values, flip bytes, or damage tensor data.
//!
//! Mutations are returned as patches (offset + new bytes) so a test can apply them to a working
//! copy of a large file and restore the original bytes afterwards, instead of copying the file
//! for every case.

/// SplitMix64: small, fast, and the same sequence on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `0..n` as usize (`n > 0`).
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// What a header field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// The u32 format version.
    Version,
    /// A u64 count: tensors, key/value pairs, array elements.
    Count,
    /// The u64 length of a string.
    StrLen,
    /// A u32 metadata value type or array element type.
    ValueType,
    /// A metadata scalar of the given byte size (1, 2, 4 or 8).
    Scalar(u8),
    /// A tensor's u32 number of dimensions.
    NDims,
    /// A tensor's u64 dimension.
    Dim,
    /// A tensor's u32 ggml type id.
    DType,
    /// A tensor's u64 data offset.
    DataOffset,
}

/// One field of a header: where it is and what it holds.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// Byte offset in the file.
    pub offset: usize,
    /// Its meaning.
    pub kind: FieldKind,
}

/// The fields of a valid GGUF header, grouped by kind, and where the header ends.
#[derive(Clone, Debug, Default)]
pub struct HeaderMap {
    /// Fields per kind, in file order.
    pub groups: Vec<(FieldKind, Vec<Field>)>,
    /// End of the tensor infos (start of the padding before the data section).
    pub header_end: usize,
}

struct Walker<'a> {
    b: &'a [u8],
    p: usize,
    fields: Vec<Field>,
}

impl Walker<'_> {
    fn field(&mut self, kind: FieldKind, size: usize) -> u64 {
        self.fields.push(Field {
            offset: self.p,
            kind,
        });
        let mut v = [0u8; 8];
        v[..size].copy_from_slice(&self.b[self.p..self.p + size]);
        self.p += size;
        u64::from_le_bytes(v)
    }

    fn string(&mut self) {
        let n = self.field(FieldKind::StrLen, 8) as usize;
        self.p += n;
    }

    fn value(&mut self, ty: u64) {
        match ty {
            0 | 1 | 7 => {
                self.field(FieldKind::Scalar(1), 1);
            }
            2 | 3 => {
                self.field(FieldKind::Scalar(2), 2);
            }
            4..=6 => {
                self.field(FieldKind::Scalar(4), 4);
            }
            10..=12 => {
                self.field(FieldKind::Scalar(8), 8);
            }
            8 => self.string(),
            9 => {
                let et = self.field(FieldKind::ValueType, 4);
                let n = self.field(FieldKind::Count, 8);
                match et {
                    // Fixed-size elements: not mapped one by one (byte flips cover them).
                    0 | 1 | 7 => self.p += n as usize,
                    2 | 3 => self.p += 2 * n as usize,
                    4..=6 => self.p += 4 * n as usize,
                    10..=12 => self.p += 8 * n as usize,
                    _ => (0..n).for_each(|_| self.value(et)),
                }
            }
            _ => panic!("not a valid header: value type {ty}"),
        }
    }
}

/// Map the fields of `bytes`, which must start with a valid GGUF header.
pub fn map_header(bytes: &[u8]) -> HeaderMap {
    let mut w = Walker {
        b: bytes,
        p: 4,
        fields: Vec::new(),
    };
    w.field(FieldKind::Version, 4);
    let n_tensors = w.field(FieldKind::Count, 8);
    let n_kv = w.field(FieldKind::Count, 8);
    for _ in 0..n_kv {
        w.string();
        let ty = w.field(FieldKind::ValueType, 4);
        w.value(ty);
    }
    for _ in 0..n_tensors {
        w.string();
        let nd = w.field(FieldKind::NDims, 4);
        for _ in 0..nd {
            w.field(FieldKind::Dim, 8);
        }
        w.field(FieldKind::DType, 4);
        w.field(FieldKind::DataOffset, 8);
    }
    let mut groups: Vec<(FieldKind, Vec<Field>)> = Vec::new();
    for f in w.fields {
        match groups.iter_mut().find(|(k, _)| *k == f.kind) {
            Some((_, v)) => v.push(f),
            None => groups.push((f.kind, vec![f])),
        }
    }
    HeaderMap {
        groups,
        header_end: w.p,
    }
}

/// A change to a file: write `bytes` at `offset`.
#[derive(Clone, Debug)]
pub struct Patch {
    /// Where.
    pub offset: usize,
    /// The new bytes.
    pub bytes: Vec<u8>,
}

fn size_of(kind: FieldKind) -> usize {
    match kind {
        FieldKind::Version | FieldKind::ValueType | FieldKind::NDims | FieldKind::DType => 4,
        FieldKind::Scalar(n) => n as usize,
        _ => 8,
    }
}

/// A boundary-minded replacement for a field whose current value is `orig`.
fn interesting(rng: &mut Rng, orig: u64, size: usize) -> u64 {
    let max = if size == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    };
    let v = match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => orig.wrapping_add(1),
        3 => orig.wrapping_sub(1),
        4 => orig.wrapping_mul(2),
        5 => orig / 2,
        6 => max,
        7 => max / 2 + 1, // sign bit
        8 => 1 << rng.below(8 * size as u64),
        9 => rng.below(64),
        10 => orig ^ (1 << rng.below(8 * size as u64)),
        _ => rng.next_u64(),
    };
    v & max
}

/// Rewrite 1–3 mapped fields of `header` (kinds picked uniformly, so the few counts and type
/// ids are hit as often as the many string lengths), or flip a few random bytes.
pub fn mutate_fields(rng: &mut Rng, header: &[u8], map: &HeaderMap) -> Vec<Patch> {
    let mut patches = Vec::new();
    for _ in 0..1 + rng.below(3) {
        if rng.one_in(4) {
            // Raw bytes anywhere in the header.
            let offset = rng.index(map.header_end);
            patches.push(Patch {
                offset,
                bytes: vec![rng.next_u64() as u8],
            });
            continue;
        }
        let (kind, fields) = &map.groups[rng.index(map.groups.len())];
        let f = fields[rng.index(fields.len())];
        let size = size_of(*kind);
        let mut cur = [0u8; 8];
        cur[..size].copy_from_slice(&header[f.offset..f.offset + size]);
        let v = interesting(rng, u64::from_le_bytes(cur), size);
        patches.push(Patch {
            offset: f.offset,
            bytes: v.to_le_bytes()[..size].to_vec(),
        });
    }
    patches
}

/// Damage a few bytes of tensor data in `[data_start, file_len)`: random bytes, or f16 scale
/// fields set to NaN or infinity (most block formats start with an f16 scale).
pub fn mutate_data(rng: &mut Rng, data_start: usize, file_len: usize) -> Vec<Patch> {
    let span = (file_len - data_start) as u64;
    (0..1 + rng.below(16))
        .map(|_| {
            let offset = data_start + rng.below(span) as usize;
            let bytes = match rng.below(3) {
                0 => vec![0x00, 0x7E], // f16 NaN
                1 => vec![0x00, 0x7C], // f16 +inf
                _ => vec![rng.next_u64() as u8],
            };
            let bytes = bytes[..bytes.len().min(file_len - offset)].to_vec();
            Patch { offset, bytes }
        })
        .collect()
}
