//! Every call into the engine lives here, behind a narrow interface: [`spawn`] starts the engine
//! thread, [`EngineHandle::submit`] queues a [`Job`] (bounded), and the job's [`Event`]s come
//! back over its channel.
//!
//! The engine holds ONE [`Context`] of `--parallel` sequences (each a slot of up to
//! `n_ctx_slot` tokens) and one thread pool. Each iteration admits queued jobs into free
//! slots, then builds one [`Batch`]: the pending token of every generating slot first (so
//! streams never stall), then prompt chunks of slots still reading their prompt, oldest job
//! first, up to `n_batch` tokens in all (a long prompt is split over iterations). One
//! [`Context::decode`] evaluates it, and each slot samples from its own row of logits, which
//! is bit-identical to what the sequence gets alone: a greedy answer does not depend on what
//! else runs.
//!
//! KV cells: the slots share one pool (`kv_cells`; sliding-window layers keep a ring per
//! slot). A batch that needs more cells
//! than are free is made to fit (`Engine::fit_plan`): idle slots' cached prompts are
//! forgotten, least recently used first; then prompt chunks of the newest jobs wait; then the
//! newest job gives its cells up (preempted) and evaluates its tokens again when there is
//! room, which changes none of its tokens (a sequence's logits do not depend on its cells).
//!
//! Prefix reuse: a job goes to the free slot whose cached tokens share the longest prefix with
//! its prompt (ties and no match: the least recently used); that slot keeps the common prefix
//! ([`Context::seq_truncate`]) and evaluates only the rest (always at least the last prompt
//! token, for its logits). When a busy slot holds a longer matching prefix (a system prompt
//! shared by concurrent requests), it is forked into the chosen slot with
//! [`Context::seq_copy`] instead of being evaluated again (in a pool the cells are shared, not
//! copied). Sliding-window rings cannot be rolled back past what they hold: such a prefix is
//! evaluated again.
//!
//! A job may carry a grammar [`Constraint`] (compiled by the HTTP side): its slot samples
//! among the tokens the constraint allows and reports each one to it, so end-of-generation
//! comes only where the grammar can end; `max_tokens` still ends it ("length") when the
//! grammar cannot be finished in time.
//!
//! A failing or panicking batch is evaluated again one slot at a time, so an error reaches its
//! own job only (that slot's cache is dropped); a job whose receiver is gone (the client
//! disconnected) frees its slot at the next iteration.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tessera_models::constraint::Constraint;
use tessera_models::context_shift::reuse_point;
use tessera_models::kv_cache::KvPolicy;
use tessera_models::sampler::{Sampler, SamplerParams};
use tessera_models::{Batch, Context, ContextParams, Device, Model};
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;
use crate::text::{StopMatcher, Utf8Stream};

/// Loads the model on the engine thread (after the server is listening).
pub type ModelLoader = Box<dyn FnOnce() -> Result<Arc<Model>, String> + Send>;

/// How the engine is set up.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Slots (requests served at once): the context's sequences.
    pub parallel: usize,
    /// Context size of each slot, in tokens (what one request may use).
    pub n_ctx_slot: usize,
    /// KV cells the slots share (0: `n_ctx_slot × parallel`, room for every slot at full
    /// length; at least `n_ctx_slot`). When a step finds them taken, idle slots' cached
    /// prompts go first (least recently used), then prompt chunks wait, then the newest
    /// requests give way.
    pub kv_cells: usize,
    /// Most tokens evaluated in one batch (all slots together).
    pub n_batch: usize,
    /// Threads of the context (shared by all slots).
    pub n_threads: usize,
    /// Ring buffers for sliding-window layers.
    pub kv_ring: bool,
    /// Where to compute.
    pub device: Device,
    /// Jobs that may wait for a slot; more are refused ([`SubmitError::Full`]).
    pub queue_capacity: usize,
}

/// One request for the engine.
pub struct Job {
    /// Prompt tokens (at least one, at most a slot's context).
    pub prompt: Vec<u32>,
    /// Sampling settings (seed included).
    pub sampling: SamplerParams,
    /// Tokens to generate at most (`None`: until the slot's context is full).
    pub max_tokens: Option<usize>,
    /// Stop strings: generation ends before the first one, which is not sent.
    pub stop: Vec<String>,
    /// Report each token's log-probability and this many alternatives (`None`: no logprobs).
    pub logprobs: Option<usize>,
    /// The grammar the output must follow, compiled (at the start of its output): each token
    /// is sampled among those it allows, end-of-generation only where it can end.
    pub constraint: Option<Constraint>,
    /// Where the events go; dropping the receiver cancels the job.
    pub events: UnboundedSender<Event>,
}

/// A token's log-probability and the most likely alternatives.
#[derive(Clone, Debug)]
pub struct TokenLogprob {
    /// The token's text (lossy UTF-8).
    pub token: String,
    /// The token's bytes.
    pub bytes: Vec<u8>,
    /// Its log-probability under the model's distribution.
    pub logprob: f32,
    /// The most likely tokens: (text, bytes, log-probability), best first.
    pub top: Vec<(String, Vec<u8>, f32)>,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the slot's context.
    Length,
    /// The answer is a tool call (set by the HTTP side, never by the engine).
    ToolCalls,
}

impl FinishReason {
    /// The OpenAI name.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// Token counts of a finished job.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Of them, reused from the slot's cache.
    pub cached_tokens: usize,
    /// Tokens generated (an end-of-generation token included).
    pub completion_tokens: usize,
}

/// What the engine sends back for a job.
#[derive(Debug)]
pub enum Event {
    /// Text (possibly empty) and, when asked for, the token's log-probability.
    Token {
        /// Text ready to send.
        text: String,
        /// The token's logprobs.
        logprob: Option<TokenLogprob>,
    },
    /// The job is over.
    Done {
        /// Why.
        reason: FinishReason,
        /// Counts.
        usage: Usage,
    },
    /// The job failed or was cancelled; nothing more follows.
    Error(String),
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full.
    Full,
    /// The engine has stopped.
    Stopped,
}

/// The HTTP side's end of the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<Job>,
    metrics: Arc<Metrics>,
    cancel: Arc<AtomicBool>,
}

impl EngineHandle {
    /// Queue `job` for the next free slot.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(SubmitError::Stopped);
        }
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        let r = self.tx.try_send(job);
        if r.is_err() {
            self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        }
        match r {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// Cancel every queued and running job and stop the engine thread.
    pub fn shut_down(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// Start the engine thread: it loads the model with `loader`, calls `on_loaded` with the model
/// (or the error, after which it ends), then serves jobs until [`EngineHandle::shut_down`].
pub fn spawn(
    config: EngineConfig,
    loader: ModelLoader,
    metrics: Arc<Metrics>,
    on_loaded: impl FnOnce(Result<Arc<Model>, String>) + Send + 'static,
) -> std::io::Result<(EngineHandle, JoinHandle<()>)> {
    let (tx, rx) = mpsc::sync_channel(config.queue_capacity.max(1));
    let cancel = Arc::new(AtomicBool::new(false));
    let handle = EngineHandle {
        tx,
        metrics: metrics.clone(),
        cancel: cancel.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("tessera-engine".into())
        .spawn(move || {
            let ctx = match catch_unwind(AssertUnwindSafe(|| open_context(&config, loader))) {
                Ok(Ok(ctx)) => ctx,
                Ok(Err(e)) => return on_loaded(Err(e)),
                Err(_) => return on_loaded(Err("loading the model panicked".into())),
            };
            let total = ctx.kv_free_cells().unwrap_or(ctx.n_ctx() * ctx.n_seq());
            metrics
                .kv_cells_total
                .store(total as i64, Ordering::Relaxed);
            on_loaded(Ok(ctx.model().clone()));
            let mut engine = Engine::new(ctx, rx, metrics, cancel);
            engine.run();
        })?;
    Ok((handle, thread))
}

/// Load the model and make the context: one sequence per slot.
fn open_context(config: &EngineConfig, loader: ModelLoader) -> Result<Context, String> {
    if config.kv_cells > 0 && config.kv_cells < config.n_ctx_slot {
        return Err(format!(
            "a KV pool of {} cells cannot hold one slot's context of {} tokens",
            config.kv_cells, config.n_ctx_slot
        ));
    }
    let model = loader()?;
    let params = ContextParams {
        n_ctx: config.n_ctx_slot,
        n_batch: config.n_batch,
        n_threads: config.n_threads,
        kv_ring: config.kv_ring,
        device: config.device,
        n_seq: config.parallel.max(1),
        kv_pool: config.kv_cells,
    };
    Context::new(model, params).map_err(|e| e.to_string())
}

/// One slot: a sequence of the context, what it holds, and the job it serves.
struct Slot {
    /// Its sequence in the context.
    seq: u32,
    /// Tokens in its sequence's cache, in order.
    tokens: Vec<u32>,
    /// Its job's sampler (it sees the prompt and the generated tokens).
    sampler: Sampler,
    /// Engine clock of its last job's end (least recently used goes first).
    last_used: u64,
    active: Option<Active>,
}

/// A job being served.
struct Active {
    job: Job,
    /// Engine clock when it started (older prompts are read first).
    started: u64,
    /// What it evaluates before sampling: the prompt, or after it gave its cells up for
    /// others (preempted), every token it had evaluated, to be evaluated again.
    input: Vec<u32>,
    /// Index of the next `input` token to evaluate.
    next_prompt: usize,
    /// `input` tokens before this one are evaluated again after a preemption (they do not
    /// count as prompt tokens in the metrics).
    replayed: usize,
    /// The sampled token still to evaluate (generating).
    pending: Option<u32>,
    cached: usize,
    n_generated: usize,
    utf8: Utf8Stream,
    stop: StopMatcher,
    /// A stop string was found (the text after it is dropped).
    hit_stop: bool,
}

/// What one slot puts in a batch.
#[derive(Clone, Copy, Debug)]
enum Part {
    /// Its pending token (its logits wanted).
    Token(u32),
    /// Prompt tokens `from..to` (the last one's logits wanted when it ends the prompt).
    Prompt { from: usize, to: usize },
}

/// The engine thread's state.
struct Engine {
    ctx: Context,
    /// Each KV layer's policy (rings limit how far a cached sequence rolls back).
    policies: Vec<KvPolicy>,
    slots: Vec<Slot>,
    rx: Receiver<Job>,
    metrics: Arc<Metrics>,
    cancel: Arc<AtomicBool>,
    clock: u64,
    /// The batch being built (kept to reuse its memory).
    batch: Batch,
    /// Each slot's part of the batch being built: (slot, part).
    parts: Vec<(usize, Part)>,
}

/// How a sampled token ended a job.
enum StepEnd {
    /// It goes on.
    Running,
    /// It finished.
    Finished(FinishReason),
    /// It failed (the grammar constraint could not go on).
    Failed(String),
}

impl Engine {
    /// An engine over `ctx`, one slot per sequence.
    fn new(
        ctx: Context,
        rx: Receiver<Job>,
        metrics: Arc<Metrics>,
        cancel: Arc<AtomicBool>,
    ) -> Engine {
        let slots = (0..ctx.n_seq())
            .map(|s| Slot {
                seq: s as u32,
                tokens: Vec::new(),
                sampler: Sampler::new(SamplerParams::greedy()),
                last_used: 0,
                active: None,
            })
            .collect();
        Engine {
            policies: ctx.kv_cache().policies().to_vec(),
            ctx,
            slots,
            rx,
            metrics,
            cancel,
            clock: 0,
            batch: Batch::new(),
            parts: Vec::new(),
        }
    }

    /// Serve jobs until cancelled or every handle is gone.
    fn run(&mut self) {
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                self.cancel_all();
                return;
            }
            if !self.admit() {
                self.cancel_all();
                return;
            }
            self.drop_abandoned();
            self.step();
            self.update_gauges();
        }
    }

    /// Move queued jobs into free slots; false when the queue is closed and nothing runs.
    fn admit(&mut self) -> bool {
        while self.slots.iter().any(|s| s.active.is_none()) {
            let busy = self.slots.iter().any(|s| s.active.is_some());
            let job = if busy {
                match self.rx.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => return true,
                    Err(TryRecvError::Disconnected) => return busy,
                }
            } else {
                match self.rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => return true,
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            };
            self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            if job.events.is_closed() {
                continue;
            }
            self.start(job);
        }
        true
    }

    /// The free slot for `prompt` and the prefix it keeps of its own cache: the longest, then
    /// the least recently used.
    fn choose_slot(&self, prompt: &[u32]) -> (usize, usize) {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none())
            .map(|(i, s)| (i, reuse_point(&s.tokens, prompt, &self.policies)))
            .max_by(|a, b| {
                a.1.cmp(&b.1)
                    .then(self.slots[b.0].last_used.cmp(&self.slots[a.0].last_used))
            })
            .expect("admit only starts jobs when a slot is free")
    }

    /// A busy slot holding a longer prefix of `prompt` than `keep`: (slot, its prefix).
    fn copy_source(&self, prompt: &[u32], keep: usize) -> Option<(usize, usize)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_some())
            .map(|(i, s)| (i, reuse_point(&s.tokens, prompt, &self.policies)))
            .filter(|&(_, n)| n > keep)
            .max_by_key(|&(_, n)| n)
    }

    /// Give `job` a free slot holding as much of its prompt as can be had cheaply.
    fn start(&mut self, job: Job) {
        if let Err(e) = job.sampling.validate() {
            let _ = job.events.send(Event::Error(e));
            return;
        }
        let (i, mut keep) = self.choose_slot(&job.prompt);
        let seq = self.slots[i].seq;
        let copied = self.copy_source(&job.prompt, keep).and_then(|(src, n)| {
            let src_seq = self.slots[src].seq;
            self.ctx.seq_copy(src_seq, seq, n).ok()?;
            Some((src, n))
        });
        if let Some((src, n)) = copied {
            let prefix = self.slots[src].tokens[..n].to_vec();
            self.slots[i].tokens = prefix;
            keep = n;
        } else if keep == 0 || self.ctx.seq_truncate(seq, keep).is_err() {
            keep = 0;
            if self.ctx.seq_clear(seq).is_err() {
                let _ = job.events.send(Event::Error(
                    "internal error: a slot failed to reset".into(),
                ));
                return;
            }
        }
        self.clock += 1;
        let slot = &mut self.slots[i];
        slot.tokens.truncate(keep);
        slot.sampler = Sampler::new(job.sampling);
        // The penalties see the prompt, as `tessera run` (and llama.cpp) do.
        for &t in &job.prompt {
            slot.sampler.accept(t);
        }
        self.metrics.busy_slots.fetch_add(1, Ordering::Relaxed);
        let input = job.prompt.clone();
        slot.active = Some(Active {
            stop: StopMatcher::new(job.stop.clone()),
            job,
            started: self.clock,
            input,
            next_prompt: keep,
            replayed: 0,
            pending: None,
            cached: keep,
            n_generated: 0,
            utf8: Utf8Stream::default(),
            hit_stop: false,
        });
    }

    /// Free the slots whose client is gone (their caches stay for prefix reuse).
    fn drop_abandoned(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i]
                .active
                .as_ref()
                .is_some_and(|a| a.job.events.is_closed())
            {
                self.release(i);
            }
        }
    }

    /// Plan the next batch into `self.parts`: every pending token, then prompt chunks (oldest
    /// job first) within `n_batch` tokens.
    fn plan(&mut self) {
        self.parts.clear();
        for (i, s) in self.slots.iter().enumerate() {
            let Some(a) = s.active.as_ref() else { continue };
            if let (Some(t), true) = (a.pending, a.next_prompt == a.input.len()) {
                self.parts.push((i, Part::Token(t)));
            }
        }
        let mut budget = self.ctx.params().n_batch.saturating_sub(self.parts.len());
        let mut reading: Vec<(u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let a = s.active.as_ref()?;
                (a.next_prompt < a.input.len()).then_some((a.started, i))
            })
            .collect();
        reading.sort_unstable();
        for (_, i) in reading {
            if budget == 0 {
                break;
            }
            let a = self.slots[i].active.as_ref().expect("a reading slot");
            let from = a.next_prompt;
            let to = (from + budget).min(a.input.len());
            budget -= to - from;
            self.parts.push((i, Part::Prompt { from, to }));
        }
    }

    /// Make the planned batch fit the KV cells the slots share (where they share a pool):
    /// forget idle slots' caches, least recently used first; then shorten or drop prompt
    /// chunks, newest job first; then, if that leaves nothing to run or generating slots
    /// alone need more cells than are free, the newest job gives its cells up (preempted: it
    /// evaluates its tokens again later, as vLLM's recompute preemption does). Returns true
    /// after a preemption: the batch must be planned again.
    fn fit_plan(&mut self) -> bool {
        let Some(mut free) = self.ctx.kv_free_cells() else {
            return false;
        };
        let size = |p: &Part| match *p {
            Part::Token(_) => 1,
            Part::Prompt { from, to } => to - from,
        };
        let need = |parts: &[(usize, Part)]| parts.iter().map(|(_, p)| size(p)).sum::<usize>();
        while need(&self.parts) > free {
            let idle = (0..self.slots.len())
                .filter(|&i| self.slots[i].active.is_none() && !self.slots[i].tokens.is_empty())
                .min_by_key(|&i| self.slots[i].last_used);
            let Some(i) = idle else { break };
            let seq = self.slots[i].seq;
            self.slots[i].tokens.clear();
            if self.ctx.seq_clear(seq).is_err() {
                break;
            }
            free = self.ctx.kv_free_cells().unwrap_or(usize::MAX);
        }
        if need(&self.parts) <= free {
            return false;
        }
        // Prompt chunks of the newest jobs wait (they are planned oldest first).
        let mut over = need(&self.parts) - free;
        for k in (0..self.parts.len()).rev() {
            if over == 0 {
                break;
            }
            if let (i, Part::Prompt { from, to }) = self.parts[k] {
                let cut = over.min(to - from);
                over -= cut;
                self.parts[k] = (i, Part::Prompt { from, to: to - cut });
            }
        }
        self.parts
            .retain(|&(_, p)| !matches!(p, Part::Prompt { from, to } if from == to));
        if need(&self.parts) <= free && !self.parts.is_empty() {
            return false;
        }
        // Still too few cells: the newest job holding some gives them up, to evaluate what
        // it had again when there is room (its answer is unchanged: a sequence's logits do
        // not depend on its cells or on what runs beside it).
        let newest = (0..self.slots.len())
            .filter(|&i| self.slots[i].active.is_some() && !self.slots[i].tokens.is_empty())
            .max_by_key(|&i| self.slots[i].active.as_ref().map_or(0, |a| a.started));
        let Some(i) = newest else { return false };
        let seq = self.slots[i].seq;
        let mut held = std::mem::take(&mut self.slots[i].tokens);
        if let Some(a) = self.slots[i].active.as_mut() {
            // What it had evaluated, then what it had still to read.
            a.replayed = held.len();
            held.extend_from_slice(&a.input[a.next_prompt..]);
            a.input = held;
            a.next_prompt = 0;
        }
        if self.ctx.seq_clear(seq).is_err() {
            self.fail(i, "internal error: a slot failed to reset".into());
        }
        self.metrics
            .preemptions_total
            .fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The tokens of slot `i`'s `part`, and whether the last one's logits are wanted.
    fn part_tokens(&self, i: usize, part: Part) -> (&[u32], bool) {
        let a = self.slots[i].active.as_ref().expect("a busy slot");
        match part {
            Part::Token(_) => (
                std::slice::from_ref(a.pending.as_ref().expect("a pending token")),
                true,
            ),
            Part::Prompt { from, to } => (
                &a.input[from..to],
                to == a.input.len() && a.pending.is_none(),
            ),
        }
    }

    /// Put parts `parts` into `self.batch`; returns each part's row of logits.
    fn fill_batch(&mut self, parts: &[(usize, Part)]) -> Vec<Option<usize>> {
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        let mut rows = Vec::with_capacity(parts.len());
        let mut n_rows = 0;
        for &(i, part) in parts {
            let (tokens, wanted) = self.part_tokens(i, part);
            let slot = &self.slots[i];
            batch.push_seq(tokens, slot.tokens.len(), slot.seq, wanted);
            rows.push(wanted.then(|| {
                n_rows += 1;
                n_rows - 1
            }));
        }
        self.batch = batch;
        rows
    }

    /// Evaluate `self.batch`; a panic is an error.
    fn decode(&mut self) -> Result<(), String> {
        let ctx = &mut self.ctx;
        let batch = &self.batch;
        match catch_unwind(AssertUnwindSafe(|| ctx.decode(batch))) {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("internal error: the engine step panicked".into()),
        }
    }

    /// One iteration: one batch for every busy slot, then each samples from its logits.
    fn step(&mut self) {
        self.plan();
        // Each preemption empties one more slot; with all but the oldest empty, it fits.
        for _ in 0..self.slots.len() {
            if !self.fit_plan() {
                break;
            }
            self.plan();
        }
        if self.parts.is_empty() {
            return;
        }
        let parts = std::mem::take(&mut self.parts);
        let rows = self.fill_batch(&parts);
        if self.decode().is_ok() {
            for (&(i, part), row) in parts.iter().zip(rows) {
                self.after_decode(i, part, row);
            }
        } else {
            self.step_one_by_one(&parts);
        }
        self.parts = parts;
    }

    /// The batch failed: evaluate each slot's part alone, so an error ends its own job only.
    fn step_one_by_one(&mut self, parts: &[(usize, Part)]) {
        for &(i, part) in parts {
            let seq = self.slots[i].seq;
            let n = self.slots[i].tokens.len();
            // Steps of the failed batch may have advanced the sequence: roll it back.
            if self.ctx.seq_len(seq) != n && self.ctx.seq_truncate(seq, n).is_err() {
                self.fail(
                    i,
                    "internal error: a failed batch left the slot's cache".into(),
                );
                continue;
            }
            let rows = self.fill_batch(&[(i, part)]);
            match self.decode() {
                Ok(()) => self.after_decode(i, part, rows[0]),
                Err(message) => self.fail(i, message),
            }
        }
    }

    /// Slot `i`'s `part` was evaluated (its logits in batch row `row`): record it, and sample
    /// when it has logits. Errors and panics end its job only.
    fn after_decode(&mut self, i: usize, part: Part, row: Option<usize>) {
        let slot = &mut self.slots[i];
        let Some(a) = slot.active.as_mut() else {
            return;
        };
        match part {
            Part::Token(t) => {
                slot.tokens.push(t);
                a.pending = None;
            }
            Part::Prompt { from, to } => {
                slot.tokens.extend_from_slice(&a.input[from..to]);
                a.next_prompt = to;
                let new = to - from.max(a.replayed).min(to);
                self.metrics
                    .prompt_tokens_total
                    .fetch_add(new as u64, Ordering::Relaxed);
            }
        }
        let Some(row) = row else {
            return;
        };
        let n_ctx = self.ctx.n_ctx();
        let logits = self.ctx.batch_logits(row);
        let model = self.ctx.model();
        let metrics = &self.metrics;
        let result = catch_unwind(AssertUnwindSafe(|| {
            sample_and_send(slot, model, logits, n_ctx, metrics)
        }));
        match result {
            Ok(StepEnd::Running) => {}
            Ok(StepEnd::Finished(reason)) => self.finish(i, reason),
            Ok(StepEnd::Failed(message)) => self.fail(i, message),
            Err(_) => self.fail(i, "internal error: the engine step panicked".into()),
        }
    }

    /// Free slot `i` and send its held-back text and its `Done` event (after the gauges count
    /// it free, so a client reading `/metrics` on its answer sees its cells released).
    fn finish(&mut self, i: usize, reason: FinishReason) {
        let slot = &mut self.slots[i];
        let mut text = String::new();
        if let Some(a) = slot.active.as_mut()
            && !a.hit_stop
        {
            let tail = a.utf8.finish();
            let released = a.stop.push(&tail);
            text = released.text;
            if !released.stopped {
                text.push_str(&a.stop.flush());
            }
        }
        if let Some(a) = self.release(i) {
            if !text.is_empty() {
                let _ = a.job.events.send(Event::Token {
                    text,
                    logprob: None,
                });
            }
            let usage = Usage {
                prompt_tokens: a.job.prompt.len(),
                cached_tokens: a.cached,
                completion_tokens: a.n_generated,
            };
            let _ = a.job.events.send(Event::Done { reason, usage });
        }
    }

    /// End slot `i`'s job with an error; its cache is forgotten (its state is unknown).
    fn fail(&mut self, i: usize, message: String) {
        let slot = &mut self.slots[i];
        let seq = slot.seq;
        slot.tokens.clear();
        let ctx = &mut self.ctx;
        let _ = catch_unwind(AssertUnwindSafe(|| ctx.seq_clear(seq)));
        if let Some(a) = self.release(i) {
            let _ = a.job.events.send(Event::Error(message));
        }
    }

    /// Free slot `i` and bring the gauges up to date; returns the job it ran, if any.
    fn release(&mut self, i: usize) -> Option<Active> {
        self.clock += 1;
        let slot = &mut self.slots[i];
        let active = slot.active.take();
        if active.is_some() {
            self.metrics.busy_slots.fetch_sub(1, Ordering::Relaxed);
        }
        slot.last_used = self.clock;
        self.update_gauges();
        active
    }

    /// Fail every running and queued job (shutdown).
    fn cancel_all(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].active.is_some() {
                self.fail(i, "the server is shutting down".into());
            }
        }
        while let Ok(job) = self.rx.try_recv() {
            self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            let _ = job
                .events
                .send(Event::Error("the server is shutting down".into()));
        }
        self.update_gauges();
    }

    /// KV cells (token positions) in use: all slots, and those of busy slots.
    fn update_gauges(&self) {
        let (mut used, mut busy) = (0, 0);
        for s in &self.slots {
            let n = self.ctx.seq_len(s.seq);
            used += n;
            if s.active.is_some() {
                busy += n;
            }
        }
        // A pool counts a cell that slots share (a forked prefix) once.
        if let Some(free) = self.ctx.kv_free_cells() {
            let total = self.metrics.kv_cells_total.load(Ordering::Relaxed) as usize;
            used = total.saturating_sub(free);
        }
        self.metrics
            .kv_cells_used
            .store(used as i64, Ordering::Relaxed);
        self.metrics
            .kv_cells_busy
            .store(busy as i64, Ordering::Relaxed);
    }
}

/// Sample slot's next token from `logits` and send it: the end of the job (an
/// end-of-generation token, a stop string, `max_tokens`, a full slot of `n_ctx` tokens) or
/// the token left pending for the next batch.
fn sample_and_send(
    slot: &mut Slot,
    model: &Arc<Model>,
    logits: &[f32],
    n_ctx: usize,
    metrics: &Metrics,
) -> StepEnd {
    let Some(a) = slot.active.as_mut() else {
        return StepEnd::Running;
    };
    let id = match a.job.constraint.as_mut() {
        Some(c) => {
            let id = match c.allowed() {
                Ok(mask) => slot.sampler.sample_masked(logits, Some(mask)),
                Err(e) => return StepEnd::Failed(e.to_string()),
            };
            if let Err(e) = c.advance(id) {
                return StepEnd::Failed(e.to_string());
            }
            id
        }
        None => slot.sampler.sample(logits),
    };
    slot.sampler.accept(id);
    a.n_generated += 1;
    metrics
        .generated_tokens_total
        .fetch_add(1, Ordering::Relaxed);
    let tok = model.tokenizer();
    if tok.is_eog(id) {
        return StepEnd::Finished(FinishReason::Stop);
    }
    let logprob = a
        .job
        .logprobs
        .map(|top| token_logprob(model, logits, id, top));
    let piece = tok.token_to_piece(id);
    let text = a.utf8.push(&piece);
    let released = a.stop.push(&text);
    if !released.text.is_empty() || logprob.is_some() {
        let _ = a.job.events.send(Event::Token {
            text: released.text,
            logprob,
        });
    }
    if released.stopped {
        a.hit_stop = true;
        return StepEnd::Finished(FinishReason::Stop);
    }
    if a.job.max_tokens.is_some_and(|m| a.n_generated >= m) || slot.tokens.len() >= n_ctx {
        return StepEnd::Finished(FinishReason::Length);
    }
    a.pending = Some(id);
    StepEnd::Running
}

/// Log-probability of `id` under `logits` (a softmax) and the `top` most likely tokens.
fn token_logprob(model: &Model, logits: &[f32], id: u32, top: usize) -> TokenLogprob {
    let tok = model.tokenizer();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let log_z = max as f64 + sum.ln();
    let lp = |i: usize| (logits[i] as f64 - log_z) as f32;
    let entry = |i: usize| {
        let bytes = tok.token_to_piece(i as u32);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes, lp(i))
    };
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let k = top.min(order.len());
    if k > 0 {
        order.select_nth_unstable_by(k - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
        order.truncate(k);
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    }
    let (token, bytes, logprob) = entry(id as usize);
    TokenLogprob {
        token,
        bytes,
        logprob,
        top: if k > 0 {
            order.into_iter().map(entry).collect()
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::UnboundedReceiver;

    /// An engine over the tiny synthetic model with one slot.
    fn tiny_engine() -> (EngineHandle, JoinHandle<()>) {
        let config = EngineConfig {
            parallel: 1,
            n_ctx_slot: 64,
            n_batch: 16,
            n_threads: 1,
            kv_ring: true,
            device: Device::Cpu,
            kv_cells: 0,
            queue_capacity: 4,
        };
        let loader: ModelLoader = Box::new(|| {
            let bytes = tessera_models::testing::TinyLlama::default().bytes();
            tessera_models::testing::load_bytes(&bytes)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        });
        spawn(config, loader, Arc::new(Metrics::default()), |r| {
            r.unwrap();
        })
        .unwrap()
    }

    fn job(prompt: Vec<u32>, sampling: SamplerParams) -> (Job, UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let job = Job {
            prompt,
            sampling,
            max_tokens: Some(3),
            stop: Vec::new(),
            logprobs: None,
            constraint: None,
            events: tx,
        };
        (job, rx)
    }

    /// The last event of a job.
    fn last_event(mut rx: UnboundedReceiver<Event>) -> Event {
        let mut last = None;
        while let Some(e) = rx.blocking_recv() {
            last = Some(e);
        }
        last.expect("an event")
    }

    #[test]
    fn a_failing_job_gets_the_error_and_the_engine_serves_on() {
        let (engine, thread) = tiny_engine();
        // A token out of the vocabulary fails in the engine (the HTTP side checks it first).
        let (bad, rx) = job(vec![1, 1_000_000], SamplerParams::greedy());
        engine.submit(bad).unwrap();
        match last_event(rx) {
            Event::Error(m) => assert!(m.contains("out of range"), "{m}"),
            e => panic!("{e:?}"),
        }
        // So do sampler settings out of range.
        let nan = SamplerParams {
            temp: f32::NAN,
            ..SamplerParams::greedy()
        };
        let (bad, rx) = job(vec![1, 2], nan);
        engine.submit(bad).unwrap();
        assert!(matches!(last_event(rx), Event::Error(_)));
        let (good, rx) = job(vec![1, 2, 3], SamplerParams::greedy());
        engine.submit(good).unwrap();
        match last_event(rx) {
            Event::Done { usage, .. } => assert_eq!(usage.prompt_tokens, 3),
            e => panic!("{e:?}"),
        }
        engine.shut_down();
        thread.join().unwrap();
        assert_eq!(
            engine.submit(job(vec![1], SamplerParams::greedy()).0),
            Err(SubmitError::Stopped)
        );
    }

    /// An engine over the tiny model with `parallel` slots, driven by hand, and its queue.
    fn manual_engine(parallel: usize) -> (Engine, SyncSender<Job>) {
        manual_engine_pool(parallel, 0)
    }

    /// [`manual_engine`] whose slots share `kv_pool` cells (0: 64 each).
    fn manual_engine_pool(parallel: usize, kv_pool: usize) -> (Engine, SyncSender<Job>) {
        let bytes = tessera_models::testing::TinyLlama::default().bytes();
        let model = Arc::new(tessera_models::testing::load_bytes(&bytes).unwrap());
        let params = ContextParams {
            n_ctx: 64,
            n_batch: 32,
            n_threads: 1,
            n_seq: parallel,
            kv_pool,
            ..Default::default()
        };
        let ctx = Context::new(model, params).unwrap();
        let (tx, rx) = mpsc::sync_channel(4);
        let cancel = Arc::new(AtomicBool::new(false));
        (
            Engine::new(ctx, rx, Arc::new(Metrics::default()), cancel),
            tx,
        )
    }

    /// Step `engine` until no slot is busy.
    fn run_until_idle(engine: &mut Engine) {
        while engine.slots.iter().any(|s| s.active.is_some()) {
            engine.drop_abandoned();
            engine.step();
        }
    }

    /// A finished job's text and token count.
    fn answer(rx: &mut UnboundedReceiver<Event>) -> (String, usize) {
        let mut text = String::new();
        while let Ok(e) = rx.try_recv() {
            match e {
                Event::Token { text: t, .. } => text.push_str(&t),
                Event::Done { usage, .. } => return (text, usage.completion_tokens),
                Event::Error(m) => panic!("{m}"),
            }
        }
        panic!("the job did not finish");
    }

    #[test]
    fn a_busy_slots_prefix_is_copied_and_the_answer_is_unchanged() {
        let prefix: Vec<u32> = (1..=20).collect();
        let a_prompt = [prefix.clone(), vec![30]].concat();
        let b_prompt = [prefix, vec![31, 32]].concat();
        // B alone.
        let (mut alone, tx) = manual_engine(2);
        let (b, mut rx) = job(b_prompt.clone(), SamplerParams::greedy());
        tx.send(b).unwrap();
        alone.admit();
        run_until_idle(&mut alone);
        let want = answer(&mut rx);
        // A reads its prompt and goes on generating when B arrives: B copies A's 20 tokens.
        let (mut engine, tx) = manual_engine(2);
        let (a, mut rx_a) = job(a_prompt, SamplerParams::greedy());
        tx.send(a).unwrap();
        engine.admit();
        // A never ends by itself: its end-of-generation tokens are banned.
        let model = engine.ctx.model().clone();
        let n_vocab = model.hparams().n_vocab as u32;
        let eog: Vec<u32> = (0..n_vocab)
            .filter(|&t| model.tokenizer().is_eog(t))
            .collect();
        let busy = |e: &Engine| e.slots.iter().position(|s| s.active.is_some());
        let a_slot = busy(&engine).unwrap();
        engine.slots[a_slot].sampler.ban(&eog);
        engine.step();
        assert_eq!(
            busy(&engine),
            Some(a_slot),
            "A ended: {:?}",
            rx_a.try_recv()
        );
        let (b, mut rx) = job(b_prompt.clone(), SamplerParams::greedy());
        tx.send(b).unwrap();
        engine.admit();
        let b_slot = &engine.slots[1 - a_slot];
        assert_eq!(b_slot.active.as_ref().unwrap().cached, 20);
        assert_eq!(b_slot.tokens, b_prompt[..20]);
        assert_eq!(engine.ctx.seq_len(b_slot.seq), 20);
        run_until_idle(&mut engine);
        assert_eq!(answer(&mut rx), want);
    }

    /// Slots sharing a pool of 64 cells, one slot's context: an idle slot's cache goes first,
    /// then the newest of three 30-token jobs (each generating 12) gives its cells up and
    /// evaluates its tokens again later; every answer is still its solo answer.
    #[test]
    fn a_full_pool_evicts_idle_caches_then_preempts_the_newest_and_answers_are_unchanged() {
        let prompts: Vec<Vec<u32>> = (0..4u32)
            .map(|s| (0..30u32).map(|i| (i * 7 + s * 13) % 60 + 1).collect())
            .collect();
        let long_job = |p: &[u32]| {
            let (mut j, rx) = job(p.to_vec(), SamplerParams::greedy());
            j.max_tokens = Some(12);
            (j, rx)
        };
        let solo: Vec<(String, usize)> = prompts[1..]
            .iter()
            .map(|p| {
                let (mut alone, tx) = manual_engine(1);
                let (j, mut rx) = long_job(p);
                tx.send(j).unwrap();
                alone.admit();
                run_until_idle(&mut alone);
                answer(&mut rx)
            })
            .collect();
        let (mut engine, tx) = manual_engine_pool(4, 64);
        // A first job leaves its cache in an idle slot.
        let (j, mut rx) = long_job(&prompts[0]);
        tx.send(j).unwrap();
        engine.admit();
        run_until_idle(&mut engine);
        answer(&mut rx);
        let idle = engine
            .slots
            .iter()
            .position(|s| !s.tokens.is_empty())
            .unwrap();
        // Three jobs at once: 3 × 42 cells wanted, 64 in the pool.
        let mut rxs = Vec::new();
        for p in &prompts[1..] {
            let (j, rx) = long_job(p);
            tx.send(j).unwrap();
            rxs.push(rx);
        }
        engine.admit();
        run_until_idle(&mut engine);
        assert!(
            engine.slots[idle].tokens.is_empty(),
            "the idle cache went first"
        );
        assert!(engine.metrics.preemptions_total.load(Ordering::Relaxed) > 0);
        for (k, rx) in rxs.iter_mut().enumerate() {
            assert_eq!(answer(rx), solo[k], "job {k}");
        }
        // Every cell is accounted for: the slots' caches and the free ones.
        let held: usize = engine.slots.iter().map(|s| s.tokens.len()).sum();
        assert_eq!(engine.ctx.kv_free_cells(), Some(64 - held));
    }

    /// The text and finish reason of a finished job.
    fn answer_and_reason(rx: &mut UnboundedReceiver<Event>) -> (String, FinishReason) {
        let mut text = String::new();
        while let Ok(e) = rx.try_recv() {
            match e {
                Event::Token { text: t, .. } => text.push_str(&t),
                Event::Done { reason, .. } => return (text, reason),
                Event::Error(m) => panic!("{m}"),
            }
        }
        panic!("the job did not finish");
    }

    #[test]
    fn a_constrained_job_follows_its_grammar_and_ends_where_it_can() {
        // Sampled at a high temperature, the tiny model's output follows the expression, and
        // ends (end-of-generation forced) as soon as it is complete: 4 digits, "stop". Without
        // the mask in sample_and_send this fails (checked).
        let (mut engine, tx) = manual_engine(2);
        let model = engine.ctx.model().clone();
        let digits = model
            .compile_grammar(&tessera_models::constraint::Grammar::Regex(
                "[0-9]{4}".into(),
            ))
            .unwrap();
        let sampling = SamplerParams {
            temp: 1.5,
            seed: 3,
            ..SamplerParams::default()
        };
        let (mut a, mut rx_a) = job(vec![1, 2, 3], sampling);
        a.max_tokens = Some(20);
        a.constraint = Some(digits.clone());
        // Too short for 10 digits: the partial output, "length".
        let (mut b, mut rx_b) = job(vec![1, 2, 3], SamplerParams::greedy());
        b.max_tokens = Some(3);
        b.constraint = Some(
            model
                .compile_grammar(&tessera_models::constraint::Grammar::Regex(
                    "[0-9]{10}".into(),
                ))
                .unwrap(),
        );
        tx.send(a).unwrap();
        tx.send(b).unwrap();
        engine.admit();
        run_until_idle(&mut engine);
        let (text, reason) = answer_and_reason(&mut rx_a);
        assert_eq!(reason, FinishReason::Stop, "{text:?}");
        assert!(
            text.len() == 4 && text.bytes().all(|b| b.is_ascii_digit()),
            "{text:?}"
        );
        let (text, reason) = answer_and_reason(&mut rx_b);
        assert_eq!(reason, FinishReason::Length);
        assert!(
            !text.is_empty() && text.len() < 10 && text.bytes().all(|b| b.is_ascii_digit()),
            "{text:?}"
        );
    }
}
