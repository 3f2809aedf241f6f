//! Chat templates: rendering GGUF `tokenizer.chat_template` with minijinja.
