//! Fuzz target: the tokenizers of both real models (built from their metadata only, once) on
//! arbitrary input. The first byte picks the tokenizer and the flags; the rest is text (arbitrary
//! bytes made UTF-8 lossily) that is encoded and decoded, and also read as token ids (some out of
//! range) that are decoded at once and through the stream decoder.
//!
//! Byte-level BPE (SmolLM2) is lossless: decoding what plain text encodes to must give the text
//! back. The models are found in `$TESSERA_MODELS` or `~/.cache/tessera/models`.

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
    if which == 0 && !add_special && !parse_special {
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
