#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the real vLLM engine (CPU build, its own environment) for tests/test_vllm_engine.py: installed once, then reused
bash scripts/vllm_engine.sh > /dev/null
# headless Chromium opens reports/index.html in tests/test_report_page.py (Debian's package; cached by apt)
if ! command -v chromium > /dev/null && ! command -v chromium-browser > /dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        echo "test: installing chromium (apt-get install chromium) for the report test" >&2
        apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium > /dev/null
    else
        echo "test: chromium is missing (apt-get install chromium): tests/test_report_page.py will fail" >&2
    fi
fi
exec "${VENV_DIR:-.venv}/bin/python" -m pytest "$@"
