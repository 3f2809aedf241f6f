//! Chat templates: rendering GGUF `tokenizer.chat_template` with minijinja.
//!
//! The template sees what Hugging Face's `apply_chat_template` gives it: `messages` (a list of
//! `{role, content}`), `add_generation_prompt`, `bos_token`, `eos_token` and
//! `raise_exception(msg)`, with Python string methods (`.strip()`, `.startswith()` …) from
//! minijinja-contrib's pycompat, `strftime_now(fmt)`, and Jinja2 as transformers configures
//! it (`trim_blocks` and `lstrip_blocks` on).
//!
//! A file without a template gets a built-in one: Gemma's turn format for `gemma*`
//! architectures (llama.cpp does the same for Gemma files), ChatML for everything else.
//!
//! When the tokenizer adds BOS itself (`tokenizer.ggml.add_bos_token`), [`ChatTemplate::render`]
//! removes a BOS text the template writes at the very start, as llama.cpp does, so the prompt
//! does not get two; the result is the text to tokenize with special tokens parsed.
//! [`ChatTemplate::render_raw`] returns the template's output untouched. (Only a leading BOS
//! is dropped, and only then: SmolLM2's BOS text is `<|im_start|>`, which starts every turn.)
//!
//! ## Hostile templates
//!
//! A template comes from the model file, so it may be written to exhaust the machine. Its
//! instructions are bounded by minijinja's fuel ([`RENDER_FUEL`]), its nesting by
//! [`RECURSION_LIMIT`], and its bytes by a budget, [`RENDER_BYTE_BUDGET`]: the output, every
//! capture, and every string or list that an operator (`~`, `+`, `*`, slicing), a filter or a
//! method builds are charged to it, before they are built wherever their size can be bounded
//! from their inputs (`'x' * n`, `[x] * n`, `join`, `replace`, `indent`, `tojson`,
//! `format` …), so doubling a string or a list in a loop, or repeating a large one, ends with
//! [`ChatError::TooLarge`] instead of an allocation the process cannot survive. minijinja
//! offers no hook on its operators, so each rendering runs a copy of the compiled
//! instructions with the operators replaced by charging functions (`guard`, through
//! minijinja's `unstable_machinery`, which is why the minijinja version is pinned); a memory
//! quota by a global allocator was not an option for a library. The budget bounds the bytes
//! built in total, never refunded, so at most that much is alive at any time.

mod budget;
mod fold;
mod guard;

pub use budget::RENDER_BYTE_BUDGET;

use minijinja::machinery::{WhitespaceConfig, get_compiled_template, make_string_output, parse};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;
use tessera_engine::gguf::Metadata;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may know others, e.g. `tool`).
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Where a template came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// The file's `tokenizer.chat_template`.
    Gguf,
    /// Given by the caller ([`ChatTemplate::new`]).
    Custom,
    /// Built-in Gemma format (the file had no template, architecture `gemma*`).
    BuiltinGemma,
    /// Built-in ChatML (the file had no template).
    BuiltinChatMl,
}

/// A chat template failed to compile or to render.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The template's syntax is not understood.
    #[error("chat template does not compile: {0}")]
    Compile(String),
    /// Rendering failed (including `raise_exception` called by the template).
    #[error("chat template failed: {0}")]
    Render(String),
    /// The template wrote or built more than [`RENDER_BYTE_BUDGET`] bytes.
    #[error("chat template built more than {RENDER_BYTE_BUDGET} bytes (output and values)")]
    TooLarge,
}

/// Built-in ChatML: `<|im_start|>role\ncontent<|im_end|>\n` per message.
pub const CHATML_TEMPLATE: &str = r#"
{%- for m in messages -%}
  {{- '<|im_start|>' ~ m.role ~ '\n' ~ m.content ~ '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"#;

/// Built-in Gemma turn format: the assistant is `model`, a leading system message is put in
/// front of the first user turn, turns must alternate user/model.
pub const GEMMA_TEMPLATE: &str = r#"
{{- bos_token -}}
{%- if messages and messages[0].role == 'system' -%}
  {%- set prefix = (messages[0].content | trim) ~ '\n\n' -%}
  {%- set turns = messages[1:] -%}
{%- else -%}
  {%- set prefix = '' -%}
  {%- set turns = messages -%}
{%- endif -%}
{%- for m in turns -%}
  {%- if (m.role == 'user') != (loop.index0 is even) -%}
    {{- raise_exception('Gemma conversations must alternate user/assistant/user/...') -}}
  {%- endif -%}
  {{- '<start_of_turn>' ~ ('model' if m.role == 'assistant' else m.role) ~ '\n' -}}
  {{- (prefix if loop.first else '') ~ (m.content | trim) ~ '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<start_of_turn>model\n' -}}
{%- endif -%}
"#;

/// A compiled chat template with the model's BOS and EOS texts.
#[derive(Debug)]
pub struct ChatTemplate {
    source: String,
    origin: TemplateOrigin,
    env: Environment<'static>,
    compile_error: Option<String>,
    /// A constant expression would fold to more than [`fold::FOLD_LIMIT`] bytes.
    folds_too_large: bool,
    bos_text: String,
    eos_text: String,
    strip_bos: bool,
}

const NAME: &str = "chat";

/// Instructions one rendering may execute (minijinja "fuel"): a template from a model file may
/// loop forever or nest loops over large ranges; real chat templates use a few hundred
/// instructions per message, so this allows conversations of many thousand messages.
pub const RENDER_FUEL: u64 = 10_000_000;

/// Deepest nesting of macro calls, loops and conditions a template may reach while rendering
/// (real chat templates stay below 10; minijinja's own ceiling is 500).
pub const RECURSION_LIMIT: usize = 100;

impl ChatTemplate {
    /// The template of a GGUF file (`tokenizer.chat_template`), or the built-in fallback when
    /// it has none. `bos_text`/`eos_text` are the texts of the BOS and EOS tokens (`<bos>`,
    /// `<|im_end|>` …), passed to the template as `bos_token` and `eos_token`.
    ///
    /// A template that does not compile is reported by [`render`](Self::render). A leading BOS
    /// is stripped from renderings when the file says the tokenizer adds one
    /// (`tokenizer.ggml.add_bos_token`; when absent, SentencePiece-style `llama` tokenizers do).
    pub fn from_gguf(meta: &Metadata, bos_text: &str, eos_text: &str) -> ChatTemplate {
        let mut t = if let Ok(Some(src)) = meta.opt_str("tokenizer.chat_template") {
            Self::build(src.to_string(), TemplateOrigin::Gguf, bos_text, eos_text)
        } else {
            let arch = meta.opt_str("general.architecture").ok().flatten();
            let (src, origin) = if arch.is_some_and(|a| a.starts_with("gemma")) {
                (GEMMA_TEMPLATE, TemplateOrigin::BuiltinGemma)
            } else {
                (CHATML_TEMPLATE, TemplateOrigin::BuiltinChatMl)
            };
            Self::build(src.to_string(), origin, bos_text, eos_text)
        };
        t.strip_bos = match meta.opt_bool("tokenizer.ggml.add_bos_token") {
            Ok(Some(b)) => b,
            _ => meta.opt_str("tokenizer.ggml.model").ok().flatten() == Some("llama"),
        };
        t
    }

    /// A template given as source text (e.g. from `--chat-template-file`). It keeps a leading
    /// BOS the template writes unless [`set_strip_bos`](Self::set_strip_bos) says otherwise.
    pub fn new(source: &str, bos_text: &str, eos_text: &str) -> Result<ChatTemplate, ChatError> {
        let t = Self::build(
            source.to_string(),
            TemplateOrigin::Custom,
            bos_text,
            eos_text,
        );
        match &t.compile_error {
            _ if t.folds_too_large => Err(ChatError::TooLarge),
            Some(e) => Err(ChatError::Compile(e.clone())),
            None => Ok(t),
        }
    }

    fn build(source: String, origin: TemplateOrigin, bos: &str, eos: &str) -> ChatTemplate {
        let mut env = Environment::new();
        // Jinja2 as transformers sets it up.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Hostile templates: bound the work and the recursion of one rendering.
        env.set_fuel(Some(RENDER_FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        guard::install(&mut env);
        // minijinja folds constant expressions while compiling: refuse the huge ones first.
        let whitespace = WhitespaceConfig {
            keep_trailing_newline: false,
            lstrip_blocks: true,
            trim_blocks: true,
        };
        // A unit struct without minijinja's `custom_syntax` feature, a struct with it.
        #[allow(clippy::default_constructed_unit_structs)]
        let folds_too_large = parse(&source, NAME, SyntaxConfig::default(), whitespace)
            .is_ok_and(|ast| fold::check(&ast).is_err());
        let compile_error = if folds_too_large {
            None
        } else {
            env.add_template_owned(NAME, source.clone())
                .err()
                .map(|e| error_text(&e))
        };
        ChatTemplate {
            source,
            origin,
            env,
            compile_error,
            folds_too_large,
            bos_text: bos.to_string(),
            eos_text: eos.to_string(),
            strip_bos: false,
        }
    }

    /// Whether [`render`](Self::render) drops a leading BOS text (set it when the tokenizer
    /// adds BOS by itself).
    pub fn set_strip_bos(&mut self, strip: bool) {
        self.strip_bos = strip;
    }

    /// Whether [`render`](Self::render) drops a leading BOS text.
    pub fn strips_bos(&self) -> bool {
        self.strip_bos
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from.
    pub fn origin(&self) -> TemplateOrigin {
        self.origin
    }

    /// Render a conversation, ending with the assistant's turn opener when
    /// `add_generation_prompt`. A BOS text the template writes at the start is removed when
    /// the tokenizer adds BOS itself ([`strips_bos`](Self::strips_bos)).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let mut s = self.render_raw(messages, add_generation_prompt)?;
        if self.strip_bos && !self.bos_text.is_empty() && s.starts_with(&self.bos_text) {
            s.drain(..self.bos_text.len());
        }
        Ok(s)
    }

    /// Render exactly what the template writes.
    pub fn render_raw(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        if self.folds_too_large {
            return Err(ChatError::TooLarge);
        }
        if let Some(e) = &self.compile_error {
            return Err(ChatError::Compile(e.clone()));
        }
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| ChatError::Compile(error_text(&e)))?;
        let compiled = get_compiled_template(&tmpl);
        let instructions = guard::guard_instructions(&compiled.instructions);
        let blocks = guard::guard_blocks(&compiled.blocks);
        let root = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_text,
            eos_token => &self.eos_text,
        };
        let mut text = String::new();
        let rendering = budget::Rendering::start(RENDER_BYTE_BUDGET);
        let result = minijinja::machinery::Vm::new(&self.env).eval(
            &instructions,
            root,
            &blocks,
            &mut make_string_output(&mut text),
            compiled.initial_auto_escape,
        );
        match result {
            Ok(_) => Ok(text),
            Err(_) if rendering.exceeded() => Err(ChatError::TooLarge),
            Err(e) => Err(ChatError::Render(error_text(&e))),
        }
    }
}

/// The error with its chain of causes (minijinja puts the interesting part in the source).
fn error_text(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `raise_exception(msg)`: templates call it to refuse a conversation.
fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// `strftime_now(fmt)`: the current UTC date and time; knows `%Y %m %d %e %H %M %S %b %B %a %A
/// %y %j %%` (enough for the date lines templates print).
fn strftime_now(fmt: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    strftime(&fmt, secs)
}

fn strftime(fmt: &str, unix_secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let before: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = before[m as usize - 1] + d + u32::from(leap && m > 2);
    let month = MONTHS[m as usize - 1];
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:>2}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('b') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('a') => out.push_str(&weekday[..3]),
            Some('A') => out.push_str(weekday),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Proleptic Gregorian (year, month 1-12, day 1-31) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_engine::gguf::MetaValue;

    /// Metadata of a model whose tokenizer adds BOS.
    fn meta(arch: &str, template: Option<&str>) -> Metadata {
        let mut m = Metadata::new();
        m.insert("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(true));
        m.insert(
            "general.architecture".into(),
            MetaValue::String(arch.into()),
        );
        if let Some(t) = template {
            m.insert(
                "tokenizer.chat_template".into(),
                MetaValue::String(t.into()),
            );
        }
        m
    }

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("Hi!"),
            ChatMessage::assistant("Hello."),
            ChatMessage::user("Name a colour."),
        ]
    }

    #[test]
    fn chatml_fallback() {
        let t = ChatTemplate::from_gguf(&meta("llama", None), "<s>", "</s>");
        assert_eq!(t.origin(), TemplateOrigin::BuiltinChatMl);
        assert_eq!(
            t.render(&conversation(), true).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n\
             <|im_start|>user\nHi!<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n\
             <|im_start|>user\nName a colour.<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        let no_prompt = t.render(&[ChatMessage::user("x")], false).unwrap();
        assert_eq!(no_prompt, "<|im_start|>user\nx<|im_end|>\n");
    }

    #[test]
    fn bos_is_only_stripped_when_the_tokenizer_adds_it() {
        // SmolLM2-like: BOS text "<|im_start|>", no BOS added by the tokenizer.
        let mut m = Metadata::new();
        m.insert(
            "tokenizer.ggml.model".into(),
            MetaValue::String("gpt2".into()),
        );
        m.insert(
            "tokenizer.ggml.add_bos_token".into(),
            MetaValue::Bool(false),
        );
        let t = ChatTemplate::from_gguf(&m, "<|im_start|>", "<|im_end|>");
        assert!(!t.strips_bos());
        let out = t.render(&[ChatMessage::user("x")], true).unwrap();
        assert!(out.starts_with("<|im_start|>user"), "{out}");
        // Without the key, SentencePiece tokenizers add BOS, BPE ones do not.
        let mut m = Metadata::new();
        m.insert(
            "tokenizer.ggml.model".into(),
            MetaValue::String("llama".into()),
        );
        assert!(ChatTemplate::from_gguf(&m, "<s>", "</s>").strips_bos());
        assert!(!ChatTemplate::from_gguf(&Metadata::new(), "<s>", "</s>").strips_bos());
    }

    #[test]
    fn gemma_fallback_folds_the_system_prompt() {
        let t = ChatTemplate::from_gguf(&meta("gemma3", None), "<bos>", "<eos>");
        assert_eq!(t.origin(), TemplateOrigin::BuiltinGemma);
        let want = "<start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n\
                    <start_of_turn>model\nHello.<end_of_turn>\n\
                    <start_of_turn>user\nName a colour.<end_of_turn>\n\
                    <start_of_turn>model\n";
        assert_eq!(t.render(&conversation(), true).unwrap(), want);
        assert_eq!(
            t.render_raw(&conversation(), true).unwrap(),
            format!("<bos>{want}")
        );
        // Without a system message, and content is trimmed.
        assert_eq!(
            t.render(&[ChatMessage::user("  Hi \n")], false).unwrap(),
            "<start_of_turn>user\nHi<end_of_turn>\n"
        );
        // Two user turns in a row are refused.
        let e = t
            .render(&[ChatMessage::user("a"), ChatMessage::user("b")], true)
            .unwrap_err();
        assert!(e.to_string().contains("alternate"), "{e}");
    }

    #[test]
    fn template_features() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}\
                   {{ raise_exception('no system') }}{% endif %}\
                   [{{ m['role'].upper() }}:{{ m.content.strip() }}]\
                   {%- if m.content.strip().startswith('Hi') %}*{% endif %}{% endfor %}\
                   {% if add_generation_prompt %}{{ eos_token }}{% endif %}";
        let t = ChatTemplate::from_gguf(&meta("llama", Some(src)), "<s>", "</s>");
        assert_eq!(t.origin(), TemplateOrigin::Gguf);
        let msgs = [ChatMessage::user(" Hi "), ChatMessage::assistant("yo")];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "[USER:Hi]*[ASSISTANT:yo]</s>"
        );
        assert_eq!(
            t.render_raw(&msgs, false).unwrap(),
            "<s>[USER:Hi]*[ASSISTANT:yo]"
        );
        let e = t.render(&conversation(), true).unwrap_err();
        assert!(matches!(e, ChatError::Render(_)));
        assert!(e.to_string().contains("no system"), "{e}");
    }

    #[test]
    fn trim_and_lstrip_blocks_like_transformers() {
        let src = "{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user("a"), ChatMessage::user("b")], false)
                .unwrap(),
            "a\nb\n"
        );
    }

    #[test]
    fn bad_templates_are_reported() {
        assert!(matches!(
            ChatTemplate::new("{% for %}", "", ""),
            Err(ChatError::Compile(_))
        ));
        let t = ChatTemplate::from_gguf(&meta("llama", Some("{{ x")), "", "");
        assert!(matches!(t.render(&[], true), Err(ChatError::Compile(_))));
    }

    #[test]
    fn strftime_formats() {
        // 2024-02-29 13:05:09 UTC, a Thursday, day 60.
        let t = 1_709_211_909;
        assert_eq!(
            strftime("%d %b %Y, %A %H:%M:%S %j %% %B %e %y", t),
            "29 Feb 2024, Thursday 13:05:09 060 % February 29 24"
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "").unwrap();
        assert!(t.render(&[], false).unwrap().starts_with("20"));
    }

    #[test]
    fn endless_loops_run_out_of_fuel() {
        // 10^10 iterations: refused once the fuel is spent, quickly.
        let src =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let start = std::time::Instant::now();
        let err = t.render(&conversation(), true).unwrap_err();
        assert!(matches!(err, ChatError::Render(_)), "{err}");
        assert!(err.to_string().contains("fuel"), "{err}");
        assert!(start.elapsed().as_secs() < 30);
    }

    #[test]
    fn unbounded_recursion_is_refused() {
        let src = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let err = t.render(&conversation(), true).unwrap_err();
        assert!(err.to_string().contains("recursion"), "{err}");
    }

    /// Renders `src` on a short conversation.
    fn render_src(src: &str) -> Result<String, ChatError> {
        ChatTemplate::new(src, "<s>", "</s>")?.render(&conversation(), true)
    }

    /// `src` is refused for its size, quickly and without aborting.
    fn assert_too_large(src: &str) {
        let start = std::time::Instant::now();
        let err = render_src(src).unwrap_err();
        assert!(matches!(err, ChatError::TooLarge), "{src}: {err}");
        assert!(err.to_string().contains("more than"), "{err}");
        assert!(start.elapsed().as_secs() < 30, "{src}");
    }

    #[test]
    fn doubling_strings_is_refused() {
        for op in ["~", "+"] {
            assert_too_large(&format!(
                "{{% set ns = namespace(s='x') %}}{{% for i in range(64) %}}\
                 {{% set ns.s = ns.s {op} ns.s %}}{{% endfor %}}{{{{ ns.s|length }}}}"
            ));
        }
        // Also through a capture, without any operator.
        assert_too_large(
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}\
             {% set t %}{{ ns.s }}{{ ns.s }}{% endset %}{% set ns.s = t %}{% endfor %}",
        );
    }

    #[test]
    fn repeating_strings_in_a_loop_is_refused() {
        assert_too_large(
            "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}\
             {% set ns.l = ns.l + ['x' * 100000] %}{% endfor %}{{ ns.l|length }}",
        );
        assert_too_large("{{ 'x' * 100000000000 }}");
        assert_too_large("{{ 100000000000 * 'x' }}");
        // The same with a variable, which is not folded while compiling.
        assert_too_large("{% set n = 100000000000 %}{{ 'x' * n }}");
        assert_too_large("{% set n = 100000000000 %}{{ n * 'x' }}");
        assert_too_large("{% set n = 100000000000 %}{{ ([1] * n)|join }}");
        // Raw text in nested loops, into a capture.
        assert_too_large(&format!(
            "{{% set t %}}{{% for i in range(3000) %}}{{% for j in range(3000) %}}{}\
             {{% endfor %}}{{% endfor %}}{{% endset %}}",
            "y".repeat(1000)
        ));
    }

    #[test]
    fn repeating_and_doubling_lists_is_refused() {
        assert_too_large("{{ ([1] * 100000000000)|join }}");
        assert_too_large("{{ ([1] * 100000000000)|list|length }}");
        assert_too_large(
            "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}\
             {% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}",
        );
        assert_too_large(
            "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}\
             {% set ns.l = ns.l|chain(ns.l) %}{% endfor %}{{ ns.l|list|length }}",
        );
        assert_too_large("{{ [1]|batch(100000000000, 0)|list }}");
        assert_too_large("{{ [1]|slice(100000000000)|list }}");
    }

    #[test]
    fn growing_filters_and_methods_are_refused() {
        // replace doubling, as a filter and as a method.
        assert_too_large(
            "{% set ns = namespace(s='xx') %}{% for i in range(64) %}\
             {% set ns.s = ns.s|replace('x', 'xx') %}{% endfor %}",
        );
        assert_too_large(
            "{% set ns = namespace(s='xx') %}{% for i in range(64) %}\
             {% set ns.s = ns.s.replace('x', 'xx') %}{% endfor %}",
        );
        assert_too_large("{{ ('x' * 1000)|replace('', 'y' * 1000000) }}");
        // join of a big string many times, filter and method.
        assert_too_large("{{ (['x' * 1000000] * 100000)|join }}");
        assert_too_large("{{ ''.join(['x' * 1000000] * 100000) }}");
        // Widths.
        assert_too_large("{{ 'a\nb'|indent(100000000000) }}");
        assert_too_large("{{ [1, [2]]|tojson(indent=100000000000) }}");
        assert_too_large("{{ '%100000000000s'|format('x') }}");
        assert_too_large("{{ '{:>100000000000}'.format('x') }}");
        // Printing a list of many references to a big string, nested in filters.
        assert_too_large("{{ ((['x' * 1000000] * 1000)|string|upper)|length }}");
        assert_too_large("{{ (['x' * 1000000] * 1000)|pprint|length }}");
        assert_too_large("{{ (['x' * 1000000] * 1000)|tojson|length }}");
        // Slices of a big string kept in a list.
        assert_too_large(
            "{% set s = 'x' * 10000000 %}{% set ns = namespace(l=[]) %}\
             {% for i in range(100) %}{% set ns.l = ns.l + [s[i:]] %}{% endfor %}",
        );
    }

    /// What minijinja renders for `src` without the guards, configured as [`ChatTemplate`].
    fn render_unguarded(src: &str) -> Result<String, Error> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.render_str(
            src,
            context! {
                messages => conversation(),
                add_generation_prompt => true,
                bos_token => "<s>",
                eos_token => "</s>",
            },
        )
    }

    #[test]
    fn real_templates_render_as_without_the_guards() {
        for src in [
            include_str!("chat/testdata/Qwen-Qwen2.5-7B-Instruct.jinja"),
            include_str!("chat/testdata/microsoft-Phi-3.5-mini-instruct.jinja"),
            include_str!("chat/testdata/HuggingFaceTB-SmolLM3-3B.jinja"),
            CHATML_TEMPLATE,
            GEMMA_TEMPLATE,
        ] {
            let ours = render_src(src).unwrap();
            assert!(ours.contains("Name a colour."), "{ours}");
            assert_eq!(ours, render_unguarded(src).unwrap());
        }
    }

    #[test]
    fn huge_constant_expressions_are_refused_before_compiling() {
        for src in [
            "{{ ('x' * 99999999) ~ ('x' * 99999999) }}",
            "{{ ([1] * 1000000000000000) ~ '' }}",
            "{{ 'x' * (1000 * 1000 * 1000) }}",
            "{% if false %}{{ ['y'] * 10 ** 12 }}{% endif %}",
            "{% macro m(a=('x' * 10 ** 8)) %}{% endmacro %}",
        ] {
            let start = std::time::Instant::now();
            let e = ChatTemplate::new(src, "", "").unwrap_err();
            assert!(matches!(e, ChatError::TooLarge), "{src}: {e}");
            let t = ChatTemplate::from_gguf(&meta("llama", Some(src)), "", "");
            assert!(matches!(t.render(&[], true), Err(ChatError::TooLarge)));
            assert!(start.elapsed().as_secs() < 5, "{src}");
        }
        // Small constants still fold.
        assert_eq!(render_src("{{ '=' * 3 ~ 'a' + 'b' }}").unwrap(), "===ab");
    }

    #[test]
    fn guarded_operators_keep_their_meaning() {
        for src in [
            "{{ 1 + 2 }} {{ 1.5 + 1 }} {{ 'a' + 'b' }} {{ [1] + [2] }} {{ 'a' ~ 1 ~ none }}",
            "{{ 'ab' * 2 }} {{ 2 * [0] }} {{ 3 * 2 }} {{ 'hello'[1:3] }} {{ [1, 2, 3][::-1] }}",
            "{{ ['a', 'b']|join(', ') }} {{ 'aXb'|replace('X', '-') }} {{ 'a\nb'|indent(2) }}",
            "{{ {'k': [1]}|tojson }} {{ {'k': [1]}|tojson(indent=2) }} {{ '%s=%d'|format('x', 3) }}",
            "{{ '{}!'.format('y') }} {{ '-'.join(['p', 'q']) }} {{ 'a b'.split() }}",
            "{{ [3, 1]|sort|list }} {{ [1, 2, 3]|batch(2, 0)|list }} {{ [1, 2, 3]|slice(2)|list }}",
            "{{ [1, 2]|sum }} {{ [1]|chain([2])|list }} {{ 'ab'|list }} {{ 'a<b'|e }} {{ [1]|pprint }}",
            "{% set c %}raw {{ 1 }}{% endset %} {{ c|upper }} {{ messages|map(attribute='role')|join }}",
            "{{ messages[1:]|length }} {{ (messages|last).content.replace('a', 'A') }}",
            "{% for m in messages %}{{ m.role[0]|upper ~ m.content[:3] }}|{% endfor %}",
        ] {
            assert_eq!(
                render_src(src).unwrap(),
                render_unguarded(src).unwrap(),
                "{src}"
            );
        }
        // Errors of the operators are still errors, not size refusals.
        let e = render_src("{{ 1 + 'a' }}").unwrap_err();
        assert!(matches!(e, ChatError::Render(_)), "{e}");
        let e = render_src("{{ 'a' * 'b' }}").unwrap_err();
        assert!(matches!(e, ChatError::Render(_)), "{e}");
    }

    #[test]
    fn loops_macros_and_jumps_survive_the_rewrite() {
        let src = "{% macro m(x) %}<{{ x }}>{% if x > 1 %}{{ m(x - 1) }}{% endif %}{% endmacro %}\
                   {% for i in range(4) if i is odd %}{{ i }}{% if loop.last %}.{% endif %}\
                   {% else %}none{% endfor %}{{ m(3) }}{{ 'y' if false else 'n' }}\
                   {{ true and 'a' }}{{ false or 'b' }}{% for x in [[1, 2], [3]] recursive %}\
                   [{% if x is sequence %}{{ loop(x) }}{% else %}{{ x }}{% endif %}]{% endfor %}";
        assert_eq!(render_src(src).unwrap(), "13.<3><2><1>nab[[1][2]][[3]]");
    }

    /// Real models and llama.cpp's fixtures. A missing file fails the test unless
    /// `TESSERA_ALLOW_MISSING_MODELS=1`.
    mod real {
        use super::super::*;
        use super::conversation;
        use std::path::{Path, PathBuf};
        use tessera_engine::GgufFile;
        use tessera_model_files::{model_file, require};

        fn fixtures_dir() -> PathBuf {
            std::env::var_os("TESSERA_FIXTURES")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
                })
        }

        /// The model's template with its BOS/EOS texts, and llama.cpp's chat prompt.
        fn load(file: &str, fixture: &str) -> Option<(ChatTemplate, String)> {
            let path = model_file(file)?;
            let fx = require(fixtures_dir().join(format!("greedy/{fixture}--chat.json")))?;
            let f = GgufFile::open(path).unwrap();
            let meta = f.metadata();
            let tokens = meta.str_array("tokenizer.ggml.tokens").unwrap();
            let text = |k: &str| tokens[meta.u32(k).unwrap() as usize].clone();
            let t = ChatTemplate::from_gguf(
                meta,
                &text("tokenizer.ggml.bos_token_id"),
                &text("tokenizer.ggml.eos_token_id"),
            );
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(fx).unwrap()).unwrap();
            Some((t, v["prompt"].as_str().unwrap().to_string()))
        }

        /// The text between `open` and `close` in `s`.
        fn between<'a>(s: &'a str, open: &str, close: &str) -> &'a str {
            let start = s.find(open).unwrap() + open.len();
            let len = s[start..].find(close).unwrap();
            &s[start..start + len]
        }

        #[test]
        fn smollm2() {
            let Some((t, prompt)) = load(
                "smollm2-135m-instruct-q4_1.gguf",
                "smollm2-135m-instruct-q4_1",
            ) else {
                return;
            };
            assert_eq!(t.origin(), TemplateOrigin::Gguf);
            assert_eq!(
                t.render(&conversation(), true).unwrap(),
                "<|im_start|>system\nBe brief.<|im_end|>\n\
                 <|im_start|>user\nHi!<|im_end|>\n\
                 <|im_start|>assistant\nHello.<|im_end|>\n\
                 <|im_start|>user\nName a colour.<|im_end|>\n\
                 <|im_start|>assistant\n"
            );
            // llama.cpp's rendering of one user message (the template adds its default
            // system prompt); SmolLM2 adds no BOS, and the template writes none.
            let user = between(&prompt, "<|im_start|>user\n", "<|im_end|>");
            let ours = t.render(&[ChatMessage::user(user)], true).unwrap();
            assert_eq!(ours, prompt);
            assert_eq!(
                t.render_raw(&[ChatMessage::user(user)], true).unwrap(),
                prompt
            );
        }

        #[test]
        fn gemma3() {
            let Some((t, prompt)) = load("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m") else {
                return;
            };
            // The file has no template: the built-in Gemma format is used.
            assert_eq!(t.origin(), TemplateOrigin::BuiltinGemma);
            assert_eq!(
                t.render(&conversation(), true).unwrap(),
                "<start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n\
                 <start_of_turn>model\nHello.<end_of_turn>\n\
                 <start_of_turn>user\nName a colour.<end_of_turn>\n\
                 <start_of_turn>model\n"
            );
            // llama.cpp's prompt has no "<bos>" text: its tokenizer adds BOS (id 2) because
            // add_bos_token is true. The template writes "<bos>" like Gemma's own Jinja
            // template; render() drops it, render_raw() keeps it.
            let user = between(&prompt, "<start_of_turn>user\n", "<end_of_turn>");
            let msgs = [ChatMessage::user(user)];
            assert_eq!(t.render(&msgs, true).unwrap(), prompt);
            assert_eq!(t.render_raw(&msgs, true).unwrap(), format!("<bos>{prompt}"));
        }
    }
}
