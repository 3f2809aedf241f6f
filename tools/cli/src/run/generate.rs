//! The generation loop of `tessera run`: sample, stream the piece, feed the token back; stop at
//! `-n` tokens, at an end-of-generation token, on a closed stdout, or when the context is full
//! (unless `--context-shift` makes room).

use std::io::{ErrorKind, StdoutLock, Write};
use std::time::Instant;

use tessera_models::Session;

use super::Stop;
use super::stats::Progress;
use crate::CliResult;

/// Where the generated text goes: streamed to stdout (one flush per piece), or kept for
/// `--json`.
pub struct TextSink {
    /// Keep the text instead of streaming it.
    keep: bool,
    /// Standard output, locked for the whole run.
    pub stdout: StdoutLock<'static>,
    /// The text kept (`keep` only).
    pub text: String,
}

impl TextSink {
    /// A sink that streams, or with `keep` (`--json`) collects the text.
    pub fn new(keep: bool) -> TextSink {
        TextSink {
            keep,
            stdout: std::io::stdout().lock(),
            text: String::new(),
        }
    }

    /// Stream or keep one piece of text.
    fn emit(&mut self, piece: &str) -> std::io::Result<()> {
        if self.keep {
            self.text.push_str(piece);
        } else if !piece.is_empty() {
            self.stdout.write_all(piece.as_bytes())?;
            self.stdout.flush()?;
        }
        Ok(())
    }
}

/// How far to generate and what to do when the context is full.
pub struct Limits {
    /// Tokens to generate at most (`usize::MAX`: no limit).
    pub n_predict: usize,
    /// Shift the context when it is full instead of stopping.
    pub context_shift: bool,
    /// Tokens a context shift keeps.
    pub n_keep: usize,
    /// Keep the generated ids (for `--json`).
    pub keep_ids: bool,
    /// Generated tokens between two progress samples (0: none).
    pub stats_interval: usize,
}

/// Context shifts done so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shifts {
    /// How many.
    pub count: usize,
    /// Tokens evaluated again, all shifts together.
    pub reevaluated: usize,
    /// Seconds spent shifting.
    pub seconds: f64,
}

/// What the generation did.
pub struct Generation {
    /// The generated ids (only with `Limits::keep_ids`).
    pub ids: Vec<u32>,
    /// Tokens generated (sampled), the end-of-generation token included.
    pub n_generated: usize,
    /// Single-token decode steps run.
    pub n_decodes: usize,
    /// Context shifts.
    pub shifts: Shifts,
    /// Progress samples (`--stats-interval`).
    pub progress: Progress,
    /// Why it ended.
    pub stop: Stop,
    /// Seconds from the first sample to the last piece written.
    pub seconds: f64,
}

/// Generate after the evaluated prompt, writing the text to `out`.
pub fn generate(
    session: &mut Session,
    limits: &Limits,
    out: &mut TextSink,
) -> CliResult<Generation> {
    let n_ctx = session.n_ctx();
    let model = session.model().clone();
    let tok = model.tokenizer();
    let mut stream = tok.stream_decoder();
    // Ids are kept for --json only, so a long streamed run holds no growing buffer.
    let mut g = Generation {
        ids: Vec::new(),
        n_generated: 0,
        n_decodes: 0,
        shifts: Shifts::default(),
        progress: Progress::new(limits.stats_interval),
        stop: Stop::Limit,
        seconds: 0.0,
    };
    let t_gen = Instant::now();
    while g.n_generated < limits.n_predict {
        let id = session.sample_next()?;
        g.n_generated += 1;
        if limits.keep_ids {
            g.ids.push(id);
        }
        if tok.is_eog(id) {
            g.stop = Stop::EndOfGeneration;
            break;
        }
        let piece = stream.push(id);
        if let Err(e) = out.emit(&piece) {
            if e.kind() == ErrorKind::BrokenPipe {
                g.stop = Stop::BrokenPipe;
                break;
            }
            return Err(e.into());
        }
        let shifts = g.shifts;
        if let Some(sample) = g.progress.tick(
            g.n_generated,
            session.n_past(),
            shifts.count,
            shifts.seconds,
        ) {
            eprintln!("{}", sample.line());
        }
        if g.n_generated >= limits.n_predict {
            break;
        }
        if session.n_past() >= n_ctx
            && let Err(stop) = make_room(session, limits, &mut g.shifts)
        {
            g.stop = stop;
            break;
        }
        session.eval(&[id])?;
        g.n_decodes += 1;
    }
    let rest = stream.finish();
    if g.stop != Stop::BrokenPipe {
        match out.emit(&rest) {
            Err(e) if e.kind() != ErrorKind::BrokenPipe => return Err(e.into()),
            _ => {}
        }
    }
    g.seconds = t_gen.elapsed().as_secs_f64();
    Ok(g)
}

/// The context is full: shift it (`--context-shift`), or say why generation stops.
fn make_room(session: &mut Session, limits: &Limits, shifts: &mut Shifts) -> Result<(), Stop> {
    let n_ctx = session.n_ctx();
    if !limits.context_shift {
        eprintln!(
            "\nnote: the context is full ({n_ctx} tokens): generation stopped \
             (use a larger -c/--ctx-size, or --context-shift)"
        );
        return Err(Stop::ContextFull);
    }
    let t_shift = Instant::now();
    match session.shift_context(limits.n_keep) {
        Ok(shift) => {
            shifts.count += 1;
            shifts.reevaluated += shift.reevaluated;
            shifts.seconds += t_shift.elapsed().as_secs_f64();
            Ok(())
        }
        Err(e) => {
            eprintln!("\nnote: the context is full ({n_ctx} tokens): {e}");
            Err(Stop::ContextFull)
        }
    }
}
