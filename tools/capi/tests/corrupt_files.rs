//! Loading damaged copies of SmolLM2 through the C API: bytes of the header (metadata and
//! tensor infos) overwritten at pseudo-random places, and the file cut at many lengths.
//! Every load must either succeed or fail with `TESSERA_ERR_LOAD_FAILED` and a message;
//! a caught panic (`TESSERA_ERR_PANIC`) counts as a failure of this test, a crash as worse.

mod common;

use std::ffi::{CStr, CString};
use std::io::{Seek, SeekFrom, Write};
use std::ptr;

use tessera::*;

/// Load `path`; free the model when it loaded. Returns the status and the message.
fn try_load(path: &std::path::Path) -> (tessera_status, String) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut m = ptr::null_mut();
    // SAFETY: `c` is NUL-terminated and `m` is a live local.
    let st = unsafe { tessera_model_load(c.as_ptr(), ptr::null(), &mut m) };
    // SAFETY: `tessera_last_error` never returns NULL, and its string lives until the next
    // API call on this thread.
    let msg = unsafe { CStr::from_ptr(tessera_last_error()) }
        .to_string_lossy()
        .into_owned();
    if st == tessera_status::TESSERA_OK {
        assert!(!m.is_null());
        // SAFETY: `m` is the live handle just loaded, used by this thread only.
        assert_eq!(unsafe { tessera_model_free(m) }, tessera_status::TESSERA_OK);
    } else {
        assert!(m.is_null());
    }
    (st, msg)
}

fn assert_ok_or_load_failed(st: tessera_status, msg: &str, what: &str) {
    assert!(
        st == tessera_status::TESSERA_OK
            || (st == tessera_status::TESSERA_ERR_LOAD_FAILED && !msg.is_empty()),
        "{what}: status {st:?}, message {msg:?}"
    );
}

/// xorshift64*, enough to spread the damage deterministically.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn damaged_headers_fail_cleanly() {
    let Some(model) = common::smollm2() else {
        return;
    };
    let bytes = std::fs::read(&model).unwrap();
    let tmp = common::TempDir::new("corrupt");
    let path = tmp.path().join("damaged.gguf");
    std::fs::write(&path, &bytes).unwrap();
    // The metadata (vocabulary, merges) and tensor infos fill the first few MiB.
    let header_len = bytes.len().min(3 << 20) as u64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for round in 0..40 {
        // Mostly early bytes (counts, lengths, types), sometimes anywhere in the header.
        let span = if round % 2 == 0 { 4096 } else { header_len };
        let at = rng.next() % span;
        let len = 1 + (rng.next() % 8) as usize;
        let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(&junk).unwrap();
        file.flush().unwrap();
        let (st, msg) = try_load(&path);
        assert_ok_or_load_failed(st, &msg, &format!("round {round}: {len} bytes at {at}"));
        // Restore the original bytes for the next round.
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(&bytes[at as usize..at as usize + len])
            .unwrap();
    }
}

#[test]
fn truncated_files_fail_cleanly() {
    let Some(model) = common::smollm2() else {
        return;
    };
    let bytes = std::fs::read(&model).unwrap();
    let tmp = common::TempDir::new("truncated");
    let path = tmp.path().join("cut.gguf");
    for len in [
        0,
        3,
        4,
        8,
        23,
        24,
        100,
        1 << 10,
        1 << 16,
        1 << 20,
        bytes.len() - 1,
    ] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let (st, msg) = try_load(&path);
        assert_eq!(
            st,
            tessera_status::TESSERA_ERR_LOAD_FAILED,
            "{len} bytes: {msg}"
        );
        assert!(!msg.is_empty());
    }
}
