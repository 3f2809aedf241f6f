//! Every call into the engine lives here, behind a narrow interface: [`spawn`] starts the engine
//! thread, [`EngineHandle::submit`] queues a [`Job`] (bounded), and the job's [`Event`]s come
//! back over its channel.
//!
//! Today each of the `--parallel` slots owns a single-sequence [`Session`] (its own context and
//! KV cache), and one engine thread steps them one after another. Each iteration admits queued
//! jobs into free slots, then gives every busy slot one step: a slot still reading its prompt
//! evaluates the next chunk of at most `n_batch` tokens, a generating slot samples one token,
//! sends it and evaluates it. So a long prompt is interleaved with the other slots' decode
//! steps and does not stall their streams.
//!
//! This module is meant to be swapped for one multi-sequence context stepped with one batch
//! (per-sequence `seq_clear`/`seq_truncate`/`seq_copy` instead of one `Session` per slot)
//! without touching the HTTP side: only [`Job`], [`Event`], [`EngineHandle`] and [`spawn`] are
//! seen from outside.
//!
//! Prefix reuse: a job goes to the free slot whose cached tokens share the longest prefix with
//! its prompt (ties and no match: the least recently used); that slot keeps the common prefix
//! and evaluates only the rest (always at least the last prompt token, for its logits).
//!
//! A failing or panicking step reports an error to its own job only and resets that slot; a
//! job whose receiver is gone (the client disconnected) frees its slot at the next iteration.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tessera_models::kv_cache::KvPolicy;
use tessera_models::sampler::SamplerParams;
use tessera_models::{ContextParams, Device, Model, Session, SessionParams};
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;
use crate::text::{StopMatcher, Utf8Stream};

/// Loads the model on the engine thread (after the server is listening).
pub type ModelLoader = Box<dyn FnOnce() -> Result<Arc<Model>, String> + Send>;

/// How the engine is set up.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Slots (requests served at once).
    pub parallel: usize,
    /// Context size of each slot, in tokens.
    pub n_ctx_slot: usize,
    /// Largest prompt chunk evaluated in one step.
    pub n_batch: usize,
    /// Threads of each slot's context (they run one after another).
    pub n_threads_slot: usize,
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
}

impl FinishReason {
    /// The OpenAI name.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
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
            let slots = match catch_unwind(AssertUnwindSafe(|| open_slots(&config, loader))) {
                Ok(Ok(slots)) => slots,
                Ok(Err(e)) => return on_loaded(Err(e)),
                Err(_) => return on_loaded(Err("loading the model panicked".into())),
            };
            let total: usize = slots.iter().map(|s| s.session.n_ctx()).sum();
            metrics
                .kv_cells_total
                .store(total as i64, Ordering::Relaxed);
            on_loaded(Ok(slots[0].session.model().clone()));
            let mut engine = Engine {
                slots,
                rx,
                metrics,
                cancel,
                n_batch: config.n_batch,
                clock: 0,
            };
            engine.run();
        })?;
    Ok((handle, thread))
}

/// Load the model and make one session per slot.
fn open_slots(config: &EngineConfig, loader: ModelLoader) -> Result<Vec<Slot>, String> {
    let model = loader()?;
    let params = SessionParams {
        context: ContextParams {
            n_ctx: config.n_ctx_slot,
            n_batch: config.n_batch,
            n_threads: config.n_threads_slot,
            kv_ring: config.kv_ring,
            device: config.device,
            n_seq: 1,
        },
        ..Default::default()
    };
    (0..config.parallel.max(1))
        .map(|_| {
            let session = Session::new(model.clone(), &params).map_err(|e| e.to_string())?;
            let ring = smallest_ring(&session);
            Ok(Slot {
                session,
                ring,
                last_used: 0,
                active: None,
            })
        })
        .collect()
}

/// The smallest ring among a session's KV layers (sliding-window layers kept as rings).
fn smallest_ring(session: &Session) -> Option<usize> {
    session
        .context()
        .kv_cache()
        .policies()
        .iter()
        .filter_map(|p| match p {
            KvPolicy::Ring(w) => Some(*w),
            KvPolicy::Full(_) => None,
        })
        .min()
}

/// Tokens `a` and `b` share at their start.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Cached tokens to keep before evaluating `prompt`: the common prefix, less one when the
/// whole prompt is cached (its last token is evaluated again for the logits), and 0 when a
/// ring of `ring` cells cannot be rolled back that far.
fn reuse_point(cached: &[u32], prompt: &[u32], ring: Option<usize>) -> usize {
    let mut keep = common_prefix(cached, prompt);
    if keep == prompt.len() {
        keep = keep.saturating_sub(1);
    }
    if let Some(w) = ring {
        let n = cached.len();
        if n > w && keep + 1 < n {
            keep = 0;
        }
    }
    keep
}

/// One slot: a session and the job it serves.
struct Slot {
    session: Session,
    ring: Option<usize>,
    /// Engine clock of its last job's end (least recently used goes first).
    last_used: u64,
    active: Option<Active>,
}

/// A job being served.
struct Active {
    job: Job,
    /// Index of the next prompt token to evaluate.
    next_prompt: usize,
    cached: usize,
    n_generated: usize,
    utf8: Utf8Stream,
    stop: StopMatcher,
    /// A stop string was found (the text after it is dropped).
    hit_stop: bool,
}

/// The engine thread's state.
struct Engine {
    slots: Vec<Slot>,
    rx: Receiver<Job>,
    metrics: Arc<Metrics>,
    cancel: Arc<AtomicBool>,
    n_batch: usize,
    clock: u64,
}

/// How a step ended a job.
enum StepEnd {
    /// It goes on.
    Running,
    /// It finished.
    Finished(FinishReason),
    /// Its receiver is gone.
    Abandoned,
}

impl Engine {
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
            for i in 0..self.slots.len() {
                if self.slots[i].active.is_some() {
                    self.step_slot(i);
                }
            }
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

    /// Give `job` the free slot with the longest cached prefix of its prompt.
    fn start(&mut self, job: Job) {
        let (i, keep) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none())
            .map(|(i, s)| (i, reuse_point(s.session.tokens(), &job.prompt, s.ring)))
            .max_by(|a, b| {
                a.1.cmp(&b.1)
                    .then(self.slots[b.0].last_used.cmp(&self.slots[a.0].last_used))
            })
            .expect("admit only starts jobs when a slot is free");
        let slot = &mut self.slots[i];
        slot.session.truncate(keep);
        if let Err(e) = slot.session.set_sampler(job.sampling) {
            let _ = job.events.send(Event::Error(e.to_string()));
            return;
        }
        // The penalties see the prompt, as `tessera run` (and llama.cpp) do.
        for &t in &job.prompt {
            slot.session.accept(t);
        }
        self.metrics.busy_slots.fetch_add(1, Ordering::Relaxed);
        slot.active = Some(Active {
            stop: StopMatcher::new(job.stop.clone()),
            job,
            next_prompt: keep,
            cached: keep,
            n_generated: 0,
            utf8: Utf8Stream::default(),
            hit_stop: false,
        });
    }

    /// One step of slot `i`; errors and panics end its job only.
    fn step_slot(&mut self, i: usize) {
        let n_batch = self.n_batch;
        let metrics = self.metrics.clone();
        let slot = &mut self.slots[i];
        let result = catch_unwind(AssertUnwindSafe(|| step(slot, n_batch, &metrics)));
        let end = match result {
            Ok(Ok(end)) => end,
            Ok(Err(message)) => {
                self.fail(i, message);
                return;
            }
            Err(_) => {
                self.fail(i, "internal error: the engine step panicked".into());
                return;
            }
        };
        match end {
            StepEnd::Running => {}
            StepEnd::Abandoned => self.release(i),
            StepEnd::Finished(reason) => {
                let slot = &mut self.slots[i];
                if let Some(a) = slot.active.as_mut() {
                    let mut text = String::new();
                    if !a.hit_stop {
                        let tail = a.utf8.finish();
                        let released = a.stop.push(&tail);
                        text = released.text;
                        if !released.stopped {
                            text.push_str(&a.stop.flush());
                        }
                    }
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
                self.release(i);
            }
        }
    }

    /// End slot `i`'s job with an error; its cache is forgotten (its state is unknown).
    fn fail(&mut self, i: usize, message: String) {
        let slot = &mut self.slots[i];
        if let Some(a) = &slot.active {
            let _ = a.job.events.send(Event::Error(message));
        }
        let _ = catch_unwind(AssertUnwindSafe(|| slot.session.reset()));
        self.release(i);
    }

    /// Free slot `i`.
    fn release(&mut self, i: usize) {
        self.clock += 1;
        let slot = &mut self.slots[i];
        if slot.active.take().is_some() {
            self.metrics.busy_slots.fetch_sub(1, Ordering::Relaxed);
        }
        slot.last_used = self.clock;
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

    /// KV cells in use.
    fn update_gauges(&self) {
        let used: usize = self.slots.iter().map(|s| s.session.n_past()).sum();
        self.metrics
            .kv_cells_used
            .store(used as i64, Ordering::Relaxed);
    }
}

/// One step of a busy slot: the next prompt chunk, then (once the prompt is in) one token.
fn step(slot: &mut Slot, n_batch: usize, metrics: &Metrics) -> Result<StepEnd, String> {
    let Some(a) = slot.active.as_mut() else {
        return Ok(StepEnd::Running);
    };
    if a.job.events.is_closed() {
        return Ok(StepEnd::Abandoned);
    }
    let session = &mut slot.session;
    let prompt_len = a.job.prompt.len();
    if a.next_prompt < prompt_len {
        let end = (a.next_prompt + n_batch.max(1)).min(prompt_len);
        session
            .eval(&a.job.prompt[a.next_prompt..end])
            .map_err(|e| e.to_string())?;
        metrics
            .prompt_tokens_total
            .fetch_add((end - a.next_prompt) as u64, Ordering::Relaxed);
        a.next_prompt = end;
        if end < prompt_len {
            return Ok(StepEnd::Running);
        }
    }
    let id = session.sample();
    session.accept(id);
    a.n_generated += 1;
    metrics
        .generated_tokens_total
        .fetch_add(1, Ordering::Relaxed);
    let model = session.model().clone();
    let tok = model.tokenizer();
    if tok.is_eog(id) {
        return Ok(StepEnd::Finished(FinishReason::Stop));
    }
    let logprob = a
        .job
        .logprobs
        .map(|top| token_logprob(&model, session.logits(), id, top));
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
        return Ok(StepEnd::Finished(FinishReason::Stop));
    }
    if a.job.max_tokens.is_some_and(|m| a.n_generated >= m) || session.n_past() >= session.n_ctx() {
        return Ok(StepEnd::Finished(FinishReason::Length));
    }
    session.eval(&[id]).map_err(|e| e.to_string())?;
    Ok(StepEnd::Running)
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
            n_threads_slot: 1,
            kv_ring: true,
            device: Device::Cpu,
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

    #[test]
    fn reuse_keeps_the_common_prefix_but_the_last_prompt_token() {
        assert_eq!(reuse_point(&[1, 2, 3, 4], &[1, 2, 9], None), 2);
        assert_eq!(reuse_point(&[1, 2, 3], &[1, 2, 3], None), 2);
        assert_eq!(reuse_point(&[1, 2, 3, 4], &[1, 2, 3], None), 2);
        assert_eq!(reuse_point(&[], &[1], None), 0);
        assert_eq!(reuse_point(&[5], &[1, 2], None), 0);
    }

    #[test]
    fn a_ring_past_its_window_is_not_rolled_back() {
        // 10 cached tokens in a ring of 4: only the last token can be dropped.
        let cached: Vec<u32> = (0..10).collect();
        assert_eq!(reuse_point(&cached, &cached[..5], Some(4)), 0);
        assert_eq!(
            reuse_point(&cached, &[cached.clone(), vec![99]].concat(), Some(4)),
            10
        );
        assert_eq!(reuse_point(&cached[..3], &cached[..2], Some(4)), 1);
    }
}
