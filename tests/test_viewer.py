"""The static viewer, end to end: real recordings made by the CLI, a real headless Chromium.

One browser for the whole session (conftest.py); each recording is copied, built and served once per module
(copied, so the viewer's files never land in the session's shared recordings).
"""

from __future__ import annotations

import gzip
import http.client
import json
import math
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec

from acc.step_inspector import NAMES, StepTensorKey
from browser import (SECTION_SHOWS, byte_span, canvases, close, copy_recording, free_port, open_at,
                     serve_in_thread, serve_plain, show, step_bytes, wait_for_port, wait_step, wait_worker)
from capture.recording import Recording
from conftest import acc
from viewer import ViewerError, build, make_server
from viewer.build import array_meta

SECTIONS = ["toolbar", "run-info", "timeline", "batch", "metrics", "trace-strength", "trace-neighborhoods",
            "trace-rank-score", "trace-image-coverage", "trace-feature-novelty", "trace-local-coverage",
            "trace-som-targets", "trace-blending-weights", "trace-forces", "cosine"]
DRAWN = [s for s in SECTIONS if s not in ("toolbar", "run-info", "metrics")]  # sections drawn on canvas
METRIC_COLUMNS = ["feature_novelty", "win_rate", "gradient_weight", "contender_weight", "attraction_weight"]
XSS = "<img src=x onerror=alert(1)><script>window.pwned=1</script>"


@pytest.fixture(scope="module")
def bcl_built(bcl_rec, tmp_path_factory) -> Path:
    """A copy of the 30-step bcl recording with the viewer built by the real CLI."""
    path = copy_recording(bcl_rec, tmp_path_factory.mktemp("viewer") / "bcl")
    proc = acc("view", str(path), "--build-only")
    assert f"viewer written to {path / 'index.html'}" in proc.stdout
    return path


@pytest.fixture(scope="module")
def bcl_site(bcl_built):
    served = serve_in_thread(bcl_built)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def plain_site(bcl_built):
    """The same built recording under Python's own static file server, run inside the recording."""
    with serve_plain(bcl_built) as served:
        yield served


def built_site(src: Path, dst: Path):
    path = copy_recording(src, dst)
    build(Recording.open(path))
    return serve_in_thread(path)


@pytest.fixture(scope="module")
def control_site(control_rec, tmp_path_factory):
    served = built_site(control_rec, tmp_path_factory.mktemp("viewer") / "control")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def sparse_site(sparse_rec, tmp_path_factory):
    served = built_site(sparse_rec, tmp_path_factory.mktemp("viewer") / "sparse")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def float16_site(float16_rec, tmp_path_factory):
    """The bcl fixture's run recorded with --dtype float16: its large tensors are stored as halves."""
    served = built_site(float16_rec, tmp_path_factory.mktemp("viewer") / "float16")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def xss_site(tmp_path_factory):
    """A short recording whose note is markup and script."""
    path = tmp_path_factory.mktemp("viewer") / "xss"
    acc("run", "--steps", "2", "--condition", "control", "--out", str(path), "--note", XSS)
    build(Recording.open(path))
    served = serve_in_thread(path)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def nonfinite_site(bcl_rec, tmp_path_factory):
    """A copy of the bcl recording where step 2 holds a NaN and an Inf, as a diverging run would."""
    path = copy_recording(bcl_rec, tmp_path_factory.mktemp("viewer") / "nonfinite")
    root = zarr.open_group(path, mode="r+")
    strength = root["tensors/strength"]
    step = strength[2]
    step[0, 0], step[1, 1] = np.nan, np.inf
    strength[2] = step
    nonfinite = root["summary/nonfinite"]
    counts = nonfinite[:]
    counts[2] = 2
    nonfinite[:] = counts
    build(Recording.open(path))
    served = serve_in_thread(path)
    yield served
    served.stop()



def reshard(path: Path, steps: int, index_codecs, location: str) -> list[str]:
    """Rewrite every tensors/ array of over 1024 values a step (sharded or not) as shards of `steps`
    steps, each step an inner chunk (bytes, gzip), the index as told; the names of those arrays."""
    group = zarr.open_group(path / "tensors", mode="r+")
    names = []
    for name in sorted(group.array_keys()):
        old = group[name]
        per = tuple(old.shape[1:])
        if math.prod(per) <= 1024:
            continue
        values, attrs = old[:], dict(old.attrs)
        new = group.create_array(
            name, shape=old.shape, chunks=(steps, *per), dtype=old.dtype, compressors=None, fill_value=old.fill_value,
            serializer=ShardingCodec(chunk_shape=(1, *per), codecs=[BytesCodec(endian="little"), GzipCodec(level=1)],
                                     index_codecs=index_codecs, index_location=location),
            dimension_names=old.metadata.dimension_names, attributes=attrs,
            chunk_key_encoding={"name": "default", "separator": "."}, overwrite=True)
        new[:] = values
        names.append(name)
    return names


@pytest.fixture(scope="module")
def resharded_site(bcl_rec, tmp_path_factory):
    """The bcl recording with its big tensors in shards of 8 steps, the index first and with its crc32c
    (zarr's default index codecs): a layout the recorder does not write, that the viewer reads all the same."""
    path = copy_recording(bcl_rec, tmp_path_factory.mktemp("viewer") / "resharded")
    names = reshard(path, 8, [BytesCodec(endian="little"), Crc32cCodec()], "start")
    assert "strength" in names and "batch_images" in names
    build(Recording.open(path))
    served = serve_in_thread(path)
    yield served
    served.stop()


# -- the browser --------------------------------------------------------------------------------





def table_column(pg, column: str) -> dict[int, str]:
    show(pg, "#metrics")
    idx = METRIC_COLUMNS.index(column) + 1
    rows = pg.eval_on_selector_all("#metrics tbody tr", f"rs => rs.map(r => [Number(r.dataset.feature), r.children[{idx}].textContent])")
    return dict(rows)


def hover_cell(pg, panel_selector: str, row: int, col: int) -> str:
    """Move the mouse over cell (row, col) of a heatmap; return the readout."""
    canvas = pg.locator(f"{panel_selector} canvas.heatmap").first
    show(pg, f"{panel_selector} canvas.heatmap")  # in view (clear of the sticky toolbar), and drawn
    box = canvas.bounding_box()
    rows, cols = int(canvas.get_attribute("data-rows")), int(canvas.get_attribute("data-cols"))
    pg.mouse.move(box["x"] + (col + 0.5) * box["width"] / cols, box["y"] + (row + 0.5) * box["height"] / rows)
    out = pg.locator(f"{panel_selector} output.readout").first
    pg.wait_for_function("([el, r, c]) => el.dataset.row === String(r) && el.dataset.col === String(c)",
                         arg=[out.element_handle(), row, col], timeout=5000)
    return out.text_content()


# -- 1 and 2: the page opens, every section is drawn, steps switch; under both servers -----------

@pytest.mark.parametrize("server", ["viewer", "http.server"])
def test_every_section_drawn_and_steps_switch(page, server, request):
    site = request.getfixturevalue("bcl_site" if server == "viewer" else "plain_site")
    open_at(page, site)
    for name in SECTIONS:
        assert page.locator(f"[data-section='{name}']").count() == 1, f"no section {name}"
    assert page.locator("[data-section='toolbar']").evaluate("e => getComputedStyle(e).position") == "sticky"
    assert "bcl-slow" in page.locator("[data-section='run-info']").text_content()
    for name in DRAWN:
        show(page, f"[data-section='{name}']", 0)
        state = canvases(page, name)
        assert state, f"section {name} has no canvas"
        blank = [i for i, c in enumerate(state) if c["distinct"] < 2]
        assert not blank, f"section {name}: canvases {blank} of {len(state)} are blank"
    assert page.locator("#metrics tbody tr").count() == 64
    assert page.locator("#metrics thead tr.summary").count() == 3

    wait_worker(page)
    before = {}
    for s in ("batch", "trace-strength", "cosine"):
        show(page, f"[data-section='{s}']", 0)
        before[s] = canvases(page, s)
    cells_before = table_column(page, "win_rate")

    page.fill("#step-input", "7")
    page.press("#step-input", "Enter")
    wait_step(page, 7)
    assert page.evaluate("location.hash") == "#step=7"
    for s, old in before.items():
        show(page, f"[data-section='{s}']", 7)
        assert [c["hash"] for c in canvases(page, s)] != [c["hash"] for c in old], f"{s} did not redraw for step 7"
    assert table_column(page, "win_rate") != cells_before
    assert page.locator("#step-slider").input_value() == "7"

    page.locator("body").click(position={"x": 5, "y": 300})  # focus the page, not the input
    page.keyboard.press("ArrowRight")
    wait_step(page, 8)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    wait_step(page, 6)
    page.keyboard.press("Shift+ArrowRight")
    wait_step(page, 16)

    page.evaluate("location.hash = '#step=21'")
    wait_step(page, 21)
    assert page.locator("#step-input").input_value() == "21"
    show(page, "[data-section='trace-strength']", 21)
    assert page.watch.step_fetches(step_bytes(site.path, "tensors/strength", 21)), "the worker's requests were not recorded"

    page.click("[data-act='next']")
    wait_step(page, 22)
    page.click("[data-act='prev']")
    wait_step(page, 21)
    page.locator("#step-slider").evaluate("(e) => { e.value = '3'; e.dispatchEvent(new Event('input')); }")
    wait_step(page, 3)

    # a link opens that step
    page.goto(site.url + "#step=12")
    wait_step(page, 12)
    assert page.locator("#step-input").input_value() == "12"

    first = step_bytes(site.path, "tensors/strength", 0)
    if first.index and server == "http.server":  # no Range: a whole shard, kept for the steps beside it
        whole = [r for r, s in page.watch.file_fetches(first.file) if s == 200]
        assert 1 <= len(whole) <= 2, page.watch.file_fetches(first.file)  # (the page's own, then the worker's)


def test_timeline_click_jumps_to_that_step(page, bcl_site):
    open_at(page, bcl_site, 2)
    chart = page.locator("[data-chart='loss'] canvas")
    chart.evaluate("e => e.scrollIntoView({ block: 'center' })")
    box = chart.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2)
    readout = page.locator("[data-chart='loss'] output.readout").text_content()
    step = int(re.match(r"step (\d+):", readout).group(1))
    assert 2 < step < 30
    page.mouse.click(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2)
    wait_step(page, step)
    heat = page.locator("[data-chart='win_rate-over-time'] canvas.heatmap")
    hb = heat.bounding_box()
    page.mouse.click(hb["x"] + 2, hb["y"] + hb["height"] / 2)  # the first column: step 0
    wait_step(page, 0)


def test_scrubbing_fast_settles_on_the_last_step(page, bcl_site):
    open_at(page, bcl_site, 0)
    wait_worker(page)
    show(page, "[data-section='metrics']", 0, block="start")  # the strength section in view below it
    # a slider dragged across the run: every intermediate step asked for, none awaited
    page.locator("#step-slider").evaluate("""(e) => {
      for (const s of [3, 9, 14, 2, 27, 28, 29, 15, 16, 17, 18, 19, 20, 5, 6, 23]) {
        e.value = String(s); e.dispatchEvent(new Event('input'));
      }
    }""")
    wait_step(page, 23)
    assert page.locator("[data-key='strength']").get_attribute("data-step") == "23"
    show(page, "[data-key='batch_images']", 23)
    assert page.locator("[data-key='batch_images']").get_attribute("data-step") == "23"
    page.keyboard.press("ArrowRight")  # the prefetched neighbour
    wait_step(page, 24)


def test_playing_advances_steps(page, bcl_site):
    open_at(page, bcl_site, 25)
    page.select_option("#speed", "30")
    page.click("[data-act='play']")
    wait_step(page, 29)  # plays to the end, then stops
    page.wait_for_selector("[data-act='play'][aria-pressed='false']")


# -- 5: the numbers on the page are the numbers in the store --------------------------------------

@pytest.mark.parametrize("server", ["viewer", "http.server", "resharded", "float16"])
def test_values_match_the_store(page, server, request):
    """What the page shows is what the store holds: under our server (one Range request per inner chunk of a
    shard), under `python -m http.server` (no Range: whole shards), with the shard index first, with crc32c,
    and with the large tensors stored as float16."""
    bcl_site = request.getfixturevalue({"viewer": "bcl_site", "http.server": "plain_site", "resharded": "resharded_site",
                                        "float16": "float16_site"}[server])
    step = 4
    rec = Recording.open(bcl_site.path)
    data = rec.step(step)
    open_at(page, bcl_site, step)
    rounded = "the large ones as float16 (each value rounded to half precision)"
    assert (rounded in page.locator("[data-section='run-info']").inner_text()) == (server == "float16")

    for r, c in [(0, 0), (10, 20), (127, 63)]:
        text = hover_cell(page, "[data-key='strength']", r, c)
        m = re.fullmatch(r"image (\d+), feature (\d+): (\S+)", text)
        assert m and (int(m[1]), int(m[2])) == (r, c), text
        assert close(m[3], data["strength"][r, c]), (text, data["strength"][r, c])
    text = hover_cell(page, "[data-section='cosine'] [data-key='som_target_cosine_matrix']", 5, 9)
    assert close(text.rsplit(": ", 1)[1], data["som_target_cosine_matrix"][5, 9]), text

    for column in METRIC_COLUMNS:
        shown = table_column(page, column)
        assert len(shown) == 64
        for d, text in shown.items():
            assert close(text, data[column][d]), (column, d, text, data[column][d])
        for stat, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
            idx = METRIC_COLUMNS.index(column) + 1
            text = page.locator(f"#metrics tr.summary[data-stat='{stat}'] > :nth-child({idx + 1})").text_content()
            assert close(text, float(fn(data[column].astype(np.float64)))), (column, stat, text)

    dead = page.eval_on_selector_all("#metrics tbody tr", "rs => rs.map(r => [Number(r.dataset.feature), r.classList.contains('dead')])")
    assert dict(dead) == {d: bool(data["win_rate"][d] < 0.01) for d in range(64)}

    for key, summary in (("weight_cosine_matrix", "weight_cosine_offdiag"),
                         ("som_target_cosine_matrix", "som_target_cosine_offdiag"),
                         ("grad_cosine_matrix", "grad_cosine_offdiag")):
        show(page, f"[data-key='{key}']", step)
        m = data[key].astype(np.float64)
        expected = (m.sum() - np.trace(m)) / (m.size - m.shape[0])
        text = page.locator(f"[data-key='{key}'] .offdiag strong").text_content()
        assert close(text, expected), (key, text, expected)
        assert close(text, float(rec.summary(summary)[step])), (key, text)

    loss = page.locator("#loss-reading").text_content()
    assert close(loss.split()[1], float(rec.summary("loss")[step])), loss

    batch = page.locator("[data-key='batch_images'] canvas.thumbs")
    show(page, "[data-key='batch_images'] canvas.thumbs", step)
    box = batch.bounding_box()
    # image 17 sits in row 1, column 1 of the 16-wide grid; its pixel (14, 14)
    cell = box["width"] / (16 * 29 - 1)
    page.mouse.move(box["x"] + (29 + 14.5) * cell, box["y"] + (29 + 14.5) * cell)
    text = page.locator("[data-key='batch_images'] output.readout").text_content()
    m = re.fullmatch(r"image 17 \(label (\d+)\), pixel \(14, 14\): (\S+)", text)
    assert m, text
    assert int(m[1]) == int(data["batch_labels"][17])
    assert close(m[2], data["batch_images"][17, 0, 14, 14]), text


def test_table_sorts_by_clicked_header(page, bcl_site):
    open_at(page, bcl_site, 9)
    show(page, "#metrics", 9)
    rec = Recording.open(bcl_site.path)
    win = rec.step(9)["win_rate"]
    order = lambda: page.eval_on_selector_all("#metrics tbody tr", "rs => rs.map(r => Number(r.dataset.feature))")  # noqa: E731
    page.click("#metrics thead button[data-col='1']")  # win_rate: highest first
    assert [win[d] for d in order()] == sorted(win, reverse=True)
    assert page.locator("#metrics thead th:nth-child(3)").get_attribute("aria-sort") == "descending"
    page.click("#metrics thead button[data-col='1']")
    assert [win[d] for d in order()] == sorted(win)
    page.click("#metrics thead button[data-col='-1']")
    assert order() == list(range(64))
    page.keyboard.press("ArrowRight")  # the order holds across steps
    page.click("#metrics thead button[data-col='0']")
    wait_step(page, 10)
    novelty = rec.step(10)["feature_novelty"]
    assert [novelty[d] for d in order()] == sorted(novelty, reverse=True)


# -- only what a view needs is fetched ----------------------------------------------------------

def test_collapsed_sections_fetch_nothing(page, bcl_site):
    open_at(page, bcl_site, 10)
    wait_worker(page)
    # "other tensors" starts collapsed: none of its arrays was fetched
    assert page.locator("[data-section='other']").evaluate("e => e.open") is False
    assert not page.watch.chunk_requests("/tensors/som_delta/"), "a collapsed section fetched its data"
    page.locator("[data-section='batch'] > summary").click()
    # the collapsed batch section and the strength section under it in view
    page.evaluate("() => window.scrollBy(0, document.querySelector('[data-section=\"batch\"]').getBoundingClientRect().top - 60)")
    assert page.evaluate(IN_WINDOW, "[data-section='batch']") and page.evaluate(IN_WINDOW, "[data-section='trace-strength']")
    page.locator("#step-input").fill("27")
    page.press("#step-input", "Enter")
    wait_step(page, 27)
    strength = step_bytes(bcl_site.path, "tensors/strength", 27)
    assert page.watch.step_fetches(strength)
    batch = step_bytes(bcl_site.path, "tensors/batch_images", 27)
    assert not page.watch.step_fetches(batch), "the collapsed batch section fetched its step"
    # one request per array of the step (a shard's index: none, the built one says where the step lies)
    assert len(page.watch.step_fetches(strength)) == 1, page.watch.file_fetches(strength.file)
    if strength.index:
        assert not page.watch.index_fetches(strength), page.watch.file_fetches(strength.file)
        assert all(s == 206 for _, s in page.watch.file_fetches(strength.file)), "a whole shard was fetched"
    # opening a section fetches and draws its data for the step shown
    page.locator("[data-section='other'] > summary").click()
    wait_step(page, 27)
    page.wait_for_function("() => document.querySelector('[data-section=\"other\"] [data-key=\"som_delta\"]').dataset.step === '27'")
    assert page.watch.step_fetches(step_bytes(bcl_site.path, "tensors/som_delta", 27))
    assert all(c["distinct"] >= 2 for c in canvases(page, "other"))
    # the timeline reads summaries only, never a step's tensors
    assert not [u for u in page.watch.requests if "/tensors/loss/" in u]


# JS: whether what a selector finds lies (in part) inside the window
IN_WINDOW = """(selector) => {
  const r = document.querySelector(selector).getBoundingClientRect();
  return r.bottom > 0 && r.top < window.innerHeight;
}"""
# JS: the sections of step panels and tables that are in the window
SECTIONS_IN_VIEW = """() => [...document.querySelectorAll('details[data-section]')].filter((e) => {
  const r = e.getBoundingClientRect();
  return e.dataset.section !== 'timeline' && r.bottom > 0 && r.top < window.innerHeight;
}).map((e) => e.dataset.section)"""
TENSOR_REQUESTS = "/tensors/"


def test_sections_out_of_view_fetch_nothing_until_scrolled_to(page, bcl_site):
    """At the top of the page (the run, the timeline) a step switch fetches no tensor; a section scrolled
    into view fetches and draws the step shown then; with one section in view, a switch asks for its
    arrays only (and prefetches theirs only), and data-ready speaks for the sections in view."""
    open_at(page, bcl_site, 10)
    wait_worker(page)
    assert page.evaluate(SECTIONS_IN_VIEW) == [], "the window shows a section at the top of the page"
    page.evaluate("window.accViewer.go(11)")
    wait_step(page, 11)
    page.evaluate("window.accViewer.go(25)")  # far, in another shard
    wait_step(page, 25)
    assert not page.watch.chunk_requests(TENSOR_REQUESTS), page.watch.chunk_requests(TENSOR_REQUESTS)
    assert not page.locator("[data-section][data-step]:not([data-section='timeline'])").count(), "drew a section out of view"
    assert page.locator("[data-key='encoder_weights']").get_attribute("data-step") is None

    # the neighbourhoods section, taller than the window: the one section in view
    show(page, "[data-section='trace-neighborhoods']", 25, block="start")
    assert page.evaluate(SECTIONS_IN_VIEW) == ["trace-neighborhoods"]
    own = ("/tensors/neighbors/", "/tensors/encoder_weights/")
    for key in ("neighbors", "encoder_weights"):
        assert page.locator(f"[data-key='{key}']").get_attribute("data-step") == "25"
    assert all(c["distinct"] >= 2 for c in canvases(page, "trace-neighborhoods"))
    data = Recording.open(bcl_site.path).step(25)
    shown = np.array(page.evaluate(STORE_ROW, ["tensors/encoder_weights", 25]), dtype=np.float32)
    assert np.array_equal(shown, data["encoder_weights"].ravel())
    assert len(page.watch.step_fetches(step_bytes(bcl_site.path, "tensors/encoder_weights", 25))) == 1
    asked = page.watch.chunk_requests(TENSOR_REQUESTS)
    assert asked and all(any(a in u for a in own) for u in asked), asked

    before = len(page.watch.requests)
    page.evaluate("window.accViewer.go(3)")
    wait_step(page, 3)
    assert page.locator("[data-section='trace-neighborhoods']").get_attribute("data-step") == "3"
    assert page.locator("[data-section='cosine']").get_attribute("data-step") is None  # ready: of the sections in view
    page.wait_for_function(HELD, arg=[["tensors/encoder_weights"], [2, 4]], timeout=15000)  # its neighbours prefetched
    asked = [u for u in page.watch.requests[before:] if TENSOR_REQUESTS in u]
    assert asked and all(any(a in u for a in own) for u in asked), asked
    held = page.evaluate("[...window.accViewer.store.entries.keys()].filter((k) => k.startsWith('tensors/'))")
    assert {k.split("#")[0] for k in held} == {"tensors/neighbors", "tensors/encoder_weights"}, held


COSINE = ("weight_cosine_matrix", "som_target_cosine_matrix", "grad_cosine_matrix")


def test_far_switch_with_one_section_in_view_asks_for_its_arrays_and_draws_the_store(page, bcl_site):
    """The budget of a far switch: none of the page's tensors at its top (bench_viewer.py's 'top' view),
    and with the cosine section alone in the window, its three arrays only, one request each, drawn
    as the store holds them."""
    open_at(page, bcl_site, 10)
    wait_worker(page)
    before = len(page.watch.requests)
    page.evaluate("window.accViewer.go(24)")  # far, in another shard
    wait_step(page, 24)
    assert len([u for u in page.watch.requests[before:] if TENSOR_REQUESTS in u]) <= 2  # (none, in fact: see above)

    # a window as tall as the section, scrolled to it: the one section in view
    height = page.evaluate("document.querySelector(\"[data-section='cosine']\").getBoundingClientRect().height")
    page.set_viewport_size({"width": 1440, "height": int(height)})
    page.evaluate("window.scrollTo(0, document.querySelector(\"[data-section='cosine']\").getBoundingClientRect().top + window.scrollY)")
    page.wait_for_function(SECTION_SHOWS, arg=["[data-section='cosine']", 24], timeout=15000)
    assert page.evaluate(SECTIONS_IN_VIEW) == ["cosine"]
    arrays = [f"tensors/{k}" for k in COSINE]
    page.wait_for_function(HELD, arg=[arrays, [23, 25]], timeout=15000)  # its neighbours prefetched

    before = len(page.watch.requests)
    page.evaluate("window.accViewer.go(3)")
    wait_step(page, 3)
    page.wait_for_function(HELD, arg=[arrays, [2, 4]], timeout=15000)  # every request made, prefetches too
    asked = [u for u in page.watch.requests[before:] if TENSOR_REQUESTS in u]
    assert asked and all(any(f"/{a}/" in u for a in arrays) for u in asked), asked
    for a in arrays:
        assert len(page.watch.step_fetches(step_bytes(bcl_site.path, a, 3))) == 1, a
    assert page.locator("[data-section='trace-forces']").get_attribute("data-step") != "3"  # above it, out of view

    data = Recording.open(bcl_site.path).step(3)
    for key in COSINE:
        m = data[key].astype(np.float64)
        text = page.locator(f"[data-key='{key}'] .offdiag strong").text_content()
        assert close(text, (m.sum() - np.trace(m)) / (m.size - m.shape[0])), (key, text)
    for key, (r, c) in zip(COSINE, [(5, 9), (40, 2), (63, 62)]):
        text = hover_cell(page, f"[data-key='{key}']", r, c)
        assert close(text.rsplit(": ", 1)[1], data[key][r, c]), (key, text, data[key][r, c])


# JS: the arrays showing a step takes, and those of them that are sharded
PLAN_ARRAYS = "(step) => [...new Set(window.accViewer.plan(step).arrays.values())]"
STORE_ROW = "async ([array, step]) => Array.from(await window.accViewer.store.row(array, step))"
HELD = "([arrays, steps]) => arrays.every((a) => steps.every((s) => window.accViewer.store.has(a, s)))"


def test_a_switch_asks_once_per_array_and_prefetching_asks_nothing(page, bcl_site):
    """A step in a shard not read yet: one request per sharded array shown (no index request: the built
    shard index says where it lies), bringing the steps beside it too, so prefetching them asks for nothing."""
    page.set_viewport_size({"width": 1440, "height": 9000})  # every section in view
    open_at(page, bcl_site, 2)
    assert page.evaluate("document.documentElement.scrollHeight") <= 9000
    wait_worker(page)
    arrays = page.evaluate(PLAN_ARRAYS, 2)
    page.wait_for_function(HELD, arg=[arrays, [1, 3]], timeout=15000)  # prefetched neighbours of step 2
    sharded = [a for a in arrays if step_bytes(bcl_site.path, a, 2).index]
    assert len(sharded) >= 10, sharded
    assert len(page.watch.chunk_requests("/viewer/shard-index.bin")) == 1
    assert not any(page.watch.index_fetches(step_bytes(bcl_site.path, a, 2)) for a in sharded), "a shard index was fetched"

    before = len(page.watch.requests)
    page.evaluate("window.accViewer.go(25)")
    wait_step(page, 25)
    asked = page.watch.requests[before:]
    assert len(asked) == len(sharded), asked  # the other arrays' chunks hold many steps: held already
    for a in sharded:
        shard = step_bytes(bcl_site.path, a, 25).file
        got = page.watch.file_fetches(shard)
        assert len([u for u in asked if u.endswith("/" + shard)]) == 1, (a, asked)
        # steps 24 and 26 came along, in the same request
        first, last = byte_span(step_bytes(bcl_site.path, a, 24).range)[0], byte_span(step_bytes(bcl_site.path, a, 26).range)[1]
        assert got == [(f"bytes={first}-{last}", 206)], (a, got)

    # the page prefetches steps 24 and 26 after drawing 25: from the bytes held, no request
    page.wait_for_function(HELD, arg=[arrays, [24, 26]], timeout=15000)
    assert page.watch.requests[before + len(asked):] == []
    page.keyboard.press("ArrowRight")
    wait_step(page, 26)
    assert page.evaluate("window.accViewer.timing")["chunks"] == len(arrays)
    # what came along is what the store holds
    data = Recording.open(bcl_site.path).step(26)
    for key in ("strength", "batch_images", "encoder_weights"):
        shown = np.array(page.evaluate(STORE_ROW, [f"tensors/{key}", 26]), dtype=np.float32)
        assert np.array_equal(shown, data[key].ravel()), key


# -- 3: user text is text; nothing outside the recording is served ---------------------------------

def test_note_is_shown_as_text_and_runs_nothing(page, xss_site):
    html = (xss_site.path / "index.html").read_text()
    assert "<script>window.pwned" not in html and "<img src=x" not in html
    open_at(page, xss_site)
    assert page.locator("#run-note").text_content() == XSS
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("[data-section='run-info'] img").count() == 0
    assert not page.watch.chunk_requests("/x")
    assert page.watch.dialogs == []


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """Send a request line exactly as written (browsers and clients normalise `..`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_server_serves_nothing_outside_the_recording(bcl_built, tmp_path):
    secret = bcl_built.parent / "secret.txt"
    secret.write_text("TOP-SECRET-OUTSIDE")
    link = bcl_built / "leak.txt"
    link.symlink_to(secret)
    link_dir = bcl_built / "leakdir"
    link_dir.symlink_to(bcl_built.parent, target_is_directory=True)
    site = serve_in_thread(bcl_built)
    port = int(site.url.rsplit(":", 1)[1].strip("/"))
    try:
        for target in ["/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt", "/viewer/../../secret.txt",
                       "/viewer/%2e%2e/%2e%2e/secret.txt", "/..%2fsecret.txt", "//../secret.txt", "/leak.txt",
                       "/leakdir/secret.txt", f"{secret}", f"/{secret}", f"//{secret}", "/etc/passwd",
                       "/%00/etc/passwd", "../secret.txt", f"http://127.0.0.1/../{secret.name}", "/tensors/",
                       "/viewer/"]:
            status, body = raw_get(port, target)
            assert status in (400, 403, 404), (target, status)
            assert b"TOP-SECRET" not in body and b"root:" not in body, target
        status, body = raw_get(port, "/index.html")
        assert status == 200 and b"data-section" in body
    finally:
        site.stop()
        link.unlink()
        link_dir.unlink()


def test_server_content_types(bcl_site):
    port = int(bcl_site.url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    expected = {
        "/": "text/html", "/index.html": "text/html", "/viewer/app.js": "text/javascript",
        "/viewer/worker.js": "text/javascript", "/viewer/style.css": "text/css", "/zarr.json": "application/json",
        "/viewer/zarr.json": "application/json",
        "/" + step_bytes(bcl_site.path, "tensors/strength", 3).file: "application/octet-stream",
    }
    for path, ctype in expected.items():
        conn.request("GET", path)  # one kept-alive connection for all
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, path
        assert r.getheader("Content-Type").split(";")[0] == ctype, (path, r.getheader("Content-Type"))
        assert int(r.getheader("Content-Length")) == len(body)
    conn.close()
    assert bcl_site.url.startswith("http://127.0.0.1:")


@pytest.fixture(scope="module")
def range_site(tmp_path_factory):
    """A folder with a page and a file of 1000 known bytes."""
    path = tmp_path_factory.mktemp("ranges")
    (path / "index.html").write_text("<!doctype html><title>ranges</title>")
    (path / "data.bin").write_bytes(bytes(i % 251 for i in range(1000)))
    (path / "empty.bin").write_bytes(b"")
    served = serve_in_thread(path)
    yield served
    served.stop()


def request_on(conn: http.client.HTTPConnection, path: str, headers: dict, method: str = "GET"):
    conn.request(method, path, headers=headers)
    r = conn.getresponse()
    return r, r.read()


def test_server_answers_one_byte_range(range_site):
    data = (range_site.path / "data.bin").read_bytes()
    port = int(range_site.url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # one kept-alive connection for all
    for header, first, last in [("bytes=0-0", 0, 0), ("bytes=10-19", 10, 19), ("bytes=990-", 990, 999),
                                ("bytes=-16", 984, 999), ("bytes=-5000", 0, 999), ("bytes=500-99999", 500, 999),
                                ("bytes=999-999", 999, 999), (" bytes=3-4 ", 3, 4)]:
        r, body = request_on(conn, "/data.bin", {"Range": header})
        assert r.status == 206, (header, r.status)
        assert body == data[first:last + 1], header
        assert r.getheader("Content-Range") == f"bytes {first}-{last}/1000", header
        assert int(r.getheader("Content-Length")) == last - first + 1
        assert r.getheader("Content-Type") == "application/octet-stream"
        assert r.getheader("Accept-Ranges") == "bytes"
        r, body = request_on(conn, "/data.bin", {})  # and the next request on the connection is whole again
        assert r.status == 200 and body == data and r.getheader("Accept-Ranges") == "bytes"
    # nothing of it: 416, with the size
    for header in ("bytes=1000-", "bytes=1000-1005", "bytes=5000-6000", "bytes=-0"):
        r, body = request_on(conn, "/data.bin", {"Range": header})
        assert r.status == 416 and body == b"", header
        assert r.getheader("Content-Range") == "bytes */1000", header
    r, body = request_on(conn, "/empty.bin", {"Range": "bytes=-10"})
    assert r.status == 416 and r.getheader("Content-Range") == "bytes */0"
    # several ranges, another unit, bad syntax, or If-Range: the whole file, 200
    for header in ("bytes=0-1,5-6", "bytes=0-1, 5-6", "items=0-1", "bytes=5-2", "bytes=-", "bytes=a-b", "bytes=1-2-3",
                   "bytes=²-³", "bytes=0-0x10", "0-10", "", "bytes=" + "9" * 5000 + "-", "bytes=-" + "1" * 19):
        r, body = request_on(conn, "/data.bin", {"Range": header})
        assert r.status == 200 and body == data, (header, r.status)
    r, body = request_on(conn, "/data.bin", {"Range": "bytes=0-9", "If-Range": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert r.status == 200 and body == data
    # HEAD: the same headers, no body
    r, body = request_on(conn, "/data.bin", {"Range": "bytes=-16"}, "HEAD")
    assert r.status == 206 and body == b"" and r.getheader("Content-Range") == "bytes 984-999/1000"
    assert r.getheader("Content-Length") == "16"
    r, body = request_on(conn, "/data.bin", {}, "HEAD")
    assert r.status == 200 and body == b"" and r.getheader("Content-Length") == "1000"
    # a range of the page, and of files outside the folder: as without a range
    r, body = request_on(conn, "/", {"Range": "bytes=0-8"})
    assert r.status == 206 and body == b"<!doctype"
    for target in ("/../secret.txt", "/nothing.bin"):
        r, body = request_on(conn, target, {"Range": "bytes=0-8"})
        assert r.status in (403, 404), target
    conn.close()


def test_shard_ranges_are_what_zarr_wrote(bcl_site):
    """The inner chunk a Range request fetches from our server is the step zarr reads."""
    rec = Recording.open(bcl_site.path)
    where = step_bytes(bcl_site.path, "tensors/strength", 5)
    port = int(bcl_site.url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    whole = (bcl_site.path / where.file).read_bytes()
    if where.index is None:
        pytest.skip("the recorder writes tensors/strength unsharded")
    r, index = request_on(conn, "/" + where.file, {"Range": where.index})
    assert r.status == 206 and index == whole[-len(index):]
    r, chunk = request_on(conn, "/" + where.file, {"Range": where.range})
    assert r.status == 206
    from numcodecs import blosc

    inner = [c["name"] for c in rec.tensors["strength"].metadata.codecs[0].to_dict()["configuration"]["codecs"]]
    if inner[-1] == "crc32c":  # (its codecs, by zarr.json: the checksum last)
        chunk, inner = chunk[:-4], inner[:-1]
    decode = {"gzip": gzip.decompress, "blosc": blosc.decompress}.get(inner[-1], bytes)
    values = np.frombuffer(decode(chunk), dtype="<f4").reshape(rec.step(5)["strength"].shape)
    assert np.array_equal(values, rec.step(5)["strength"])
    conn.close()


def test_port_in_use_is_one_clear_line(bcl_built):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ViewerError, match=f"port {port} .*in use"):
            make_server(bcl_built, port)
        proc = acc("view", str(bcl_built), "--port", str(port), "--no-open", check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "in use" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_view_command_serves_until_interrupted(bcl_built):
    port = free_port()
    ctrl_c = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)"  # (even if the tests ignore it)
    proc = subprocess.Popen([sys.executable, "-c", f"{ctrl_c}; from capture.cli import main; main()", "view", str(bcl_built),
                             "--port", str(port), "--no-open"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        assert b"data-section" in conn.getresponse().read()
        conn.close()
    finally:
        proc.send_signal(2)  # Ctrl-C
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in out
    assert "Traceback" not in err


# -- 4: recordings without BCL keys or without every step's tensors ----------------------------------

def test_control_recording_opens(page, control_site):
    open_at(page, control_site, 3)
    for name in SECTIONS:
        assert page.locator(f"[data-section='{name}']").count() == 1
    show(page, "[data-section='trace-strength']", 3)
    note = page.locator("[data-section='trace-strength'] .section-note")
    assert note.is_visible() and "no BCL" in note.text_content()
    show(page, "[data-section='metrics']", 3)
    assert "no BCL" in page.locator("[data-section='metrics']").text_content()
    for name in ("batch", "cosine"):  # weights and gradients: not BCL
        show(page, f"[data-section='{name}']", 3)
        assert all(c["distinct"] >= 2 for c in canvases(page, name)), name
    page.keyboard.press("End")
    wait_step(page, 11)


def test_sparse_recording_says_which_steps_have_tensors(page, sparse_site):
    open_at(page, sparse_site, 7)
    flags = page.locator("#flags").text_content()
    assert "summaries only" in flags and "5" in flags and "10" in flags
    show(page, "[data-section='batch']", 7)
    note = page.locator("[data-section='batch'] .section-note")
    assert note.is_visible() and "step 7 kept summaries only" in note.text_content()
    # per-feature values are summaries, kept for every step
    show(page, "#metrics", 7)
    assert page.locator("#metrics tbody tr").count() == 64
    show(page, "[data-section='trace-feature-novelty']", 7)
    assert all(c["distinct"] >= 2 for c in canvases(page, "trace-feature-novelty"))
    assert not page.watch.step_fetches(step_bytes(sparse_site.path, "tensors/batch_images", 7)), "fetched a chunk the policy never wrote"
    assert not page.evaluate("accViewer.store.entries.has('tensors/batch_images#7')"), "asked for a step the policy never wrote"
    page.click("#flags a:text('10')")
    wait_step(page, 10)
    show(page, "[data-section='batch']", 10)
    assert all(c["distinct"] >= 2 for c in canvases(page, "batch"))
    assert page.locator("#flags").text_content() == ""


def test_nonfinite_values_are_shown_and_flagged(page, nonfinite_site):
    open_at(page, nonfinite_site, 2)
    assert "2 non-finite" in page.locator("#flags").text_content()
    assert page.locator("html").get_attribute("data-nonfinite") == "2"
    assert "NaN" in hover_cell(page, "[data-key='strength']", 0, 0)
    assert "+Inf" in hover_cell(page, "[data-key='strength']", 1, 1)
    legend = page.locator("[data-key='strength'] .legend .nan")
    assert legend.is_visible() and "2 NaN/Inf" in legend.text_content()
    page.keyboard.press("ArrowRight")
    wait_step(page, 3)
    assert page.locator("#flags").text_content() == ""


# -- the build ---------------------------------------------------------------------------------------

def test_build_renders_the_key_table_from_the_enum(bcl_built):
    html = (bcl_built / "index.html").read_text()
    data = json.loads(re.search(r'<script type="application/json" id="acc-data">(.*?)</script>', html, re.S).group(1))
    assert data["keys"] == [{"value": k.value, "name": k.name, "dims": list(k.dims), "bcl": k.bcl, "render": k.render,
                             "signed": k.signed, "description": k.description, "named": k.render in NAMES} for k in StepTensorKey]
    rec = Recording.open(bcl_built)
    for key, arr in rec.tensors.items():
        meta = data["arrays"][f"tensors/{key}"]
        assert meta["shape"] == list(arr.shape) and meta["chunks"] == list(arr.chunks)
        assert meta["dims"] == list(arr.metadata.dimension_names)
    assert [t["id"] for t in data["tables"]] == ["metrics"]
    assert set(data["tables"][0]["columns"]) == {k.value for k in StepTensorKey if k.dims == ("feature",)} | {
        "grad_magnitude", "som_magnitude"}
    # every key is drawn somewhere: in a named section or under "other tensors"
    drawn = {p["key"] for s in data["sections"] for p in s["panels"]} | {k for s in data["sections"] for p in s["panels"]
                                                                         for k in p["with"] + p["optional"]}
    assert {k.value for k in StepTensorKey} - drawn <= {"loss"}
    # no key name is spelled out in our JS: the page learns them from the table above
    for js in (bcl_built / "viewer").glob("*.js"):
        text = js.read_text()
        for k in StepTensorKey:
            assert not re.search(rf"[\"'`/]{k.value}[\"'`#/]", text), f"{js.name} hard-codes {k.value}"


def test_build_reads_shard_layouts_and_names_the_rest(tmp_path):
    """Sharded arrays: `chunks` is the inner chunk, `shard` the shard, `index` where the index lies;
    layouts the viewer cannot read are skipped, with the reason."""
    group = zarr.open_group(tmp_path / "z", mode="w")
    little, crc = BytesCodec(endian="little"), Crc32cCodec()

    def make(name, per=(4, 3), chunk=(1, 4, 3), shard=20, codecs=None, index=None, location="end"):
        return group.create_array(
            name, shape=(45, *per), chunks=(shard, *per), dtype="float32", compressors=None, fill_value=float("nan"),
            serializer=ShardingCodec(chunk_shape=chunk, codecs=codecs or [little, GzipCodec(level=1)],
                                     index_codecs=index or [little], index_location=location),
            dimension_names=["step", "image", "feature"][:1 + len(per)], chunk_key_encoding={"name": "default", "separator": "."})

    meta = array_meta("tensors/a", make("a"))
    assert (meta["chunks"], meta["shard"], meta["index"]) == ([1, 4, 3], [20, 4, 3], {"location": "end", "crc32c": False})
    assert (meta["codecs"], meta["endian"], meta["encoding"], meta["sep"]) == (["bytes", "gzip"], "little", "default", ".")
    assert array_meta("b", make("b", index=[little, crc], location="start"))["index"] == {"location": "start", "crc32c": True}
    assert array_meta("c", make("c", chunk=(2, 4, 3)))["chunks"] == [2, 4, 3]
    plain = group.create_array("p", shape=(45, 4), chunks=(64, 4), dtype="float32", compressors=[GzipCodec(level=1)],
                               fill_value=float("nan"))
    assert (array_meta("p", plain)["chunks"], array_meta("p", plain)["shard"]) == ([64, 4], None)
    for name, kw, reason in [
        ("split", {"chunk": (1, 2, 3)}, "split a step"),
        ("zstd", {"codecs": [little, zarr.codecs.ZstdCodec()]}, "inner codecs ['bytes', 'zstd']"),
        ("big", {"index": [BytesCodec(endian="big")]}, "big-endian shard index"),
        ("nested", {"codecs": [ShardingCodec(chunk_shape=(1, 2, 3))]}, "inner codecs ['sharding_indexed']"),
    ]:
        got = array_meta(name, make(name, **kw))
        assert isinstance(got, str) and reason in got, (name, got)


def page_json(path: Path) -> dict:
    html = (path / "index.html").read_text()
    return json.loads(re.search(r'<script type="application/json" id="acc-data">(.*?)</script>', html, re.S).group(1))


@pytest.mark.parametrize("site", ["bcl_site", "sparse_site", "resharded_site"])
def test_build_writes_where_every_step_lies(site, request):
    """viewer/shard-index.bin holds, for every sharded array, each completed step's (offset, nbytes) as its
    shard's own index says (uint32 pairs, all ones for a step not written); the page says where each part is."""
    path = request.getfixturevalue(site).path
    data = page_json(path)
    spec = data["shard_index"]
    raw = (path / spec["path"]).read_bytes()
    assert spec["path"] == "viewer/shard-index.bin" and len(raw) == spec["bytes"] and spec["width"] == 4
    steps = Recording.open(path).steps
    sharded = {name for name, meta in data["arrays"].items() if meta["shard"]}
    assert len(sharded) >= 10 and set(spec["arrays"]) == sharded
    for name, part in spec["arrays"].items():
        assert part["chunks"] == steps
        pairs = np.frombuffer(raw, "<u4", count=2 * steps, offset=part["at"]).reshape(steps, 2)
        for step in range(steps):
            where = step_bytes(path, name, step)
            offset, nbytes = (int(v) for v in pairs[step])
            shown = None if offset == nbytes == 2**32 - 1 else f"bytes={offset}-{offset + nbytes - 1}"
            assert shown == where.range, (name, step, shown, where.range)
    if site == "sparse_site":
        assert (pairs[1] == 2**32 - 1).all() and (pairs[5] != 2**32 - 1).all()


def test_shard_index_widths_and_damaged_shards(tmp_path):
    """uint64 pairs when a chunk ends past 4 GiB; an array whose shard index points outside its data is
    left out (the page reads its shards' own indexes, and says what is wrong); steps past the array's
    shape are not covered."""
    from viewer.build import shard_index

    meta = {"path": "a", "shape": [6, 2], "chunks": [1, 2], "shard": [4, 2], "index": {"location": "end", "crc32c": False},
            "encoding": "default", "sep": "."}
    (tmp_path / "a").mkdir()
    empty = 2**64 - 1

    def shard(file: int, entries: list[tuple[int, int]], data_bytes: int) -> None:
        with open(tmp_path / "a" / f"c.{file}.0", "wb") as f:
            f.truncate(data_bytes)  # (a sparse file: nothing written before the index)
            f.seek(data_bytes)
            f.write(struct.pack(f"<{2 * len(entries)}Q", *[v for e in entries for v in e]))

    shard(0, [(0, 10), (10, 10), (empty, empty), (20, 5)], 25)
    shard(1, [(0, 8), (8, 8), (empty, empty), (empty, empty)], 16)
    index, spec = shard_index(tmp_path, {"a": meta}, 100)
    assert spec == {"path": "viewer/shard-index.bin", "bytes": 48, "width": 4, "arrays": {"a": {"at": 0, "chunks": 6}}}
    assert struct.unpack("<12I", index) == (0, 10, 10, 10, 2**32 - 1, 2**32 - 1, 20, 5, 0, 8, 8, 8)
    assert shard_index(tmp_path, {"a": meta}, 5)[1]["arrays"]["a"]["chunks"] == 5

    shard(1, [(0, 8), (2**32 + 8, 8), (empty, empty), (empty, empty)], 2**32 + 16)
    index, spec = shard_index(tmp_path, {"a": meta}, 6)
    assert spec["width"] == 8 and spec["bytes"] == 96
    assert struct.unpack("<12Q", index)[8:] == (0, 8, 2**32 + 8, 8)
    assert struct.unpack("<12Q", index)[4:6] == (empty, empty)

    shard(1, [(0, 8), (9, 8), (empty, empty), (empty, empty)], 16)  # past the chunks' bytes
    assert shard_index(tmp_path, {"a": meta}, 6) == (b"", None)
    (tmp_path / "a" / "c.1.0").write_bytes(b"short")
    assert shard_index(tmp_path, {"a": meta}, 6) == (b"", None)
    (tmp_path / "a" / "c.1.0").unlink()  # no step of shard 1 written: empty
    index, spec = shard_index(tmp_path, {"a": meta}, 6)
    assert struct.unpack("<12I", index)[8:] == (2**32 - 1,) * 4


@pytest.mark.filterwarnings("ignore:Object at index.html is not recognized")
@pytest.mark.filterwarnings("ignore:Object at .* is not recognized")  # (listing viewer/: its files are no zarr nodes)
def test_built_recording_still_reads_as_zarr(bcl_built):
    assert json.loads((bcl_built / "viewer" / "zarr.json").read_text()) == {
        "zarr_format": 3, "node_type": "group", "attributes": {}}
    rec = Recording.open(bcl_built)
    assert rec.steps == 30 and rec.step(3)["strength"].shape == (128, 64)
    group = zarr.open_group(bcl_built, mode="r")
    assert "viewer" in set(group.group_keys())
    assert (bcl_built / "viewer" / "shard-index.bin").is_file()
    assert dict(group["viewer"].members()) == {}, "the shard index file is no zarr node"
    assert "viewer" in dict(group.members())
    assert not any(p.name.startswith(".") for p in bcl_built.iterdir()), "a temporary file was left behind"


def test_build_failure_is_one_line(control_rec, tmp_path):
    path = copy_recording(control_rec, tmp_path / "blocked")
    (path / "viewer").write_text("a file where the viewer's folder goes")
    with pytest.raises(ViewerError, match="cannot write the viewer"):
        build(Recording.open(path))
    proc = acc("view", str(path), "--build-only", check=False)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "cannot write the viewer" in proc.stderr, proc.stderr
    assert not (path / "index.html").exists()
