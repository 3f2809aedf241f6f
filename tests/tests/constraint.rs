//! Grammar-constrained sampling on the real models' vocabularies (SmolLM2's byte-level BPE,
//! Gemma 3's SentencePiece with byte fallback), checked by checkers that share nothing with
//! llguidance: `serde_json` for JSON, the `regex` crate for regular expressions, and small
//! recursive-descent checkers written here for llama.cpp's `arithmetic.gbnf` and `list.gbnf`.
//!
//! - every `grammars/*.gbnf` of llama.cpp's source tree converts and compiles on both
//!   vocabularies (the source tree is found as in `vocab_suites.rs`);
//! - sampled at temperature 0.8 with several seeds, constrained outputs pass the checkers, and
//!   the same prompts and seeds without the grammar mostly do not (which also shows that the
//!   checkers can fail); on SmolLM2, and a shorter set on Gemma 3;
//! - at every step an end-of-generation token is allowed exactly where the grammar can end;
//! - a schema that cannot be satisfied within the token limit stops at the limit with a prefix
//!   of a valid output;
//! - invalid grammars are refused with a message saying where and what.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_models::constraint::{Constraint, Grammar};
use tessera_models::context::ContextParams;
use tessera_models::hparams::RopeOverrides;
use tessera_models::sampler::{Sampler, SamplerParams};
use tessera_models::{Model, Session, SessionParams};

/// The variable naming llama.cpp's source tree (`…/vendor/llama.cpp`).
const SRC_VAR: &str = "TESSERA_LLAMA_CPP_SRC";
/// The sdist `.ci/run` fetches.
const SDIST: &str = "llama-cpp-python-0.3.36";
/// Seeds of the sampled runs.
const SEEDS: [u64; 3] = [1, 2, 3];

/// llama.cpp's `grammars/` directory, or `None` when it is missing and that is allowed.
fn grammars_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os(SRC_VAR).filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => Path::new(&std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/tessera")
            .join(SDIST)
            .join("vendor/llama.cpp"),
    };
    let grammars = dir.join("grammars");
    if grammars.is_dir() {
        return Some(grammars);
    }
    assert!(
        tessera_model_files::missing_models_allowed(),
        "llama.cpp's source tree is missing at {} (set {SRC_VAR}, or run .ci/run; \
         TESSERA_ALLOW_MISSING_MODELS=1 skips these tests)",
        dir.display()
    );
    eprintln!("skipped: no llama.cpp source tree at {}", dir.display());
    None
}

/// A model by file name, or `None` when it is missing and that is allowed.
fn load(file: &str) -> Option<Arc<Model>> {
    let path = tessera_model_files::model_file(file)?;
    Some(Arc::new(
        Model::load(&path, &RopeOverrides::default()).unwrap(),
    ))
}

/// A grammar file of llama.cpp's tree.
fn grammar_file(dir: &Path, name: &str) -> Grammar {
    Grammar::Gbnf(std::fs::read_to_string(dir.join(name)).unwrap())
}

#[test]
fn every_llama_cpp_grammar_compiles_on_both_vocabularies() {
    let Some(dir) = grammars_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gbnf"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    for model_file in [tessera_model_files::SMOLLM2, tessera_model_files::GEMMA3] {
        let Some(model) = load(model_file) else {
            continue;
        };
        let mut failed = Vec::new();
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(f).unwrap();
            let lark = tessera_models::constraint::gbnf::to_lark(&text)
                .unwrap_or_else(|e| panic!("{name} does not convert: {e}"));
            assert!(lark.contains("start:"), "{name}: {lark}");
            // Compile, and compute the first mask (llguidance builds parts lazily).
            match model.compile_grammar(&Grammar::Gbnf(text)) {
                Ok(mut c) => {
                    let n = c
                        .allowed()
                        .unwrap_or_else(|e| panic!("{name}: {e}"))
                        .count();
                    assert!(n > 0, "{name}: nothing allowed at the start");
                }
                Err(e) => failed.push(format!("{name}: {e}")),
            }
        }
        eprintln!("{model_file}: {} grammars, failed: {failed:?}", files.len());
        assert!(failed.is_empty(), "{model_file}: {failed:#?}");
    }
}

/// One sampled output.
struct Output {
    /// The text (lossy UTF-8 when it stops inside a character).
    text: String,
    /// Whether it ended with an end-of-generation token (else it hit the limit).
    ended: bool,
}

/// A model session, reused for every sampled run.
struct Runner {
    session: Session,
}

impl Runner {
    fn new(model: Arc<Model>) -> Runner {
        let params = SessionParams {
            context: ContextParams {
                n_ctx: 256,
                n_threads: 2,
                ..Default::default()
            },
            rope: RopeOverrides::default(),
            sampler: SamplerParams::default(),
        };
        Runner {
            session: Session::new(model, &params).unwrap(),
        }
    }

    /// Sample at most `n_max` tokens after `prompt` at temperature 0.8 with `seed`, under
    /// `grammar` when given. Under a grammar, every step checks that end-of-generation tokens
    /// are allowed exactly where the grammar can end.
    fn run(
        &mut self,
        prompt: &str,
        grammar: Option<&Constraint>,
        seed: u64,
        n_max: usize,
    ) -> Output {
        let s = &mut self.session;
        s.reset();
        let mut sampler = Sampler::new(SamplerParams {
            temp: 0.8,
            seed,
            ..Default::default()
        });
        let mut constraint = grammar.cloned();
        let eog: Vec<u32> = s.tokenizer().eog_ids().to_vec();
        let prompt = s.tokenize(prompt, true, true);
        s.eval(&prompt).unwrap();
        let mut bytes = Vec::new();
        let mut ended = false;
        for step in 0..n_max {
            let id = match constraint.as_mut() {
                Some(c) => {
                    let can_end = c.can_end();
                    let mask = c.allowed().unwrap();
                    // Shown to fail: with token 0 (SmolLM2's <|endoftext|>) added to every
                    // mask in `Constraint::allowed`, this fails at step 0 of the first case.
                    let eog_allowed = eog.iter().any(|&e| mask.allows(e));
                    assert_eq!(
                        eog_allowed,
                        can_end,
                        "step {step} after {:?}: end-of-generation allowed = {eog_allowed}, \
                         the grammar can end = {can_end}",
                        String::from_utf8_lossy(&bytes)
                    );
                    let id = sampler.sample_masked(s.logits(), Some(mask));
                    c.advance(id).unwrap();
                    id
                }
                None => sampler.sample(s.logits()),
            };
            sampler.accept(id);
            if s.tokenizer().is_eog(id) {
                ended = true;
                break;
            }
            bytes.extend(s.tokenizer().token_to_piece(id));
            if step + 1 < n_max {
                s.eval(&[id]).unwrap();
            }
        }
        Output {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            ended,
        }
    }
}

/// What a checker says about a text.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Verdict {
    /// A complete sentence of the language.
    Complete,
    /// Not complete, but a prefix of a sentence.
    Prefix,
    /// Neither.
    Invalid,
}

/// An output is right when it ended as a complete sentence, or hit the limit as a prefix.
fn output_ok(out: &Output, check: fn(&str) -> Verdict) -> bool {
    match check(&out.text) {
        // A complete sentence at the limit is also a prefix (the grammar may go on).
        Verdict::Complete => true,
        Verdict::Prefix => !out.ended,
        Verdict::Invalid => false,
    }
}

/// JSON objects (json.gbnf's language, up to whitespace) by `serde_json`.
fn check_json_object(text: &str) -> Verdict {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) if v.is_object() => Verdict::Complete,
        Ok(_) => Verdict::Invalid,
        Err(e) if e.is_eof() && text.trim_start().starts_with('{') => Verdict::Prefix,
        Err(_) => Verdict::Invalid,
    }
}

/// llama.cpp's `list.gbnf`: `root ::= item+`, `item ::= "- " [^\r\n\x0b\x0c\x85\u2028\u2029]+ "\n"`.
fn check_list(text: &str) -> Verdict {
    let banned = ['\r', '\x0b', '\x0c', '\u{85}', '\u{2028}', '\u{2029}'];
    let mut lines: Vec<&str> = text.split('\n').collect();
    let last = lines.pop().unwrap_or("");
    for l in &lines {
        let Some(body) = l.strip_prefix("- ") else {
            return Verdict::Invalid;
        };
        if body.is_empty() || body.contains(banned) {
            return Verdict::Invalid;
        }
    }
    if last.is_empty() {
        return if lines.is_empty() {
            Verdict::Prefix
        } else {
            Verdict::Complete
        };
    }
    let partial_ok = if last.len() <= 2 {
        "- ".starts_with(last)
    } else {
        last.starts_with("- ") && !last.contains(banned)
    };
    if partial_ok {
        Verdict::Prefix
    } else {
        Verdict::Invalid
    }
}

/// A recursive-descent checker of llama.cpp's `arithmetic.gbnf`:
/// ```text
/// root  ::= (expr "=" ws term "\n")+
/// expr  ::= term ([-+*/] term)*
/// term  ::= ident | num | "(" ws expr ")" ws
/// ident ::= [a-z] [a-z0-9_]* ws
/// num   ::= [0-9]+ ws
/// ws    ::= [ \t\n]*
/// ```
/// Every term ends with `ws`, so an item's `ws "\n"` is the whitespace run after its last
/// term, which must end with a newline.
struct Arithmetic<'a> {
    s: &'a [u8],
    pos: usize,
}

/// Why the arithmetic checker stopped: the input ran out (a prefix so far) or did not match.
#[derive(Debug)]
enum Stop {
    Eof,
    Bad,
}

impl Arithmetic<'_> {
    fn peek(&self) -> Result<u8, Stop> {
        self.s.get(self.pos).copied().ok_or(Stop::Eof)
    }

    /// `ws`; returns the last whitespace byte consumed.
    fn ws(&mut self) -> Option<u8> {
        let mut last = None;
        while let Some(&c) = self.s.get(self.pos) {
            if !matches!(c, b' ' | b'\t' | b'\n') {
                break;
            }
            last = Some(c);
            self.pos += 1;
        }
        last
    }

    /// `term`; returns the last byte of its trailing whitespace.
    fn term(&mut self) -> Result<Option<u8>, Stop> {
        let c = self.peek()?;
        if c.is_ascii_lowercase() {
            self.pos += 1;
            while self
                .s
                .get(self.pos)
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
            {
                self.pos += 1;
            }
        } else if c.is_ascii_digit() {
            while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
                self.pos += 1;
            }
        } else if c == b'(' {
            self.pos += 1;
            self.ws();
            self.expr()?;
            if self.peek()? != b')' {
                return Err(Stop::Bad);
            }
            self.pos += 1;
        } else {
            return Err(Stop::Bad);
        }
        Ok(self.ws())
    }

    fn expr(&mut self) -> Result<(), Stop> {
        self.term()?;
        while let Some(&c) = self.s.get(self.pos) {
            if !matches!(c, b'-' | b'+' | b'*' | b'/') {
                break;
            }
            self.pos += 1;
            self.term()?;
        }
        Ok(())
    }

    /// One `expr "=" ws term "\n"`.
    fn item(&mut self) -> Result<(), Stop> {
        self.expr()?;
        if self.peek()? != b'=' {
            return Err(Stop::Bad);
        }
        self.pos += 1;
        self.ws();
        match self.term()? {
            Some(b'\n') => Ok(()),
            _ if self.pos == self.s.len() => Err(Stop::Eof),
            _ => Err(Stop::Bad),
        }
    }

    fn check(text: &str) -> Verdict {
        let mut p = Arithmetic {
            s: text.as_bytes(),
            pos: 0,
        };
        let mut items = 0;
        loop {
            if p.pos == p.s.len() && items > 0 {
                return Verdict::Complete;
            }
            match p.item() {
                Ok(()) => items += 1,
                Err(Stop::Eof) => return Verdict::Prefix,
                Err(Stop::Bad) => return Verdict::Invalid,
            }
        }
    }
}

/// Membership in the choice list.
fn check_choice(text: &str) -> Verdict {
    const CHOICES: [&str; 3] = ["yes", "no", "maybe"];
    if CHOICES.contains(&text) {
        Verdict::Complete
    } else if CHOICES.iter().any(|c| c.starts_with(text)) {
        Verdict::Prefix
    } else {
        Verdict::Invalid
    }
}

#[test]
fn the_checkers_tell_good_from_bad() {
    use Verdict::*;
    for (t, v) in [
        ("a=1\n", Complete),
        ("(x1 +2)*y = 3\nb=c\n", Complete),
        // No whitespace may follow an operator.
        ("x1 + 2=3\n", Invalid),
        ("a=1", Prefix),
        ("a =1 \n\n", Complete),
        ("(a", Prefix),
        ("a==1\n", Invalid),
        ("A=1\n", Invalid),
        ("1+=2\n", Invalid),
        ("", Prefix),
    ] {
        assert_eq!(Arithmetic::check(t), v, "{t:?}");
    }
    for (t, v) in [
        ("- a\n", Complete),
        ("- a\n- b", Prefix),
        ("-", Prefix),
        ("* a\n", Invalid),
        ("- \n", Invalid),
    ] {
        assert_eq!(check_list(t), v, "{t:?}");
    }
    assert_eq!(check_json_object("{\"a\": [1, 2]}"), Complete);
    assert_eq!(check_json_object("{\"a\": [1, "), Prefix);
    assert_eq!(check_json_object("[1]"), Invalid);
    assert_eq!(check_json_object("{a}"), Invalid);
    assert_eq!(check_choice("may"), Prefix);
    assert_eq!(check_choice("maybe."), Invalid);
}

/// A grammar, a prompt, a token limit and the checker of its outputs.
struct Case {
    name: &'static str,
    grammar: Grammar,
    prompt: &'static str,
    n_max: usize,
    check: fn(&str) -> Verdict,
}

#[test]
fn sampled_outputs_pass_independent_checkers_and_unconstrained_ones_mostly_do_not() {
    let Some(dir) = grammars_dir() else { return };
    let Some(model) = load(tessera_model_files::SMOLLM2) else {
        return;
    };
    let cases = [
        Case {
            name: "choice",
            grammar: Grammar::Gbnf("root ::= \"yes\" | \"no\" | \"maybe\"\n".into()),
            prompt: "Question: is the sky green? Answer:",
            n_max: 8,
            check: check_choice,
        },
        Case {
            name: "arithmetic.gbnf",
            grammar: grammar_file(&dir, "arithmetic.gbnf"),
            prompt: "Some equations:\n",
            n_max: 24,
            check: Arithmetic::check,
        },
        Case {
            name: "json.gbnf",
            grammar: grammar_file(&dir, "json.gbnf"),
            prompt: "A short JSON object with a cat's name and age:\n",
            n_max: 48,
            check: check_json_object,
        },
        Case {
            name: "list.gbnf",
            grammar: grammar_file(&dir, "list.gbnf"),
            prompt: "Shopping list:\n",
            n_max: 24,
            check: check_list,
        },
    ];
    let mut runner = Runner::new(model.clone());
    let mut report = Vec::new();
    let mut free_passes = 0;
    for case in &cases {
        let compiled = model.compile_grammar(&case.grammar).unwrap();
        let (mut ok, mut ended, mut free_ok) = (0, 0, 0);
        for seed in SEEDS {
            let out = runner.run(case.prompt, Some(&compiled), seed, case.n_max);
            assert!(
                output_ok(&out, case.check),
                "{} seed {seed}: {:?} (ended: {}) is {:?}",
                case.name,
                out.text,
                out.ended,
                (case.check)(&out.text)
            );
            ok += 1;
            ended += usize::from(out.ended);
            let free = runner.run(case.prompt, None, seed, case.n_max);
            if output_ok(&free, case.check) {
                free_ok += 1;
            }
            eprintln!(
                "{} seed {seed}: {:?} (ended {}) | without: {:?}",
                case.name, out.text, out.ended, free.text
            );
        }
        free_passes += free_ok;
        report.push(format!(
            "{}: {ok}/{} with the grammar ({ended} ended, the rest at the limit), {free_ok}/{} \
             without",
            case.name,
            SEEDS.len(),
            SEEDS.len()
        ));
    }
    eprintln!("{}", report.join("\n"));
    // The checkers can fail: most unconstrained outputs do not pass them.
    assert!(
        free_passes * 2 < cases.len() * SEEDS.len(),
        "unconstrained outputs passed too often: {report:?}"
    );
}

/// Gemma 3's vocabulary (SentencePiece pieces with byte fallback, 262k tokens) under the
/// choice grammar, `json.gbnf` and a regular expression, two seeds each.
#[test]
fn gemma3_outputs_pass_the_checkers_too() {
    let Some(dir) = grammars_dir() else { return };
    let Some(model) = load(tessera_model_files::GEMMA3) else {
        return;
    };
    let mut runner = Runner::new(model.clone());
    // Only complete outputs pass: 16 tokens are more than its 8 characters need.
    let regex_check: fn(&str) -> Verdict = |t| {
        if regex::Regex::new(r"^[0-9]{3}-[0-9]{4}$")
            .unwrap()
            .is_match(t)
        {
            Verdict::Complete
        } else {
            Verdict::Invalid
        }
    };
    let cases = [
        (
            Grammar::Gbnf("root ::= \"yes\" | \"no\" | \"maybe\"\n".into()),
            "Question: is the sky green? Answer:",
            8,
            check_choice as fn(&str) -> Verdict,
        ),
        (
            grammar_file(&dir, "json.gbnf"),
            "A short JSON object with a cat's name and age:\n",
            32,
            check_json_object,
        ),
        (
            Grammar::Regex(r"[0-9]{3}-[0-9]{4}".into()),
            "Phone:",
            16,
            regex_check,
        ),
    ];
    for (grammar, prompt, n_max, check) in cases {
        let compiled = model.compile_grammar(&grammar).unwrap();
        for seed in [1, 2] {
            let out = runner.run(prompt, Some(&compiled), seed, n_max);
            eprintln!(
                "gemma3 {} seed {seed}: {:?} (ended {})",
                grammar.kind(),
                out.text,
                out.ended
            );
            assert!(
                output_ok(&out, check),
                "{:?} is {:?}",
                out.text,
                check(&out.text)
            );
        }
    }
}

#[test]
fn regex_outputs_match_the_regex() {
    let Some(model) = load(tessera_model_files::SMOLLM2) else {
        return;
    };
    let mut runner = Runner::new(model.clone());
    for (rx, prompt) in [
        (r"[0-9]{3}-[0-9]{4}", "Phone:"),
        (r"(cat|dog|bird)s?( and (cat|dog|bird)s?){0,2}", "Pets:"),
        (r"[A-Z][a-z]{1,8}, [A-Z][a-z]{1,8}", "Name (last, first):"),
    ] {
        let anchored = regex::Regex::new(&format!("^(?:{rx})$")).unwrap();
        let compiled = model.compile_grammar(&Grammar::Regex(rx.into())).unwrap();
        for seed in SEEDS {
            let out = runner.run(prompt, Some(&compiled), seed, 24);
            eprintln!("{rx} seed {seed}: {:?}", out.text);
            assert!(out.ended, "{rx}: did not end: {:?}", out.text);
            assert!(anchored.is_match(&out.text), "{rx}: {:?}", out.text);
        }
    }
}

#[test]
fn an_unsatisfiable_schema_stops_at_the_limit_with_a_valid_prefix() {
    let Some(model) = load(tessera_model_files::SMOLLM2) else {
        return;
    };
    let mut runner = Runner::new(model.clone());
    // At least 400 characters in one string: not reachable in 20 tokens.
    let schema = Grammar::json_schema_from_str(
        r#"{"type": "object", "properties": {"story": {"type": "string", "minLength": 400}},
            "required": ["story"], "additionalProperties": false}"#,
    )
    .unwrap();
    let compiled = model.compile_grammar(&schema).unwrap();
    let start = std::time::Instant::now();
    for seed in SEEDS {
        let out = runner.run("A story as JSON:\n", Some(&compiled), seed, 20);
        assert!(
            !out.ended,
            "ended before the string was long enough: {:?}",
            out.text
        );
        assert!(out.text.starts_with("{\"story\": \""), "{:?}", out.text);
        assert_eq!(
            check_json_object(&out.text),
            Verdict::Prefix,
            "{:?}",
            out.text
        );
    }
    assert!(start.elapsed().as_secs() < 60, "{:?}", start.elapsed());
}

#[test]
fn invalid_grammars_are_refused_with_where_and_what() {
    let Some(model) = load(tessera_model_files::SMOLLM2) else {
        return;
    };
    let err = |g: Grammar| model.compile_grammar(&g).unwrap_err().to_string();
    let e = err(Grammar::Gbnf(
        "root ::= item\nitem ::= \"a\" other\n".into(),
    ));
    assert!(
        e.contains("line 2, column 14") && e.contains("undefined rule `other`"),
        "{e}"
    );
    // A class may hold a newline, so an unclosed one is reported where it opens.
    let e = err(Grammar::Gbnf("root ::= [a-z\n".into()));
    assert!(
        e.contains("line 1, column 10") && e.contains("unterminated character class"),
        "{e}"
    );
    let e = err(Grammar::Gbnf("root ::= \"a\"\nitem ::= \"b\" @\n".into()));
    assert!(e.contains("line 2, column 14"), "{e}");
    let e = err(Grammar::Regex("(ab".into()));
    assert!(e.contains("regular expression"), "{e}");
    let e = err(Grammar::Lark("start: foo\n".into()));
    assert!(e.contains("Lark grammar") && e.contains("foo"), "{e}");
    let e = err(Grammar::JsonSchema(
        serde_json::json!({"type": "frobnicate"}),
    ));
    assert!(e.contains("JSON schema") && e.contains("frobnicate"), "{e}");
}

/// Whether `c` allows any token whose text starts with an ASCII digit.
fn allows_a_digit(model: &Model, c: &mut Constraint) -> bool {
    let tok = model.tokenizer();
    c.allowed().unwrap().ids().into_iter().any(|id| {
        tok.token_to_piece(id)
            .first()
            .is_some_and(u8::is_ascii_digit)
    })
}

#[test]
fn json_digit_runs_stop_at_sixteen() {
    // Gemma 3 looped on fraction digits ("35.0000000000000007186…") until max_tokens in 4 of
    // 50 weather answers: llguidance bounds neither part of a number. The constraint caps a
    // run of digits at 16, as llama.cpp's schema converter does.
    let Some(model) = load("smollm2-135m-instruct-q4_1.gguf") else {
        return;
    };
    let tok = model.tokenizer();
    let schema = Grammar::json_schema_from_str(
        r#"{"type":"object","properties":{"x":{"type":"number","minimum":0,"maximum":300}},"required":["x"]}"#,
    )
    .unwrap();
    let mut c = model.compile_grammar(&schema).unwrap();
    for id in tok.encode("{\"x\": 35.", false, false) {
        c.advance(id).unwrap();
    }
    for i in 0..16 {
        assert!(allows_a_digit(&model, &mut c), "digit {} refused", i + 1);
        let one = tok.encode("1", false, false);
        assert_eq!(one.len(), 1);
        c.advance(one[0]).unwrap();
    }
    // 16 fraction digits: no more, but the object may close.
    assert!(!allows_a_digit(&model, &mut c));
    let close = tok.encode("}", false, false)[0];
    assert!(c.allowed().unwrap().allows(close));
    // A regex grammar that demands more digits still gets them (the cap is JSON's only).
    let mut rx = model
        .compile_grammar(&Grammar::Regex("[0-9]{20}".into()))
        .unwrap();
    for _ in 0..19 {
        assert!(allows_a_digit(&model, &mut rx));
        rx.advance(tok.encode("7", false, false)[0]).unwrap();
    }
    assert!(allows_a_digit(&model, &mut rx));
}
