#!/usr/bin/env bash
# llama.cpp from a pinned source: its converters (convert_hf_to_gguf.py, convert_lora_to_gguf.py, gguf-py) for stage
# 5's GGUF exports and `llama-server` for serving.backend: llamacpp. The source is the llama.cpp tree vendored in
# PyPI's llama-cpp-python sdist (MIT; Debian has no llama.cpp package), built here with cmake for this CPU, offline.
# Created on first use (~1 min to fetch; ~15 min to build on 2 cores) and reused while this file and the CPU
# are unchanged; prints the directory (src/convert_*.py, src/gguf-py, bin/llama-server). LLAMACPP_DIR chooses where
# it lives (default .llamacpp; CI keeps one in its cache). Callers at once wait for one build (a lock).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.3.36  # llama-cpp-python, whose vendor/llama.cpp is the pinned llama.cpp
DIR="${LLAMACPP_DIR:-.llamacpp}"
# built for this CPU (GGML_NATIVE): another CPU's flags rebuild it rather than die on an illegal instruction
cpu="$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null | sha256sum | cut -c1-8)"
stamp="llama-cpp-python-$VERSION-r1-$cpu"  # bump r1 when the steps below change

mkdir -p "$(dirname "$DIR")"
exec 9> "$DIR.lock"
flock 9
if [ ! -f "$DIR/.ready-$stamp" ]; then
    for tool in cmake g++ make; do
        command -v "$tool" > /dev/null || { echo "error: llama.cpp needs $tool to build (apt-get install cmake g++ make)" >&2; exit 1; }
    done
    echo "llamacpp: fetching llama-cpp-python==$VERSION's sources and building llama-server into $DIR (first time: ~15 min on 2 cores)" >&2
    rm -rf "$DIR" "$DIR.tmp"
    mkdir -p "$DIR.tmp"
    python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$DIR.tmp" "llama-cpp-python==$VERSION" 2>&1 \
        | grep -v "is ignored: it is neither" >&2 || true
    tar -xzf "$DIR.tmp"/llama_cpp_python-"$VERSION".tar.gz -C "$DIR.tmp" \
        || { echo "error: could not fetch llama-cpp-python==$VERSION's sources (pip download)" >&2; exit 1; }
    mv "$DIR.tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" "$DIR.tmp/src"
    rm -rf "$DIR.tmp/llama_cpp_python-$VERSION" "$DIR.tmp"/*.tar.gz
    cmake -S "$DIR.tmp/src" -B "$DIR.tmp/src/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF > "$DIR.tmp/build.log" 2>&1 \
        || { tail -20 "$DIR.tmp/build.log" >&2; echo "error: cmake could not configure llama.cpp (log: $DIR.tmp/build.log)" >&2; exit 1; }
    cmake --build "$DIR.tmp/src/build" --target llama-server -j"$(nproc)" >> "$DIR.tmp/build.log" 2>&1 \
        || { tail -20 "$DIR.tmp/build.log" >&2; echo "error: llama-server did not build (log: $DIR.tmp/build.log)" >&2; exit 1; }
    mkdir -p "$DIR.tmp/bin"
    cp "$DIR.tmp/src/build/bin/llama-server" "$DIR.tmp/bin/"
    rm -rf "$DIR.tmp/src/build"
    "$DIR.tmp/bin/llama-server" --version > /dev/null 2>&1 || { echo "error: the built llama-server does not run" >&2; exit 1; }
    touch "$DIR.tmp/.ready-$stamp"
    mv "$DIR.tmp" "$DIR"
fi
echo "$(cd "$DIR" && pwd)"
