//! The scripted front end (stdin not a terminal): one user turn per line (a line ending with
//! `\` goes on, `"""` blocks work too), slash commands as in the terminal, and only the
//! replies on stdout, one per turn and newline-terminated. Ends at EOF or `/quit`.
//!
//! A turn that fails (say the context is full with `--context-full stop`) prints an empty line
//! so the replies stay in step with the questions, and the exit status is then 1.

use std::io::BufRead;
use std::sync::atomic::AtomicBool;

use super::input::LineAssembler;
use super::stats::turn_line;
use super::turn::Chat;
use super::ui::{ReplyPrinter, Ui};
use super::{Control, commands, run_command};
use crate::CliResult;

/// Read turns from stdin until EOF or `/quit`.
pub fn run(chat: &mut Chat, ui: &Ui) -> CliResult {
    // Nothing sets it: without a terminal, Ctrl-C keeps its usual meaning (quit).
    let never = AtomicBool::new(false);
    let mut asm = LineAssembler::new();
    let mut failed = 0usize;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let Some(message) = asm.push(line.trim_end_matches('\r')) else {
            continue;
        };
        if message.trim().is_empty() {
            continue;
        }
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
        let mut printer = ReplyPrinter::new();
        let result = chat.reply(
            &message,
            &mut |piece| printer.print(piece),
            &mut |note| ui.note(note),
            &never,
        );
        printer.finish();
        match result {
            Ok((stats, _)) => ui.info(&turn_line(&stats, &chat.kv_state())),
            Err(e) => {
                ui.error(&e.to_string());
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} turns failed").into());
    }
    Ok(())
}
