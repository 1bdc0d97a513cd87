"""Headless Chromium from Debian's ``chromium`` package, driven by Playwright.

Playwright's own browser builds are downloads, which fail on these machines (``playwright install``
is never run); the Python wheel bundles its driver, which drives the system Chromium as well.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

#: ``make sysdeps`` installs it (Debian's ``chromium``); override for another machine.
CHROMIUM = Path(os.environ.get("PHONESTATUS_CHROMIUM", "/usr/bin/chromium"))
#: Without the background-networking flags Chromium phones home at start, and on a closed
#: network those connections are refused and slow the browser down; nothing here needs a GPU.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # we run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
#: Tall enough that the connection dialog with its five extra fields fits in one screenshot.
VIEWPORT = {"width": 1400, "height": 1300}


@contextlib.contextmanager
def chromium_page() -> Iterator[Page]:
    """One page in a fresh browser profile (its own ``--user-data-dir``), closed on exit."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: `make sysdeps` installs Debian's chromium")
    with tempfile.TemporaryDirectory(prefix="phonestatus-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": VIEWPORT["width"], "height": VIEWPORT["height"]},
        )
        try:
            context.set_default_timeout(30_000)
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def log_in(page: Page, base_url: str, username: str, password: str) -> None:
    """Sign in through the UI's own login page, as a person does."""
    page.goto(f"{base_url}/")
    expect(page.get_by_role("heading", name="Sign into Airflow")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)


def screenshot(page: Page, directory: Path, name: str) -> Path:
    """A PNG of the viewport with animations finished, so a toast is shown at full colour."""
    path = directory / f"{name}.png"
    page.screenshot(path=path, animations="disabled")
    return path
