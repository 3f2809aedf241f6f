//! Tests of the GGUF reader on files built in memory: every value type, and one corrupt file
//! per validation rule, each expected to fail with its own error and never to panic; and the
//! two real models' headers (a missing model fails unless `TESSERA_ALLOW_MISSING_MODELS=1`).

use super::writer::Layout;
use super::*;
use tessera_model_files::{GEMMA3, SMOLLM2, model_file};

fn sample() -> GgufWriter {
    GgufWriter::new()
        .kv("general.architecture", MetaValue::String("llama".into()))
        .kv("u8", MetaValue::U8(200))
        .kv("i8", MetaValue::I8(-5))
        .kv("u16", MetaValue::U16(60000))
        .kv("i16", MetaValue::I16(-30000))
        .kv("u32", MetaValue::U32(4_000_000_000))
        .kv("i32", MetaValue::I32(-2_000_000_000))
        .kv("f32", MetaValue::F32(1.5))
        .kv("bool", MetaValue::Bool(true))
        .kv("u64", MetaValue::U64(1 << 40))
        .kv("i64", MetaValue::I64(-(1 << 40)))
        .kv("f64", MetaValue::F64(2.25))
        .kv(
            "strings",
            MetaValue::Array(MetaArray::String(vec!["a".into(), "βγ".into(), "".into()])),
        )
        .kv(
            "nested",
            MetaValue::Array(MetaArray::Array(vec![
                MetaArray::I32(vec![1, 2]),
                MetaArray::F32(vec![0.5]),
            ])),
        )
        .tensor("w", DType::F32, &[4, 2], vec![1; 32])
        .tensor("q", DType::Q8_0, &[64], vec![2; 68])
}

fn parse_err(bytes: &[u8]) -> GgufError {
    match parse(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn round_trips_every_value_type() {
    let bytes = sample().to_bytes();
    let f = GgufFile::from_bytes(&bytes).unwrap();
    let m = f.metadata();
    assert_eq!(m.str("general.architecture").unwrap(), "llama");
    assert_eq!(m.get("u8"), Some(&MetaValue::U8(200)));
    assert_eq!(m.get("i8"), Some(&MetaValue::I8(-5)));
    assert_eq!(m.get("u16"), Some(&MetaValue::U16(60000)));
    assert_eq!(m.get("i16"), Some(&MetaValue::I16(-30000)));
    assert_eq!(m.u32("u32").unwrap(), 4_000_000_000);
    assert_eq!(m.i64("i32").unwrap(), -2_000_000_000);
    assert_eq!(m.f32("f32").unwrap(), 1.5);
    assert!(m.bool("bool").unwrap());
    assert_eq!(m.u64("u64").unwrap(), 1 << 40);
    assert_eq!(m.i64("i64").unwrap(), -(1 << 40));
    assert_eq!(m.f32("f64").unwrap(), 2.25);
    assert_eq!(m.str_array("strings").unwrap(), ["a", "βγ", ""]);
    match m.array("nested").unwrap() {
        MetaArray::Array(v) => {
            assert_eq!(v[0], MetaArray::I32(vec![1, 2]));
            assert_eq!(v[1], MetaArray::F32(vec![0.5]));
        }
        other => panic!("{other:?}"),
    }
    let w = f.tensor("w").unwrap();
    assert_eq!(w.shape(), [4, 2]);
    assert_eq!(w.data(), &[1u8; 32][..]);
    assert_eq!(w.n_rows(), 2);
    let q = f.tensor("q").unwrap();
    assert_eq!(q.dtype(), DType::Q8_0);
    assert_eq!(q.data().len(), 68);
    assert_eq!(f.header().data_offset % 32, 0);
}

#[test]
fn mxfp4_tensors_have_17_byte_blocks() {
    // gpt-oss's expert weights: type 39, 32 values in 17 bytes, so a 3-row tensor of 32
    // columns holds 51 bytes and the next tensor starts at the next aligned offset.
    let mx: Vec<u8> = (0..51).collect();
    let bytes = GgufWriter::new()
        .kv("general.architecture", MetaValue::String("gpt-oss".into()))
        .tensor("experts", DType::MXFP4, &[32, 3], mx.clone())
        .tensor("after", DType::F32, &[2], vec![7; 8])
        .to_bytes();
    let f = GgufFile::from_bytes(&bytes).unwrap();
    let t = f.tensor("experts").unwrap();
    assert_eq!((t.dtype(), t.dtype().id()), (DType::MXFP4, 39));
    assert_eq!((t.n_rows(), t.row_len(), t.row_bytes()), (3, 32, 17));
    assert_eq!(t.data(), &mx[..]);
    assert_eq!(f.tensor("after").unwrap().data(), &[7u8; 8][..]);
    // Rows of a partial block are refused.
    let partial = GgufWriter::new()
        .tensor("experts", DType::MXFP4, &[48, 3], vec![0; 51])
        .to_bytes();
    assert!(matches!(
        parse_err(&partial),
        GgufError::PartialBlock { block: 32, .. }
    ));
}

#[test]
fn version_2_is_read() {
    let mut w = sample();
    w.version = 2;
    assert_eq!(
        GgufFile::from_bytes(&w.to_bytes())
            .unwrap()
            .header()
            .version,
        2
    );
}

#[test]
fn truncation_at_every_offset_fails_cleanly() {
    let bytes = sample().to_bytes();
    for len in 0..bytes.len() {
        let e = parse_err(&bytes[..len]);
        assert!(
            matches!(
                e,
                GgufError::Truncated { .. }
                    | GgufError::CountTooLarge { .. }
                    | GgufError::TensorOutOfBounds { .. }
            ),
            "length {len}: {e}"
        );
    }
}

#[test]
fn wrong_magic_and_version() {
    let mut bytes = sample().to_bytes();
    bytes[0] = b'X';
    assert!(matches!(parse_err(&bytes), GgufError::BadMagic { .. }));
    let mut bytes = sample().to_bytes();
    bytes[4] = 7;
    assert!(matches!(
        parse_err(&bytes),
        GgufError::UnsupportedVersion { version: 7 }
    ));
}

#[test]
fn absurd_counts_are_refused() {
    let mut bytes = sample().to_bytes();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        parse_err(&bytes),
        GgufError::CountTooLarge { offset: 8, .. }
    ));
    let mut bytes = sample().to_bytes();
    bytes[16..24].copy_from_slice(&(1u64 << 50).to_le_bytes());
    assert!(matches!(
        parse_err(&bytes),
        GgufError::CountTooLarge { offset: 16, .. }
    ));
}

fn corrupt(w: &GgufWriter, f: impl FnOnce(&mut Vec<u8>, &Layout)) -> GgufError {
    let (mut bytes, layout) = w.to_bytes_with_layout();
    f(&mut bytes, &layout);
    parse_err(&bytes)
}

#[test]
fn absurd_string_and_array_lengths() {
    let w = sample();
    // The first key's length.
    let e = corrupt(&w, |b, l| {
        let o = l.kv_offsets[0];
        b[o..o + 8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    });
    assert!(matches!(e, GgufError::CountTooLarge { .. }), "{e}");
    // The "strings" array length: key(8 + 7) + type(4) + elem type(4).
    let idx = w.metadata.iter().position(|(k, _)| k == "strings").unwrap();
    let e = corrupt(&w, |b, l| {
        let o = l.kv_offsets[idx] + 8 + 7 + 4 + 4;
        b[o..o + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    });
    assert!(matches!(e, GgufError::CountTooLarge { .. }), "{e}");
}

#[test]
fn unknown_value_type() {
    let w = sample();
    let e = corrupt(&w, |b, l| {
        let o = l.kv_offsets[1] + 8 + 2; // key "u8"
        b[o..o + 4].copy_from_slice(&99u32.to_le_bytes());
    });
    assert!(
        matches!(e, GgufError::UnknownValueType { type_id: 99, .. }),
        "{e}"
    );
}

#[test]
fn invalid_utf8_key() {
    let w = sample();
    let e = corrupt(&w, |b, l| b[l.kv_offsets[1] + 8] = 0xff);
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }), "{e}");
}

#[test]
fn duplicate_key_and_tensor() {
    let w = sample().kv("u8", MetaValue::U8(1));
    assert!(matches!(
        parse_err(&w.to_bytes()),
        GgufError::DuplicateKey { .. }
    ));
    let w = sample().tensor("w", DType::F32, &[1], vec![0; 4]);
    assert!(matches!(
        parse_err(&w.to_bytes()),
        GgufError::DuplicateTensor { .. }
    ));
}

#[test]
fn nesting_too_deep() {
    let mut a = MetaArray::U8(vec![1]);
    for _ in 0..MAX_ARRAY_NESTING + 1 {
        a = MetaArray::Array(vec![a]);
    }
    let w = sample().kv("deep", MetaValue::Array(a));
    assert!(matches!(
        parse_err(&w.to_bytes()),
        GgufError::NestingTooDeep { .. }
    ));
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 24, 1 << 20] {
        let w = sample().kv("general.alignment", MetaValue::U32(a));
        assert!(
            matches!(parse_err(&w.to_bytes()), GgufError::BadAlignment { .. }),
            "{a}"
        );
    }
    // A value of the wrong type is named as it is, not as 0.
    let w = sample().kv("general.alignment", MetaValue::String("64".into()));
    assert_eq!(
        parse_err(&w.to_bytes()).to_string(),
        "general.alignment = \"64\" is not a power of two between 8 and 65536"
    );
    let mut w = sample().kv("general.alignment", MetaValue::U32(64));
    w.alignment = 64;
    assert_eq!(
        GgufFile::from_bytes(&w.to_bytes())
            .unwrap()
            .header()
            .alignment,
        64
    );
}

/// Offsets inside tensor info `i` of `sample()`, given the name length.
fn tensor_field(l: &Layout, i: usize, name_len: usize, n_dims: usize) -> (usize, usize, usize) {
    let dims = l.tensor_info_offsets[i] + 8 + name_len;
    let ty = dims + 4 + 8 * n_dims;
    (dims, ty, ty + 4)
}

#[test]
fn tensor_errors() {
    let w = sample();
    let e = corrupt(&w, |b, l| {
        let (dims, _, _) = tensor_field(l, 0, 1, 2);
        b[dims..dims + 4].copy_from_slice(&5u32.to_le_bytes());
    });
    assert!(matches!(e, GgufError::TooManyDims { n_dims: 5, .. }), "{e}");

    let e = corrupt(&w, |b, l| {
        let (_, ty, _) = tensor_field(l, 0, 1, 2);
        b[ty..ty + 4].copy_from_slice(&4u32.to_le_bytes());
    });
    assert!(
        matches!(e, GgufError::UnknownDType { type_id: 4, .. }),
        "{e}"
    );

    let e = corrupt(&w, |b, l| {
        let (_, _, off) = tensor_field(l, 1, 1, 1);
        b[off..off + 8].copy_from_slice(&4u64.to_le_bytes());
    });
    assert!(matches!(e, GgufError::MisalignedTensor { .. }), "{e}");

    let e = corrupt(&w, |b, l| {
        let (_, _, off) = tensor_field(l, 1, 1, 1);
        b[off..off + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    });
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");

    let e = corrupt(&w, |b, l| {
        let (_, _, off) = tensor_field(l, 1, 1, 1);
        b[off..off + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    });
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");

    let e = corrupt(&w, |b, l| {
        let (dims, _, _) = tensor_field(l, 0, 1, 2);
        b[dims + 4..dims + 12].copy_from_slice(&(1u64 << 62).to_le_bytes());
        b[dims + 12..dims + 20].copy_from_slice(&(1u64 << 62).to_le_bytes());
    });
    assert!(matches!(e, GgufError::ShapeOverflow { .. }), "{e}");

    let w = sample().tensor("p", DType::Q4_K, &[100], vec![0; 144]);
    assert!(matches!(
        parse_err(&w.to_bytes()),
        GgufError::PartialBlock { .. }
    ));
}

#[test]
fn a_file_without_tensors_needs_no_data_section() {
    // Found by the gguf_parse fuzz target: no tensors, no key/value pairs, and the file ends
    // 4 bytes after the counts, before the padding to the data section. Nothing lies out of
    // bounds, so the header is accepted; its data section starts past the end and is empty.
    let mut bytes = b"GGUF\x03\0\0\0".to_vec();
    bytes.extend_from_slice(&[0; 16]);
    bytes.extend_from_slice(b"igh\x92");
    let h = parse(&bytes).unwrap();
    assert!(h.tensors.is_empty() && h.metadata.is_empty());
    assert_eq!((h.data_offset, h.file_size), (32, 28));
    assert!(
        GgufFile::from_bytes(&bytes)
            .unwrap()
            .tensor_infos()
            .is_empty()
    );
}

#[test]
fn random_byte_flips_never_panic() {
    let bytes = sample().to_bytes();
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5000 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        let _ = parse(&b);
    }
}

fn dtype_counts(f: &GgufFile) -> std::collections::BTreeMap<DType, usize> {
    let mut m = std::collections::BTreeMap::new();
    for t in f.tensor_infos() {
        *m.entry(t.dtype).or_insert(0) += 1;
    }
    m
}

#[test]
fn real_smollm2_parses() {
    let Some(p) = model_file(SMOLLM2) else {
        return;
    };
    let f = GgufFile::open(p).unwrap();
    let m = f.metadata();
    assert_eq!(m.str("general.architecture").unwrap(), "llama");
    assert_eq!(m.u32("llama.block_count").unwrap(), 30);
    assert_eq!(m.u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(m.u32("llama.attention.head_count_kv").unwrap(), 3);
    let c = dtype_counts(&f);
    assert_eq!(c[&DType::Q4_1], 210);
    assert_eq!(c[&DType::Q8_0], 1);
    assert_eq!(c[&DType::F32], 61);
    assert_eq!(c.len(), 3);
    assert_eq!(m.str_array("tokenizer.ggml.tokens").unwrap().len(), 49152);
}

#[test]
fn real_gemma3_parses() {
    let Some(p) = model_file(GEMMA3) else {
        return;
    };
    let f = GgufFile::open(p).unwrap();
    let m = f.metadata();
    assert_eq!(m.str("general.architecture").unwrap(), "gemma3");
    assert_eq!(m.u32("gemma3.block_count").unwrap(), 18);
    assert_eq!(m.u32("gemma3.attention.head_count").unwrap(), 4);
    assert_eq!(m.u32("gemma3.attention.head_count_kv").unwrap(), 1);
    assert_eq!(m.u32("gemma3.attention.sliding_window").unwrap(), 512);
    let types: Vec<DType> = dtype_counts(&f).into_keys().collect();
    assert_eq!(
        types,
        [
            DType::F32,
            DType::Q5_0,
            DType::Q8_0,
            DType::Q4_K,
            DType::Q6_K
        ]
    );
    assert_eq!(m.str_array("tokenizer.ggml.tokens").unwrap().len(), 262144);
}

/// Directories and devices are refused by name before they are opened (a device has no end;
/// FIFOs, which would block the open forever, are tested through the CLI in
/// `tools/cli/tests/info.rs`).
#[test]
fn non_regular_paths_are_refused_by_kind() {
    let dir = std::env::temp_dir().join(format!("tessera-gguf-kinds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = GgufFile::open(&dir).unwrap_err().to_string();
    assert!(err.contains("it is a directory"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
    #[cfg(unix)]
    {
        let err = GgufFile::open("/dev/zero").unwrap_err().to_string();
        assert!(err.contains("it is a character device"), "{err}");
    }
}

/// Reading the file into memory gives the same header and tensor bytes as mapping it, and
/// keeps them after the file is truncated (a mapped file would raise SIGBUS on those pages).
#[test]
fn read_without_mmap_matches_the_map_and_survives_truncation() {
    let path = std::env::temp_dir().join(format!("tessera-gguf-read-{}.gguf", std::process::id()));
    std::fs::write(&path, sample().to_bytes()).unwrap();
    let mapped = GgufFile::open(&path).unwrap();
    let read = GgufFile::read(&path).unwrap();
    assert_eq!(read.header().data_offset, mapped.header().data_offset);
    assert_eq!(read.tensor_infos(), mapped.tensor_infos());
    for name in ["w", "q"] {
        let (a, b) = (read.tensor(name).unwrap(), mapped.tensor(name).unwrap());
        assert_eq!(a.data(), b.data());
        assert_eq!(
            a.data().as_ptr() as usize % 32,
            0,
            "tensor data stays aligned"
        );
    }
    drop(mapped);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert!(read.tensor("q").unwrap().data().iter().all(|&b| b == 2));
    std::fs::remove_file(&path).ok();
}
