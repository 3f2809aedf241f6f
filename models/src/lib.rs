//! Tessera's model side: architectures (llama, gemma3), hyper-parameters, KV caches,
//! tokenizers, samplers and the Session API that front ends use.

pub mod arch;
pub mod chat;
pub mod context;
pub mod context_shift;
pub mod error;
pub mod footprint;
pub mod gemma3;
pub mod hparams;
pub mod kv_cache;
pub mod llama;
pub mod model;
pub mod sampler;
pub mod session;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tokenizer;
pub mod weights;

pub use context::{Context, ContextParams};
pub use context_shift::ContextShift;
pub use error::{ModelError, Result};
pub use footprint::Footprint;
pub use hparams::HParams;
pub use model::Model;
pub use session::{Flow, GenerationStats, Session, SessionParams};
pub use tessera_engine::backend::Device;
