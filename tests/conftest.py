"""Shared fixtures: real recordings made once per session by the real CLI, and one Chromium for every
browser test (the harness it uses is tests/browser.py)."""

from __future__ import annotations

import atexit
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from browser import CHROMIUM, CHROMIUM_ARGS, LOCAL, Watch


def acc(*args: str, cwd: Path | None = None, check: bool = True, timeout: float = 600,
        env: dict[str, str] | None = None, fsize: int | None = None) -> subprocess.CompletedProcess:
    """Run `acc-capture ARGS` in a process of its own (`acc_start`, below) and wait for it; returns the
    completed process (text output). Its environment: `env`, or this process's with COLUMNS=120."""
    proc = acc_start(*args, cwd=cwd, env={**os.environ, "COLUMNS": "120"} if env is None else env, fsize=fsize)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    done = subprocess.CompletedProcess(["acc-capture", *args], proc.returncode, out, err)
    if check and done.returncode != 0:
        raise AssertionError(f"acc-capture {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


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
def float16_rec(recordings) -> Path:
    """bcl_rec's run (30 steps of bcl-slow, seed 0, chunked 7 steps at a time) with --dtype float16."""
    path = recordings / "float16"
    acc("run", "--steps", "30", "--chunk-steps", "7", "--dtype", "float16", "--out", str(path))
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


# -- CLI calls at the cost of one import ----------------------------------------------------------
# Most of a call's time is importing torch. `acc`, `acc_start`, `fork_cli` and `fork_cli_chains` run each
# call in a process of its own, forked from one helper interpreter that imported the CLI once for the
# session (the fork server below): the child takes the call's argv, environment, working directory,
# stdout/stderr files and file-size limit, runs `capture.cli.main()` and exits as the interpreter would (an
# uncaught exception prints its traceback and exits 1; a signal that kills it is its exit status,
# negative). capture/crash.py reads ACC_CAPTURE_CRASH at import: each child imports that module again
# (reload) under its own environment, as a fresh interpreter would.

# Runs in a fresh interpreter: import the CLI once, then serve calls on a Unix socket (argv[1]). Each
# connection sends one call as a JSON line; an intermediate process forks the child that runs it, answers
# the child's pid, waits for it and answers its exit code. The server ends when its stdin closes. (It runs
# without COLUMNS: a console made at import then takes its width from each child's environment.)
_FORK_SERVER = r"""
import importlib, json, os, resource, select, signal, socket, sys, threading, traceback
from capture.cli import main
import acc.data, acc.recipe, capture.crash, capture.recorder  # (what `run` imports when called: once, not per child)
assert threading.active_count() == 1, f"threads before fork: {threading.enumerate()}"
listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])
listener.listen(64)
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # (the intermediate processes are reaped by the kernel)
print("ready", flush=True)
devnull = os.open(os.devnull, os.O_RDWR)
os.dup2(devnull, 1)

def child(c):
    code = 1
    try:
        os.environ.clear()
        os.environ.update(c["env"])
        importlib.reload(capture.crash)  # (it reads ACC_CAPTURE_CRASH at import)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # (Ctrl-C as a fresh interpreter takes it, even
        # where the tests were started with it ignored, as `cmd &` in a shell without job control starts them)
        if c["fsize"] is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (c["fsize"], c["fsize"]))
        os.chdir(c["cwd"])
        os.dup2(devnull, 0)
        for fd, name in ((1, c["stdout"]), (2, c["stderr"])):
            os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.argv = ["-c", *c["args"]]
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

def serve(conn, c):
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        conn.close()
        child(c)
    try:
        conn.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    finally:
        os._exit(0)

while True:
    ready, _, _ = select.select([listener, sys.stdin], [], [])
    if sys.stdin in ready:
        break
    conn, _ = listener.accept()
    with conn.makefile("rb") as f:
        call = json.loads(f.readline())
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() == 0:
        listener.close()
        serve(conn, call)
    conn.close()
"""


class Forked:
    """A CLI call running in a child of the fork server: what the tests use of `subprocess.Popen` (pid,
    poll, wait, send_signal, kill, communicate; stdout and stderr are the files it writes, open for
    reading)."""

    def __init__(self, args: list[str], conn, pid: int, out: Path, err: Path):
        self.args, self.pid, self.returncode = ["acc-capture", *args], pid, None
        self._conn, self._out, self._err = conn, out, err
        self.stdout, self.stderr = open(out), open(err)
        self._ended = threading.Event()
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        with self._conn, self._conn.makefile("rb") as answers:
            line = answers.readline()
        self.returncode = int(line) if line else -signal.SIGKILL  # (no answer: the server is gone)
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        out, err = self.stdout.read(), self.stderr.read()
        self.stdout.close()
        self.stderr.close()
        self._out.unlink(missing_ok=True)
        self._err.unlink(missing_ok=True)
        return out, err


class _ForkServer:
    """The helper interpreter of the session that forks a child per CLI call (see above)."""

    def __init__(self) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="acc-fork-"))
        self.socket = self.dir / "socket"
        self.proc = subprocess.Popen([sys.executable, "-c", _FORK_SERVER, str(self.socket)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(self.dir / "server.err", "w"),
                                     env={k: v for k, v in os.environ.items() if k != "COLUMNS"})
        if self.proc.stdout.readline() != b"ready\n":
            self.proc.wait(timeout=60)
            raise AssertionError(f"the fork server did not start:\n{(self.dir / 'server.err').read_text()}")
        self.count = itertools.count()

    def start(self, args: list[str], cwd: Path, env: dict[str, str], fsize: int | None = None) -> Forked:
        import socket

        n = next(self.count)
        out, err = self.dir / f"{n}.out", self.dir / f"{n}.err"
        out.touch()
        err.touch()
        call = {"args": [str(a) for a in args], "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err),
                "fsize": fsize}
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(str(self.socket))
        conn.sendall(json.dumps(call).encode() + b"\n")
        pid = b""
        while not pid.endswith(b"\n"):
            got = conn.recv(1)
            if not got:
                raise AssertionError(f"the fork server did not start acc-capture {' '.join(args)}")
            pid += got
        return Forked(list(args), conn, int(pid), out, err)

    def close(self) -> None:
        import shutil

        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


_server: _ForkServer | None = None
_server_lock = threading.Lock()


def fork_server() -> _ForkServer:
    global _server
    with _server_lock:
        if _server is None:
            _server = _ForkServer()
            atexit.register(_server.close)
        return _server


def acc_start(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, fsize: int | None = None) -> Forked:
    """Start `acc-capture ARGS` in a process of its own (a child of the fork server), in `cwd` (default:
    this one), under `env` (default: this process's environment) and, given `fsize`, a limit on the size of
    the files it writes (RLIMIT_FSIZE, SIGXFSZ ignored: a write past it fails with EFBIG). Not waited for."""
    return fork_server().start(list(args), Path(cwd or os.getcwd()), dict(os.environ if env is None else env), fsize)


def fork_cli_chains(chains: dict[str, list[tuple[list[str], Path]]]) -> dict[str, list[subprocess.CompletedProcess]]:
    """Run named chains of `acc-capture ARGS` calls (in CWD), a process each, a chain's calls in order,
    two chains at a time (each call as `acc` makes it)."""
    from concurrent.futures import ThreadPoolExecutor

    def chain(calls):
        return [acc(*args, cwd=cwd, check=False) for args, cwd in calls]

    with ThreadPoolExecutor(2) as pool:
        done = dict(zip(chains, pool.map(chain, chains.values())))
    return done


def fork_cli(calls: dict[str, tuple[list[str], Path]]) -> dict[str, subprocess.CompletedProcess]:
    """`fork_cli_chains` for independent calls."""
    done = fork_cli_chains({name: [call] for name, call in calls.items()})
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
