//! One chat turn from the user's text to the streamed reply, shared by the interactive and the
//! scripted front ends: render the conversation, reuse the cached prefix, evaluate the rest,
//! generate until an end-of-turn token, Ctrl-C, the reply cap or a full context.

use std::sync::atomic::{AtomicBool, Ordering};

use tessera_models::constraint::Constraint;
use tessera_models::{Flow, Session};

use super::commands::Settings;
use super::context::{ContextFull, reply_reserve};
use super::conversation::Conversation;
use super::stats::{KvState, Totals, TurnEnd, TurnStats};
use crate::CliResult;
use tessera_models::context_shift::{common_prefix, reuse_point};

/// A chat: the session (model + KV cache), the conversation and the settings.
pub struct Chat {
    /// The model with its KV cache and sampler.
    pub session: Session,
    /// The messages so far.
    pub conv: Conversation,
    /// Sampling settings (the sampler is rebuilt from them each turn) and the reply cap.
    pub settings: Settings,
    /// What to do when the context is full.
    pub on_full: ContextFull,
    /// The last turn's numbers.
    pub last: Option<TurnStats>,
    /// Totals since start.
    pub totals: Totals,
    /// The grammar every reply must match (`--json-schema` …), compiled once; each turn
    /// starts from a copy of it.
    pub reply_constraint: Option<Constraint>,
}

/// Notes a turn has for the user besides the reply (printed on stderr by the front ends).
pub type Notice<'a> = &'a mut dyn FnMut(&str);

impl Chat {
    /// A chat over `session`.
    pub fn new(
        session: Session,
        conv: Conversation,
        settings: Settings,
        on_full: ContextFull,
    ) -> Self {
        Chat {
            session,
            conv,
            settings,
            on_full,
            last: None,
            totals: Totals::default(),
            reply_constraint: None,
        }
    }

    /// The KV cache's state now.
    pub fn kv_state(&self) -> KvState {
        KvState {
            used_bytes: self.session.kv_used_bytes(),
            total_bytes: self.session.kv_bytes(),
            n_past: self.session.n_past(),
            n_ctx: self.session.n_ctx(),
        }
    }

    /// Forget the turns (the system prompt stays) and empty the KV cache.
    pub fn reset(&mut self) {
        self.conv.clear_turns();
        self.session.reset();
        self.last = None;
    }

    /// Answer `user`: `on_text` gets the reply piece by piece, `notice` gets messages about the
    /// context, `stop` is polled after every token (Ctrl-C). The user message and the reply (as
    /// far as it got) are added to the conversation. An error leaves the conversation as it
    /// was before the call.
    pub fn reply(
        &mut self,
        user: &str,
        on_text: &mut dyn FnMut(&str),
        notice: Notice<'_>,
        stop: &AtomicBool,
    ) -> CliResult<(TurnStats, TurnEnd)> {
        let before = self.conv.clone();
        self.conv.push_user(user);
        let result = self.reply_inner(on_text, notice, stop);
        match result {
            Ok((stats, end, reply)) => {
                self.conv.push_assistant(&reply);
                self.last = Some(stats);
                self.totals.add(&stats);
                Ok((stats, end))
            }
            Err(e) => {
                self.conv = before;
                Err(e)
            }
        }
    }

    fn reply_inner(
        &mut self,
        on_text: &mut dyn FnMut(&str),
        notice: Notice<'_>,
        stop: &AtomicBool,
    ) -> CliResult<(TurnStats, TurnEnd, String)> {
        let n_ctx = self.session.n_ctx();
        let reserve = reply_reserve(n_ctx, self.settings.n_predict);
        let policies = self.session.context().kv_cache().policies().to_vec();
        let per_token = self.session.tokenizer().max_token_bytes();
        let mut stats = TurnStats {
            cached_before: self.session.n_past(),
            ..Default::default()
        };
        let mut reply = String::new();
        let mut first_pass = true;
        // A reply that goes on after old turns were dropped continues the same constraint.
        self.session.set_constraint(self.reply_constraint.clone());
        loop {
            // Render and fit the conversation (plus the reply so far, when going on after
            // dropping old turns).
            let prompt = loop {
                let mut text = self
                    .session
                    .model()
                    .chat_template()
                    .render(self.conv.messages(), true)?;
                text.push_str(&reply);
                // A text longer than the context could hold at the vocabulary's longest token
                // cannot fit: it is not tokenized (a 100 MB message took a minute to refuse).
                let oversized = text.len() > n_ctx.saturating_mul(per_token);
                let tokens = if oversized {
                    Vec::new()
                } else {
                    self.session.tokenize(&text, true, true)
                };
                let fits = !oversized && tokens.len() < n_ctx;
                if !oversized
                    && (tokens.len() + reserve <= n_ctx
                        || (fits && self.on_full == ContextFull::Stop))
                {
                    break tokens;
                }
                let dropped = if self.on_full == ContextFull::DropOldest {
                    self.conv.drop_oldest_turn()
                } else {
                    0
                };
                if dropped > 0 {
                    stats.dropped_messages += dropped;
                    continue;
                }
                if fits {
                    break tokens;
                }
                let what = if reply.is_empty() {
                    "the conversation"
                } else {
                    "the conversation with the reply so far"
                };
                let hint = match self.on_full {
                    ContextFull::Stop => {
                        "use /reset to start over, or restart with a larger -c or \
                         --context-full drop-oldest"
                    }
                    ContextFull::DropOldest => {
                        "nothing older is left to drop; shorten the message or restart with a \
                         larger -c"
                    }
                };
                if reply.is_empty() {
                    let needs = if oversized {
                        format!(
                            "has {} bytes, more than the context of {n_ctx} tokens can hold at \
                             {per_token} bytes per token at most",
                            text.len()
                        )
                    } else {
                        format!(
                            "needs {} tokens but the context holds {n_ctx}",
                            tokens.len()
                        )
                    };
                    return Err(format!("context full: {what} {needs}; {hint}").into());
                }
                notice(&format!("context full: {hint}"));
                return Ok((stats, TurnEnd::ContextFull, reply));
            };
            if first_pass {
                stats.prompt_tokens = prompt.len();
            }
            // Reuse the cached prefix.
            let keep = reuse_point(self.session.tokens(), &prompt, &policies);
            let common = common_prefix(self.session.tokens(), &prompt);
            if keep == 0 && common > 1 {
                stats.full_reeval = true;
            }
            if first_pass {
                stats.reused = keep;
            }
            self.session.truncate(keep);
            self.session.set_sampler(self.settings.sampling)?;
            // The penalties look at the recent tokens, the kept ones included.
            let history = match self.settings.sampling.penalty_last_n {
                n if n < 0 => keep,
                n => (n as usize).min(keep),
            };
            for i in keep - history..keep {
                let t = self.session.tokens()[i];
                self.session.accept(t);
            }
            let new = &prompt[keep..];
            stats.evaluated += new.len();
            let produced_before = stats.generated;
            let mut budget = n_ctx - keep - new.len();
            if let Some(cap) = self.settings.n_predict {
                budget = budget.min(cap.saturating_sub(produced_before));
            }
            let g = self.session.generate(new, budget, |_, text| {
                reply.push_str(text);
                on_text(text);
                if stop.load(Ordering::Relaxed) {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            })?;
            stats.prompt_seconds += g.prompt_seconds;
            stats.generated += g.generated_tokens;
            stats.generation_seconds += g.generation_seconds;
            first_pass = false;
            if g.hit_eog {
                return Ok((stats, TurnEnd::EndOfTurn, reply));
            }
            if stop.load(Ordering::Relaxed) {
                return Ok((stats, TurnEnd::Interrupted, reply));
            }
            if self
                .settings
                .n_predict
                .is_some_and(|cap| stats.generated >= cap)
            {
                return Ok((stats, TurnEnd::Limit, reply));
            }
            if self.session.n_past() < n_ctx && g.generated_tokens < budget {
                // Ended for no reason we know of: treat as the end of the turn.
                return Ok((stats, TurnEnd::EndOfTurn, reply));
            }
            match self.on_full {
                ContextFull::Stop => {
                    notice(
                        "context full: the reply was cut; use /reset to start over, or restart \
                         with a larger -c or --context-full drop-oldest",
                    );
                    return Ok((stats, TurnEnd::ContextFull, reply));
                }
                ContextFull::DropOldest => {
                    let dropped = self.conv.drop_oldest_turn();
                    if dropped == 0 {
                        notice(
                            "context full: the reply was cut (no older turns left to drop; \
                             restart with a larger -c)",
                        );
                        return Ok((stats, TurnEnd::ContextFull, reply));
                    }
                    stats.dropped_messages += dropped;
                    notice(&format!(
                        "context full: dropped the {dropped} oldest messages, going on"
                    ));
                }
            }
        }
    }
}
