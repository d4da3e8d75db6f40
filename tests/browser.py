"""Headless Chromium for tests that look at pages as a person would (Debian's chromium and
chromium-driver, driven with Selenium; .ci/run installs them when missing).

A test that needs the browser calls `require_chromium()`: where the browser is missing it is
skipped, except under CI (CI=true), where that is a failure.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# No GPU, no sandbox (root), and nothing that reaches for the network on its own: this machine
# has none, and Chromium's background connections otherwise fail many at a time.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--disable-dev-shm-usage")


def require_chromium() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (the project's test extra)")
    if missing:
        message = f"headless Chromium needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator:
    """A Selenium WebDriver on a fresh headless Chromium profile, closed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(300)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for_text(driver, text: str, timeout: float = 240) -> str:
    """The page's visible text once it contains `text` (single-page apps render after load)."""
    from selenium.webdriver.support.ui import WebDriverWait

    seen = {"text": ""}

    def has_text(d) -> bool:
        seen["text"] = d.execute_script("return document.body ? document.body.innerText : ''") or ""
        return text in seen["text"]

    try:
        WebDriverWait(driver, timeout, poll_frequency=1).until(has_text)
    except Exception as exc:
        raise AssertionError(f"{text!r} never appeared on {driver.current_url}; the page showed:\n"
                             f"{seen['text'][:3000]}") from exc
    return seen["text"]


def assert_screenshot_not_blank(driver, path: Path) -> None:
    """Save a screenshot and check it shows something: many distinct shades, not one flat colour."""
    import numpy as np
    from PIL import Image

    png = driver.get_screenshot_as_png()
    path.write_bytes(png)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    assert pixels.std() > 5 and len(np.unique(pixels)) > 20, f"blank screenshot {path}"


# What a reader would notice in a page's layout, measured by the browser itself.
LAYOUT = """
const rect = e => e.getBoundingClientRect();
const doc = document.documentElement;
return {
  scrollWidth: doc.scrollWidth, clientWidth: doc.clientWidth,
  tables: [...document.querySelectorAll('table')].map(t => ({
    right: rect(t).right, boxRight: rect(t.parentElement).right, boxClass: t.parentElement.className,
    boxScrolls: t.parentElement.scrollWidth > t.parentElement.clientWidth, rows: t.rows.length})),
  images: [...document.images].map(i => ({
    alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth, width: rect(i).width,
    right: rect(i).right, cls: i.className,
    section: (() => { let e = i.closest('figure'); while (e && !/^H[23]$/.test(e.tagName)) e = e.previousElementSibling;
                      return e ? e.textContent : ''; })()})),
  headings: [...document.querySelectorAll('h2,h3')].map(h => [h.tagName, h.textContent]),
  bodyWidth: rect(document.body).width,
};
"""


def layout(driver) -> dict:
    return driver.execute_script(LAYOUT)
