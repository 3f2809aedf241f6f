//! `tessera chat`: talk with a model. Interactive on a terminal (line editing, history, slash
//! commands, Ctrl-C stops a reply); with stdin not a terminal, one user turn per line and only
//! the replies on stdout, so it can be scripted.
//!
//! Modules: [`turn`] runs one turn (shared by both front ends), [`context`] decides what the KV
//! cache can keep, [`conversation`] holds the messages, [`commands`] the slash commands,
//! [`input`] joins multi-line input, [`repl`] and [`script`] are the two front ends, [`ui`] and
//! [`stats`] print.

mod commands;
mod context;
mod conversation;
mod input;
mod repl;
mod script;
mod stats;
mod turn;
mod ui;

use std::io::IsTerminal;

use clap::Args;

use crate::CliResult;
use crate::common::{GrammarArgs, ModelArgs, SamplingArgs};
use commands::{Command, Settings};
use context::ContextFull;
use conversation::Conversation;
use turn::Chat;
use ui::Ui;

/// The model `tessera chat` uses when `-m` is not given.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// Arguments of `tessera chat`.
#[derive(Args, Debug)]
#[command(
    mut_arg("model", |a| a
        .required(false)
        .default_value(DEFAULT_MODEL)
        .help("Model: a GGUF path or a registry name (`smollm2-135m`, `gemma3-270m`), pulled on first use")),
    after_long_help = commands::HELP
)]
pub struct ChatArgs {
    #[command(flatten)]
    model_args: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Every reply must match this grammar (e.g. a JSON schema).
    #[command(flatten)]
    grammar: GrammarArgs,
    /// System prompt (the model's template may add a default one when there is none).
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per reply (-1 = until the end of the turn or a full context).
    #[arg(
        short = 'n',
        long = "n-predict",
        default_value_t = -1,
        allow_negative_numbers = true
    )]
    n_predict: i64,
    /// When the conversation outgrows the context (-c): `drop-oldest` drops the oldest turns
    /// (the system prompt stays) and evaluates the rest again; `stop` refuses the turn (or
    /// cuts the reply) and says so.
    #[arg(long = "context-full", value_enum, default_value_t = ContextFull::DropOldest)]
    context_full: ContextFull,
    /// No banner and no stats line after each reply (errors are still printed).
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// Run `tessera chat`.
pub fn run(args: ChatArgs) -> CliResult {
    let mut params = args.model_args.session_params()?;
    params.sampler = args.sampling.params();
    params.sampler.validate()?;
    let n_predict = match args.n_predict {
        -1 => None,
        n if n >= 1 => Some(n as usize),
        n => return Err(format!("-n/--n-predict {n} must be >= 1 (-1 = no cap)").into()),
    };
    let interactive = std::io::stdin().is_terminal();
    let ui = Ui::new(args.quiet);
    if interactive {
        ui.info(&format!("loading {} …", args.model_args.model));
    }
    let grammar = args.grammar.grammar()?;
    let session = args.model_args.open_session(&params)?;
    let reply_constraint = match &grammar {
        Some(g) => Some(session.model().compile_grammar(g)?),
        None => None,
    };
    let settings = Settings {
        sampling: params.sampler,
        n_predict,
    };
    let conv = Conversation::new(args.system.as_deref());
    let mut chat = Chat::new(session, conv, settings, args.context_full);
    chat.reply_constraint = reply_constraint;
    if interactive {
        let c = chat.session.context();
        ui.info(&format!(
            "{} ({}), context {} tokens, {} threads, chat template: {:?}. /help lists the commands, Ctrl-D leaves.",
            args.model_args.model,
            chat.session.model().hparams().arch.name(),
            c.n_ctx(),
            c.n_threads(),
            chat.session.model().chat_template().origin()
        ));
        repl::run(&mut chat, &ui)
    } else {
        script::run(&mut chat, &ui)
    }
}

/// What the front end does after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    /// Read the next input.
    Continue,
    /// Leave.
    Quit,
}

/// Carry out a slash command; output goes to stderr (stdout holds only replies).
fn run_command(chat: &mut Chat, cmd: Command, ui: &Ui) -> Control {
    match cmd {
        Command::Help => ui.note(commands::HELP),
        Command::Quit => return Control::Quit,
        Command::Reset => {
            chat.reset();
            ui.note("conversation and KV cache cleared");
        }
        Command::Stats => ui.note(&stats::report(
            chat.last.as_ref(),
            &chat.totals,
            &chat.kv_state(),
        )),
        Command::System(None) => match chat.conv.system() {
            Some(s) => ui.note(&format!("system prompt: {s}")),
            None => ui.note("no system prompt (the template may add a default one)"),
        },
        Command::System(Some(s)) => {
            if s.is_empty() {
                chat.conv.set_system(None);
                ui.note("system prompt removed");
            } else {
                chat.conv.set_system(Some(&s));
                ui.note("system prompt set");
            }
        }
        Command::Save(path) => match chat.conv.save(&path) {
            Ok(()) => ui.note(&format!(
                "saved {} messages to {}",
                chat.conv.messages().len(),
                path.display()
            )),
            Err(e) => ui.error(&e),
        },
        Command::Load(path) => match Conversation::load(&path) {
            Ok(c) => {
                chat.conv = c;
                ui.note(&format!(
                    "loaded {} messages{} from {} (the next turn evaluates what the cache lacks)",
                    chat.conv.n_turn_messages(),
                    if chat.conv.system().is_some() {
                        " and a system prompt"
                    } else {
                        ""
                    },
                    path.display()
                ));
            }
            Err(e) => ui.error(&e),
        },
        Command::Set(None) => ui.note(&chat.settings.describe()),
        Command::Set(Some((name, value))) => match chat.settings.set(&name, &value) {
            Ok(()) => ui.note(&chat.settings.describe()),
            Err(e) => ui.error(&e),
        },
    }
    Control::Continue
}
