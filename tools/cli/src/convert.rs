//! `tessera convert IN.gguf OUT.gguf --kv-heads G`: make an MHA/GQA model GQA or MQA by
//! mean-pooling its key and value heads (see `tessera_models::convert`). Prints the KV cache
//! bytes per token before and after, which is what the conversion buys.

use clap::Args;
use tessera_engine::GgufFile;
use tessera_models::HParams;
use tessera_models::convert::pool_kv_heads;

use crate::CliResult;
use crate::units::bytes_h;

/// Arguments of `tessera convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The model to convert.
    input: String,
    /// Where to write the result (written to a temporary file first, renamed at the end).
    output: String,
    /// KV heads per layer in the result: a divisor of the model's count below it (1 = MQA).
    #[arg(long = "kv-heads")]
    kv_heads: usize,
}

/// KV-cache bytes per token (F16 keys and values over all layers).
fn kv_bytes_per_token(path: &str) -> CliResult<u64> {
    let f = GgufFile::open(path).map_err(|e| format!("{path}: {e}"))?;
    let hp = HParams::from_gguf(f.metadata()).map_err(|e| format!("{path}: {e}"))?;
    Ok((hp.n_layer * hp.n_head_kv * (hp.head_dim + hp.head_dim_v) * 2) as u64)
}

/// Run `tessera convert`.
pub fn run(args: ConvertArgs) -> CliResult {
    let before = kv_bytes_per_token(&args.input)?;
    let s = pool_kv_heads(args.input.as_ref(), args.output.as_ref(), args.kv_heads)
        .map_err(|e| format!("{}: {e}", args.input))?;
    let after = kv_bytes_per_token(&args.output)?;
    println!(
        "{}: {} -> {} KV heads per layer ({} K/V tensors pooled, {} copied); KV cache {}/token \
         -> {}/token",
        args.output,
        s.from_heads,
        s.to_heads,
        s.pooled,
        s.copied,
        bytes_h(before),
        bytes_h(after)
    );
    Ok(())
}
