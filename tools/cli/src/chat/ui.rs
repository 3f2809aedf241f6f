//! Terminal output of `tessera chat`: the streamed reply on stdout, notes and stats on stderr
//! (dim when stderr is a terminal and `NO_COLOR` is not set).

use std::io::{IsTerminal, Write};

/// Where and how notes are printed.
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    /// Dim notes with ANSI escapes.
    pub dim: bool,
    /// No banner and no stats lines.
    pub quiet: bool,
}

impl Ui {
    /// Settings for this process's stderr.
    pub fn new(quiet: bool) -> Self {
        let dim = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Ui { dim, quiet }
    }

    /// A note (stats, notices) on stderr, dim.
    pub fn note(&self, text: &str) {
        let mut e = std::io::stderr().lock();
        let _ = if self.dim {
            writeln!(e, "\x1b[2m{text}\x1b[0m")
        } else {
            writeln!(e, "{text}")
        };
    }

    /// A note that `--quiet` hides.
    pub fn info(&self, text: &str) {
        if !self.quiet {
            self.note(text);
        }
    }

    /// An error on stderr (the chat goes on).
    pub fn error(&self, text: &str) {
        eprintln!("error: {text}");
    }
}

/// Streams a reply to stdout without its leading and trailing white space, ending it with
/// exactly one newline.
pub struct ReplyPrinter {
    started: bool,
    held: String,
}

impl ReplyPrinter {
    /// A printer for one reply.
    pub fn new() -> Self {
        ReplyPrinter {
            started: false,
            held: String::new(),
        }
    }

    /// The text to write now for `piece` (white space at the end is held back until more text
    /// comes).
    pub fn push(&mut self, piece: &str) -> String {
        let piece = if self.started {
            piece
        } else {
            piece.trim_start()
        };
        if piece.is_empty() {
            return String::new();
        }
        self.started = true;
        let body = piece.trim_end();
        if body.is_empty() {
            self.held.push_str(piece);
            return String::new();
        }
        let mut out = std::mem::take(&mut self.held);
        out.push_str(body);
        self.held.push_str(&piece[body.len()..]);
        out
    }

    /// Write `piece` to stdout and flush.
    pub fn print(&mut self, piece: &str) {
        let text = self.push(piece);
        if !text.is_empty() {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(text.as_bytes());
            let _ = o.flush();
        }
    }

    /// End the reply with a newline.
    pub fn finish(self) {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(b"\n");
        let _ = o.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_the_ends_only() {
        let mut p = ReplyPrinter::new();
        let pieces = ["  ", "\nHello", " ", "world", "\n\n", "bye", " \n", "\n"];
        let out: String = pieces.iter().map(|s| p.push(s)).collect();
        assert_eq!(out, "Hello world\n\nbye");
    }
}
