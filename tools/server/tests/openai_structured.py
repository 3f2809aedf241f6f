"""The `openai` Python package against `tessera serve`'s structured output and tool calls.

Usage: python3 openai_structured.py BASE_URL API_KEY
Checks response_format json_schema and json_object (whole and streamed; answers validate
under the schema with `jsonschema`) and tool_choice "required" (the arguments validate under
the tool's parameters; the streamed deltas join to the whole answer's arguments at
temperature 0), and prints "ok" at the end; any failure raises (non-zero exit).
"""

import json
import sys

import jsonschema
import openai

base_url, api_key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url + "/v1", api_key=api_key)
model = client.models.list().data[0].id

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 12},
                    "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age", "hobbies"],
    "additionalProperties": False,
}
messages = [{"role": "user", "content": "Invent a person and describe them as JSON."}]
fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}

whole = client.chat.completions.create(
    model=model, messages=messages, max_tokens=80, temperature=0, response_format=fmt
)
text = whole.choices[0].message.content
assert whole.choices[0].finish_reason == "stop", whole
jsonschema.validate(json.loads(text), PERSON)

pieces, reasons = [], []
for chunk in client.chat.completions.create(
    model=model, messages=messages, max_tokens=80, temperature=0, response_format=fmt,
    stream=True,
):
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            reasons.append(c.finish_reason)
assert "".join(pieces) == text, (pieces, text)
assert reasons == ["stop"], reasons

# Sampled, several seeds: still valid.
for seed in range(3):
    r = client.chat.completions.create(
        model=model, messages=messages, max_tokens=120, temperature=0.8, seed=seed,
        response_format=fmt,
    )
    if r.choices[0].finish_reason == "stop":
        jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)

obj = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "A JSON object about cats."}],
    max_tokens=60, temperature=0, response_format={"type": "json_object"},
)
if obj.choices[0].finish_reason == "stop":
    assert isinstance(json.loads(obj.choices[0].message.content), dict), obj

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": WEATHER}}]
ask = [{"role": "user", "content": "What is the weather in Berlin?"}]
call = client.chat.completions.create(
    model=model, messages=ask, tools=tools, tool_choice="required", max_tokens=60, temperature=0
)
choice = call.choices[0]
assert choice.finish_reason == "tool_calls", call
assert choice.message.content is None, call
tc = choice.message.tool_calls[0]
assert tc.type == "function" and tc.id.startswith("call_"), tc
assert tc.function.name == "get_weather", tc
jsonschema.validate(json.loads(tc.function.arguments), WEATHER)

ids, names, args, reasons = [], [], [], []
for chunk in client.chat.completions.create(
    model=model, messages=ask, tools=tools, tool_choice="required", max_tokens=60,
    temperature=0, stream=True,
):
    for c in chunk.choices:
        for d in c.delta.tool_calls or []:
            assert d.index == 0, d
            if d.id:
                ids.append(d.id)
            if d.function and d.function.name:
                names.append(d.function.name)
            if d.function and d.function.arguments:
                args.append(d.function.arguments)
        if c.finish_reason:
            reasons.append(c.finish_reason)
assert len(ids) == 1 and names == ["get_weather"], (ids, names)
assert "".join(args) == tc.function.arguments, (args, tc.function.arguments)
assert reasons == ["tool_calls"], reasons

# The call and its result go back into the history; the model answers (auto).
follow = client.chat.completions.create(
    model=model, temperature=0, max_tokens=40, tools=tools,
    messages=ask + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": tc.id, "type": "function",
             "function": {"name": "get_weather", "arguments": tc.function.arguments}}]},
        {"role": "tool", "tool_call_id": tc.id, "content": '{"temperature": 18, "sky": "clear"}'},
    ],
)
m = follow.choices[0].message
assert m.content is not None or m.tool_calls, follow

try:
    client.chat.completions.create(
        model=model, messages=ask, max_tokens=4,
        response_format={"type": "json_schema", "json_schema": {
            "name": "bad", "schema": {"type": "object", "properties": {"a": {"type": 5}}}}},
    )
    raise AssertionError("an invalid schema was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400, e

print("ok")
