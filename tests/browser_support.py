"""Debian's Chromium driven by Playwright: where it is, how it starts, and why it may not."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("REAUTH_TEST_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling Google's hosts, which this
# machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]


def chromium_missing() -> str | None:
    """Why no browser test can run here, or None."""
    if sync_playwright is None:
        return "playwright is not installed"
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (install Debian's `chromium`; .ci/run does)"
    return None


@contextmanager
def launched_chromium(*extra_args: str) -> Iterator[Any]:
    """Debian's Chromium under Playwright, with CHROMIUM_ARGS and any extra flags; closed after."""
    assert sync_playwright is not None, chromium_missing()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args]
        )
        yield chromium
        chromium.close()


def sign_in_on_hosted_page(page: Any, email: str, password: str | None) -> None:
    """On the emulator's hosted sign-in: the address is filled in; a password if asked; accept."""
    from playwright.sync_api import expect

    expect(page.locator("input#email")).to_have_value(email)
    if password:
        page.fill("input#password", password)
        page.get_by_role("button", name="Connect").click()
    else:
        page.get_by_role("button", name="Accept").click()
