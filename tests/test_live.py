"""Live stepping: `acc-capture serve` and the /inspect/ API.

(a) the HTTP API over a real socket, against the server `serve` starts (in a thread, port 0);
(b) serving a recording and stepping it continues it exactly as one longer run;
(c) the page's Step buttons in headless Chromium;
(d) the `serve` command itself: its lifecycle and its one-line errors.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import zarr

from capture.cli import open_live_server
from capture.live import MAX_STEPS_PER_REQUEST, LiveSession
from capture.recording import Recording
from conftest import CLI, acc
from viewer import build, make_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
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
    server = open_live_server(path, device="cpu", port=0, recordings_dir=recordings_dir)
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
    for body in (b"{", b"{'n': 1}", b"\xff\xfe", b"n=1", b"[1]", b'"n"', b"1"):
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
    status, answer = post(port, "/inspect/step", None, headers={"Content-Length": "x"})
    assert status == 400
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
    server = make_server(path, 0)
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
    got, want = zarr.open_group(live.path, mode="r"), zarr.open_group(reference, mode="r")
    assert got.attrs["acc_capture"]["steps_completed"] == 30
    for group in ("tensors", "summary"):
        names = sorted(want[group].array_keys())
        assert sorted(got[group].array_keys()) == names and names
        for name in names:
            a, b = got[group][name][:30], want[group][name][:30]
            assert a.dtype == b.dtype and a.shape == b.shape, f"{group}/{name}"
            assert a.tobytes() == b.tobytes(), f"{group}/{name} differs from the 30-step run"


# -- (c) the page --------------------------------------------------------------------------------------

class BrowserThread:
    """One headless Chromium driven from a thread of its own: Playwright's sync API refuses a thread that
    already runs another instance of it (the viewer tests keep one open for the whole session)."""

    def __init__(self):
        self.jobs: queue.Queue = queue.Queue()
        self.started = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self.loop, name="test-live-browser", daemon=True)
        self.thread.start()
        self.started.wait()
        if self.failure:
            raise self.failure

    def loop(self) -> None:
        try:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                self.started.set()
                while (job := self.jobs.get()) is not None:
                    fn, done, out = job
                    try:
                        out.append((True, fn(browser)))
                    except BaseException as e:  # handed to the test's thread
                        out.append((False, e))
                    done.set()
                browser.close()
        except BaseException as e:
            self.failure = e
            self.started.set()

    def run(self, fn):
        """fn(browser) on the browser's thread; its result, or its exception raised here."""
        done, out = threading.Event(), []
        self.jobs.put((fn, done, out))
        done.wait()
        ok, value = out[0]
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; the viewer tests need Debian's chromium package")
    b = BrowserThread()
    yield b
    b.close()


@dataclass
class Watch:
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)  # patterns of errors a test provokes on purpose

    def unexpected(self, items: list[str]) -> list[str]:
        return [e for e in items if not any(re.search(p, e) for p in self.expected)]


def on_page(browser: BrowserThread, body) -> None:
    """body(page) in a fresh page; fails on console errors, page errors, failed, bad or non-local requests."""
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
    browser.run(job)


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
    static = make_server(live.path, 0)  # the same recording under `view`'s static server
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

def one_error_line(proc) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_bad_input_is_one_line(base, tmp_path):
    path = shutil.copytree(base, tmp_path / "rec")
    assert "no such directory" in one_error_line(acc("serve", str(tmp_path / "nope"), "--no-open", check=False))
    (tmp_path / "empty").mkdir()
    assert "not a recording" in one_error_line(acc("serve", str(tmp_path / "empty"), "--no-open", check=False))
    assert "unknown condition" in one_error_line(acc("serve", "--condition", "nope", "--no-open", check=False, cwd=tmp_path))
    assert "for a new recording" in one_error_line(acc("serve", str(path), "--condition", "control", check=False))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_error_line(acc("serve", str(path), "--port", str(port), "--no-open", check=False))
        assert "in use" in line
        line = one_error_line(acc("serve", "--condition", "control", "--port", str(port), "--no-open", check=False,
                                  cwd=tmp_path))
        assert "in use" in line
    # nothing was touched or made
    assert not (path / "index.html").exists() and Recording.open(path).status == "complete"
    assert not (tmp_path / "recordings").exists()


def test_serve_new_recording_until_ctrl_c(tmp_path):
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--condition", "control", "--port", str(port), "--no-open", "--device", "cpu"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
