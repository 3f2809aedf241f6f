//! The HTTP endpoints: completions (chat and text, streamed or not), models, health, metrics,
//! tokenize and detokenize; the API-key check; JSON errors for bad bodies and unknown paths.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response, Sse};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tessera_models::Model;
use tessera_models::chat::ChatMessage;

use tessera_models::constraint::{Constraint, Grammar};

use crate::api::{self, ChatRequest, CommonParams, CompletionRequest, Prompt};
use crate::engine_loop::{EngineHandle, Job, SubmitError};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::responses::{self, Envelope, Kind};
use crate::tool_calls;

/// What the handlers share.
pub struct AppState {
    /// The engine.
    pub engine: EngineHandle,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The model, once loaded.
    pub model: OnceLock<Arc<Model>>,
    /// Why loading failed, if it did.
    pub load_error: Mutex<Option<String>>,
    /// The key clients must send (`Authorization: Bearer KEY`).
    pub api_key: Option<String>,
    /// The model's name in responses and `/v1/models`.
    pub model_name: String,
    /// Tokens a slot's context holds (longer prompts are refused).
    pub n_ctx_slot: usize,
    /// Unix seconds the server started.
    pub created: u64,
    /// Next response id.
    pub next_id: AtomicU64,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The router, with the API-key check and the body limit.
pub fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), check_key))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// 401 unless the request carries the key (`/health` stays open).
async fn check_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key
        && req.uri().path() != "/health"
    {
        let sent = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if sent != Some(key.as_str()) {
            return ApiError::new(StatusCode::UNAUTHORIZED, "invalid or missing API key")
                .into_response();
        }
    }
    next.run(req).await
}

/// 404 with a JSON body.
async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// The body, or the error (413 over the limit) as JSON.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| ApiError::new(r.status(), r.body_text()))
}

impl AppState {
    /// The model, or 503 while it loads.
    fn loaded(&self) -> Result<&Arc<Model>, ApiError> {
        self.model.get().ok_or_else(ApiError::loading)
    }

    /// A fresh envelope for a response.
    fn envelope(&self, kind: Kind) -> Envelope {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let prefix = match kind {
            Kind::Chat => "chatcmpl",
            Kind::Text => "cmpl",
        };
        Envelope {
            kind,
            id: format!("{prefix}-{n}"),
            created: unix_now(),
            model: self.model_name.clone(),
        }
    }
}

/// `GET /health`: 200 when the model is loaded, 503 while it loads.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.model.get().is_some() {
        return (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response();
    }
    let failed = state.load_error.lock().map(|e| e.clone()).unwrap_or(None);
    let body = match failed {
        Some(e) => json!({"status": "error", "message": e}),
        None => json!({"status": "loading"}),
    };
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /v1/models`.
async fn models(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_name, "object": "model", "created": state.created,
            "owned_by": "tessera",
        }],
    }))
    .into_response()
}

/// `POST /v1/chat/completions`: the messages through the model's chat template.
async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    state.metrics.requests_total.fetch_add(1, Ordering::Relaxed);
    let req: ChatRequest = api::parse(&body_bytes(body)?)?;
    let model = state.loaded()?.clone();
    let mut messages: Vec<ChatMessage> = tool_calls::history(&req.messages)?;
    if messages.is_empty() {
        return Err(ApiError::bad_param("messages", "messages is empty"));
    }
    let grammar = req.common.grammar()?;
    let tools = tool_calls::plan(
        req.tools.as_deref(),
        req.tool_choice.as_ref(),
        grammar.as_ref().map(|(g, _)| g),
    )?;
    let grammar = match &tools {
        Some(plan) => {
            tool_calls::add_instruction(&mut messages, &plan.instruction);
            Some((Grammar::JsonSchema(plan.schema.clone()), "tools"))
        }
        None => grammar,
    };
    let constraint = compile(&model, grammar).await?;
    let text = model
        .chat_template()
        .render(&messages, true)
        .map_err(|e| ApiError::bad_param("messages", format!("chat template: {e}")))?;
    let prompt = tokenize_prompt(&state, &model, &text)?;
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (false, _) => None,
        (true, n) => Some(api::top_logprobs(n.unwrap_or(0), "top_logprobs")?),
    };
    let output = Output {
        logprobs,
        constraint,
        tools: tools.is_some(),
    };
    dispatch(&state, Kind::Chat, prompt, &req.common, output).await
}

/// Compile a request's grammar off the async threads; an invalid one is a 400 naming the field
/// it came from.
async fn compile(
    model: &Arc<Model>,
    grammar: Option<(Grammar, &'static str)>,
) -> Result<Option<Constraint>, ApiError> {
    let Some((grammar, param)) = grammar else {
        return Ok(None);
    };
    let model = model.clone();
    let compiled = tokio::task::spawn_blocking(move || model.compile_grammar(&grammar))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "compiling the grammar panicked",
            )
        })?;
    compiled
        .map(Some)
        .map_err(|e| ApiError::bad_param(param, e.to_string()))
}

/// What a job's output is and how it is reported.
struct Output {
    /// Alternatives per token in logprobs (`None`: no logprobs).
    logprobs: Option<usize>,
    /// The grammar the output follows.
    constraint: Option<Constraint>,
    /// The output is a tool call or a response in the tool format ([`tool_calls`]).
    tools: bool,
}

/// `POST /v1/completions`: a raw prompt, tokenized as `tessera run` does (BOS per the model,
/// control tokens recognised).
async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    state.metrics.requests_total.fetch_add(1, Ordering::Relaxed);
    let req: CompletionRequest = api::parse(&body_bytes(body)?)?;
    let model = state.loaded()?.clone();
    let prompt = match &req.prompt {
        Prompt::Text(t) => tokenize_prompt(&state, &model, t)?,
        Prompt::Texts(v) if v.len() == 1 => tokenize_prompt(&state, &model, &v[0])?,
        Prompt::Texts(_) => {
            return Err(ApiError::bad_param("prompt", "give exactly one prompt"));
        }
        Prompt::Tokens(ids) => {
            let n_vocab = model.tokenizer().n_vocab();
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= n_vocab) {
                return Err(ApiError::bad_param(
                    "prompt",
                    format!("token id {bad} is out of range (vocabulary of {n_vocab})"),
                ));
            }
            ids.clone()
        }
    };
    let logprobs = req
        .logprobs
        .map(|n| api::top_logprobs(n, "logprobs"))
        .transpose()?;
    let constraint = compile(&model, req.common.grammar()?).await?;
    let output = Output {
        logprobs,
        constraint,
        tools: false,
    };
    dispatch(&state, Kind::Text, prompt, &req.common, output).await
}

/// Tokenize a prompt; a text that cannot fit a slot is refused before it is tokenized.
fn tokenize_prompt(state: &AppState, model: &Model, text: &str) -> Result<Vec<u32>, ApiError> {
    let most = state
        .n_ctx_slot
        .saturating_mul(model.tokenizer().max_token_bytes());
    if text.len() > most {
        return Err(ApiError::bad_param(
            "prompt",
            format!(
                "the prompt has {} bytes, more than a slot's context of {} tokens can hold",
                text.len(),
                state.n_ctx_slot
            ),
        ));
    }
    Ok(model.tokenizer().encode(text, true, true))
}

/// Check the prompt's size and the settings, queue the job, answer (streamed or whole).
async fn dispatch(
    state: &AppState,
    kind: Kind,
    prompt: Vec<u32>,
    common: &CommonParams,
    output: Output,
) -> Result<Response, ApiError> {
    let Output {
        logprobs,
        constraint,
        tools,
    } = output;
    if prompt.is_empty() {
        return Err(ApiError::bad_param(
            "prompt",
            "the prompt is empty (no tokens)",
        ));
    }
    if prompt.len() > state.n_ctx_slot {
        return Err(ApiError::bad_param(
            "prompt",
            format!(
                "the prompt has {} tokens but a slot's context holds {} (-c / --parallel)",
                prompt.len(),
                state.n_ctx_slot
            ),
        ));
    }
    let sampling = common.sampling()?;
    let stop = common.stops()?;
    let max_tokens = common.max_tokens()?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job {
        prompt,
        sampling,
        max_tokens,
        stop,
        logprobs,
        constraint,
        events: tx,
    };
    match state.engine.submit(job) {
        Ok(()) => {}
        Err(SubmitError::Full) => {
            return Err(ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is busy: the request queue is full",
                )
            });
        }
        Err(SubmitError::Stopped) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ));
        }
    }
    let env = state.envelope(kind);
    if common.streaming() {
        let stream = responses::sse_stream(env, rx, common.include_usage(), tools);
        Ok(Sse::new(stream).into_response())
    } else {
        let v = responses::collect(&env, rx, logprobs.is_some(), tools).await?;
        Ok(axum::Json(v).into_response())
    }
}

/// `POST /tokenize` body.
#[derive(Deserialize)]
struct TokenizeRequest {
    content: String,
    #[serde(default)]
    add_special: bool,
}

/// `POST /tokenize`: `{content, add_special}` → `{tokens}` (control tokens in the text are
/// recognised, as llama-server does).
async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: TokenizeRequest = api::parse(&body_bytes(body)?)?;
    let model = state.loaded()?;
    let tokens = model
        .tokenizer()
        .encode(&req.content, req.add_special, true);
    Ok(axum::Json(json!({ "tokens": tokens })).into_response())
}

/// `POST /detokenize` body.
#[derive(Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<u32>,
}

/// `POST /detokenize`: `{tokens}` → `{content}`.
async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: DetokenizeRequest = api::parse(&body_bytes(body)?)?;
    let model = state.loaded()?;
    let n_vocab = model.tokenizer().n_vocab();
    if let Some(bad) = req.tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(ApiError::bad_param(
            "tokens",
            format!("token id {bad} is out of range (vocabulary of {n_vocab})"),
        ));
    }
    let content = model.tokenizer().decode(&req.tokens);
    Ok(axum::Json(json!({ "content": content })).into_response())
}
