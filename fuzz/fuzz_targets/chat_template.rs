//! Fuzz target: the chat-template renderer. Input layout: a selector byte, then the template
//! source up to the first NUL byte, then messages separated by 0x01 bytes (each: a role byte,
//! then the content). The selector's three low bits pick a built-in template (0: ChatML,
//! 1: Gemma), the fuzzed one (2, 3) or the fuzzed one grown in a loop (4 to 7); bit 3 strips
//! BOS, bit 4 adds the generation prompt. Rendering must end in `Ok` or a clean error within
//! the fuel limit.
//!
//! Size dimension: selectors 4 to 7 ([`sized_template`]) wrap the fuzzed source in
//! a loop that grows a value (string or list doubling, repetition by a fuzzed count,
//! `replace` and `join` growth), so the fuzzer explores templates that build huge values; an
//! `Ok` rendering must stay within `RENDER_BYTE_BUDGET`, and a run with `-rss_limit_mb` and
//! `-malloc_limit_mb` catches any large allocation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_models::chat::{
    CHATML_TEMPLATE, ChatMessage, ChatTemplate, GEMMA_TEMPLATE, RENDER_BYTE_BUDGET,
};

const ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "model"];

/// Ways of growing `ns.v` once per iteration.
const GROWTH: [&str; 8] = [
    "ns.v ~ ns.v",
    "ns.v + ns.v",
    "ns.v ~ ('x' * COUNT)",
    "(ns.v|string)|replace('x', 'xx')",
    "[ns.v] * COUNT",
    "(ns.v|string).replace('', 'yy')",
    "[ns.v, ns.v]|join(ns.v|string)",
    "(ns.v|list) + (ns.v|list)",
];

/// The fuzzed source `body` inside a loop of `iterations` that grows `ns.v` (starting as
/// `body`'s text) the way `growth` picks, `count` being the repeat count where one is used.
fn sized_template(body: &str, growth: u8, iterations: u8, count: u32) -> String {
    let step = GROWTH[growth as usize % GROWTH.len()].replace("COUNT", &count.to_string());
    format!(
        "{{% set ns = namespace(v={body:?}) %}}{{% for i in range({iterations}) %}}\
         {{% set ns.v = {step} %}}{{% endfor %}}{{{{ ns.v }}}}{body}"
    )
}

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
    let sized;
    let source: &str = match sel % 8 {
        0 => CHATML_TEMPLATE,
        1 => GEMMA_TEMPLATE,
        2 | 3 => &src,
        _ => {
            // Growth, iterations and a repeat count from the end of the template bytes.
            let tail: Vec<u8> = src.bytes().rev().take(6).collect();
            let at = |i: usize| tail.get(i).copied().unwrap_or(0);
            let count = u32::from_le_bytes([at(2), at(3), at(4), at(5)]);
            sized = sized_template(&src, at(0), at(1), count);
            &sized
        }
    };
    let Ok(mut t) = ChatTemplate::new(source, "<bos>", "<eos>") else {
        return;
    };
    t.set_strip_bos(sel & 8 != 0);
    if let Ok(text) = t.render(&messages, sel & 16 != 0) {
        assert!(text.len() <= RENDER_BYTE_BUDGET);
    }
});
