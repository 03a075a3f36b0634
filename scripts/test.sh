#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# llama.cpp (stage 5's GGUF exports, serving.backend: llamacpp; tests/test_llamacpp.py): built once (~15 min on 2
# cores), then reused. A first build starts here, at low priority, beside the set-up and the first tests; whatever
# needs it waits for it (scripts/llamacpp.sh holds a lock)
nice -n 10 bash scripts/llamacpp.sh > /dev/null &
bash scripts/setup.sh
# the real vLLM engine (CPU build, its own environment) for tests/test_vllm_engine.py: installed once, then reused
bash scripts/vllm_engine.sh > /dev/null
# headless Chromium opens reports/index.html (tests/test_report_page.py) and, driven by chromedriver (WebDriver), the
# review page (tests/test_review_browser.py): Debian's packages, cached by apt
if ! command -v chromedriver > /dev/null || { ! command -v chromium > /dev/null && ! command -v chromium-browser > /dev/null; }; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        echo "test: installing chromium and chromium-driver (apt-get) for the browser tests" >&2
        apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver > /dev/null
    else
        echo "test: chromium or chromedriver is missing (apt-get install chromium chromium-driver): the browser tests will fail" >&2
    fi
fi
# the tiny model the tests of plumbing train and serve (harness/tiny_model.py): built once, then reused
"${VENV_DIR:-.venv}/bin/python" -m harness.tiny_model > /dev/null
# a worker per CPU (pytest-xdist), each test file on one worker (its module fixtures built once), the files taken in
# the order tests/conftest.py puts them (the longest first); a later -n 0 runs them here, one after another.
# (--dist loadgroup would group by mark, but pytest 9.2 ignores the node ids it rewrites: pytest-xdist #1386)
exec "${VENV_DIR:-.venv}/bin/python" -m pytest -n auto --dist loadfile --no-loadscope-reorder "$@"
