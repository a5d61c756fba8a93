"""Browser tests: Playwright driving the system's Chromium (/usr/bin/chromium) against
pytest-django's live server. Nothing is downloaded: Playwright's own browser builds are
never installed, the system Chromium runs headless with every background network feature
off.

Without Chromium (or Playwright) the tests are skipped locally with the reason, and fail
under CI=true (tests.conftest._unavailable). Screenshots of every page visited go to
test-artifacts/screenshots/, whose path is printed at the end of the session.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import _unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}

_taken: list[Path] = []


@pytest.fixture(scope="package")
def chromium():
    """The system Chromium under Playwright, for the whole package (then stopped, so that
    Playwright's event loop never outlives the browser tests)."""
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("needs the playwright package (pip install -e '.[dev]')")
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    # Playwright's sync API runs an asyncio loop in this thread; the tests' ORM calls are
    # still plain synchronous code, so Django's async-safety guard must stand aside.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def new_page(chromium, request):
    """`new_page(phone=False)`: a page in a fresh browser context (its own cookies), closed
    after the test. Every test gets its own contexts, so sessions never leak."""
    contexts = []

    def make(*, phone: bool = False):
        context = chromium.new_context(
            viewport=PHONE if phone else DESKTOP,
            accept_downloads=True,
            is_mobile=phone,
            has_touch=phone,
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def screenshot(request):
    """`screenshot(page, "name")`: a full-page PNG under test-artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    test = re.sub(r"[^A-Za-z0-9_]+", "-", request.node.name).strip("-")
    counter = iter(range(1, 1000))

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{test}-{next(counter):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        _taken.append(path)
        return path

    return take


def pytest_terminal_summary(terminalreporter):
    if _taken:
        terminalreporter.write_sep("-", "browser screenshots")
        terminalreporter.write_line(f"{len(_taken)} screenshots in {SCREENSHOTS}")
