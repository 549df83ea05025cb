"""A real headless Chromium for the portal's end-to-end tests: Debian's ``chromium`` driven by
Playwright's Python package (``make test`` installs both). Screenshots go to ``SHOTS``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("TUNESMITH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("TUNESMITH_SCREENSHOTS", "build/screenshots"))

# This machine's network is closed: without these flags Chromium keeps dialling Google's hosts.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium is not at {CHROMIUM}: install Debian's 'chromium' package (make test does) "
            "or point TUNESMITH_CHROMIUM at a Chromium binary."
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class Console:
    """The page's console errors and failed requests, so a test can assert there were none."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("requestfailed", self._failed)

    def _console(self, message: Any) -> None:
        # 4xx answers the test provoked on purpose are logged by Chromium as resource errors.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    def _failed(self, request: Any) -> None:
        failure = request.failure or ""
        if "ERR_ABORTED" not in failure:  # a stopped stream or a left page
            self.errors.append(f"{request.method} {request.url}: {failure}")


def shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
