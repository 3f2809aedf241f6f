//! The slash commands of `tessera chat` (`/help`, `/reset`, `/set temp 0.7` …): parsing, and
//! applying `/set` to the sampling settings.

use std::path::PathBuf;

use tessera_models::sampler::{RANDOM_SEED, SamplerParams};

/// What `/help` prints.
pub const HELP: &str = "\
commands:
  /help                 this text
  /reset                forget the conversation (the system prompt stays) and empty the KV cache
  /system [TEXT]        show the system prompt, or replace it with TEXT (`/system -` removes it)
  /save FILE            write the conversation to FILE as JSON
  /load FILE            read a conversation written by /save (replaces the current one)
  /stats                speed of the last turn and of the session, KV cache use
  /set [NAME VALUE]     show the sampling settings, or change one:
                        temp, top-k, top-p, min-p, repeat-penalty, repeat-last-n,
                        presence-penalty, frequency-penalty, seed (-1 = random), n-predict (-1 = no cap)
  /quit                 leave (Ctrl-D too)
input:
  a line ending with \\ goes on on the next line; \"\"\" on a line of its own starts and ends a block
  Ctrl-C stops a reply (and clears the line at the prompt)";

/// A parsed slash command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `/help`.
    Help,
    /// `/reset`.
    Reset,
    /// `/system` (show) or `/system TEXT` (set) or `/system -` (remove: `Some("")`).
    System(Option<String>),
    /// `/save FILE`.
    Save(PathBuf),
    /// `/load FILE`.
    Load(PathBuf),
    /// `/stats`.
    Stats,
    /// `/set` (show) or `/set NAME VALUE`.
    Set(Option<(String, String)>),
    /// `/quit` or `/exit`.
    Quit,
}

/// Parse a line starting with `/`. `None` when the line is not a command (does not start with
/// `/`); `Some(Err)` for an unknown or malformed one.
pub fn parse(line: &str) -> Option<Result<Command, String>> {
    let line = line.trim();
    let rest = line.strip_prefix('/')?;
    let (name, arg) = match rest.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (rest, ""),
    };
    let need_arg = |what: &str| {
        if arg.is_empty() {
            Err(format!("/{name} needs {what}"))
        } else {
            Ok(arg.to_string())
        }
    };
    let no_arg = |c: Command| {
        if arg.is_empty() {
            Ok(c)
        } else {
            Err(format!("/{name} takes no argument"))
        }
    };
    Some(match name {
        "help" | "?" => no_arg(Command::Help),
        "reset" | "clear" => no_arg(Command::Reset),
        "stats" => no_arg(Command::Stats),
        "quit" | "exit" | "bye" => no_arg(Command::Quit),
        "system" => Ok(Command::System(match arg {
            "" => None,
            "-" => Some(String::new()),
            a => Some(a.to_string()),
        })),
        "save" => need_arg("a file name").map(|f| Command::Save(PathBuf::from(f))),
        "load" => need_arg("a file name").map(|f| Command::Load(PathBuf::from(f))),
        "set" => {
            if arg.is_empty() {
                Ok(Command::Set(None))
            } else {
                match arg.split_once(char::is_whitespace) {
                    Some((k, v)) if !v.trim().is_empty() => {
                        Ok(Command::Set(Some((k.to_string(), v.trim().to_string()))))
                    }
                    _ => Err("usage: /set NAME VALUE (e.g. /set temp 0.7)".to_string()),
                }
            }
        }
        _ => Err(format!("unknown command /{name}; /help lists them")),
    })
}

/// The settings `/set` can change.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Sampling.
    pub sampling: SamplerParams,
    /// Reply cap in tokens (`None` = until the context is full).
    pub n_predict: Option<usize>,
}

impl Settings {
    /// Change `name` to `value` (names as the command-line flags spell them, without `--`;
    /// `temperature` and underscores are accepted too). The result is validated as a whole.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let name = name.trim_start_matches("--").replace('_', "-");
        let f = || {
            value
                .parse::<f32>()
                .map_err(|_| format!("{name}: {value:?} is not a number"))
        };
        let i = || {
            value
                .parse::<i64>()
                .map_err(|_| format!("{name}: {value:?} is not an integer"))
        };
        let mut s = self.sampling;
        match name.as_str() {
            "temp" | "temperature" => s.temp = f()?,
            "top-k" => {
                s.top_k = i32::try_from(i()?).map_err(|_| format!("top-k {value} is too big"))?
            }
            "top-p" => s.top_p = f()?,
            "min-p" => s.min_p = f()?,
            "repeat-penalty" => s.repeat_penalty = f()?,
            "repeat-last-n" => {
                s.penalty_last_n =
                    i32::try_from(i()?).map_err(|_| format!("repeat-last-n {value} is too big"))?
            }
            "presence-penalty" => s.presence_penalty = f()?,
            "frequency-penalty" => s.frequency_penalty = f()?,
            "seed" => {
                let v = i()?;
                s.seed = if v < 0 { RANDOM_SEED } else { v as u64 };
            }
            "n-predict" => {
                let v = i()?;
                self.n_predict = match v {
                    -1 => None,
                    v if v >= 1 => Some(v as usize),
                    _ => return Err(format!("n-predict {v} must be >= 1 (-1 = no cap)")),
                };
                return Ok(());
            }
            _ => {
                return Err(format!(
                    "cannot set {name:?}; one of temp, top-k, top-p, min-p, repeat-penalty, \
                     repeat-last-n, presence-penalty, frequency-penalty, seed, n-predict"
                ));
            }
        }
        s.validate()?;
        self.sampling = s;
        Ok(())
    }

    /// One line listing every setting.
    pub fn describe(&self) -> String {
        let s = &self.sampling;
        let seed = if s.seed == RANDOM_SEED {
            "-1 (random)".to_string()
        } else {
            s.seed.to_string()
        };
        let n_predict = match self.n_predict {
            None => "-1 (until the context is full)".to_string(),
            Some(n) => n.to_string(),
        };
        format!(
            "temp {} | top-k {} | top-p {} | min-p {} | repeat-penalty {} | repeat-last-n {} | \
             presence-penalty {} | frequency-penalty {} | seed {seed} | n-predict {n_predict}",
            s.temp,
            s.top_k,
            s.top_p,
            s.min_p,
            s.repeat_penalty,
            s.penalty_last_n,
            s.presence_penalty,
            s.frequency_penalty
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse("hello"), None);
        assert_eq!(parse("/help"), Some(Ok(Command::Help)));
        assert_eq!(parse("  /quit  "), Some(Ok(Command::Quit)));
        assert_eq!(
            parse("/system Be   brief."),
            Some(Ok(Command::System(Some("Be   brief.".into()))))
        );
        assert_eq!(parse("/system"), Some(Ok(Command::System(None))));
        assert_eq!(
            parse("/system -"),
            Some(Ok(Command::System(Some(String::new()))))
        );
        assert_eq!(
            parse("/save a b.json"),
            Some(Ok(Command::Save("a b.json".into())))
        );
        assert!(matches!(parse("/save"), Some(Err(_))));
        assert!(matches!(parse("/reset now"), Some(Err(_))));
        assert!(matches!(parse("/frobnicate"), Some(Err(_))));
        assert_eq!(
            parse("/set temp 0.7"),
            Some(Ok(Command::Set(Some(("temp".into(), "0.7".into())))))
        );
        assert_eq!(parse("/set"), Some(Ok(Command::Set(None))));
        assert!(matches!(parse("/set temp"), Some(Err(_))));
    }

    #[test]
    fn set_validates() {
        let mut s = Settings {
            sampling: SamplerParams::default(),
            n_predict: None,
        };
        s.set("temp", "0.7").unwrap();
        assert_eq!(s.sampling.temp, 0.7);
        s.set("top_k", "5").unwrap();
        assert_eq!(s.sampling.top_k, 5);
        s.set("seed", "42").unwrap();
        assert_eq!(s.sampling.seed, 42);
        s.set("seed", "-1").unwrap();
        assert_eq!(s.sampling.seed, RANDOM_SEED);
        s.set("n-predict", "16").unwrap();
        assert_eq!(s.n_predict, Some(16));
        s.set("n-predict", "-1").unwrap();
        assert_eq!(s.n_predict, None);
        assert!(s.set("temp", "-1").is_err());
        assert!(s.set("top-p", "2").is_err());
        assert!(s.set("temp", "warm").is_err());
        assert!(s.set("colour", "1").is_err());
        // A refused value leaves the settings as they were.
        assert_eq!(s.sampling.temp, 0.7);
        assert!(s.describe().contains("temp 0.7"));
    }
}
