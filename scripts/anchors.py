"""Anchor figures for `weft bench inference`: established engines on the same models and threads.

Run by the python that scripts/anchors.sh prints. Reads one JSON spec on stdin:
  {"threads": 2, "minilm": DIR, "gguf": PATH, "sentences": [str, ...], "batch": 32, "single": 64,
   "messages": [{"role": "system", "content": ...}, {"role": "user", "content": ...}],
   "max_tokens": 128}
and prints one JSON object on stdout (nothing else goes to stdout; logs go to stderr):
  sentence-transformers on DIR (all-MiniLM-L6-v2):
    embed_batch1_per_s   the first `single` sentences embedded one call each, after a warm-up
    embed_batched_per_s  all sentences, one call per chunk of `batch`
    cosine               of "A man is eating food." and "A man is eating a piece of bread."
  llama.cpp (llama-cpp-python's low-level Llama.tokenize/eval/sample) on the GGUF at PATH:
    llama_load_s, llama_prompt_tokens, llama_prefill_tok_s, llama_completion_tokens,
    llama_decode_tok_s, llama_eos_index, llama_completion_text
  versions, threads, and the settings each engine really ran with.
"minilm" or "gguf" may be null or absent to skip that engine (its keys are then absent).
Every library is held to `threads` threads: OMP/MKL/OpenBLAS env before any import,
torch.set_num_threads, and llama.cpp's n_threads and n_threads_batch.

Decode is greedy and ignores EOS, so every run decodes exactly max_tokens tokens whatever the
model says: each of the max_tokens steps samples a token from the current logits and evaluates
it (one llama_decode of one token), like llama-bench's tg test. The first sample reads the
prefill's logits; the last evaluation produces logits nobody samples. llama_eos_index is the
step at which the model first produced EOS (null if never); llama_completion_text is the text up
to that point, for a sanity check only.
"""

import json
import os
import sys
import time

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
COSINE_PAIR = ("A man is eating food.", "A man is eating a piece of bread.")
N_CTX = 4096


def fail(msg):
    print(f"anchors.py: {msg}", file=sys.stderr)
    sys.exit(1)


def read_spec():
    try:
        spec = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        fail(f"stdin is not a JSON spec: {e}")
    if not isinstance(spec, dict):
        fail("the spec on stdin must be a JSON object")
    threads = spec.get("threads")
    if not isinstance(threads, int) or threads < 1:
        fail('"threads" must be a positive integer')
    if spec.get("minilm") is not None:
        sentences = spec.get("sentences")
        if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) for s in sentences):
            fail('"sentences" must be a non-empty list of strings')
        for key in ("batch", "single"):
            if not isinstance(spec.get(key), int) or spec[key] < 1:
                fail(f'"{key}" must be a positive integer')
        if not os.path.isdir(spec["minilm"]):
            fail(f"minilm folder {spec['minilm']} does not exist")
    if spec.get("gguf") is not None:
        messages = spec.get("messages")
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        ):
            fail('"messages" must be a non-empty list of {"role": str, "content": str}')
        if not isinstance(spec.get("max_tokens"), int) or spec["max_tokens"] < 1:
            fail('"max_tokens" must be a positive integer')
        if not os.path.isfile(spec["gguf"]):
            fail(f"gguf file {spec['gguf']} does not exist")
    return spec


def chatml(messages):
    """The GGUF's template (SmolLM2-Instruct's ChatML) with add_generation_prompt."""
    out = []
    if messages[0]["role"] != "system":
        out.append(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    for m in messages:
        out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return "".join(out)


def bench_llama(spec, threads, result):
    import llama_cpp
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(
        model_path=spec["gguf"],
        n_ctx=N_CTX,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=0,
        seed=0,
        verbose=False,
    )
    load_s = time.perf_counter() - t0

    rendered = chatml(spec["messages"])
    prompt = llm.tokenize(rendered.encode("utf-8"), add_bos=False, special=True)
    # Cross-check the hand-written ChatML against the GGUF's own template (null: none to check).
    template_matches = None
    template = llm.metadata.get("tokenizer.chat_template")
    if template:
        try:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            by_gguf = Jinja2ChatFormatter(template=template, eos_token="", bos_token="")(messages=spec["messages"]).prompt
            template_matches = by_gguf == rendered
        except Exception as e:  # a template this jinja cannot render: say so, measure anyway
            print(f"anchors.py: cannot render the GGUF's chat template: {e}", file=sys.stderr)
        if template_matches is False:
            print("anchors.py: warning: the prompt differs from the GGUF's chat template", file=sys.stderr)
    max_tokens = spec["max_tokens"]
    if len(prompt) + max_tokens > N_CTX:
        fail(f"prompt ({len(prompt)} tokens) + max_tokens ({max_tokens}) exceed n_ctx {N_CTX}")
    if len(prompt) > llm.n_batch:
        # Llama.eval splits the prompt into n_batch chunks; that is still llama.cpp's prefill.
        print(f"anchors.py: prompt of {len(prompt)} tokens is evaluated in chunks of {llm.n_batch}", file=sys.stderr)
    eos = llm.token_eos()

    def greedy():
        return llm.sample(temp=0.0, repeat_penalty=1.0)

    # Warm-up: a short prefill and a few decode steps, then forget them.
    llm.reset()
    llm.eval(prompt[: min(16, len(prompt))])
    for _ in range(4):
        llm.eval([greedy()])
    llm.reset()

    t0 = time.perf_counter()
    llm.eval(prompt)
    prefill_s = time.perf_counter() - t0

    tokens = []
    t0 = time.perf_counter()
    for _ in range(max_tokens):
        tok = greedy()
        tokens.append(tok)
        llm.eval([tok])
    decode_s = time.perf_counter() - t0
    llm.reset()

    eos_index = tokens.index(eos) if eos in tokens else None
    text = llm.detokenize(tokens[:eos_index] if eos_index is not None else tokens).decode("utf-8", errors="replace")
    result.update(
        llama_load_s=round(load_s, 4),
        llama_prompt_tokens=len(prompt),
        llama_prefill_s=round(prefill_s, 4),
        llama_prefill_tok_s=round(len(prompt) / prefill_s, 2),
        llama_completion_tokens=len(tokens),
        llama_decode_s=round(decode_s, 4),
        llama_decode_tok_s=round(len(tokens) / decode_s, 2),
        llama_template_matches=template_matches,
        llama_eos_index=eos_index,
        llama_completion_text=text,
        llama_n_ctx=llm.n_ctx(),
        llama_n_batch=llm.n_batch,
        llama_threads=[llm.context_params.n_threads, llm.context_params.n_threads_batch],
        llama_system_info=llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip(),
    )
    llm.close()


def bench_minilm(spec, threads, result):
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass  # already set (only allowed before the first parallel work)
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved the modules; 6.x still aliases the old path
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:
        from sentence_transformers import models

    folder = spec["minilm"]
    if os.path.isfile(os.path.join(folder, "modules.json")):
        # The folder is a full sentence-transformers model: load it the way its users do.
        model = SentenceTransformer(folder, device="cpu", local_files_only=True)
        pipeline = "modules.json"
    else:
        # Only model.safetensors/config.json/tokenizer.json: the same modules, spelled out.
        word = models.Transformer(folder, max_seq_length=256)
        dim = (getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension)()
        pool = models.Pooling(dim, pooling_mode="mean")
        model = SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu")
        pipeline = "Transformer+mean Pooling+Normalize"
    model.eval()

    sentences = spec["sentences"]
    single = sentences[: spec["single"]]
    batch = spec["batch"]

    def encode(texts):
        return model.encode(texts, batch_size=len(texts), show_progress_bar=False, convert_to_numpy=True)

    # Warm-up: both shapes of call once or a few times.
    for s in single[:8]:
        encode([s])
    encode(sentences[:batch])

    t0 = time.perf_counter()
    for s in single:
        encode([s])
    batch1_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    for i in range(0, len(sentences), batch):
        encode(sentences[i : i + batch])
    batched_s = time.perf_counter() - t0

    a, b = encode(list(COSINE_PAIR))
    cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    result.update(
        embed_batch1_per_s=round(len(single) / batch1_s, 2),
        embed_batch1_count=len(single),
        embed_batched_per_s=round(len(sentences) / batched_s, 2),
        embed_batched_count=len(sentences),
        embed_batch=batch,
        cosine=round(cosine, 6),
        embed_dim=int(a.shape[0]),
        embed_max_seq_length=model.max_seq_length,
        embed_pipeline=pipeline,
        torch_threads=torch.get_num_threads(),
    )


def versions(spec):
    from importlib.metadata import version, PackageNotFoundError

    names = []
    if spec.get("minilm") is not None:
        names += ["sentence-transformers", "transformers", "torch", "tokenizers"]
    if spec.get("gguf") is not None:
        names += ["llama-cpp-python"]
    out = {"python": sys.version.split()[0]}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = None
    return out


def main():
    spec = read_spec()
    threads = spec["threads"]
    # Thread pools read these when the libraries load, so they are set before any import.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

    # Whatever a library prints (C code included) goes to stderr; stdout gets only the result.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    result = {"threads": threads}
    # llama.cpp first: torch's OpenMP workers then cannot be spinning while it is timed.
    if spec.get("gguf") is not None:
        bench_llama(spec, threads, result)
    if spec.get("minilm") is not None:
        bench_minilm(spec, threads, result)
    result["versions"] = versions(spec)

    sys.stderr.flush()
    with os.fdopen(out_fd, "w") as out:
        out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
