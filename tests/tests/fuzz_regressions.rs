//! Inputs the fuzz targets found (see `fuzz/README.md`) that need a real model to replay.

use tessera_engine::GgufFile;
use tessera_models::tokenizer::Tokenizer;

/// The `tokenizer` target: SmolLM2's byte-level vocabulary has no token for some control bytes
/// (0x14 among them), so plain text does not always round-trip. Like llama.cpp's BPE tokenizer
/// (a symbol without a token is looked up byte by byte and skipped when none matches), the byte
/// is dropped; nothing panics and the neighbours are kept.
#[test]
fn smollm2_drops_bytes_missing_from_its_vocabulary() {
    let Some(path) = tessera_tests::model(tessera_tests::SMOLLM2) else {
        return;
    };
    let file = GgufFile::open(path).unwrap();
    let tok = Tokenizer::from_gguf(file.metadata()).unwrap();
    assert_eq!(tok.token_id("Ĕ"), None, "0x14 has no byte token");
    assert!(tok.encode("\u{14}", false, false).is_empty());
    let ids = tok.encode("a\u{14}b", false, false);
    assert_eq!(
        ids,
        [tok.token_id("a").unwrap(), tok.token_id("b").unwrap()]
    );
    assert_eq!(tok.decode(&ids), "ab");
    // The fuzzer's input, as found.
    let input = b"\0\0\0\0\0\0\0\x0f<\x18\0s><eoso\x10oso\x10\x14\x08\0\0\0<<Au\0kn";
    let text = std::str::from_utf8(input).unwrap();
    let back = tok.decode(&tok.encode(text, false, false));
    assert_eq!(back, text.replace('\u{14}', ""));
}
