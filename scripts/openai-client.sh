#!/usr/bin/env bash
# Installs the official OpenAI Python client (from PyPI, pinned) into a virtualenv outside the
# clone, once, for the tests that drive weft's OpenAI-compatible API with it; prints the
# virtualenv's python. A second run installs nothing.
set -euo pipefail
VENV="${WEFT_OPENAI_VENV:-$HOME/.cache/weft-openai-venv}"
PKG="openai==3.57.0"
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if ! "$VENV/bin/python" -c 'import openai, sys; sys.exit(openai.__version__ != "3.57.0")' 2>/dev/null; then
  python3 -m venv "$VENV" >&2 || { echo "openai-client.sh: cannot create a venv at $VENV (is python3-venv installed?)" >&2; exit 1; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$PKG" >&2 \
    || { echo "openai-client.sh: pip install $PKG into $VENV failed" >&2; exit 1; }
fi
echo "$VENV/bin/python"
