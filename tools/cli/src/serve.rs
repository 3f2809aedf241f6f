//! `tessera serve -m MODEL [--host H] [--port P] [-c N] [--parallel N] [--api-key KEY] …`: an
//! OpenAI-compatible HTTP server (the `tessera-server` library). It binds first and prints
//! `listening on http://ADDR` on one line of stdout, then loads the model (`/health` answers
//! 503 meanwhile). `-c` is the context of all slots together, as llama-server counts it: the
//! `--parallel` slots share one pool of `-c` KV cells (on the CPU and the GPU alike), any slot
//! may use all of it, and `-t` threads are shared between them. SIGINT/SIGTERM stop it
//! (exit 0).

use std::io::Write;
use std::sync::Arc;

use clap::Args;
use tessera_server::{DEFAULT_BODY_LIMIT, EngineConfig, Server, ServerConfig};

use crate::CliResult;
use crate::common::ModelArgs;

/// Arguments of `tessera serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (use 0.0.0.0 to accept other machines).
    #[arg(long = "host", default_value = "127.0.0.1")]
    host: String,
    /// Port (0 = any free port; the address is printed).
    #[arg(long = "port", default_value_t = 8080)]
    port: u16,
    /// Requests served at once (slots), sharing the -c tokens of context.
    #[arg(long = "parallel", alias = "np", default_value_t = 4)]
    parallel: usize,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health.
    #[arg(long = "api-key")]
    api_key: Option<String>,
    /// Requests that may wait for a free slot; more get 503 with Retry-After.
    #[arg(long = "queue-size", default_value_t = 64)]
    queue_size: usize,
    /// Name of the model in responses and /v1/models (default: the -m argument's file stem).
    #[arg(long = "alias")]
    alias: Option<String>,
}

/// The model name shown to clients: the file stem of a path, or the registry name.
fn model_name(arg: &str) -> String {
    std::path::Path::new(arg)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| arg.to_string())
}

/// The engine's settings from the flags; the numbers are checked, naming the flag.
fn engine_config(args: &ServeArgs) -> CliResult<EngineConfig> {
    let params = args.model.session_params()?;
    if args.parallel == 0 {
        return Err("--parallel 0 must be at least 1".into());
    }
    if args.queue_size == 0 {
        return Err("--queue-size 0 must be at least 1".into());
    }
    // Every slot may use the whole context: the slots share its KV cells (a pool).
    let n_ctx = params.context.n_ctx;
    let threads = match params.context.n_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    };
    Ok(EngineConfig {
        parallel: args.parallel,
        n_ctx_slot: n_ctx,
        kv_cells: n_ctx,
        n_batch: params.context.n_batch,
        n_threads: threads,
        kv_ring: params.context.kv_ring,
        device: params.context.device,
        queue_capacity: args.queue_size,
    })
}

/// Run `tessera serve` until SIGINT/SIGTERM.
pub fn run(args: ServeArgs) -> CliResult {
    let engine = engine_config(&args)?;
    let config = ServerConfig {
        host: args.host.clone(),
        port: args.port,
        model_name: args
            .alias
            .clone()
            .unwrap_or_else(|| model_name(&args.model.model)),
        api_key: args.api_key.clone(),
        body_limit: DEFAULT_BODY_LIMIT,
        handle_signals: true,
        engine,
    };
    let model_args = args.model.clone();
    let rope = model_args.rope.overrides();
    let loader = Box::new(move || {
        let path = tessera_registry::resolve_model(&model_args.model).map_err(|e| e.to_string())?;
        let model = model_args
            .load
            .load(&path, &rope)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("model loaded: {}", path.display());
        Ok(Arc::new(model))
    });
    let server = Server::start(config, loader)?;
    println!("listening on http://{}", server.addr());
    std::io::stdout().flush()?;
    let cells = if engine.kv_cells > 0 {
        format!("sharing {} KV cells", engine.kv_cells)
    } else {
        "each with its own KV cache".to_string()
    };
    eprintln!(
        "{} slots of up to {} tokens in one context, {cells}, {} threads; loading {}",
        engine.parallel, engine.n_ctx_slot, engine.n_threads, args.model.model
    );
    server.wait()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_file_stems() {
        assert_eq!(model_name("/a/b/smollm2.gguf"), "smollm2");
        assert_eq!(model_name("smollm2-135m"), "smollm2-135m");
    }
}
