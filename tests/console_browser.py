"""A real browser for the console tests: Debian's Chromium driven by Playwright (the PyPI package).

Playwright's own browser download is not used: the driver ships in the wheel
and drives ``/usr/bin/chromium`` (a Debian package the Makefile installs),
headless, with a fresh profile per launch and no background traffic (without
those flags Chromium keeps dialling Google services that are not there).
Screenshots go to ``build/screenshots/`` (kept by CI).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

CHROMIUM = os.environ.get("EDGE_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = REPO / "build" / "screenshots"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
#: a 7-inch in-vehicle display
SEVEN_INCH = {"width": 800, "height": 480}
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def launch(playwright: Any, extra_args: list[str] | None = None) -> Any:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        raise AssertionError(
            f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium, as `make test` "
            "does) or point EDGE_TEST_CHROMIUM at one"
        )
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, *(extra_args or [])])


@pytest.fixture(scope="module", name="playwright_driver")
def playwright_fixture() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev extra")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module", name="browser")
def browser_fixture(playwright_driver: Any) -> Iterator[Any]:
    b = launch(playwright_driver)
    yield b
    b.close()


def shoot(page: Any, name: str, sizes: dict[str, dict[str, int]] | None = None) -> list[Path]:
    """Screenshots of ``page`` at each size (desktop, phone, a 7-inch display), restored to desktop after."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    out = []
    for label, size in (sizes or {"desktop": DESKTOP, "phone": PHONE, "7inch": SEVEN_INCH}).items():
        page.set_viewport_size(size)
        page.wait_for_timeout(300)  # charts follow their container's new width
        path = SCREENSHOTS / f"{name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        # usable at this width: nothing makes the page itself scroll sideways (wide tables scroll inside)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name} at {label} width scrolls sideways by {overflow} px"
        out.append(path)
    page.set_viewport_size(DESKTOP)
    return out


def login(browser: Any, base_url: str, token: str) -> tuple[Any, Any]:
    """A fresh browser context logged in with ``token`` through the login form: (context, page)."""
    context = browser.new_context(base_url=base_url, viewport=DESKTOP)
    # the first connection loads the daemon's lazy API: on a loaded 2-core box that alone has taken
    # most of Playwright's default 30 s (the voice console's login timed out so under load)
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/ui/**")
    return context, page


_A11Y = """() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push("<html> has no lang");
  if (document.querySelectorAll("h1").length !== 1) problems.push("a page has one h1");
  const name = (el) => (el.getAttribute("aria-label") || (el.labels && [...el.labels].map((l) => l.textContent).join(" "))
    || el.textContent || el.title || "").trim();
  for (const el of document.querySelectorAll("button, a[href], input:not([type=hidden]), select, textarea")) {
    if (!el.getClientRects().length) continue;
    if (!name(el)) problems.push("no accessible name: " + el.outerHTML.slice(0, 100));
  }
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(",").map(Number); return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 }; };
  const lum = ({ r, g, b }) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const under = (el) => { for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
    if (c && c.a > 0.5) return c; } return { r: 255, g: 255, b: 255, a: 1 }; };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  while (walker.nextNode()) {
    const text = walker.currentNode, el = text.parentElement;
    if (!text.textContent.trim() || seen.has(el) || !el.getClientRects().length || el.closest(".sr-only, .skip")) continue;
    seen.add(el);
    const cs = getComputedStyle(el), fg = parse(cs.color), bg = under(el);
    const a = lum(fg), b = lum(bg), ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const large = parseFloat(cs.fontSize) >= 24 || (parseFloat(cs.fontSize) >= 18.66 && Number(cs.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) problems.push(`contrast ${ratio.toFixed(2)}:1 for "${text.textContent.trim().slice(0, 40)}"`);
  }
  return problems;
}"""


def accessibility_problems(page: Any) -> list[str]:
    """WCAG basics the page must meet: a language, one h1, a name on every control, AA text contrast."""
    problems: list[str] = page.evaluate(_A11Y)
    return problems
