//! Fuzz target: `engine::gguf::parse` on arbitrary bytes must return `Ok` or `Err`, never
//! panic, and whatever it accepts must describe tensors that lie inside the file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_engine::gguf::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = parse(data) {
        // A file without tensors may end before its (empty) data section would start: only
        // the tensors' bytes must lie in the file (the first campaign's finding).
        if !h.tensors.is_empty() {
            assert!(h.data_offset <= h.file_size);
        }
        for t in &h.tensors {
            let end = h.data_offset + t.offset + t.n_bytes;
            assert!(end <= data.len() as u64, "{} ends past the file", t.name);
            assert_eq!(t.offset % h.alignment, 0);
        }
        // Every key must be readable back through the typed getters without panicking.
        for (k, v) in h.metadata.entries() {
            let _ = (v.as_int(), v.as_f64(), v.as_str(), v.type_name(), v.to_string());
            let _ = (h.metadata.int_array(k), h.metadata.f32_array(k));
        }
    }
});
