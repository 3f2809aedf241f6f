//! Fuzz target: the chat-template renderer. Input layout: a selector byte, then the template
//! source up to the first NUL byte, then messages separated by 0x01 bytes (each: a role byte,
//! then the content). The selector's low bit picks the fuzzed template or one of the built-in
//! ones (ChatML, Gemma); rendering must end in `Ok` or a clean error within the fuel limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_models::chat::{CHATML_TEMPLATE, ChatMessage, ChatTemplate, GEMMA_TEMPLATE};

const ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "model"];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (src, msgs) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let src = String::from_utf8_lossy(src);
    let messages: Vec<ChatMessage> = msgs
        .split(|&b| b == 1)
        .filter_map(|m| m.split_first())
        .map(|(&r, content)| {
            let role = match ROLES.get(r as usize) {
                Some(role) => role.to_string(),
                None => String::from_utf8_lossy(&[r]).into_owned(),
            };
            ChatMessage::new(role, String::from_utf8_lossy(content))
        })
        .collect();
    let source: &str = match sel % 4 {
        0 => CHATML_TEMPLATE,
        1 => GEMMA_TEMPLATE,
        _ => &src,
    };
    let Ok(mut t) = ChatTemplate::new(source, "<bos>", "<eos>") else {
        return;
    };
    t.set_strip_bos(sel & 4 != 0);
    let _ = t.render(&messages, sel & 8 != 0);
});
