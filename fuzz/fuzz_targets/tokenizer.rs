//! Fuzz target: the tokenizers of both real models (built from their metadata only, once) on
//! arbitrary input. The first byte picks the tokenizer and the flags; the rest is text (arbitrary
//! bytes made UTF-8 lossily) that is encoded and decoded, and also read as token ids (some out of
//! range) that are decoded at once and through the stream decoder.
//!
//! Byte-level BPE (SmolLM2) is lossless for text whose bytes all have a token: decoding what such
//! plain text encodes to must give the text back. (SmolLM2's vocabulary lacks some control bytes,
//! e.g. 0x14; like llama.cpp, the tokenizer drops those — the first campaign's finding.) The
//! models are found in `$TESSERA_MODELS` or `~/.cache/tessera/models`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera_engine::GgufFile;
use tessera_models::tokenizer::Tokenizer;

fn load(name: &str) -> Tokenizer {
    let dir = std::env::var_os("TESSERA_MODELS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(&std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/tessera/models")
        });
    let path = dir.join(name);
    // The file is mapped, not read: only the metadata pages are touched.
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(file.metadata()).expect("the real tokenizer loads")
}

/// GPT-2's byte → printable character mapping, to look byte tokens up.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, 33..=126 | 161..=172 | 174..=255);
    if printable(b) {
        return b as char;
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap()
}

/// Which bytes SmolLM2's byte-level vocabulary has a token for.
fn bpe_bytes() -> &'static [bool; 256] {
    static B: OnceLock<[bool; 256]> = OnceLock::new();
    B.get_or_init(|| {
        let tok = &tokenizers()[0];
        std::array::from_fn(|b| tok.token_id(&byte_char(b as u8).to_string()).is_some())
    })
}

fn tokenizers() -> &'static [Tokenizer; 2] {
    static T: OnceLock<[Tokenizer; 2]> = OnceLock::new();
    T.get_or_init(|| {
        [
            load("smollm2-135m-instruct-q4_1.gguf"),
            load("gemma-3-270m-q4_k_m.gguf"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let which = (mode & 1) as usize;
    let tok = &tokenizers()[which];
    let (add_special, parse_special) = (mode & 2 != 0, mode & 4 != 0);
    let text = String::from_utf8_lossy(rest);
    let ids = tok.encode(&text, add_special, parse_special);
    assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
    let back = tok.decode(&ids);
    if which == 0 && !add_special && !parse_special && text.bytes().all(|b| bpe_bytes()[b as usize])
    {
        assert_eq!(back, text, "byte-level BPE must round-trip");
    }
    // Arbitrary ids, a few past the vocabulary.
    let raw: Vec<u32> = rest
        .chunks(3)
        .map(|c| {
            let v = c.iter().fold(0u32, |a, &b| a << 8 | b as u32);
            v % (tok.n_vocab() as u32 + 16)
        })
        .collect();
    let whole = tok.decode(&raw);
    let mut stream = tok.stream_decoder();
    let mut streamed = String::new();
    for &id in &raw {
        streamed.push_str(&stream.push(id));
    }
    streamed.push_str(&stream.finish());
    if mode & 8 != 0 {
        // Both views must agree on valid UTF-8 output.
        if !whole.contains('\u{FFFD}') {
            assert_eq!(streamed, whole);
        }
    }
});
