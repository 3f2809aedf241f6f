//! Tessera's model side: architectures (llama, gemma3), hyper-parameters, KV caches,
//! tokenizers, samplers and the Session API that front ends use.

pub mod chat;
pub mod error;
pub mod hparams;
pub mod registry;
pub mod sampler;
pub mod tokenizer;

pub use error::{ModelError, Result};
pub use hparams::HParams;
