"""The browser the tests drive: Debian's Chromium (headless), found on PATH."""

from __future__ import annotations

import shutil


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert found, "headless Chromium is needed for this test: apt-get install chromium (scripts/test.sh does it as root)"
    return found
