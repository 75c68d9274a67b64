#!/usr/bin/env bash
# Install the two established inference engines that `weft bench inference` measures as anchors
# (sentence-transformers on all-MiniLM-L6-v2, llama.cpp through llama-cpp-python on the SmolLM2
# GGUF) into a private venv, and print that venv's python (which runs scripts/anchors.py).
# Anchors are measured in the same run, on the same machine and thread count as weft's own
# figures, so they have to be installed here rather than quoted from elsewhere.
# The venv is ${WEFT_ANCHORS_VENV:-$HOME/.cache/weft-anchors-venv}; a second run installs nothing.
# The first run is long and large: llama-cpp-python is sdist-only on PyPI, so pip compiles
# llama.cpp with gcc (10-20 min on 2 cores), and sentence-transformers pulls PyPI's torch, which
# is the CUDA build (its nvidia wheels make the venv about 5.5 GB; it runs on the CPU here).
# Progress and pip's log go to stderr; stdout carries only the python path.
set -euo pipefail
venv="${WEFT_ANCHORS_VENV:-$HOME/.cache/weft-anchors-venv}"
# torch and transformers are pinned too: they set the embedding figures as much as
# sentence-transformers does.
pkgs=(
  "sentence-transformers==6.3.0"
  "transformers==5.24.0"
  "torch==2.15.0"
  "llama-cpp-python==0.3.36"
)
# llama.cpp is built for this machine's CPU (the venv is a local cache, never copied) and
# without the multimodal library, tools, tests, examples or server, which the bench never uses.
llama_cmake_args="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF"

fail() { echo "anchors.sh: $*" >&2; exit 1; }
say() { echo "anchors.sh: $*" >&2; }

# Several processes may ask at once: one installs, the others wait for it.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if ! flock -n 9; then
  say "waiting for another anchors.sh to finish installing into $venv"
  flock 9
fi

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >/dev/null || fail "cannot create a venv at $venv (is python3-venv installed?)"
fi
py="$venv/bin/python"

# All distributions at the pinned versions?
installed() {
  "$py" - "${pkgs[@]}" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

if ! installed; then
  log="$venv.install.log"
  say "installing ${pkgs[*]} into $venv"
  say "llama-cpp-python compiles llama.cpp from source (10-20 min on 2 cores) and torch is ~5 GB; log: $log"
  start=$(date +%s)
  if ! CMAKE_ARGS="$llama_cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
      "$py" -m pip install --disable-pip-version-check --no-input --no-compile --progress-bar off \
      "${pkgs[@]}" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    fail "pip install of ${pkgs[*]} into $venv failed (full log: $log)"
  fi
  installed || fail "${pkgs[*]} not all at their pinned versions in $venv after installing (log: $log)"
  # Both engines must load here (torch's CUDA build imports fine without a GPU).
  "$py" -c "import llama_cpp, sentence_transformers" >>"$log" 2>&1 \
    || { tail -n 30 "$log" >&2; fail "llama_cpp or sentence_transformers does not import from $venv (log: $log)"; }
  say "installed in $(( $(date +%s) - start )) s ($(du -sh "$venv" | cut -f1))"
fi

echo "$py"
