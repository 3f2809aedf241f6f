//! Writes the seed corpora of the fuzz targets (see `fuzz/README.md`) into `<dir>/<target>/`:
//! the first kilobytes of both real models and two tiny complete models for the GGUF targets,
//! and float-parameter overrides of the tiny model (NaN, infinities, subnormals, negatives) for
//! `gguf_model`, sample texts for the tokenizer target, and the real, built-in and hostile
//! (value-growing) chat templates for the chat-template target. The seeds are generated, not
//! kept in git.
//!
//! `cargo run --release -p tessera-models --features testing --example fuzz_seeds -- fuzz/corpus`

use std::io::Read;
use std::path::{Path, PathBuf};

use tessera_engine::GgufFile;
use tessera_models::chat::{CHATML_TEMPLATE, GEMMA_TEMPLATE};
use tessera_models::testing::TinyLlama;

const MODELS: [&str; 2] = [tessera_model_files::SMOLLM2, tessera_model_files::GEMMA3];

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("corpus folder");
    std::fs::write(d.join(name), bytes).expect("seed written");
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let models = tessera_model_files::models_dir();

    // GGUF targets: real headers' first kilobytes and complete tiny models.
    for file in MODELS {
        let Ok(mut f) = std::fs::File::open(models.join(file)) else {
            eprintln!("skipping {file}: not in {}", models.display());
            continue;
        };
        let mut head = vec![0u8; 16 << 10];
        f.read_exact(&mut head)
            .expect("a model is longer than 16 KiB");
        for kib in [1, 4, 16] {
            let name = format!("{}-{kib}k", file.trim_end_matches(".gguf"));
            write(&dir, "gguf_parse", &name, &head[..kib << 10]);
            write(&dir, "gguf_model", &name, &head[..kib << 10]);
        }
    }
    let smallest = TinyLlama {
        n_layer: 1,
        n_embd: 32,
        n_head: 2,
        n_head_kv: 1,
        n_ff: 32,
        ..Default::default()
    };
    for (name, cfg) in [
        ("tiny-llama", TinyLlama::default()),
        ("tiny-llama-min", smallest),
    ] {
        let bytes = cfg.bytes();
        write(&dir, "gguf_parse", name, &bytes);
        write(&dir, "gguf_model", name, &bytes);
    }

    // Tokenizer: a mode byte (bit 0: model, 1: add special, 2: parse special, 3: compare the
    // stream decoder), then text.
    let texts: [&str; 6] = [
        "Hello world",
        "  leading spaces, tabs\tand\nnewlines\r\n",
        "<|im_start|>user\nHi!<|im_end|>\n<start_of_turn>model\n",
        "Ünïcödé: 日本語のテキスト, emoji 🦀👍🏽, combining e\u{301}",
        "fn main() { let x = 12345.678e-9; println!(\"{x}\"); }",
        "<bos><eos><pad><unk>\u{0}\u{1}\u{7f}",
    ];
    for (i, t) in texts.iter().enumerate() {
        for mode in [0u8, 1, 6, 15] {
            let mut seed = vec![mode];
            seed.extend_from_slice(t.as_bytes());
            write(&dir, "tokenizer", &format!("text{i}-mode{mode}"), &seed);
        }
    }

    // Chat templates: a selector byte (2 or 3 mod 8: the source given), the source, NUL, then
    // messages separated by 0x01, each a role byte then content.
    let messages: &[u8] = b"\x00Be brief.\x01\x01Hi!\x01\x02Hello.\x01\x01Name a colour.";
    let mut templates = vec![
        ("chatml".to_string(), CHATML_TEMPLATE.to_string()),
        ("gemma".to_string(), GEMMA_TEMPLATE.to_string()),
    ];
    for file in MODELS {
        if let Ok(g) = GgufFile::open(models.join(file))
            && let Ok(Some(src)) = g.metadata().opt_str("tokenizer.chat_template")
        {
            templates.push((file.trim_end_matches(".gguf").to_string(), src.to_string()));
        }
    }
    // Hostile templates that grow values (the size dimension): as given (selector 2), and a
    // plain body for the loops of selectors 4 to 7 (growth, iterations and a repeat count are
    // read from the body's last bytes).
    let hostile = [
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
        "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + ['x' * 100000] %}{% endfor %}",
        "{% set ns = namespace(s='xx') %}{% for i in range(64) %}{% set ns.s = ns.s|replace('x', 'xx') %}{% endfor %}",
        "{% set n = 100000000000 %}{{ ('ab' * n)|length }}{{ ([1] * n)|join }}",
        "{{ ('x' * 99999999) ~ ('x' * 99999999) }}",
    ];
    for (i, src) in hostile.iter().enumerate() {
        templates.push((format!("hostile{i}"), src.to_string()));
    }
    for sel in 4u8..8 {
        let body = format!("x{}", String::from_utf8_lossy(&[sel, 40, 0x10, 0x27, 0, 0]));
        let mut seed = vec![sel];
        seed.extend_from_slice(body.as_bytes());
        write(&dir, "chat_template", &format!("sized-{sel}"), &seed);
    }
    // Float parameters of the tiny model (the `F` inputs of gguf_model): YaRN with NaN,
    // infinite, subnormal and negative values.
    let floats: [(u8, f32); 6] = [
        (0, f32::NAN),
        (3, f32::INFINITY),
        (4, -1.0),
        (5, f32::from_bits(1)),
        (8, 1e30),
        (9, 0.0),
    ];
    for (i, pair) in floats.iter().enumerate() {
        let mut seed = vec![b'F', 2];
        for (key, value) in &floats[..=i] {
            seed.push(*key);
            seed.extend_from_slice(&value.to_le_bytes());
        }
        write(
            &dir,
            "gguf_model",
            &format!("floats{i}-key{}", pair.0),
            &seed,
        );
    }
    for (name, src) in templates {
        // Selector 2: the source as given; 26: the same, stripping BOS and adding the
        // generation prompt.
        for sel in [2u8, 26] {
            let mut seed = vec![sel];
            seed.extend_from_slice(src.as_bytes());
            seed.push(0);
            seed.extend_from_slice(messages);
            write(&dir, "chat_template", &format!("{name}-{sel}"), &seed);
        }
    }
    println!("seeds written to {}", dir.display());
}
