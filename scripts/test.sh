#!/usr/bin/env bash
# Lint and run the test suite (real models, real audio from ../shared/speech, sockets on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# HF_HUB_OFFLINE: tests must never reach a model hub.
HF_HUB_OFFLINE=1 exec .venv/bin/python -m pytest "$@"
