#!/usr/bin/env python3
"""Reference renderings of published chat templates, as Hugging Face transformers renders them.

transformers' `apply_chat_template` compiles a template with Jinja2 in an immutable sandbox with
`trim_blocks` and `lstrip_blocks` on and the `loopcontrols` extension, gives it
`raise_exception` and `strftime_now`, and renders it with `messages`, `add_generation_prompt`
and the special tokens. This script does the same for the templates of the families Tessera
runs (from llama.cpp's `models/templates/`, in the llama-cpp-python 0.3.36 sdist) over a few
conversations, and writes what each rendering gives (or that it raised) to a JSON fixture that
`tests/tests/chat_templates.rs` compares Tessera's renderer with.

`strftime_now(fmt)` renders as the marker `<<strftime_now:FMT>>`: the test replaces it with
Tessera's own `strftime_now(FMT)` at test time, so the fixture does not hold a date.

With `--llama-bin`, each rendering of a family whose vocabulary llama.cpp ships (`VOCABS`) is
also tokenized by llama.cpp's `llama-tokenize --no-bos` (special tokens parsed, as a server
tokenizes a rendered chat), and the ids are kept beside the text: the prompt a chat model sees.

Usage: reference.py --templates DIR --out tests/fixtures/chat_templates.json
       [--llama-bin DIR --vocab-dir DIR --gemma-vocab FILE]
"""

import argparse
import json
import os

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Template file -> (family it stands for, bos_token, eos_token).
TEMPLATES = {
    "meta-llama-Llama-3.1-8B-Instruct.jinja": ("llama 3.1", "<|begin_of_text|>", "<|eot_id|>"),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": ("llama 3.2", "<|begin_of_text|>", "<|eot_id|>"),
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": ("mistral nemo (llama)", "<s>", "</s>"),
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": ("mistral small 3.2 (llama)", "<s>", "</s>"),
    "Qwen-Qwen2.5-7B-Instruct.jinja": ("qwen2", "", "<|im_end|>"),
    "Qwen-Qwen3-0.6B.jinja": ("qwen3, qwen3moe", "", "<|im_end|>"),
    "microsoft-Phi-3.5-mini-instruct.jinja": ("phi3", "<s>", "<|endoftext|>"),
    "google-gemma-2-2b-it.jinja": ("gemma2", "<bos>", "<eos>"),
    "HuggingFaceTB-SmolLM3-3B.jinja": ("smollm3", "", "<|im_end|>"),
    "deepseek-ai-DeepSeek-V3.1.jinja": ("deepseek2", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": ("deepseek r1 distill (qwen2)", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "openai-gpt-oss-120b.jinja": ("gpt-oss (harmony)", "<|startoftext|>", "<|return|>"),
}

# Template file -> the vocabulary its family's models carry, where llama.cpp ships it
# (`ggml-vocab-NAME.gguf`; "gemma": the pulled Gemma 3 model's, which Gemma 2 shares).
VOCABS = {
    "meta-llama-Llama-3.1-8B-Instruct.jinja": "llama-bpe",
    "meta-llama-Llama-3.2-3B-Instruct.jinja": "llama-bpe",
    "Qwen-Qwen2.5-7B-Instruct.jinja": "qwen2",
    "Qwen-Qwen3-0.6B.jinja": "qwen2",
    "microsoft-Phi-3.5-mini-instruct.jinja": "phi-3",
    "google-gemma-2-2b-it.jinja": "gemma",
}

# Conversations every template renders, with and without the generation prompt.
CONVERSATIONS = {
    "user": [{"role": "user", "content": "Name a colour."}],
    "system-user": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a colour."},
    ],
    "multi-turn": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Teal."},
        {"role": "user", "content": "Another, with  two spaces\nand a newline?"},
    ],
    "no-system-multi-turn": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ],
}


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def strftime_now(fmt):
    return f"<<strftime_now:{fmt}>>"


def render(source, messages, add_generation_prompt, bos, eos):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    t = env.from_string(source)
    return t.render(messages=messages, add_generation_prompt=add_generation_prompt,
                    bos_token=bos, eos_token=eos)


def llama_ids(llama_bin, vocab, text):
    """llama.cpp's ids for `text` (no BOS added; special tokens in the text parsed)."""
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write(text)
    r = subprocess.run([os.path.join(llama_bin, "llama-tokenize"), "-m", vocab, "-f", f.name,
                        "--ids", "--no-bos", "--log-disable"], capture_output=True, text=True,
                       check=True)
    os.unlink(f.name)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--templates", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--llama-bin")
    ap.add_argument("--vocab-dir")
    ap.add_argument("--gemma-vocab")
    a = ap.parse_args()
    cases = []
    for name, (family, bos, eos) in TEMPLATES.items():
        source = open(os.path.join(a.templates, name), encoding="utf-8").read()
        for conv, messages in CONVERSATIONS.items():
            for gen in (False, True):
                case = dict(template=name, family=family, bos=bos, eos=eos,
                            conversation=conv, add_generation_prompt=gen)
                try:
                    case["text"] = render(source, messages, gen, bos, eos)
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                vocab = VOCABS.get(name)
                if a.llama_bin and vocab and "text" in case and "<<strftime_now" not in case["text"]:
                    path = (a.gemma_vocab if vocab == "gemma"
                            else os.path.join(a.vocab_dir, f"ggml-vocab-{vocab}.gguf"))
                    case["vocab"] = vocab
                    case["llama_ids"] = llama_ids(a.llama_bin, path, case["text"])
                cases.append(case)
    fixture = dict(
        made_by="tests/chat/reference.py --templates vendor/llama.cpp/models/templates "
                "--out tests/fixtures/chat_templates.json --llama-bin build/bin "
                "--vocab-dir vendor/llama.cpp/models --gemma-vocab gemma-3-270m-q4_k_m.gguf",
        renderer=f"Jinja2 {jinja2.__version__}, as transformers' apply_chat_template",
        conversations=CONVERSATIONS, cases=cases,
    )
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{len(cases)} cases, {sum('error' in c for c in cases)} raising, "
          f"{sum('llama_ids' in c for c in cases)} tokenized")


if __name__ == "__main__":
    main()
