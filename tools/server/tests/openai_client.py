"""The `openai` Python package as a real client of `tessera serve`.

Usage: python3 openai_client.py BASE_URL API_KEY
Checks chat and text completions, streamed and whole, with greedy sampling, and prints
"ok" at the end; any failure raises (non-zero exit).
"""

import sys

import openai

base_url, api_key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url + "/v1", api_key=api_key)

models = client.models.list()
model = models.data[0].id

chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=12,
    temperature=0,
)
choice = chat.choices[0]
assert choice.message.role == "assistant", chat
assert choice.message.content, chat
assert choice.finish_reason in ("stop", "length"), chat
assert chat.usage.completion_tokens <= 12, chat.usage
assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=12,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
pieces, reasons, usage = [], [], None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            reasons.append(c.finish_reason)
assert "".join(pieces) == choice.message.content, (pieces, choice.message.content)
assert reasons == [choice.finish_reason], reasons
assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens, usage

text = client.completions.create(
    model=model, prompt="The capital of France is", max_tokens=8, temperature=0
)
assert text.choices[0].text.startswith(" Paris"), text
assert text.choices[0].finish_reason == "length", text

streamed = "".join(
    c.choices[0].text
    for c in client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
    )
    if c.choices
)
assert streamed == text.choices[0].text, (streamed, text.choices[0].text)

try:
    client.completions.create(model=model, prompt="x", n=2)
    raise AssertionError("n=2 was accepted")
except openai.BadRequestError as e:
    assert "n = 1" in str(e), e

print("ok")
