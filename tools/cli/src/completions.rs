//! `tessera completions SHELL`: print a completion script for the shell on stdout.
//!
//! Install, for example, with
//! `tessera completions bash > ~/.local/share/bash-completion/completions/tessera`,
//! `tessera completions zsh > ~/.zfunc/_tessera` (with `~/.zfunc` in `fpath`), or
//! `tessera completions fish > ~/.config/fish/completions/tessera.fish`.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::CliResult;

/// Arguments of `tessera completions`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
examples:
  tessera completions bash > ~/.local/share/bash-completion/completions/tessera
  tessera completions zsh > ~/.zfunc/_tessera      # with ~/.zfunc in fpath
  tessera completions fish > ~/.config/fish/completions/tessera.fish")]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Print the completion script of the command line `C` for the chosen shell.
pub fn run<C: CommandFactory>(args: CompletionsArgs) -> CliResult {
    let mut cmd = C::command();
    let name = cmd.get_name().to_string();
    clap_complete::generate(args.shell, &mut cmd, name, &mut std::io::stdout());
    Ok(())
}
