"""Live stepping: `acc-capture serve` and the /inspect/ API.

(a) the HTTP API over a real socket, against the server `serve` starts (in a thread, port 0);
(b) serving a recording and stepping it continues it exactly as one longer run;
(c) the page's Step buttons in headless Chromium (the session's one, conftest.py);
(d) the `serve` command itself: its lifecycle and its one-line errors.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from browser import show
from capture.cli import open_live_server
from capture.live import MAX_STEPS_PER_REQUEST, LiveSession
from capture.recording import Recording
from conftest import acc, acc_start, assert_one_line_error, assert_same_recording, fork_cli
from viewer import build, make_server

LOCAL = re.compile(r"^(http://127\.0\.0\.1:\d+/|data:|blob:)")


# -- recordings and servers ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """20 steps of bcl-slow, seed 0, on the CPU (written 7 steps at a time)."""
    path = tmp_path_factory.mktemp("live") / "base"
    acc("run", "--steps", "20", "--out", str(path), "--device", "cpu", "--chunk-steps", "7")
    return path


@pytest.fixture(scope="module")
def reference(request, tmp_path_factory) -> Path:
    """The same run, 30 steps in one go: the session's shared 30-step recording when it trained on the CPU."""
    shared = request.getfixturevalue("bcl_rec")
    if Recording.open(shared).meta["device"] == "cpu" and Recording.open(shared).steps == 30:
        return shared
    path = tmp_path_factory.mktemp("live") / "reference"
    acc("run", "--steps", "30", "--out", str(path), "--device", "cpu")
    return path


@dataclass
class Live:
    server: object
    path: Path
    thread: threading.Thread = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def api(self):
        return self.server.api

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.api.close()


def start_live(path: Path, recordings_dir: Path) -> Live:
    """What `acc-capture serve PATH` starts, serving on a thread."""
    server = open_live_server(path, device="cpu", port=None, recordings_dir=recordings_dir)
    live = Live(server, path, threading.Thread(target=server.serve_forever, daemon=True))
    live.thread.start()
    return live


@pytest.fixture
def live(base, tmp_path):
    live = start_live(shutil.copytree(base, tmp_path / "rec"), tmp_path / "recordings")
    yield live
    live.stop()


def call(port: int, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, object]:
    """One request on its own connection; the JSON answer (or the raw bytes of anything else)."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        if path.startswith("/inspect") and r.getheader("Content-Type") == "application/json":
            assert r.getheader("Cache-Control") == "no-store"
            return r.status, json.loads(data)
        return r.status, data
    finally:
        conn.close()


def post(port: int, path: str, body=None, **kw) -> tuple[int, object]:
    return call(port, "POST", path, body, **kw)


def wait_until(fn, what: str, limit: float = 120):
    """Poll `fn` until it returns something true (the limit only keeps a broken run from hanging)."""
    deadline = time.monotonic() + limit
    while not (value := fn()):
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)
    return value


def listening(port: int) -> list[str]:
    """The local addresses a socket listens on for `port` (from the kernel's own table)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, p = local.split(":")
                if state == "0A" and int(p, 16) == port:  # LISTEN
                    found.append(addr)
    return found


LOOPBACK = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


# -- (a) the API --------------------------------------------------------------------------------------

def test_api_answers_every_endpoint(live):
    port = live.port
    rec = Recording.open(live.path)
    assert live.server.server_address[0] == "127.0.0.1"
    assert listening(port) == [LOOPBACK], "the server listens beyond 127.0.0.1"

    status, state = call(port, "GET", "/inspect/state")
    assert status == 200
    assert state["active"] is True and state["busy"] is False
    assert state["total_steps"] == 20 and state["step"] == 19 and state["condition"] == "bcl-slow"
    assert Path(state["path"]).resolve() == live.path.resolve()

    status, history = call(port, "GET", "/inspect/history")
    assert status == 200 and [h["step"] for h in history] == list(range(20))
    assert [h["loss"] for h in history] == rec.summary("loss").tolist()
    assert history[7]["win_rate"] == rec.summary("win_rate")[7].tolist()

    # every recorded step is served, from the recording
    for n in (0, 19):
        status, data = call(port, "GET", f"/inspect/step/{n}")
        assert status == 200 and data["step"] == n
        step = rec.step(n)
        assert set(data["keys"]) == set(step)
        assert data["batch_labels"] == step["batch_labels"].tolist()
        assert np.array_equal(np.array(data["strength"], dtype=np.float32), step["strength"])
        assert data["loss"] == float(step["loss"])
    for bad in ("20", "21", "-1", "100000"):
        status, answer = call(port, "GET", f"/inspect/step/{bad}")
        assert status == 404 and "not recorded" in answer["error"], (bad, answer)
    for bad in ("x", "1.5", "%20", "1e3", "0x1"):
        status, answer = call(port, "GET", f"/inspect/step/{bad}")
        assert status == 400 and "integer" in answer["error"], (bad, answer)

    status, answer = post(port, "/inspect/step", {"n": 1})
    assert status == 200
    assert answer["steps_completed"] == 21 and answer["step"] == 20
    assert answer["loss"] == float(Recording.open(live.path).summary("loss")[20])
    # the viewer in the recording was rebuilt: a reload (or a static server later) shows the new step
    assert '"steps": 21' in (live.path / "index.html").read_text()
    status, page = call(port, "GET", "/")
    assert status == 200 and b'name="acc-capture-live"' in page
    assert b"acc-capture-live" not in (live.path / "index.html").read_bytes(), "the live mark went to disk"

    status, history = call(port, "GET", "/inspect/history")
    assert [h["step"] for h in history] == list(range(21))

    for path in ("/inspect/nothing", "/inspect", "/inspect/step/1/2"):
        status, answer = call(port, "GET", path)
        assert status == 404 and "error" in answer, path
    status, answer = post(port, "/inspect/state", {})
    assert status == 404


def test_api_refuses_bad_input(live):
    port = live.port
    for n in (0, -1, "x", 10**9, True, False, 1.5, None, [1], MAX_STEPS_PER_REQUEST + 1):
        status, answer = post(port, "/inspect/step", {"n": n})
        assert status == 400 and "n must be an integer" in answer["error"], (n, answer)
    for body in (b"{", b"{'n': 1}", b"\xff\xfe", b"n=1", b"[1]", b'"n"', b"1",
                 b'{"n": ' + b"1" * 5000 + b"}", b"[" * 30_000 + b"]" * 30_000):  # (past int()'s digits, nested too deep)
        status, answer = post(port, "/inspect/step", body)
        assert status == 400 and answer["error"], (body, answer)
    status, answer = post(port, "/inspect/setup", {"condition": "nope"})
    assert status == 400 and "unknown condition" in answer["error"]
    for bad in ({"condition": ["control"]}, {"condition": "control", "seed": "x"}, {"condition": "control", "seed": -2}):
        status, answer = post(port, "/inspect/setup", bad)
        assert status == 400, (bad, answer)
    # the body is read by its Content-Length, and capped
    status, answer = post(port, "/inspect/step", b"{" + b" " * 70_000 + b"}")
    assert status == 413
    for length in ("x", "\u00b2", "-1"):  # ('²' is a digit to str.isdigit)
        status, answer = post(port, "/inspect/step", None, headers={"Content-Length": length})
        assert status == 400 and "Content-Length" in answer["error"], (length, answer)
    # a cross-site page cannot drive the session, nor can a name that merely resolves here
    status, answer = post(port, "/inspect/step", {"n": 1}, headers={"Origin": "http://example.com"})
    assert status == 403
    status, answer = call(port, "GET", "/inspect/state", headers={"Host": f"attacker.example:{port}"})
    assert status == 403
    # none of that trained anything
    assert call(port, "GET", "/inspect/state")[1]["total_steps"] == 20
    assert Recording.open(live.path).steps == 20


def test_one_step_at_a_time(live):
    """A second step while one runs is refused (409); state answers meanwhile."""
    port = live.port
    results = []
    # the step cannot finish while the test holds the lock its viewer rebuild needs: it stays running
    with live.server.build_lock:
        worker = threading.Thread(target=lambda: results.append(post(port, "/inspect/step", {"n": 2})))
        worker.start()
        state = wait_until(lambda: (s := call(port, "GET", "/inspect/state")[1])["busy"] and s, "state says busy")
        assert state["active"] is True and state["running_steps"] == 2
        status, answer = post(port, "/inspect/step", {"n": 1})
        assert status == 409 and "already running" in answer["error"]
        assert post(port, "/inspect/teardown", {})[0] == 409
        assert post(port, "/inspect/setup", {"condition": "control"})[0] == 409
        assert call(port, "GET", "/inspect/history")[0] == 200
        assert worker.is_alive()
    worker.join()
    assert results[0][0] == 200 and results[0][1]["steps_completed"] == 22
    state = call(port, "GET", "/inspect/state")[1]
    assert state["busy"] is False and state["total_steps"] == 22

    # history: one entry per step; every step served, those before the session and those after
    status, history = call(port, "GET", "/inspect/history")
    assert [h["step"] for h in history] == list(range(22))
    rec = Recording.open(live.path)
    for n in (21,):
        status, data = call(port, "GET", f"/inspect/step/{n}")
        assert status == 200 and data["batch_labels"] == rec.step(n)["batch_labels"].tolist()
    assert call(port, "GET", "/inspect/step/22")[0] == 404


def test_teardown_then_setup(live, tmp_path):
    port = live.port
    assert post(port, "/inspect/teardown")[0] == 200  # (no body at all)
    assert Recording.open(live.path).status == "complete"
    status, state = call(port, "GET", "/inspect/state")
    assert status == 200 and state["active"] is False
    status, answer = post(port, "/inspect/step", {"n": 1})
    assert status == 409 and "no active session" in answer["error"]
    for path in ("/inspect/history", "/inspect/step/0"):
        assert call(port, "GET", path)[0] == 409
    assert post(port, "/inspect/teardown", {})[0] == 200  # nothing to tear down: still fine
    # the old page stays served
    assert b'"steps": 20' in call(port, "GET", "/")[1]

    status, answer = post(port, "/inspect/setup", {"condition": "control", "seed": 3})
    assert status == 200 and answer["active"] is True and answer["total_steps"] == 0
    new = tmp_path / "recordings" / "run1"
    assert Path(answer["path"]).resolve() == new.resolve()
    # the server switched to the new recording, its viewer built
    status, page = call(port, "GET", "/index.html")
    assert status == 200 and b'"condition": "control"' in page and b"acc-capture-live" in page
    assert post(port, "/inspect/step", {"n": 2})[1]["steps_completed"] == 2
    rec = Recording.open(new)
    assert rec.steps == 2 and rec.condition == "control" and rec.meta["seed"] == 3
    status, chunk = call(port, "GET", "/zarr.json")
    assert b'"condition": "control"' in chunk
    assert post(port, "/inspect/teardown", {})[0] == 200
    assert Recording.open(new).status == "complete"


def test_static_servers_have_no_api(base, tmp_path):
    path = shutil.copytree(base, tmp_path / "static")
    build(Recording.open(path))
    server = make_server(path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert call(port, "GET", "/inspect/state")[0] == 404
        assert post(port, "/inspect/step", {"n": 1})[0] == 404
        assert post(port, "/index.html", {"n": 1})[0] == 405
        status, page = call(port, "GET", "/")
        assert status == 200 and b"acc-capture-live" not in page
    finally:
        server.shutdown()
        server.server_close()
    assert Recording.open(path).steps == 20


# -- (b) serve, step, teardown == one run -----------------------------------------------------------

def test_serve_then_step_continues_exactly_like_one_run(live, reference):
    status, answer = post(live.port, "/inspect/step", {"n": 10})
    assert status == 200 and answer["steps_completed"] == 30
    assert post(live.port, "/inspect/teardown", {})[0] == 200
    assert_same_recording(live.path, reference, 30)


# -- (c) the page --------------------------------------------------------------------------------------

@dataclass
class Watch:
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)  # patterns of errors a test provokes on purpose

    def unexpected(self, items: list[str]) -> list[str]:
        return [e for e in items if not any(re.search(p, e) for p in self.expected)]


def on_page(browser, body) -> None:
    """body(page) in a fresh page of the session's Chromium (conftest.py); fails on console errors, page
    errors, failed, bad or non-local requests, except those a test expects (`page.watch.expected`)."""
    def job(b):
        context = b.new_context(viewport={"width": 1440, "height": 900})
        watch = Watch()
        outside = []

        def route(r):
            if LOCAL.match(r.request.url):
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()
        context.route("**/*", route)
        pg = context.new_page()
        pg.on("request", lambda r: watch.requests.append(r.url))
        pg.on("console", lambda m: m.type in ("error", "assert") and watch.errors.append(f"console {m.type}: {m.text}"))
        pg.on("pageerror", lambda e: watch.errors.append(f"page error: {e}"))
        pg.on("requestfailed", lambda r: watch.errors.append(f"request failed: {r.url} {r.failure}"))
        pg.on("response", lambda r: r.status >= 400 and watch.bad_responses.append(f"{r.status} {r.url}"))
        pg.watch = watch
        try:
            body(pg)
        finally:
            context.close()
        assert not watch.unexpected(watch.errors), watch.errors
        assert not watch.unexpected(watch.bad_responses), watch.bad_responses
        assert not outside, f"requests left 127.0.0.1: {outside}"
    job(browser)


def wait_step(pg, step: int) -> None:
    pg.wait_for_selector(f"html[data-step='{step}'][data-ready='true']", timeout=60000)


BATCH_HASH = """() => [...document.querySelectorAll('[data-section="batch"] canvas.thumbs')].map((c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i += 4) h = (Math.imul(h, 31) + ((d[i] << 16) | (d[i + 1] << 8) | d[i + 2])) | 0;
  return h;
})"""


def batch_label_readout(pg) -> str:
    """Hover the first image of the batch grid; its readout names the image's label."""
    batch = pg.locator("[data-key='batch_images'] canvas.thumbs")
    batch.evaluate("e => e.scrollIntoView({ block: 'center' })")
    box = batch.bounding_box()
    cell = box["width"] / (16 * 29 - 1)
    pg.mouse.move(box["x"] + 14.5 * cell, box["y"] + 14.5 * cell)
    return pg.locator("[data-key='batch_images'] output.readout").text_content()


def test_step_x10_shows_the_new_steps_without_a_reload(browser, live):
    on_page(browser, lambda page: step_x10(page, live))


def step_x10(page, live):
    page.goto(live.url + "#step=19")
    wait_step(page, 19)
    page.wait_for_selector("#live[data-state='idle']")
    buttons = page.locator("#live [data-act='train']")
    assert buttons.count() == 3 and all(buttons.nth(i).is_visible() for i in range(3))
    assert [buttons.nth(i).text_content() for i in range(3)] == ["Step", "Step ×10", "Step ×50"]
    show(page, "[data-section='batch']", 19)  # (the page draws the sections in view)
    before = page.evaluate(BATCH_HASH)
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    with live.server.build_lock:  # holds the step open until the page shows it is running
        page.click("#live [data-act='train'][data-n='10']")
        page.wait_for_selector("#live[data-state='busy']")
        assert all(buttons.nth(i).is_disabled() for i in range(3))
        assert "training 10 steps" in page.locator("#live-status").text_content()
    wait_step(page, 29)
    page.wait_for_selector("#live[data-state='idle']")
    assert page.evaluate("window.sameDocument") is True
    show(page, "[data-section='batch']", 29)
    assert page.evaluate(BATCH_HASH) != before, "the batch images did not change"
    assert page.locator("#step-input").input_value() == "29"
    assert page.locator("#step-input").get_attribute("max") == "29"
    assert page.locator("#step-last").text_content() == "/ 29"
    assert page.locator("#run-steps").text_content() == "30"
    assert "recorded 10 steps" in page.locator("#live-status").text_content()

    # what the page shows is the new step as recorded (the summary and label chunks were fetched again)
    rec = Recording.open(live.path)
    loss = page.locator("#loss-reading").text_content()
    assert abs(float(loss.split()[1]) - float(rec.summary("loss")[29])) < 1e-3 * float(rec.summary("loss")[29]), loss
    label = int(re.search(r"label (\d+)", batch_label_readout(page)).group(1))
    assert label == int(rec.step(29)["batch_labels"][0])
    # the timeline reaches the new step
    chart = page.locator("[data-chart='loss'] canvas")
    chart.evaluate("e => e.scrollIntoView({ block: 'center' })")
    box = chart.bounding_box()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    assert page.locator("[data-chart='loss'] output.readout").text_content().startswith("step 29:")
    # and the older steps are still there
    page.keyboard.press("Home")
    wait_step(page, 0)
    page.keyboard.press("End")
    wait_step(page, 29)
    assert_shown_as_stored(page, live.path, 29)

    # one more step lands in the file (the shard) that steps 20-29 already fill, whose index the page
    # has read and kept: it must read it again, not show step 30 as never written
    page.click("#live [data-act='train'][data-n='1']")
    wait_step(page, 30)
    page.wait_for_selector("#live[data-state='idle']")
    assert_shown_as_stored(page, live.path, 30)
    page.keyboard.press("ArrowLeft")
    wait_step(page, 29)
    assert_shown_as_stored(page, live.path, 29)


# the values the page holds for a step of an array (the ones it has drawn), as a flat list
STORE_ROW = """async ([array, step]) => Array.from(await window.accViewer.store.row(array, step))"""


def assert_shown_as_stored(page, path: Path, step: int) -> None:
    data = Recording.open(path).step(step)
    for key in ("strength", "batch_images", "encoder_weights", "batch_labels"):
        shown = np.array(page.evaluate(STORE_ROW, [f"tensors/{key}", step]), dtype=data[key].dtype)
        assert np.array_equal(shown, data[key].ravel()), f"{key} at step {step} is not what the recording holds"


def test_step_error_is_one_line_and_a_new_recording_reloads_the_page(browser, live):
    on_page(browser, lambda page: error_then_new_recording(page, live))


def error_then_new_recording(page, live):
    page.goto(live.url)
    wait_step(page, 0)
    page.wait_for_selector("#live[data-state='idle']")
    assert post(live.port, "/inspect/teardown", {})[0] == 200
    page.watch.expected += [r"status of 409", r"^409 .*/inspect/step$"]  # provoked below
    page.click("#live [data-act='train'][data-n='1']")
    page.wait_for_selector("#live[data-state='off'] #live-status.error")
    assert "the live session is closed" in page.locator("#live-status").text_content()
    assert any(r.startswith("409 ") for r in page.watch.bad_responses), page.watch.bad_responses
    assert not page.locator("#live [data-act='train']").first.is_visible()
    assert page.locator("#live-status").is_visible()

    # a session on a new recording, made by another client: the page reloads to show it
    assert post(live.port, "/inspect/setup", {"condition": "control"})[0] == 200
    page.evaluate("window.sameDocument = true")
    page.evaluate("accViewer.live.probe()")  # (what the page does when it is shown again)
    page.wait_for_selector("[data-section='run-info'] dd:text('control')")
    assert page.evaluate("window.sameDocument") is None
    page.wait_for_selector("#live[data-state='idle']")
    assert page.locator("#status").text_content() == "no steps recorded yet"
    page.click("#live [data-act='train'][data-n='1']")
    wait_step(page, 0)
    page.wait_for_selector("#live[data-state='idle']")
    assert page.locator("#run-steps").text_content() == "1"
    assert page.locator("[data-section='batch'] canvas.thumbs").count() == 1
    assert "no BCL" in page.locator("[data-section='trace-strength'] .section-note").text_content()


def test_a_static_page_never_asks_for_the_api(browser, live):
    static = make_server(live.path)  # the same recording under `view`'s static server
    threading.Thread(target=static.serve_forever, daemon=True).start()

    def body(page):
        page.goto(static.url)
        wait_step(page, 0)
        assert page.locator("#live").is_hidden()
        assert not [u for u in page.watch.requests if "/inspect" in u]
    try:
        on_page(browser, body)
    finally:
        static.shutdown()
        static.server_close()


# -- (d) the command ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_bad_input_is_one_line(base, tmp_path):
    path = shutil.copytree(base, tmp_path / "rec")
    (tmp_path / "empty").mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    with socket.socket() as s:  # a port in use
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = str(s.getsockname()[1])
        cases = {  # name -> (arguments, what the error line says)
            "missing": (["serve", str(tmp_path / "nope"), "--no-open"], "no such directory"),
            "empty": (["serve", str(tmp_path / "empty"), "--no-open"], "not a recording"),
            "unknown_condition": (["serve", "--condition", "nope", "--no-open"], "unknown condition"),
            "condition_for_a_recording": (["serve", str(path), "--condition", "control"], "for a new recording"),
            "port_in_use": (["serve", str(path), "--port", port, "--no-open"], "in use"),
            "port_in_use_new": (["serve", "--condition", "control", "--port", port, "--no-open"], "in use"),
        }
        procs = fork_cli({name: (args, cwd) for name, (args, _) in cases.items()})
    for name, (_, words) in cases.items():
        assert_one_line_error(procs[name], words)
    # nothing was touched or made
    assert not (path / "index.html").exists() and Recording.open(path).status == "complete"
    assert not any(cwd.iterdir())


def test_serve_new_recording_until_ctrl_c(tmp_path):
    port = free_port()
    proc = acc_start("serve", "--condition", "control", "--port", str(port), "--no-open", "--device", "cpu", cwd=tmp_path)
    try:
        def up():
            if proc.poll() is not None:
                raise AssertionError(f"serve exited: {proc.stderr.read()}")
            with contextlib.suppress(OSError):
                return call(port, "GET", "/inspect/state")[1]
        state = wait_until(up, "serve answers")
        assert state["active"] is True and state["total_steps"] == 0 and state["condition"] == "control"
        assert listening(port) == [LOOPBACK]
        status, page = call(port, "GET", "/")
        assert status == 200 and b"acc-capture-live" in page
        assert post(port, "/inspect/step", {"n": 3})[1]["steps_completed"] == 3
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert f"http://127.0.0.1:{port}/" in out and "session closed" in out
    path = tmp_path / "recordings" / "run1"
    rec = Recording.open(path)
    assert rec.status == "complete" and rec.steps == 3 and rec.condition == "control"
    assert '"steps": 3' in (path / "index.html").read_text()  # the archived page shows every step
    # resumable: a session (what `serve DIR` and `resume` open) continues it
    session = LiveSession(path, "cpu")
    try:
        session.step(2)
    finally:
        session.close()
    assert Recording.open(path).steps == 5


# -- (e) the error paths ------------------------------------------------------------------------------

def fail_in_the_second_chunk(live, drained: bool = True) -> tuple[int, dict]:
    """A step of 10 whose model trains 5 steps that reach the disk, then 5 that never do, then fails.

    `drained`: the first 5 are on disk before the failure is raised (the writer has finished them)."""
    session = live.api.session
    session.chunk_steps = 5
    train, calls = session.run.trainer.train, []

    def train_then_fail(n, **kw):
        calls.append(n)
        train(n, **kw)
        if len(calls) == 2:
            if drained:
                session.session._writer.wait()
            raise RuntimeError("simulated failure inside a step")
    session.run.trainer.train = train_then_fail
    status, answer = post(live.port, "/inspect/step", {"n": 10})
    assert calls == [5, 5]
    assert live.api.session is not session, "the session was not reopened"
    return status, answer


def test_a_training_failure_gives_500_and_the_session_reopens_from_the_saved_state(live, reference):
    """500, and the session goes on from the last saved state (step 25, not the model's 30), so the run
    continues exactly as one uninterrupted run."""
    status, answer = fail_in_the_second_chunk(live)
    assert status == 500, answer
    assert "training failed after 5 of 10 steps were recorded" in answer["error"] and "simulated" in answer["error"]
    assert "\n" not in answer["error"]
    status, state = call(live.port, "GET", "/inspect/state")
    assert status == 200 and state["active"] is True and state["busy"] is False and state["total_steps"] == 25
    rec = Recording.open(live.path)
    assert rec.steps == 25 and rec.status == "recording"
    status, answer = post(live.port, "/inspect/step", {"n": 5})
    assert status == 200 and answer["steps_completed"] == 30
    assert post(live.port, "/inspect/teardown", {})[0] == 200
    assert Recording.open(live.path).status == "complete"
    assert_same_recording(live.path, reference, 30)


@pytest.fixture
def live_thread_writer(base, tmp_path, monkeypatch):
    """`live` with the writer on a thread of this process, where a test can hold its writes."""
    monkeypatch.setenv("ACC_CAPTURE_WRITER", "thread")
    live = start_live(shutil.copytree(base, tmp_path / "rec"), tmp_path / "recordings")
    yield live
    live.stop()


def test_a_training_failure_waits_for_the_steps_handed_to_the_writer(live_thread_writer, monkeypatch):
    """The same failure while the first chunk is still being written: the API must let it reach the disk
    before it reopens the recording. (The writer is held until the API waits for it or reopens the
    recording, so that the order of events is the same on every run.)"""
    import capture.live

    live = live_thread_writer
    old = live.api.session.session  # the RecordingSession
    writer, go = old._writer, threading.Event()
    write, wait, close = old.recorder.write, writer.wait, writer.close

    def held_write(*args):
        go.wait()
        write(*args)

    def releasing(fn):
        def call_(*args):
            go.set()
            return fn(*args)
        return call_
    old.recorder.write = held_write
    writer.wait, writer.close = releasing(wait), releasing(close)

    class Reopened(capture.live.LiveSession):
        def __init__(self, *args, **kwargs):
            try:
                super().__init__(*args, **kwargs)
            finally:
                go.set()
    monkeypatch.setattr(capture.live, "LiveSession", Reopened)
    try:
        status, answer = fail_in_the_second_chunk(live, drained=False)
        assert status == 500 and "training failed after 5 of 10 steps were recorded" in answer["error"], answer
        assert call(live.port, "GET", "/inspect/state")[1]["total_steps"] == 25
        assert Recording.open(live.path).steps == 25
    finally:
        go.set()
        wait()  # (the old writer is done before the fixture closes the session)


def test_an_unexpected_error_is_a_500_with_one_line_and_the_server_goes_on(live, monkeypatch):
    def broken(session):
        raise RuntimeError("something no one foresaw\nsecond line")
    monkeypatch.setattr(live.api, "history", broken)
    status, answer = call(live.port, "GET", "/inspect/history")
    assert status == 500 and answer["error"].startswith("RuntimeError: something no one foresaw")
    status, state = call(live.port, "GET", "/inspect/state")
    assert status == 200 and state["active"] is True
    assert post(live.port, "/inspect/step", {"n": 1})[1]["steps_completed"] == 21


def test_a_chunked_request_body_gets_411(live):
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=60)
    try:
        conn.request("POST", "/inspect/step", body=iter([b'{"n": ', b"1}"]), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        r = conn.getresponse()
        answer = json.loads(r.read())
        assert r.status == 411 and "Content-Length" in answer["error"]
    finally:
        conn.close()
    assert Recording.open(live.path).steps == 20


def test_localhost_is_this_server_and_origin_null_is_not(live):
    port = live.port
    status, state = call(port, "GET", "/inspect/state", headers={"Host": f"localhost:{port}"})
    assert status == 200 and state["total_steps"] == 20
    status, answer = post(port, "/inspect/step", {"n": 1},
                          headers={"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"})
    assert status == 200 and answer["steps_completed"] == 21
    # a sandboxed frame or a file:// page sends `Origin: null`: it is not a page of this server
    status, answer = post(port, "/inspect/step", {"n": 1}, headers={"Origin": "null"})
    assert status == 403 and "error" in answer
    status, answer = post(port, "/inspect/teardown", {}, headers={"Host": f"localhost:{port}", "Origin": "null"})
    assert status == 403
    assert call(port, "GET", "/inspect/state")[1]["total_steps"] == 21


def test_sigterm_while_a_step_runs_leaves_the_recording_complete_and_resumable(base, tmp_path):
    path = shutil.copytree(base, tmp_path / "rec")
    port = free_port()
    proc = acc_start("serve", str(path), "--port", str(port), "--no-open", "--device", "cpu", cwd=tmp_path)
    answers = []
    try:
        def up():
            if proc.poll() is not None:
                raise AssertionError(f"serve exited: {proc.stderr.read()}")
            with contextlib.suppress(OSError):
                return call(port, "GET", "/inspect/state")[1]
        wait_until(up, "serve answers")

        def running() -> bool:
            """Start a step of 100 and see it running (if it ended before we looked, start another)."""
            before = call(port, "GET", "/inspect/state")[1]["total_steps"]
            worker = threading.Thread(target=lambda: answers.append(post_quietly(port, {"n": 100})), daemon=True)
            worker.start()
            while worker.is_alive():
                state = call(port, "GET", "/inspect/state")[1]
                if state["busy"] and state["total_steps"] == before:
                    return True
            return False
        wait_until(running, "a step seen running")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "waiting for the running step of 100" in err, err
    rec = Recording.open(path)
    assert rec.status == "complete" and rec.steps % 100 == 20 and rec.steps >= 120, rec
    assert "session closed" in out
    # resumable, bit-exactly: a session continues it
    session = LiveSession(path, "cpu")
    try:
        session.step(1)
    finally:
        session.close()
    assert Recording.open(path).steps == rec.steps + 1


def post_quietly(port: int, body: dict):
    """A step request whose connection the server may close as it stops (no answer is then fine)."""
    try:
        return post(port, "/inspect/step", body)
    except (OSError, http.client.HTTPException) as e:
        return e
