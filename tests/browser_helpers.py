"""The one way the browser tests get a browser: Playwright driving the system's Chromium.

Playwright's own browser download is not used: `scripts/test` installs Debian's `chromium` (/usr/bin/chromium,
or LUNOGRAM_TEST_CHROMIUM). Without it (or without the `playwright` package of the test extra) the browser
tests fail in CI (`CI=true`) and are skipped elsewhere, saying why. The `browser` fixture (conftest.py) launches
it once per test module; each test opens its own context. Screenshots go to test-artifacts/screenshots/, the
folder CI keeps as its artifacts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = Path(os.environ.get("LUNOGRAM_TEST_CHROMIUM", "/usr/bin/chromium"))
# --no-sandbox: Chromium's sandbox needs user namespaces, which CI containers (and root) do not give it
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the browser tests must run in CI: {reason}")
    pytest.skip(reason)


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        unavailable("the playwright package is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM} (scripts/test installs Debian's chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
