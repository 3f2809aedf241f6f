//! Tessera's model side: architectures (one file each, on shared [`blocks`]; the list is
//! [`arch::ARCHITECTURES`]), hyper-parameters, KV caches,
//! tokenizers, samplers and the Session API that front ends use.

pub mod arch;
pub mod batch;
#[cfg(any(test, feature = "testing"))]
pub mod batch_invariance;
pub mod blocks;
pub mod chat;
pub mod constraint;
pub mod context;
pub mod context_shift;
pub mod convert;
pub mod deepseek2;
pub mod error;
pub mod footprint;
pub mod gemma2;
pub mod gemma3;
pub mod gpt_oss;
pub mod hparams;
pub mod kv_cache;
pub mod llama;
pub mod log_softmax;
pub mod minicpm3;
pub mod model;
pub mod moe;
pub mod phi3;
pub mod plm;
pub mod quantize;
pub mod qwen2;
pub mod qwen3;
pub mod qwen3moe;
pub mod sampler;
pub mod session;
pub mod smollm3;
mod temp_output;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tokenizer;
pub mod weights;

pub use batch::Batch;
pub use context::{Context, ContextParams};
pub use context_shift::ContextShift;
pub use error::{ModelError, Result};
pub use footprint::Footprint;
pub use hparams::HParams;
pub use model::Model;
pub use session::{Flow, GenerationStats, Session, SessionParams};
pub use tessera_engine::backend::Device;
