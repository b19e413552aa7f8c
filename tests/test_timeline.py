"""The timeline's charts (uPlot, vendored): drawn, zoomed by a drag and reset by a double-click, a cursor
shared by every chart whose values are the store's, a click that jumps to a step, the current step and
the steps with full tensors marked. A real recording, a real headless Chromium (see conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import zarr

from browser import canvases, close, copy_recording, open_at, serve_in_thread, wait_step
from capture.recording import Recording
from viewer import build
from viewer.build import STATIC

CHART = "[data-chart='{}']"
X_RANGE = "(id) => { const e = document.querySelector(`[data-chart='${id}'] .step-chart`); return [Number(e.dataset.xMin), Number(e.dataset.xMax)]; }"
ALL_RANGES = "() => [...document.querySelectorAll('.step-chart')].map((e) => [Number(e.dataset.xMin), Number(e.dataset.xMax)])"
SPECS = "() => JSON.parse(document.getElementById('acc-data').textContent).timeline"


def site_of(src: Path, dst: Path):
    path = copy_recording(src, dst)
    build(Recording.open(path))
    return serve_in_thread(path)


@pytest.fixture(scope="module")
def site(bcl_rec, tmp_path_factory):
    served = site_of(bcl_rec, tmp_path_factory.mktemp("timeline") / "bcl")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def sparse_site(sparse_rec, tmp_path_factory):
    served = site_of(sparse_rec, tmp_path_factory.mktemp("timeline") / "sparse")
    yield served
    served.stop()


def plot_box(pg, chart: str) -> dict:
    """The plotting area of a chart (uPlot's .u-over), scrolled into view."""
    over = pg.locator(f"{CHART.format(chart)} .u-over")
    over.evaluate("e => e.scrollIntoView({ block: 'center' })")
    return over.bounding_box()


def plot_boxes(pg) -> dict[str, dict]:
    """The plotting area of every chart, with all of them in view (scrolling after would move the cursor)."""
    pg.locator(".timeline .charts").evaluate("e => e.scrollIntoView({ block: 'start' })")
    return {spec["id"]: pg.locator(f"{CHART.format(spec['id'])} .u-over").bounding_box() for spec in pg.evaluate(SPECS)}


def at(box: dict, frac: float) -> tuple[float, float]:
    return box["x"] + box["width"] * frac, box["y"] + box["height"] / 2


def x_of(box: dict, step: float, lo: float, hi: float) -> float:
    return box["x"] + (step - lo) / (hi - lo) * box["width"]


def readout(pg, chart: str) -> str:
    return pg.locator(f"{CHART.format(chart)} output.readout").first.text_content()


def test_the_vendored_files_travel_with_the_viewer_and_stale_ones_go(bcl_rec, tmp_path):
    path = copy_recording(bcl_rec, tmp_path / "bcl")
    stale = [path / "viewer" / "vendor" / "old-lib.js", path / "viewer" / "gone" / "x.js", path / "viewer" / "old.js"]
    for f in stale:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("// an older viewer's file")
    build(Recording.open(path))
    for name in ("uPlot.esm.js", "uPlot.min.css", "uPlot.LICENSE"):
        assert (path / "viewer" / "vendor" / name).read_bytes() == (STATIC / "vendor" / name).read_bytes()
    assert "MIT" in (path / "viewer" / "vendor" / "uPlot.LICENSE").read_text()
    assert not [f for f in stale if f.exists()]
    assert not (path / "viewer" / "gone").exists()
    assert 'href="viewer/vendor/uPlot.min.css"' in (path / "index.html").read_text()


def test_charts_are_drawn_with_a_legend_of_one_colour_per_series(page, site):
    open_at(page, site, 3)
    specs = page.evaluate(SPECS)
    assert page.locator(".step-chart").count() == len(specs)
    drawn = canvases(page, "timeline")
    assert len(drawn) == len(specs) + 1, drawn  # every chart's uPlot canvas, and the heatmap
    assert all(c["distinct"] > 2 for c in drawn), drawn
    for spec in specs:
        assert page.evaluate(X_RANGE, spec["id"]) == [0, 29]
        legend = page.locator(f"{CHART.format(spec['id'])} .u-legend .u-series")
        if len(spec["series"]) > 1:
            assert legend.all_text_contents() == spec["labels"]
            colours = legend.locator(".u-marker").evaluate_all("ms => ms.map((m) => getComputedStyle(m).borderColor)")
            assert len(set(colours)) == len(spec["series"]), colours
        else:
            assert legend.count() == 0
    # the charts follow the width of the window
    widths = "() => [...document.querySelectorAll('.step-chart')].map((e) => [e.querySelector('.uplot').offsetWidth, e.parentElement.clientWidth])"
    assert all(u == f for u, f in page.evaluate(widths))
    page.set_viewport_size({"width": 900, "height": 1000})
    page.wait_for_function(f"() => ({widths})().every(([u, f]) => u === f && f < 880)")
    # the log chart is drawn on a log scale: decades equally spaced
    log = [s["id"] for s in specs if s["log"]]
    assert log
    gaps = page.locator(f"{CHART.format(log[0])} .step-chart").evaluate(
        "e => [1e-3, 1e-2, 1e-1].map((v) => e.chart.u.valToPos(v, 'y') - e.chart.u.valToPos(v * 10, 'y'))")
    assert gaps[0] > 1 and abs(gaps[0] - gaps[1]) < 1e-6 and abs(gaps[1] - gaps[2]) < 1e-6, gaps


def test_hovering_one_chart_moves_every_cursor_and_shows_the_stored_values(page, site):
    open_at(page, site, 0)
    specs = page.evaluate(SPECS)
    boxes = plot_boxes(page)
    page.mouse.move(*at(boxes["offdiag"], 0.42))
    step = int(re.match(r"step (\d+):", readout(page, "offdiag")).group(1))
    assert 5 < step < 25
    group = zarr.open_group(site.path / "summary", mode="r")
    for spec in specs:
        text = readout(page, spec["id"])
        head, _, rest = text.partition(": ")
        assert head == f"step {step}", (spec["id"], text)
        shown = [rest] if len(spec["series"]) == 1 else [p.removeprefix(f"{label} ") for p, label in zip(rest.split(", "), spec["labels"])]
        for name, value in zip(spec["series"], shown):
            assert close(value, float(group[name][step])), (spec["id"], name, value, float(group[name][step]))
        # and that chart's own cursor stands on the step
        cursor = page.locator(f"{CHART.format(spec['id'])} .u-cursor-x")
        assert "u-off" not in (cursor.get_attribute("class") or "")
        assert abs(cursor.bounding_box()["x"] - x_of(boxes[spec["id"]], step, 0, 29)) <= 2


def test_a_drag_zooms_every_chart_and_a_double_click_resets(page, site):
    open_at(page, site, 3)
    box = plot_box(page, "loss")
    (x0, y), (x1, _) = at(box, 0.25), at(box, 0.6)
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, y, steps=3)
    page.mouse.move(x1, y, steps=3)
    page.mouse.up()
    lo, hi = page.evaluate(X_RANGE, "loss")
    assert abs(lo - 0.25 * 29) < 0.5 and abs(hi - 0.6 * 29) < 0.5, (lo, hi)
    assert page.evaluate(ALL_RANGES) == [[lo, hi]] * len(page.evaluate(SPECS))  # the other charts follow
    page.wait_for_selector(f"canvas.heatmap[data-from='{int(-(-lo // 1))}'][data-to='{int(hi // 1)}']")  # and the heatmap
    assert page.locator("html").get_attribute("data-step") == "3", "a drag is not a click"
    # the step marker is off-range now: step 3 is left of the zoomed range
    assert page.locator(f"{CHART.format('loss')} .step-line").is_hidden()

    # a click inside the zoomed range jumps to the step under it, and marks it
    page.mouse.move(*at(box, 0.5))
    step = int(re.match(r"step (\d+):", readout(page, "loss")).group(1))
    assert lo <= step <= hi
    page.mouse.click(*at(box, 0.5))
    wait_step(page, step)
    line = page.locator(f"{CHART.format('loss')} .step-line")
    assert line.is_visible()
    assert abs(line.bounding_box()["x"] - x_of(box, step, lo, hi)) <= 2

    box = plot_box(page, "dead")  # a double-click on any chart resets them all
    page.mouse.dblclick(*at(box, 0.5))
    page.wait_for_function("() => [...document.querySelectorAll('.step-chart')].every((e) => e.dataset.xMin === '0' && e.dataset.xMax === '29')")
    page.wait_for_selector("canvas.heatmap[data-from='0'][data-to='29']")


def test_a_click_jumps_and_the_current_step_is_marked(page, site):
    open_at(page, site, 2)
    box = plot_box(page, "norms")
    page.mouse.move(*at(box, 0.8))
    step = int(re.match(r"step (\d+):", readout(page, "norms")).group(1))
    assert 20 <= step <= 26
    page.mouse.click(*at(box, 0.8))
    wait_step(page, step)
    for spec in page.evaluate(SPECS):
        other = plot_box(page, spec["id"])
        line = page.locator(f"{CHART.format(spec['id'])} .step-line")
        assert abs(line.bounding_box()["x"] - x_of(other, step, 0, 29)) <= 2, spec["id"]
    page.keyboard.press("Home")  # the marker follows the step, however it changes
    wait_step(page, 0)
    assert abs(page.locator(f"{CHART.format('loss')} .step-line").bounding_box()["x"] - plot_box(page, "loss")["x"]) <= 2


# JS: (chart id, steps) -> for each step, the colours of the pixels in its column along the bottom of the plot
TICK_COLUMNS = """([id, steps]) => {
  const u = document.querySelector(`[data-chart='${id}'] .step-chart`).chart.u;
  const ctx = u.ctx, pr = devicePixelRatio || 1, bottom = Math.round(u.bbox.top + u.bbox.height);
  return steps.map((s) => {
    const x = Math.round(u.valToPos(s, 'x', true));
    const d = ctx.getImageData(x, bottom - Math.round(8 * pr), 1, Math.round(8 * pr)).data;
    const out = [];
    for (let i = 0; i < d.length; i += 4) out.push([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    return out;
  });
}"""


def test_steps_with_full_tensors_are_ticked(page, sparse_site):
    """full tensors every 5th step only: the loss chart marks those steps along its bottom, in grey."""
    open_at(page, sparse_site, 0)
    plot_box(page, "loss")
    assert "full tensors" in page.locator(f"{CHART.format('loss')} .ticks-note").text_content()
    full = Recording.open(sparse_site.path).full_capture
    assert list(full.nonzero()[0]) == [0, 5, 10, 15]
    steps = [0, 2, 5, 7, 10, 13, 15, 19]
    grey = [any(r == g == b == 0x88 and a == 255 for r, g, b, a in col) for col in page.evaluate(TICK_COLUMNS, ["loss", steps])]
    assert grey == [bool(full[s]) for s in steps], grey
