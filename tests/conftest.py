"""Shared fixtures: real recordings made once per session by the real CLI, and one Chromium for every
browser test (the harness it uses is tests/browser.py)."""

from __future__ import annotations

import hashlib
import json
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


# -- checks shared by the tests ----------------------------------------------------------------------

def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str, code: int = 1) -> str:
    """`proc`, an `acc-capture` call, was refused the way bad input must be: exit `code`, no traceback, and
    one line on stderr, `error: ...`, holding each of `words` (case-insensitive). Returns that line."""
    said = (proc.stdout or "") + (proc.stderr or "")
    assert "Traceback" not in said, said
    assert proc.returncode == code, f"exit code {proc.returncode}, not {code}:\n{proc.stderr}"
    lines = [line for line in (proc.stderr or "").splitlines() if line.strip()]
    assert len(lines) == 1, f"stderr is not one line:\n{proc.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in the error line: {lines[0]}"
    return lines[0]


def assert_one_line(message: str, *words: str) -> None:
    """An error message as a user sees it: one non-empty line holding each of `words` (case-insensitive)."""
    assert message.strip() and "\n" not in message.strip(), f"not one line: {message!r}"
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"


def assert_same_recording(got: Path, want: Path, steps: int | None = None) -> None:
    """Two recordings hold the same arrays (every tensor and summary, read with plain zarr), bit for bit and
    of the same dtype, over their first `steps` steps (None: all the completed steps, as many in each)."""
    import zarr

    a, b = zarr.open_group(got, mode="r"), zarr.open_group(want, mode="r")
    done = [r.attrs["acc_capture"]["steps_completed"] for r in (a, b)]
    if steps is None:
        assert done[0] == done[1], f"{done[0]} steps against {done[1]}"
        steps = done[0]
    assert min(done) >= steps, f"{done} steps completed, {steps} compared"
    for group in ("tensors", "summary"):
        names = sorted(b[group].array_keys())
        assert sorted(a[group].array_keys()) == names, f"{group}/ holds other arrays"
        for name in names:
            x, y = a[group][name][:steps], b[group][name][:steps]
            assert x.dtype == y.dtype and x.shape == y.shape, f"{group}/{name}: {x.dtype}{x.shape} against {y.dtype}{y.shape}"
            assert x.tobytes() == y.tobytes(), f"{group}/{name} differs"


# -- many CLI calls at the cost of one import -------------------------------------------------------
# Most of a call's time is importing torch: `fork_cli` imports the CLI once in a helper process that
# forks one child per call; each child runs `capture.cli.main()` with its own argv, working directory and
# stdout/stderr files, and exits as the interpreter would (an uncaught exception prints its traceback
# and exits 1).

# Runs in a fresh interpreter: import the CLI once, then fork a child per call, two at a time.
# stdin: a list of chains, each a list of calls run one after the other; stdout: their exit codes.
_FORK_DRIVER = r"""
import json, os, sys, threading, traceback
from capture.cli import main
import acc.data, acc.recipe, capture.recorder  # (what `run` imports when called: once, not per child)
assert threading.active_count() == 1, f"threads before fork: {threading.enumerate()}"
chains = json.load(sys.stdin)
codes = [[None] * len(chain) for chain in chains]
sys.stdout.flush()

def child(c):
    code = 1
    try:
        os.chdir(c["cwd"])
        for fd, name in ((1, c["stdout"]), (2, c["stderr"])):
            os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.argv = ["acc-capture", *c["args"]]
        try:
            main()
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)

pending, running = [(i, 0) for i in range(len(chains))], {}
while pending or running:
    while pending and len(running) < 2:
        i, j = pending.pop(0)
        pid = os.fork()
        if pid == 0:
            child(chains[i][j])
        running[pid] = (i, j)
    pid, status = os.wait()
    i, j = running.pop(pid)
    codes[i][j] = os.waitstatus_to_exitcode(status)
    if j + 1 < len(chains[i]):
        pending.insert(0, (i, j + 1))
print(json.dumps(codes))
"""


def fork_cli_chains(chains: dict[str, list[tuple[list[str], Path]]],
                    scratch: Path) -> dict[str, list[subprocess.CompletedProcess]]:
    """Run named chains of `acc-capture ARGS` calls (in CWD), a process each, a chain's calls in order.

    The calls are the real CLI in processes of their own, forked from one interpreter that has
    imported it (importing torch is most of a call's time); two run at a time.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    jobs = [[{"args": args, "cwd": str(cwd), "stdout": str(scratch / f"{name}.{j}.out"),
              "stderr": str(scratch / f"{name}.{j}.err")} for j, (args, cwd) in enumerate(calls)]
            for name, calls in chains.items()]
    driver = subprocess.run([sys.executable, "-c", _FORK_DRIVER], input=json.dumps(jobs), capture_output=True,
                            text=True, timeout=600, env={**os.environ, "COLUMNS": "120"})
    assert driver.returncode == 0, driver.stderr
    codes = json.loads(driver.stdout)
    def result(job: dict, code: int) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(["acc-capture", *job["args"]], code, Path(job["stdout"]).read_text(),
                                           Path(job["stderr"]).read_text())

    return {name: [result(job, code) for job, code in zip(chain, chain_codes)]
            for name, chain, chain_codes in zip(chains, jobs, codes)}


def fork_cli(calls: dict[str, tuple[list[str], Path]], scratch: Path) -> dict[str, subprocess.CompletedProcess]:
    """`fork_cli_chains` for independent calls."""
    done = fork_cli_chains({name: [call] for name, call in calls.items()}, scratch)
    return {name: procs[0] for name, procs in done.items()}


def snapshot(path: Path) -> dict[str, str]:
    """Every file and folder under `path` (or the file itself) with the sha256 of its bytes."""
    assert path.exists(), path
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out
