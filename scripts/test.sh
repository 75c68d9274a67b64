#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test in the workspace.
# Needs only a Rust toolchain; the build cache goes to $CARGO_TARGET_DIR (default ~/.cache/weft-target).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
# A CI run builds once: incremental caches would only cost disk (gigabytes).
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --failure-output final
else
  cargo test --workspace --no-fail-fast
fi
