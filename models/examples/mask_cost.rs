//! How long a grammar constraint takes per token: compiles a JSON schema for a model's
//! vocabulary, then feeds the tokens of a JSON text that matches it through
//! `Constraint::allowed` + `Constraint::advance`, timing each step (single thread; the model's
//! weights are mapped but not used).
//!
//! `cargo run --release -p tessera-models --example mask_cost -- MODEL.gguf SCHEMA.json TEXT`

use std::time::Instant;

use tessera_models::Model;
use tessera_models::constraint::Grammar;
use tessera_models::hparams::RopeOverrides;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, schema, text] = args.as_slice() else {
        return Err("usage: mask_cost MODEL.gguf SCHEMA.json TEXT".into());
    };
    let model = Model::load(model, &RopeOverrides::default())?;
    let t = Instant::now();
    let vocab = model.constraint_vocab()?;
    let build = t.elapsed();
    let grammar = Grammar::json_schema_from_str(&std::fs::read_to_string(schema)?)?;
    let t = Instant::now();
    let mut c = vocab.compile(&grammar)?;
    let compile = t.elapsed();
    let ids = model.tokenizer().encode(text, false, false);
    let mut times = Vec::with_capacity(ids.len());
    for &id in &ids {
        let t = Instant::now();
        let allowed = c.allowed()?.allows(id);
        c.advance(id)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(allowed);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    println!(
        "vocab {} tokens: trie {:.0} ms, compile {:.1} ms; {} steps: mean {:.0} us, p50 {:.0} us, p95 {:.0} us, max {:.0} us",
        vocab.n_vocab(),
        build.as_secs_f64() * 1e3,
        compile.as_secs_f64() * 1e3,
        times.len(),
        mean,
        times[times.len() / 2],
        times[times.len() * 95 / 100],
        times[times.len() - 1]
    );
    Ok(())
}
