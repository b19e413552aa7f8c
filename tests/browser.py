"""The browser harness shared by every test that drives Chromium: serving a folder on 127.0.0.1, the
requests a page made, and where a step lies in a store (to check which byte ranges a page asked for).

The `browser` (one Chromium per test session) and `page` fixtures are in conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import zarr

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
READY = "html[data-ready='true']"
LOCAL = r"^(http://127\.0\.0\.1:\d+/|data:|blob:)"


# -- serving ----------------------------------------------------------------------------------

@dataclass
class Served:
    path: Path
    url: str
    stop: callable = None


def copy_recording(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def serve_in_thread(path: Path) -> Served:
    """The viewer's own server over `path`, on 127.0.0.1 and a free port, in a thread."""
    from viewer import make_server

    server = make_server(path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.server_close()
    return Served(path, server.url, stop)


@contextlib.contextmanager
def serve_plain(path: Path):
    """Python's own static file server (no byte ranges) over `path`, on 127.0.0.1: a Served."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, proc)
        yield Served(path, f"http://127.0.0.1:{port}/")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stderr.read() if proc.stderr else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


# -- where a step lies in the store: a chunk file, or an inner chunk of a shard --------------------------

@dataclass
class StepBytes:
    file: str                 # the file holding the step, relative to the recording: its chunk, or its shard
    range: str | None = None  # the Range of its inner chunk in the shard (None: a plain chunk, or an empty slot)
    index: str | None = None  # the Range of its shard's index (None: a plain chunk)


def step_bytes(path: Path, array: str, step: int) -> StepBytes:
    """Read from the store itself (its zarr.json, the shard's index) where `step` of `array` lies."""
    meta = json.loads((path / array / "zarr.json").read_text())
    grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
    arr = zarr.open_array(path / array, mode="r")
    file = f"{array}/{arr.metadata.encode_chunk_key((step // grid[0],) + (0,) * (len(grid) - 1))}"
    codec = meta["codecs"][0]
    if codec["name"] != "sharding_indexed":
        return StepBytes(file)
    cfg = codec["configuration"]
    inner = cfg["chunk_shape"][0]
    slot, per = (step % grid[0]) // inner, grid[0] // inner
    size = 16 * per + (4 if cfg["index_codecs"][-1]["name"] == "crc32c" else 0)
    start = cfg.get("index_location", "end") == "start"
    index = f"bytes=0-{size - 1}" if start else f"bytes=-{size}"
    if not (path / file).exists():  # no step of the shard was written (the page's HEAD finds none)
        return StepBytes(file, None, index)
    data = (path / file).read_bytes()
    if not start:  # the page asks for the shard's size (HEAD), then for its last bytes, by a plain range
        index = f"bytes={len(data) - size}-{len(data) - 1}"
    offset, nbytes = struct.unpack_from("<QQ", data[:size] if start else data[-size:], 16 * slot)
    empty = offset == nbytes == 2**64 - 1
    return StepBytes(file, None if empty else f"bytes={offset}-{offset + nbytes - 1}", index)


def byte_span(header: str) -> tuple[int, int]:
    first, last = re.fullmatch(r"bytes=(\d+)-(\d+)", header).groups()
    return int(first), int(last)


def covers(header: str | None, inner: str | None) -> bool:
    """Whether the Range `header` asks for every byte of the Range `inner` (an inner chunk's)."""
    if header is None or inner is None or not re.fullmatch(r"bytes=\d+-\d+", header):
        return False
    (a, b), (c, d) = byte_span(header), byte_span(inner)
    return a <= c and d <= b



@dataclass
class Watch:
    """Everything a page did that a test may want to assert on."""
    requests: list[str] = field(default_factory=list)
    fetches: list[tuple[str, str | None, int]] = field(default_factory=list)  # (url, its Range header, status)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def chunk_requests(self, fragment: str) -> list[str]:
        return [u for u in self.requests if fragment in u]

    def file_fetches(self, file: str) -> list[tuple[str | None, int]]:
        """(Range header, status) of each answered request for `file`, a path in the recording."""
        return [(r, status) for u, r, status in self.fetches if u.split("?")[0].endswith("/" + file)]

    def step_fetches(self, where: StepBytes) -> list[tuple[str | None, int]]:
        """The answers that brought one step's bytes: a range that holds its inner chunk (206; the chunks
        beside it may come along), or its whole chunk or shard (200)."""
        return [(r, s) for r, s in self.file_fetches(where.file) if s == 200 or (s == 206 and covers(r, where.range))]

    def index_fetches(self, where: StepBytes) -> list[tuple[str | None, int]]:
        """The requests for the index of the shard holding a step."""
        return [(r, s) for r, s in self.file_fetches(where.file) if where.index is not None and r == where.index]



def open_at(pg, site: Served, step: int | None = None) -> None:
    pg.goto(site.url + ("" if step is None else f"#step={step}"))
    wait_step(pg, 0 if step is None else step)


def wait_step(pg, step: int) -> None:
    pg.wait_for_selector(f"html[data-step='{step}'][data-ready='true']", timeout=15000)


def wait_worker(pg) -> None:
    # (a function, not an expression: the page's CSP forbids the eval that polling an expression takes)
    pg.wait_for_function("() => window.accViewer && window.accViewer.store.workerReady", timeout=15000)


# JS: whether the section holding what `selector` finds shows `step` (null: the page's step), the page ready
SECTION_SHOWS = """([selector, step]) => {
  const root = document.documentElement;
  const section = document.querySelector(selector).closest('[data-section]');
  return root.dataset.ready === 'true' && section.dataset.step === String(step === null ? root.dataset.step : step);
}"""


def show(pg, selector: str, step: int | None = None, block: str = "center") -> None:
    """Scroll what `selector` finds into view and wait until its section is drawn for `step` (default: the
    page's): the page draws a section only while it is in view (data-ready speaks for those)."""
    pg.locator(selector).first.evaluate(f"e => e.scrollIntoView({{ block: '{block}' }})")
    pg.wait_for_function(SECTION_SHOWS, arg=[selector, step], timeout=15000)


# JS: which canvases in a section have content (more than one distinct pixel value)
CANVAS_STATE = """(section) => [...document.querySelectorAll(`[data-section="${section}"] canvas`)]
  .filter((c) => !c.closest('[hidden]') && c.width > 1 && c.height > 1 && !c.classList.contains('legend-bar'))
  .map((c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    let h = 0;
    for (let i = 0; i < d.length; i += 4) {
      const p = (d[i] << 24) | (d[i + 1] << 16) | (d[i + 2] << 8) | d[i + 3];
      if (seen.size < 3) seen.add(p);
      h = (Math.imul(h, 31) + p) | 0;
    }
    return { distinct: seen.size, hash: h };
  })"""


def canvases(pg, section: str) -> list[dict]:
    return pg.evaluate(CANVAS_STATE, section)


def number(text: str) -> float:
    return float(text.replace("+Inf", "inf").replace("-Inf", "-inf"))


def close(shown: str | float, expected: float) -> bool:
    """As equal as 4 significant digits allow."""
    shown = number(shown) if isinstance(shown, str) else shown
    if math.isnan(expected) or math.isinf(expected):
        return (math.isnan(shown) and math.isnan(expected)) or shown == expected
    return math.isclose(shown, float(expected), rel_tol=1e-3, abs_tol=1e-12)
