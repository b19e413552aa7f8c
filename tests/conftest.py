"""Shared fixtures: real recordings made once per session by the real CLI, and one Chromium for every
browser test (the harness it uses is tests/browser.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from browser import CHROMIUM, CHROMIUM_ARGS, LOCAL, Watch

CLI = [sys.executable, "-c", "from capture.cli import main; main()"]


def acc(*args: str, cwd: Path | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `acc-capture ARGS` in a subprocess; returns the completed process (text output)."""
    proc = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "120"})
    if check and proc.returncode != 0:
        raise AssertionError(f"acc-capture {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def recordings(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recordings")


@pytest.fixture(scope="session")
def bcl_rec(recordings) -> Path:
    """A 30-step bcl-slow recording (seed 0, every key, every step), chunked 7 steps at a time."""
    path = recordings / "bcl"
    acc("run", "--steps", "30", "--out", str(path), "--chunk-steps", "7", "--note", "fixture")
    return path


@pytest.fixture(scope="session")
def control_rec(recordings) -> Path:
    path = recordings / "control"
    acc("run", "--steps", "12", "--condition", "control", "--out", str(path))
    return path


@pytest.fixture(scope="session")
def sparse_rec(recordings) -> Path:
    """bcl-slow, 20 steps, full tensors every 5th step only."""
    path = recordings / "sparse"
    acc("run", "--steps", "20", "--full-every", "5", "--out", str(path))
    return path


# -- the browser: one Chromium for the whole session -------------------------------------------------

def _missing(what: str) -> None:
    """Without a browser the browser tests cannot run: under CI that fails the suite, never passes it quietly."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}; CI must install it (see .ci/run)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        _missing(f"{CHROMIUM} is missing; the browser tests need Debian's chromium package")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh page; it fails the test on console errors, page errors, failed or non-local requests."""
    import re

    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    watch = Watch()

    def route(r):
        url = r.request.url
        if re.match(LOCAL, url):
            r.continue_()
        else:
            watch.blocked.append(url)
            r.abort()
    context.route("**/*", route)
    pg = context.new_page()

    def on_response(r):
        watch.fetches.append((r.url, r.request.headers.get("range"), r.status))
        if r.status >= 400:
            watch.bad_responses.append(f"{r.status} {r.url}")
    pg.on("request", lambda r: watch.requests.append(r.url))
    pg.on("console", lambda m: m.type in ("error", "assert") and watch.errors.append(f"console {m.type}: {m.text}"))
    pg.on("pageerror", lambda e: watch.errors.append(f"page error: {e}"))
    pg.on("requestfailed", lambda r: watch.errors.append(f"request failed: {r.url} {r.failure}"))
    pg.on("response", on_response)

    def on_dialog(d):
        watch.dialogs.append(d.message)
        d.dismiss()
    pg.on("dialog", on_dialog)
    pg.watch = watch
    yield pg
    context.close()
    assert not watch.errors, watch.errors
    assert not watch.bad_responses, watch.bad_responses
    assert not watch.blocked, f"requests left 127.0.0.1: {watch.blocked}"
    assert not watch.dialogs, watch.dialogs
    outside = [u for u in watch.requests if not re.match(LOCAL, u)]
    assert not outside, f"requests left 127.0.0.1: {outside}"
