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

/// Read turns from stdin until EOF or `/quit`. A line that is not UTF-8 is read with its bad
/// bytes replaced (and a warning), and a message left unfinished at EOF (a trailing `\` or an
/// unclosed `"""` block) is still sent, with a note.
pub fn run(chat: &mut Chat, ui: &Ui) -> CliResult {
    // Nothing sets it: without a terminal, Ctrl-C keeps its usual meaning (quit).
    let never = AtomicBool::new(false);
    let mut asm = LineAssembler::new();
    let mut failed = 0usize;
    let mut stdin = std::io::stdin().lock();
    let mut bytes = Vec::new();
    let mut line_no = 0usize;
    loop {
        bytes.clear();
        if stdin.read_until(b'\n', &mut bytes)? == 0 {
            break;
        }
        line_no += 1;
        let line = String::from_utf8_lossy(&bytes);
        if let std::borrow::Cow::Owned(_) = line {
            ui.error(&format!(
                "input line {line_no} is not valid UTF-8: invalid bytes replaced with U+FFFD"
            ));
        }
        let line = line.trim_end_matches('\n').trim_end_matches('\r');
        let Some(message) = asm.push(line) else {
            continue;
        };
        if take_turn(chat, ui, &never, &message, &mut failed) == Control::Quit {
            return finish(failed);
        }
    }
    if let Some((message, why)) = asm.finish() {
        ui.note(&format!(
            "input ended inside {why}: sending the message as it is"
        ));
        take_turn(chat, ui, &never, &message, &mut failed);
    }
    finish(failed)
}

/// One message: a slash command, or a turn whose reply goes to stdout (a failed turn counts in
/// `failed`).
fn take_turn(
    chat: &mut Chat,
    ui: &Ui,
    never: &AtomicBool,
    message: &str,
    failed: &mut usize,
) -> Control {
    if message.trim().is_empty() {
        return Control::Continue;
    }
    if !message.contains('\n')
        && let Some(cmd) = commands::parse(message)
    {
        return match cmd {
            Ok(cmd) => run_command(chat, cmd, ui),
            Err(e) => {
                ui.error(&e);
                Control::Continue
            }
        };
    }
    let mut printer = ReplyPrinter::new();
    let result = chat.reply(
        message,
        &mut |piece| printer.print(piece),
        &mut |note| ui.note(note),
        never,
    );
    printer.finish();
    match result {
        Ok((stats, _)) => ui.info(&turn_line(&stats, &chat.kv_state())),
        Err(e) => {
            ui.error(&e.to_string());
            *failed += 1;
        }
    }
    Control::Continue
}

/// The script's result: an error when some turns failed.
fn finish(failed: usize) -> CliResult {
    if failed > 0 {
        return Err(format!("{failed} turns failed").into());
    }
    Ok(())
}
