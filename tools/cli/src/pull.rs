//! `tessera pull NAME`: fetch a registry model into the models directory.

use clap::Args;
use tessera_registry as registry;

use crate::CliResult;

/// Arguments of `tessera pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Registry name of the model (`--list` shows them).
    #[arg(required_unless_present_any = ["list", "all"])]
    name: Option<String>,
    /// Pull every known model.
    #[arg(long, conflicts_with = "name")]
    all: bool,
    /// List the known models and where they are stored, then exit.
    #[arg(long, conflicts_with_all = ["name", "all"])]
    list: bool,
}

/// Run `tessera pull`: print the path of each pulled model on stdout, progress on stderr.
pub fn run(args: PullArgs) -> CliResult {
    if args.list {
        let dir = registry::models_dir();
        println!("models directory: {}", dir.display());
        for e in registry::known_models() {
            let state = if e.path_in(&dir).is_file() {
                "present"
            } else {
                "not pulled"
            };
            println!("{:<14} {:<11} {}", e.name, state, e.description);
        }
        return Ok(());
    }
    let names: Vec<&str> = match &args.name {
        Some(n) => vec![n.as_str()],
        None => registry::known_models().iter().map(|e| e.name).collect(),
    };
    for name in names {
        let path = registry::pull(name)?;
        println!("{}", path.display());
    }
    Ok(())
}
