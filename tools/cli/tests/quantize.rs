//! `tessera quantize` from the command line: a tiny F32 model quantized to a mix runs, the
//! plan (`--dry-run`) names each tensor's type, and bad arguments or inputs are errors with
//! a message, exit 1, and nothing written. (Byte identity with llama-quantize is checked in
//! tests/tests/quantize_oracle.rs.)

use std::process::{Command, Output};

use tessera_engine::DType;
use tessera_models::testing::TinyLlama;

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("tessera runs")
}

#[test]
fn quantize_a_model_then_run_it() {
    let dir = std::env::temp_dir().join(format!("tessera-cli-quantize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("f32.gguf");
    let tiny = TinyLlama {
        matrix_dtype: DType::F32,
        ..Default::default()
    };
    std::fs::write(&src, tiny.bytes()).unwrap();
    let (s, o) = (src.to_str().unwrap(), dir.join("q8.gguf"));
    let o = o.to_str().unwrap();

    let plan = tessera(&["quantize", s, o, "Q8_0", "--dry-run"]);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("blk.0.attn_q.weight"), "{plan}");
    assert!(plan.contains("F32 -> Q8_0"), "{plan}");
    assert!(
        !std::path::Path::new(o).exists(),
        "--dry-run writes nothing"
    );

    let run = tessera(&["quantize", s, o, "q8_0", "-t", "2"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(out.contains("as Q8_0"), "{out}");
    let generated = tessera(&["run", "-m", o, "-p", "hello", "-n", "4", "--temp", "0"]);
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );

    for (args, says) in [
        (vec!["quantize", s, o, "IQ2_XXS"], "unknown file type"),
        (
            vec!["quantize", "/no/such.gguf", o, "Q4_0"],
            "/no/such.gguf",
        ),
        (vec!["quantize", o, s, "Q4_0"], "--allow-requantize"),
    ] {
        let r = tessera(&args);
        assert_eq!(r.status.code(), Some(1), "{args:?}");
        let e = String::from_utf8_lossy(&r.stderr);
        assert!(e.contains(says), "{args:?}: {e}");
    }
    // The refused requantization left the source as it was.
    assert_eq!(std::fs::read(&src).unwrap(), tiny.bytes());
    std::fs::remove_dir_all(&dir).ok();
}
