#!/usr/bin/env bash
# Installs the real S3 clients the gateway tests drive (boto3 and the aws CLI, from PyPI) into a
# virtualenv outside the clone, once; prints the virtualenv's bin directory.
set -euo pipefail
VENV="${WEFT_S3_VENV:-$HOME/.cache/weft-s3-venv}"
if [ ! -x "$VENV/bin/aws" ] || ! "$VENV/bin/python" -c 'import boto3' 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'boto3>=1.34' 'awscli>=1.32' >&2
fi
echo "$VENV/bin"
