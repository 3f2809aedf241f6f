//! `tessera serve`: an OpenAI-compatible HTTP server over Tessera's engine (axum + tokio).
//!
//! [`Server::start`] binds the address at once (so the caller can print it), then loads the
//! model on the engine thread: `GET /health` answers 503 `{"status":"loading"}` until the model
//! is ready, then 200. Requests go through a bounded queue to the engine thread
//! ([`engine_loop`], the only module that calls the engine), and tokens come back to each
//! request over its own channel, streamed as server-sent events or collected into one
//! response.
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
//! `GET /health`, `GET /metrics` (Prometheus), `POST /tokenize`, `POST /detokenize`.
//!
//! Structured output: `response_format` (`json_object`, `json_schema`), llama-server's
//! `json_schema` and `grammar` fields, and OpenAI `tools` ([`tool_calls`]) compile into a
//! grammar constraint per request (the model's grammar vocabulary is built once, in the
//! background, as soon as the model is loaded), which the engine samples under.

pub mod api;
pub mod engine_loop;
pub mod error;
pub mod metrics;
pub mod responses;
pub mod routes;
pub mod text;
pub mod tool_calls;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

pub use engine_loop::{EngineConfig, ModelLoader};
use metrics::Metrics;
use routes::AppState;
use tokio::sync::{oneshot, watch};

/// Largest request body accepted by default (8 MiB); larger ones get 413.
pub const DEFAULT_BODY_LIMIT: usize = 8 << 20;

/// How long in-flight responses may take to end after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the server is configured with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to bind (`127.0.0.1` by default in `tessera serve`).
    pub host: String,
    /// Port (0 = any free port; [`Server::addr`] tells which).
    pub port: u16,
    /// The model's name in responses and `/v1/models`.
    pub model_name: String,
    /// Key clients must send as `Authorization: Bearer KEY` (`/health` stays open).
    pub api_key: Option<String>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Stop on SIGINT and SIGTERM (the command does; in-process tests do not).
    pub handle_signals: bool,
    /// Slots, context, batch, threads, device, queue.
    pub engine: EngineConfig,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: JoinHandle<Result<(), String>>,
}

impl Server {
    /// Bind the address, then start serving and loading the model with `loader` (on the
    /// engine thread) in the background.
    pub fn start(config: ServerConfig, loader: ModelLoader) -> Result<Server, String> {
        let listener = std::net::TcpListener::bind((config.host.as_str(), config.port))
            .map_err(|e| format!("cannot listen on {}:{}: {e}", config.host, config.port))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("tessera-http".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the async runtime: {e}"))?;
                rt.block_on(serve(config, loader, listener, shutdown_rx))
            })
            .map_err(|e| e.to_string())?;
        Ok(Server {
            addr,
            shutdown: Some(shutdown_tx),
            thread,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop: refuse new connections, cancel in-flight requests, wait for the end.
    pub fn stop(mut self) -> Result<(), String> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.wait()
    }

    /// Wait until the server ends (a signal, [`Self::stop`], or a model that failed to load:
    /// then the error).
    pub fn wait(self) -> Result<(), String> {
        // Dropping the sender here would stop the server: keep it alive while waiting.
        let _keep = self.shutdown;
        self.thread
            .join()
            .map_err(|_| "the server thread panicked".to_string())?
    }
}

/// Wait for SIGINT or SIGTERM (never returns when they cannot be watched).
async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Serve until a shutdown request, a signal (with `handle_signals`) or a load failure.
async fn serve(
    config: ServerConfig,
    loader: ModelLoader,
    listener: std::net::TcpListener,
    shutdown: oneshot::Receiver<()>,
) -> Result<(), String> {
    let metrics = Arc::new(Metrics::default());
    let (load_tx, mut load_rx) = watch::channel::<Option<Result<(), String>>>(None);
    let state_cell: Arc<OnceLock<Arc<AppState>>> = Arc::new(OnceLock::new());
    let cell = state_cell.clone();
    let (engine, engine_thread) =
        engine_loop::spawn(config.engine, loader, metrics.clone(), move |r| {
            let state = cell.wait();
            let outcome = match r {
                Ok(model) => {
                    // Build the grammar vocabulary now, so the first structured request does
                    // not wait for it (a request that comes sooner waits for this build).
                    let warm = model.clone();
                    let _ = std::thread::Builder::new()
                        .name("tessera-grammar-vocab".into())
                        .spawn(move || {
                            let _ = warm.constraint_vocab();
                        });
                    let _ = state.model.set(model);
                    Ok(())
                }
                Err(e) => {
                    if let Ok(mut slot) = state.load_error.lock() {
                        *slot = Some(e.clone());
                    }
                    Err(e)
                }
            };
            let _ = load_tx.send(Some(outcome));
        })
        .map_err(|e| format!("cannot start the engine thread: {e}"))?;
    let state = Arc::new(AppState {
        engine: engine.clone(),
        metrics,
        model: OnceLock::new(),
        load_error: Mutex::new(None),
        api_key: config.api_key.clone(),
        model_name: config.model_name.clone(),
        n_ctx_slot: config.engine.n_ctx_slot,
        created: routes::unix_now(),
        next_id: AtomicU64::new(1),
    });
    let _ = state_cell.set(state.clone());
    let app = routes::router(state, config.body_limit);
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;

    let load_failed = async move {
        loop {
            if let Some(Err(e)) = load_rx.borrow().as_ref() {
                return e.clone();
            }
            if load_rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let (stopping_tx, mut stopping_rx) = watch::channel(false);
    let handle_signals = config.handle_signals;
    let stop_engine = engine.clone();
    let trigger = async move {
        let failure = tokio::select! {
            _ = shutdown => None,
            _ = async { if handle_signals { signal().await } else { std::future::pending().await } } => {
                eprintln!("shutting down");
                None
            }
            e = load_failed => Some(e),
        };
        stop_engine.shut_down();
        let _ = stopping_tx.send(true);
        failure
    };
    let failure = Arc::new(Mutex::new(None));
    let failure_out = failure.clone();
    let graceful = async move {
        let f = trigger.await;
        if let Ok(mut slot) = failure_out.lock() {
            *slot = f;
        }
    };
    let served = axum::serve(listener, app).with_graceful_shutdown(graceful);
    let deadline = async move {
        let _ = stopping_rx.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let result = tokio::select! {
        r = served => r.map_err(|e| e.to_string()),
        _ = deadline => Ok(()),
    };
    engine.shut_down();
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    result?;
    let failure = failure.lock().ok().and_then(|mut f| f.take());
    match failure {
        Some(e) => Err(format!("cannot load the model: {e}")),
        None => Ok(()),
    }
}
