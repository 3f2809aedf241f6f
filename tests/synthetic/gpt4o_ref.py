#!/usr/bin/env python3
"""Expected ids for the `gpt-4o` pre-tokenizer, from llama.cpp's `llama-tokenize`.

llama.cpp ships no gpt-4o vocabulary, so the split is tested on another byte-level BPE one:
ggml-vocab-llama-bpe.gguf copied with `tokenizer.ggml.pre` rewritten to "gpt-4o" (every other key
as it is). Every input of ggml-vocab-llama-bpe.gguf.inp and the hard cases below are tokenized the
way test-tokenizer-0 does it (no BOS, special tokens not parsed, escapes not processed), and the
(text, ids) pairs are written as JSON. tests/tests/gpt4o_pretokenizer.rs compares Tessera's ids
with them.

    gpt4o_ref.py --llama-tokenize /work/llama/src/build/bin/llama-tokenize \
        --vocab-dir ~/.cache/tessera/llama-cpp-python-0.3.36/vendor/llama.cpp/models \
        --out tests/fixtures/gpt4o/cases.json
"""

import argparse
import json
import os
import subprocess
import tempfile

from gguf import GGUFReader, GGUFValueType, GGUFWriter

SEPARATOR = "\n__ggml_vocab_test__\n"

# Cases besides llama-bpe's suite: the places where o200k's split differs from llama3's, and
# where llama.cpp's evaluation (std::regex over a text collapsed to one byte per category)
# differs from the regex's Unicode meaning.
HARD_CASES = [
    "HELLO WORLD", "Hello World", "HeLLo wOrLd", "iPhone XRs McDonald's",
    "I'M YOU'RE THEY'LL WE'VE HE'D IT'S DON'T", "it's you're they'll we've he'd I'm don't",
    "It'S yOu'Re", "'s 'S 'll x'", "ABC'sdef", "CAMELCaseWord", "snake_case_WORD",
    "École ÉCOLE éCOLE Éric ÀÉÎÕÜ", "straße STRASSE Ǆemal ǅemal ǆemal", "ΑΒΓ αβγ Σίσυφος ΣΊΣΥΦΟΣ",
    "Привет МИР мир", "中文字符测试 汉字ABC abc漢字", "日本語のテキスト カタカナ ひらがな", "한국어 텍스트",
    "e\u0301x E\u0301X \u0301abc a\u0301\u0302\u0303b", "नमस्ते दुनिया", "ภาษาไทย", "café naïve",
    "12345 1234567 ١٢٣٤٥ ½ ² x1y22z333w4444", "3.14159 1,000,000 -42",
    "a\r\nb\r\n\r\nc", "line\n\n\n  next\n", "   ", "x   ", "x \n ", "\t\tx\t", " \u00a0 x\u3000y",
    "a\u2028b\u0085c", "emoji 🚀🔥 👍🏽 👨‍👩‍👧", "🚀abc", "a/b//c", "!!//\n\n/x", "...\r\n/", " ?!/\n",
    "http://example.com/path?q=1", "</s>", "<|endoftext|>", "(hello)", "\"quoted\"", "$100 #tag @user",
    "\u0301", "ǅ", "ʰʱʲ modifier ʰa", "Ⅻ Ⅲ number letters", "ﬁ ligature",
    "tab\there", "a\x0bb\x0cc", "\u00adsoft", "x\u200by", "A\u0300\u0301B",
]


def rewritten_vocab(src, dst, pre):
    """Copies the vocab-only GGUF `src` to `dst` with `tokenizer.ggml.pre` set to `pre`."""
    r = GGUFReader(src)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    w = GGUFWriter(dst, arch)
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        t = f.types[0]
        if f.name == "tokenizer.ggml.pre":
            w.add_key_value(f.name, pre, GGUFValueType.STRING)
        elif t == GGUFValueType.ARRAY:
            sub = f.types[1]
            if sub == GGUFValueType.STRING:
                vals = [bytes(f.parts[i]).decode("utf-8", errors="surrogateescape") for i in f.data]
            else:
                vals = [f.parts[i][0].item() for i in f.data]
            w.add_key_value(f.name, vals, GGUFValueType.ARRAY, sub_type=sub)
        elif t == GGUFValueType.STRING:
            w.add_key_value(f.name, bytes(f.parts[f.data[0]]).decode(), t)
        else:
            w.add_key_value(f.name, f.parts[f.data[0]][0].item(), t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tokenize(tool, vocab, text, tmp):
    path = os.path.join(tmp, "case.txt")
    with open(path, "wb") as f:
        f.write(text.encode())
    out = subprocess.run(
        [tool, "-m", vocab, "-f", path, "--ids", "--log-disable", "--no-bos",
         "--no-parse-special", "--no-escape"],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-tokenize", required=True)
    ap.add_argument("--vocab-dir", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    src = os.path.join(a.vocab_dir, "ggml-vocab-llama-bpe.gguf")
    with open(src + ".inp", encoding="utf-8") as f:
        suite = f.read().split(SEPARATOR)
    cases = suite + HARD_CASES
    with tempfile.TemporaryDirectory() as tmp:
        vocab = os.path.join(tmp, "ggml-vocab-gpt4o.gguf")
        rewritten_vocab(src, vocab, "gpt-4o")
        out = [{"text": t, "ids": tokenize(a.llama_tokenize, vocab, t, tmp)} for t in cases]
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(c, ensure_ascii=True) for c in out) + "\n]\n")
    print(f"{len(out)} cases -> {a.out}")


if __name__ == "__main__":
    main()
