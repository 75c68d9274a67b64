"""Drives weft's OpenAI-compatible API with the official `openai` Python client.

Run by tests/inference.rs against a node that does not host the models:
  python client.py BASE_URL API_KEY EMBED_MODEL CHAT_MODEL
Prints one line per check and a JSON summary last; exits non-zero on the first failure.
"""

import concurrent.futures
import json
import math
import sys

import openai
from openai import OpenAI

base, key, embed_model, chat_model = sys.argv[1:5]
client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)
summary = {}


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


# The models list.
models = client.models.list()
ids = [m.id for m in models.data]
check(embed_model in ids and chat_model in ids, f"models list holds both models: {ids}")
check(client.models.retrieve(chat_model).id == chat_model, "a model is retrieved by id")

# Embeddings: the client asks for base64 by default; float as well.
sentences = ["A man is eating food.", "A man is eating a piece of bread."]
e = client.embeddings.create(model=embed_model, input=sentences)
check(len(e.data) == 2 and [d.index for d in e.data] == [0, 1], "two embeddings, in order")
dims = len(e.data[0].embedding)
check(dims == 384, f"dimension {dims} is 384")
cos = cosine(e.data[0].embedding, e.data[1].embedding)
check(abs(cos - 0.7553) < 2e-3, f"cosine {cos:.4f} is the reference 0.7553")
check(e.usage.prompt_tokens > 0 and e.usage.total_tokens == e.usage.prompt_tokens,
      f"usage {e.usage}")
f = client.embeddings.create(model=embed_model, input=sentences[0], encoding_format="float")
diff = max(abs(x - y) for x, y in zip(f.data[0].embedding, e.data[0].embedding))
check(diff < 1e-6, f"float and base64 encodings agree (max diff {diff:g})")
summary["cosine"] = cos

# Chat, not streamed and streamed: greedy, so both give the same text.
messages = [{"role": "user", "content": "Name three colours."}]
c = client.chat.completions.create(model=chat_model, messages=messages, max_tokens=24,
                                   temperature=0, seed=1)
text = c.choices[0].message.content
check(c.object == "chat.completion" and c.choices[0].message.role == "assistant",
      "a chat completion from the assistant")
check(len(text) > 0, f"chat answered: {text!r}")
check(c.choices[0].finish_reason in ("stop", "length"), f"finish {c.choices[0].finish_reason}")
check(c.usage.completion_tokens > 0 and c.usage.prompt_tokens > 0
      and c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens,
      f"usage {c.usage}")
stream = client.chat.completions.create(model=chat_model, messages=messages, max_tokens=24,
                                        temperature=0, seed=1, stream=True,
                                        stream_options={"include_usage": True})
pieces, finish, usage, chunks = [], None, None, 0
for chunk in stream:
    chunks += 1
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
streamed = "".join(pieces)
check(chunks > 3 and len(pieces) > 1, f"streamed in {chunks} chunks, {len(pieces)} pieces")
check(streamed == text, f"streamed text {streamed!r} is the non-streamed one")
check(finish == c.choices[0].finish_reason, f"stream finish {finish}")
check(usage is not None and usage.completion_tokens == c.usage.completion_tokens,
      f"stream usage {usage}")
summary["chat"] = text

# Completions.
p = client.completions.create(model=chat_model, prompt="The capital of France is",
                              max_tokens=8, temperature=0)
check(p.object == "text_completion" and len(p.choices[0].text) > 0,
      f"completion: {p.choices[0].text!r}")
check(p.usage.completion_tokens > 0, f"completion usage {p.usage}")
ps = client.completions.create(model=chat_model, prompt="The capital of France is",
                               max_tokens=8, temperature=0, stream=True)
joined = "".join(ch.choices[0].text for ch in ps if ch.choices)
check(joined == p.choices[0].text, f"streamed completion {joined!r}")

# Errors, in OpenAI's shapes.
try:
    client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=4)
    check(False, "an unknown model is refused")
except openai.NotFoundError as err:
    check(err.status_code == 404 and err.code == "model_not_found",
          f"unknown model: 404 {err.code}: {err.message}")
try:
    OpenAI(base_url=base, api_key="WKNOTAKEY.secret", max_retries=0).models.list()
    check(False, "a bad key is refused")
except openai.AuthenticationError as err:
    check(err.status_code == 401, f"bad key: 401 {err.message}")
try:
    OpenAI(base_url=base, api_key=key.split(".")[0] + ".wrongsecret", max_retries=0) \
        .embeddings.create(model=embed_model, input="x")
    check(False, "a wrong secret is refused")
except openai.AuthenticationError as err:
    check(err.status_code == 401, f"wrong secret: 401 {err.message}")
long_prompt = "word " * 6000
try:
    client.chat.completions.create(model=chat_model, max_tokens=4,
                                   messages=[{"role": "user", "content": long_prompt}])
    check(False, "a prompt longer than the context is refused")
except openai.BadRequestError as err:
    check(err.status_code == 400 and err.code == "context_length_exceeded",
          f"oversized prompt: 400 {err.code}: {err.message}")
try:
    client.embeddings.create(model=embed_model, input=["x"] * 2049)
    check(False, "too many inputs are refused")
except openai.BadRequestError as err:
    check(err.status_code == 400, f"oversized input: 400 {err.message}")
try:
    client.embeddings.create(model=chat_model, input="x")
    check(False, "a chat model is refused for embeddings")
except openai.BadRequestError as err:
    check(err.status_code == 400, f"wrong kind: 400 {err.message}")
try:
    client.chat.completions.create(model=chat_model, messages=messages, max_tokens=4,
                                   extra_headers={"X-Weft-Regions": "mars"})
    check(False, "a region with no replica is refused")
except openai.APIStatusError as err:
    check(err.status_code == 503 and "mars" in err.message,
          f"no replica where allowed: {err.status_code} {err.message}")

# Back-pressure: the replica takes `queue` requests; more at once are told to come back.
def long_chat(_):
    try:
        r = client.chat.completions.with_raw_response.create(
            model=chat_model, max_tokens=64, temperature=0, seed=1,
            messages=[{"role": "user", "content": "Write a long story about a river."}])
        r.parse()
        return ("ok", None)
    except openai.RateLimitError as err:
        return ("429", err.response.headers.get("retry-after"))


with concurrent.futures.ThreadPoolExecutor(8) as pool:
    results = list(pool.map(long_chat, range(8)))
ok = sum(1 for r in results if r[0] == "ok")
limited = [r[1] for r in results if r[0] == "429"]
check(ok >= 1 and len(limited) >= 1, f"8 at once: {ok} answered, {len(limited)} got 429")
check(all(r is not None and int(r) >= 1 for r in limited),
      f"every 429 says when to retry: Retry-After {limited}")
summary["burst"] = {"answered": ok, "busy": len(limited)}

print(json.dumps(summary))
