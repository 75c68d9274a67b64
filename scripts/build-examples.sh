#!/usr/bin/env bash
# Build the example jobs (examples/wasm) for wasm32-wasip1, installing the target if needed, and
# copy the example pipeline (examples/pipeline) beside them.
# The modules land in the folder given as the first argument, else $WEFT_EXAMPLES_DIR, else
# examples/wasm under the build cache ($CARGO_TARGET_DIR or ~/.cache/weft-target).
set -euo pipefail
# A relative output folder is relative to where the script was called from.
out="${1:-${WEFT_EXAMPLES_DIR:-}}"
if [ -n "$out" ] && [ "${out#/}" = "$out" ]; then out="$PWD/${out#./}"; fi
cd "$(dirname "$0")/.."
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  echo "== rustup target add wasm32-wasip1"
  rustup target add wasm32-wasip1
fi
target="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}/examples"
cargo build --quiet --release --target wasm32-wasip1 \
  --manifest-path examples/wasm/Cargo.toml --target-dir "$target"
out="${out:-$target/wasm}"
mkdir -p "$out"
cp "$target"/wasm32-wasip1/release/*.wasm "$out"/
# The example pipeline and its sample log sit beside the modules its steps name.
cp examples/pipeline/weblog.toml examples/pipeline/access.log "$out"/
echo "example jobs in $out: $(cd "$out" && ls *.wasm | tr '\n' ' ')"
