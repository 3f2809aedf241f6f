//! Whole-tokenizer tests on tiny hand-made GGUF metadata: defaults, special tokens, byte
//! fallback, streaming, and the error messages for bad metadata.

use super::*;
use tessera_engine::gguf::{MetaArray, MetaValue, Metadata};

fn strs(v: &[&str]) -> MetaValue {
    MetaValue::Array(MetaArray::String(v.iter().map(|s| s.to_string()).collect()))
}

fn meta(entries: Vec<(&str, MetaValue)>) -> Metadata {
    let mut m = Metadata::new();
    for (k, v) in entries {
        m.insert(k.to_string(), v);
    }
    m
}

const SPM_TOKENS: &[&str] = &[
    "<unk>", "<s>", "</s>", "<0x0A>", "<0xE2>", "<0x82>", "<0xAC>", "▁", "a", "b", "▁a", "ab",
    "▁ab", "<ctrl>", "[ud]",
];

fn spm_meta(extra: Vec<(&str, MetaValue)>) -> Metadata {
    let scores = vec![
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -5.0, -4.0, -4.0, -1.0, -2.0, -0.5, 0.0, 0.0,
    ];
    let types = vec![2, 3, 3, 6, 6, 6, 6, 1, 1, 1, 1, 1, 1, 3, 4];
    let mut e = vec![
        ("tokenizer.ggml.model", MetaValue::String("llama".into())),
        ("tokenizer.ggml.tokens", strs(SPM_TOKENS)),
        (
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaArray::F32(scores)),
        ),
        (
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaArray::I32(types)),
        ),
    ];
    e.extend(extra);
    meta(e)
}

fn spm() -> Tokenizer {
    Tokenizer::from_gguf(&spm_meta(vec![])).expect("tiny spm")
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
}

#[test]
fn spm_defaults_follow_llama_cpp() {
    let t = spm();
    assert_eq!((t.bos(), t.eos(), t.unk()), (Some(1), Some(2), Some(0)));
    assert!(t.add_bos() && !t.add_eos() && t.add_space_prefix());
    assert!(t.is_eog(2) && !t.is_eog(1));
    // Space prefix: "ab" is tokenized as "▁ab"; "▁a" (-1) merges before "ab" (-2).
    assert_eq!(t.encode("ab", true, false), [1, 12]);
    assert_eq!(t.encode("ab", false, false), [12]);
    assert_eq!(t.encode("", true, false), [1]);
    assert!(t.encode("", false, false).is_empty());
}

#[test]
fn spm_byte_fallback_and_pieces() {
    let t = spm();
    // '€' (E2 82 AC) and '\n' are not tokens: byte tokens.
    assert_eq!(t.encode("a€\n", false, false), [10, 4, 5, 6, 3]);
    assert_eq!(t.decode(&[10, 4, 5, 6, 3]), " a€\n");
    assert_eq!(t.token_to_piece(12), b" ab");
    assert_eq!(t.token_to_piece(5), [0x82]);
    assert_eq!(t.token_to_piece(1), b"<s>");
    assert_eq!(t.token_to_piece(0), b"<unk>");
    assert_eq!(t.token_text(7), Some("▁"));
    assert_eq!(t.token_id("▁ab"), Some(12));
}

#[test]
fn spm_special_tokens() {
    let t = spm();
    // Control token parsed only with parse_special; the text after it gets a space prefix.
    assert_eq!(t.encode("<ctrl>a", false, true), [13, 10]);
    let plain = t.encode("<ctrl>a", false, false);
    assert!(!plain.contains(&13));
    // User-defined tokens are always recognised.
    assert_eq!(t.encode("[ud]b", false, false), [14, 7, 9]);
    // Without a space prefix.
    let t = Tokenizer::from_gguf(&spm_meta(vec![
        ("tokenizer.ggml.add_space_prefix", MetaValue::Bool(false)),
        ("tokenizer.ggml.add_bos_token", MetaValue::Bool(false)),
        ("tokenizer.ggml.add_eos_token", MetaValue::Bool(true)),
    ]))
    .unwrap();
    assert_eq!(t.encode("ab", true, false), [11, 2]);
    assert_eq!(t.decode(&t.encode("ab a", false, false)), "ab a");
}

#[test]
fn stream_decoder_holds_split_characters() {
    let t = spm();
    let mut d = t.stream_decoder();
    assert_eq!(d.push(10), " a");
    assert_eq!(d.push(4), "");
    assert_eq!(d.push(5), "");
    assert_eq!(d.pending(), [0xE2, 0x82]);
    assert_eq!(d.push(6), "€");
    assert!(d.pending().is_empty());
    // Byte by byte through a 4-byte character, then an invalid byte.
    let crab = "🦀".as_bytes();
    for &b in &crab[..3] {
        assert_eq!(d.push_bytes(&[b]), "");
    }
    assert_eq!(d.push_bytes(&crab[3..]), "🦀");
    assert_eq!(d.push_bytes(&[0xFF, b'x']), "\u{FFFD}x");
    // An incomplete character followed by ASCII can never complete.
    assert_eq!(d.push_bytes(&[0xE2]), "");
    assert_eq!(d.push_bytes(b"y"), "\u{FFFD}y");
    assert_eq!(d.push_bytes(&[0xE2, 0x82]), "");
    assert_eq!(d.finish(), "\u{FFFD}");
    assert_eq!(d.finish(), "");
}

fn bpe_meta(pre: &str, extra: Vec<(&str, MetaValue)>) -> Metadata {
    let tokens = [
        "<|endoftext|>",
        "a",
        "b",
        "Ġ",
        "ab",
        "Ġab",
        "<|im_end|>",
        "1",
        "Ġ1",
    ];
    let mut e = vec![
        ("tokenizer.ggml.model", MetaValue::String("gpt2".into())),
        ("tokenizer.ggml.pre", MetaValue::String(pre.into())),
        ("tokenizer.ggml.tokens", strs(&tokens)),
        (
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaArray::I32(vec![3, 1, 1, 1, 1, 1, 1, 1, 1])),
        ),
        ("tokenizer.ggml.merges", strs(&["a b", "Ġ ab", "Ġ 1"])),
    ];
    e.extend(extra);
    meta(e)
}

#[test]
fn bpe_tokenizer_end_to_end() {
    let t = Tokenizer::from_gguf(&bpe_meta("gpt2", vec![])).unwrap();
    // Default gpt2 ids (11) are outside this vocabulary: no BOS/EOS.
    assert_eq!((t.bos(), t.eos()), (None, None));
    assert!(!t.add_bos());
    assert_eq!(t.encode("ab ab", true, true), [4, 5]);
    assert_eq!(t.decode(&[4, 5]), "ab ab");
    // "<|im_end|>" is marked EOG and made a control token by its text.
    assert!(t.is_eog(6) && t.is_eog(0) && t.is_control(6));
    assert_eq!(t.encode("ab<|im_end|>", false, true), [4, 6]);
    assert_eq!(t.token_to_piece(6), b"<|im_end|>");
    assert_eq!(t.eot(), Some(6));
    // gpt2 keeps " 1" together, smollm splits digits off first.
    assert_eq!(t.encode(" 1", false, false), [8]);
    let s = Tokenizer::from_gguf(&bpe_meta("smollm", vec![])).unwrap();
    assert_eq!(s.encode(" 1", false, false), [3, 7]);
}

#[test]
fn unknown_pre_tokenizer_is_an_error_naming_it() {
    let e = err(&bpe_meta("mystery", vec![]));
    assert!(
        e.contains("\"mystery\"") && e.contains("tokenizer.ggml.pre"),
        "{e}"
    );
    // Every name of the documented list loads.
    for name in PreTokenizer::SUPPORTED.iter().filter(|n| **n != "…") {
        let no_bos = vec![("tokenizer.ggml.add_bos_token", MetaValue::Bool(false))];
        assert!(
            Tokenizer::from_gguf(&bpe_meta(name, no_bos)).is_ok(),
            "{name}"
        );
    }
}

fn err(m: &Metadata) -> String {
    Tokenizer::from_gguf(m).unwrap_err().to_string()
}

#[test]
fn errors_name_the_key() {
    let e = err(&meta(vec![]));
    assert!(e.contains("tokenizer.ggml.model"), "{e}");
    let e = err(&meta(vec![(
        "tokenizer.ggml.model",
        MetaValue::String("bert".into()),
    )]));
    assert!(e.contains("unsupported") && e.contains("bert"), "{e}");
    let e = err(&meta(vec![(
        "tokenizer.ggml.model",
        MetaValue::String("llama".into()),
    )]));
    assert!(e.contains("tokenizer.ggml.tokens"), "{e}");
    let mut m = bpe_meta("gpt2", vec![]);
    m = meta(
        m.entries()
            .iter()
            .filter(|(k, _)| k != "tokenizer.ggml.merges")
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect(),
    );
    let e = err(&m);
    assert!(e.contains("tokenizer.ggml.merges"), "{e}");
    let e = err(&meta(vec![
        ("tokenizer.ggml.model", MetaValue::String("llama".into())),
        ("tokenizer.ggml.tokens", strs(&["a", "b"])),
        (
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaArray::F32(vec![0.0])),
        ),
    ]));
    assert!(
        e.contains("tokenizer.ggml.scores") && e.contains("1 entries"),
        "{e}"
    );
    let e = err(&bpe_meta(
        "gpt2",
        vec![("tokenizer.ggml.add_bos_token", MetaValue::Bool(true))],
    ));
    assert!(e.contains("tokenizer.ggml.bos_token_id"), "{e}");
    let e = err(&meta(vec![
        ("tokenizer.ggml.model", MetaValue::String("llama".into())),
        ("tokenizer.ggml.tokens", strs(&[])),
    ]));
    assert!(e.contains("empty"), "{e}");
}
