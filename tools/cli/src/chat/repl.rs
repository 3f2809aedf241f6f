//! The interactive front end: rustyline for editing and history, multi-line input, slash
//! commands, streamed replies, and Ctrl-C.
//!
//! Ctrl-C works in two ways. At the prompt rustyline has the terminal in raw mode, so Ctrl-C is
//! a key: it clears the line (and a half-typed multi-line message). While a reply is written
//! the terminal is in its normal mode and Ctrl-C is SIGINT: the handler sets [`STOP`], which
//! the generation callback checks after every token, and the prompt comes back. A second
//! Ctrl-C before the first is noticed (say, during a long prompt) quits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::input::LineAssembler;
use super::stats::{TurnEnd, turn_line};
use super::turn::Chat;
use super::ui::{ReplyPrinter, Ui};
use super::{Control, commands, run_command};
use crate::CliResult;

/// Set by SIGINT while a reply is written; cleared before each reply.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Where the input history is kept: `$TESSERA_CHAT_HISTORY` (empty: nowhere), else
/// `~/.cache/tessera/chat_history`.
fn history_path() -> Option<PathBuf> {
    match std::env::var_os("TESSERA_CHAT_HISTORY") {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".cache/tessera/chat_history")),
    }
}

/// Install the SIGINT handler (once per process).
fn install_sigint() -> CliResult {
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            // Pressed twice without the first being noticed: leave.
            eprintln!();
            std::process::exit(130);
        }
    })?;
    Ok(())
}

/// Run the interactive loop until `/quit` or Ctrl-D.
pub fn run(chat: &mut Chat, ui: &Ui) -> CliResult {
    install_sigint()?;
    let mut rl = DefaultEditor::new()?;
    let history = history_path();
    if let Some(h) = &history {
        // A missing history file is normal on the first run.
        let _ = rl.load_history(h);
    }
    let mut asm = LineAssembler::new();
    loop {
        let prompt = if asm.pending() { "... " } else { "> " };
        let line = match rl.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                asm.clear();
                continue;
            }
            Err(ReadlineError::Eof) => {
                if let Some((_, why)) = asm.finish() {
                    ui.note(&format!(
                        "input ended inside {why}: the unfinished message was not sent"
                    ));
                }
                break;
            }
            // Invalid UTF-8 on the line: rustyline has dropped it; the chat goes on.
            Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                ui.error("that line was not valid UTF-8 and was dropped; type it again");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let Some(message) = asm.push(&line) else {
            continue;
        };
        if message.trim().is_empty() {
            continue;
        }
        let _ = rl.add_history_entry(message.as_str());
        if !message.contains('\n')
            && let Some(cmd) = commands::parse(&message)
        {
            match cmd {
                Ok(cmd) => {
                    if run_command(chat, cmd, ui) == Control::Quit {
                        break;
                    }
                }
                Err(e) => ui.error(&e),
            }
            continue;
        }
        answer(chat, &message, ui);
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = rl.save_history(h);
    }
    Ok(())
}

/// One turn: stream the reply, then the stats line.
fn answer(chat: &mut Chat, message: &str, ui: &Ui) {
    STOP.store(false, Ordering::SeqCst);
    let mut printer = ReplyPrinter::new();
    let result = chat.reply(
        message,
        &mut |piece| printer.print(piece),
        &mut |note| ui.note(note),
        &STOP,
    );
    printer.finish();
    STOP.store(false, Ordering::SeqCst);
    match result {
        Ok((stats, end)) => {
            if end == TurnEnd::Interrupted {
                ui.note("[interrupted]");
            } else if end == TurnEnd::Limit {
                ui.note("[reply cut at -n/--n-predict tokens]");
            }
            ui.info(&turn_line(&stats, &chat.kv_state()));
        }
        Err(e) => ui.error(&e.to_string()),
    }
}
