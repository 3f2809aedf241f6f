//! Tokenizer tests against the real models and llama.cpp's fixtures: ids for every fixture case
//! and add_special/parse_special combination, greedy-run prompts and streamed pieces, decode round
//! trips, streaming without split characters, and encode speed on the GPL-3 text.
//!
//! Fixtures come from `$TESSERA_FIXTURES` (default `<workspace>/../shared/fixtures`) and models
//! from `$TESSERA_MODELS` (default `~/.cache/tessera/models`). A missing file fails the test
//! unless `TESSERA_ALLOW_MISSING_MODELS=1`, in which case the test prints "skipped".

/// Named `tokenizer::…` so that `cargo test -p tessera-models tokenizer` selects these tests.
mod tokenizer {
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;
    use std::time::Instant;

    use serde_json::Value;
    use tessera_engine::GgufFile;
    use tessera_model_files::{model_file, require};
    use tessera_models::tokenizer::Tokenizer;

    const SMOLLM: &str = "smollm2-135m-instruct-q4_1";
    const GEMMA: &str = "gemma-3-270m-q4_k_m";
    const GPL3: &str = "/usr/share/common-licenses/GPL-3";

    fn fixtures_dir() -> PathBuf {
        std::env::var_os("TESSERA_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
    }

    fn load(name: &str) -> Option<Tokenizer> {
        let path = model_file(&format!("{name}.gguf"))?;
        let gguf = GgufFile::open(&path).expect("open gguf");
        let t0 = Instant::now();
        let tok = Tokenizer::from_gguf(gguf.metadata()).expect("tokenizer");
        println!(
            "{name}: tokenizer built in {:.1} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
        Some(tok)
    }

    /// Each model's tokenizer, built once per test binary.
    fn tokenizer(name: &str) -> Option<&'static Tokenizer> {
        static SMOL: OnceLock<Option<Tokenizer>> = OnceLock::new();
        static GEM: OnceLock<Option<Tokenizer>> = OnceLock::new();
        let cell = match name {
            SMOLLM => &SMOL,
            GEMMA => &GEM,
            _ => panic!("unknown model {name}"),
        };
        let tok = cell.get_or_init(|| load(name)).as_ref();
        if tok.is_none() {
            println!("skipped: model {name} is missing");
        }
        tok
    }

    fn read_json(path: &Path) -> Value {
        let text = std::fs::read_to_string(path).expect("read fixture");
        serde_json::from_str(&text).expect("parse fixture")
    }

    fn ids(v: &Value) -> Vec<u32> {
        v.as_array()
            .expect("id array")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect()
    }

    fn check_tokenizer_fixture(name: &str) {
        let Some(tok) = tokenizer(name) else { return };
        let Some(path) = require(fixtures_dir().join(format!("tokenizer/{name}.json"))) else {
            return;
        };
        let fixture = read_json(&path);
        let cases = fixture["cases"].as_array().expect("cases");
        assert!(!cases.is_empty());
        let mut failures = Vec::new();
        let mut checked = 0;
        for case in cases {
            let text = case["text"].as_str().expect("text");
            for add in [false, true] {
                for parse in [false, true] {
                    let key = format!("add_special={},parse_special={}", add as u8, parse as u8);
                    let want = ids(&case[&key]);
                    let got = tok.encode(text, add, parse);
                    checked += 1;
                    if got != want {
                        failures.push(format!(
                            "{text:?} [{key}]\n   want {want:?}\n    got {got:?}"
                        ));
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{name}: {} of {checked} encodings differ:\n{}",
            failures.len(),
            failures.join("\n")
        );
        println!("{name}: {checked} encodings match");
    }

    #[test]
    fn smollm_matches_llama_cpp_fixture() {
        check_tokenizer_fixture(SMOLLM);
    }

    #[test]
    fn gemma_matches_llama_cpp_fixture() {
        check_tokenizer_fixture(GEMMA);
    }

    #[test]
    fn greedy_prompts_and_pieces_match() {
        let Some(dir) = require(fixtures_dir().join("greedy")) else {
            return;
        };
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("read greedy dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no greedy fixtures in {}", dir.display());
        for path in files {
            let f = read_json(&path);
            let model = f["model"].as_str().expect("model");
            let Some(tok) = tokenizer(model) else {
                continue;
            };
            let prompt = f["prompt"].as_str().expect("prompt");
            assert_eq!(
                tok.encode(prompt, true, true),
                ids(&f["prompt_ids"]),
                "{}: prompt ids",
                path.display()
            );
            let generated = ids(&f["generated_ids"]);
            let steps = f["steps"].as_array().expect("steps");
            let want: String = steps
                .iter()
                .map(|s| s["piece"].as_str().expect("piece"))
                .collect();
            let mut dec = tok.stream_decoder();
            let mut got: String = generated.iter().map(|&id| dec.push(id)).collect();
            got.push_str(&dec.finish());
            assert_eq!(got, want, "{}: streamed pieces", path.display());
            let step_ids: Vec<u32> = steps
                .iter()
                .map(|s| s["id"].as_u64().unwrap() as u32)
                .collect();
            assert_eq!(step_ids, generated, "{}: step ids", path.display());
        }
    }

    fn round_trip_texts() -> Vec<String> {
        let mut texts: Vec<String> = [
            "Hello world",
            " leading space",
            "trailing space ",
            "  multiple   spaces\t\ttabs\n\n\nnewlines\r\n",
            "Emoji: 🚀🔥👍🏽 👩‍👩‍👧 🏳️‍🌈",
            "中文测试：注意力机制与键值缓存。日本語のテキスト、한국어 텍스트",
            "Combining: e\u{301} a\u{308}\u{323} n\u{303} Z\u{335}\u{336}",
            "Ünïcödé café naïve Straße Ångström Ελληνικά Русский",
            "nbsp\u{a0}thin\u{2009}ideographic\u{3000}zero-width\u{200b}joiner\u{200d}",
            "control \u{1} \u{7f} chars and private use \u{e000}",
            "<|im_start|>user\nhi<|im_end|><start_of_turn>model\n<end_of_turn>",
            "",
            " ",
            "\n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(p) = require(PathBuf::from(GPL3)) {
            texts.push(std::fs::read_to_string(p).expect("read GPL-3"));
        }
        texts
    }

    fn check_round_trip(name: &str) {
        let Some(tok) = tokenizer(name) else { return };
        for text in round_trip_texts() {
            let ids = tok.encode(&text, false, false);
            let back = tok.decode(&ids);
            assert!(
                back == text,
                "{name}: round trip of {:?} gave {:?}",
                trunc(&text),
                trunc(&back)
            );
            // Streaming gives the same text, with no replacement characters along the way.
            let mut dec = tok.stream_decoder();
            let mut streamed = String::new();
            for &id in &ids {
                let part = dec.push(id);
                assert!(!part.contains('\u{fffd}') || text.contains('\u{fffd}'));
                streamed.push_str(&part);
            }
            assert!(dec.pending().is_empty());
            streamed.push_str(&dec.finish());
            assert_eq!(streamed, text, "{name}: streamed decode");
        }
    }

    fn trunc(s: &str) -> String {
        s.chars().take(200).collect()
    }

    #[test]
    fn smollm_decode_round_trip() {
        check_round_trip(SMOLLM);
    }

    #[test]
    fn gemma_decode_round_trip() {
        check_round_trip(GEMMA);
    }

    /// Characters split over several tokens are held back until complete.
    fn check_stream_holds_partial_characters(name: &str, text: &str) {
        let Some(tok) = tokenizer(name) else { return };
        let ids = tok.encode(text, false, false);
        let mut dec = tok.stream_decoder();
        let mut held_back = false;
        let mut out = String::new();
        for &id in &ids {
            let piece = tok.token_to_piece(id);
            let part = dec.push(id);
            if std::str::from_utf8(&piece).is_err() {
                held_back = true;
            }
            assert!(
                !part.contains('\u{fffd}'),
                "{name}: partial character emitted for {id}"
            );
            out.push_str(&part);
        }
        out.push_str(&dec.finish());
        assert_eq!(out, text);
        assert!(
            held_back,
            "{name}: expected some token to carry a partial character"
        );
    }

    #[test]
    fn smollm_stream_never_splits_characters() {
        check_stream_holds_partial_characters(SMOLLM, "🚀🔥👍🏽 中文测试 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🦀");
    }

    #[test]
    fn gemma_stream_never_splits_characters() {
        // Rare characters that the vocabulary lacks fall back to <0xNN> byte tokens.
        check_stream_holds_partial_characters(GEMMA, "𓀀𓀁 𒀀 \u{e000}\u{10fffd} 🦀");
    }

    #[test]
    fn special_token_accessors() {
        if let Some(tok) = tokenizer(SMOLLM) {
            assert_eq!(tok.n_vocab(), 49152);
            assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
            assert!(!tok.add_bos() && !tok.add_eos());
            let im_end = tok.token_id("<|im_end|>").unwrap();
            let eot = tok.token_id("<|endoftext|>").unwrap();
            assert!(tok.is_eog(im_end) && tok.is_eog(eot) && !tok.is_eog(1));
            assert_eq!(tok.token_text(im_end), Some("<|im_end|>"));
            assert_eq!(tok.token_to_piece(im_end), b"<|im_end|>");
            assert_eq!(tok.token_to_piece(tok.token_id("Ġthe").unwrap()), b" the");
            assert_eq!(tok.token_text(u32::MAX), None);
            assert!(tok.token_to_piece(u32::MAX).is_empty());
        }
        if let Some(tok) = tokenizer(GEMMA) {
            assert_eq!(tok.n_vocab(), 262144);
            assert_eq!(
                (tok.bos(), tok.eos(), tok.unk()),
                (Some(2), Some(1), Some(3))
            );
            assert!(tok.add_bos() && !tok.add_eos() && !tok.add_space_prefix());
            let eot = tok.token_id("<end_of_turn>").unwrap();
            assert!(tok.is_eog(eot) && tok.is_eog(1) && !tok.is_eog(2));
            assert_eq!(tok.token_to_piece(tok.token_id("▁the").unwrap()), b" the");
            assert_eq!(tok.token_to_piece(tok.token_id("<0x0A>").unwrap()), b"\n");
            assert_eq!(tok.token_to_piece(2), b"<bos>");
            assert_eq!(tok.encode("", true, true), [2]);
        }
    }

    #[test]
    fn encode_speed_on_gpl3() {
        let Some(p) = require(PathBuf::from(GPL3)) else {
            return;
        };
        let text = std::fs::read_to_string(p).expect("read GPL-3");
        for name in [SMOLLM, GEMMA] {
            let Some(tok) = tokenizer(name) else { continue };
            let _ = tok.encode(&text, true, true);
            let t0 = Instant::now();
            let reps = 3;
            let mut n = 0;
            for _ in 0..reps {
                n = tok.encode(&text, true, true).len();
            }
            let dt = t0.elapsed().as_secs_f64() / reps as f64;
            println!(
                "{name}: GPL-3 ({} bytes) -> {n} tokens in {:.2} ms ({:.1} MB/s)",
                text.len(),
                dt * 1e3,
                text.len() as f64 / dt / 1e6
            );
            // Generous bound so that unoptimised builds pass too; release is far below it.
            assert!(dt < 2.0, "{name}: encoding GPL-3 took {dt:.3} s");
        }
    }
}
