"""The archive of a folder of recordings (`acc-capture view FOLDER`): its table (rows, sorting, filter,
the values of the stores), the overlaid timelines of ticked runs, and the compare page (A, B and
A − B at one step, `data-diff` against numpy, one scrubber for both). Real recordings of the real
CLI and of `record()`, a real headless Chromium, under our server and under `python -m http.server`."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from acc.step_inspector import NAMES
from browser import READY, Served, canvases, close, serve_in_thread, serve_plain
from capture import Recording, TensorKey, record
from capture.diff import diff
from conftest import acc, assert_one_line_error

# the archive: name -> `acc-capture run` arguments (one a level down, and longer)
RUNS = {
    "slow0": ["--condition", "bcl-slow", "--seed", "0", "--steps", "12"],
    "med0": ["--condition", "bcl-med", "--seed", "0", "--steps", "12"],
    "ctl1": ["--condition", "control", "--seed", "1", "--steps", "12"],
    "more/slow1": ["--condition", "bcl-slow", "--seed", "1", "--steps", "14", "--som-lr", "0.002", "--note", "one level down"],
}
LOOPS = {"loops/a": 0.1, "loops/b": 0.2}  # record() recordings: their config's lr, which scales w from step 3 on
ALL = [*RUNS, *LOOPS]


class Loop(TensorKey):
    LOSS = "loss", (), "scalar", False, "a made-up loss"
    ACCURACY = "accuracy", (), "scalar", False, "a made-up accuracy"
    W = "w", ("unit", "pixel"), "weights", True, "rows of 16 pixels"
    H = "h", ("unit",), "bars", False, "one value per unit"


def record_loop(path: Path, lr: float, steps: int = 8) -> None:
    """A record() recording: the same values in both loops up to step 2, then w scaled by lr."""
    with record(path, Loop, config={"lr": lr, "optimizer": "none"}, seed=0, note="a loop of record()") as rec:
        for step in range(steps):
            g = torch.Generator().manual_seed(step)
            w = torch.randn(6, 16, generator=g) * (1 if step < 3 else lr)
            for key, value in ((Loop.LOSS, 1 / (step + 1) + w.abs().mean()), (Loop.ACCURACY, torch.tensor(step / steps)),
                               (Loop.W, w), (Loop.H, w.sum(1))):
                rec.inspector.capture(key, value)
            rec.commit()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """The folder, built by `acc-capture view FOLDER --build-only`: four runs of the CLI (made side by
    side), two of record(), and a directory that looks like a recording but is not one."""
    folder = tmp_path_factory.mktemp("archive")
    (folder / "more").mkdir()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda item: acc("run", *item[1], "--out", str(folder / item[0])), RUNS.items()))
    for name, lr in LOOPS.items():
        record_loop(folder / name, lr)
    (folder / "broken").mkdir()
    (folder / "broken" / "zarr.json").write_text("{")
    proc = acc("view", str(folder), "--build-only")
    assert "archive written to" in proc.stdout and str(folder / "index.html") in proc.stdout
    assert "broken" in proc.stderr and proc.stderr.startswith("warning: "), proc.stderr
    return folder


@pytest.fixture(scope="module")
def ours(archive):
    served = serve_in_thread(archive)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def plain(archive):
    """The same folder under Python's own static file server (no byte ranges)."""
    with serve_plain(archive) as served:
        yield served


@pytest.fixture(params=["ours", "http.server"])
def site(request) -> Served:
    return request.getfixturevalue("ours" if request.param == "ours" else "plain")


def shown_runs(pg) -> list[str]:
    return pg.eval_on_selector_all("#runs tbody tr:not([hidden])", "trs => trs.map((t) => t.dataset.run)")


def cell(pg, run: str, selector: str):
    return pg.locator(f"#runs tr[data-run='{run}'] {selector}")


def sort_by(pg, column: str) -> None:
    pg.click(f"#runs thead th[data-col='{column}'] button")


def open_archive(pg, site: Served, hash_: str = "") -> None:
    pg.goto(site.url + "index.html" + hash_)
    pg.wait_for_selector(READY, timeout=15000)


def open_compare(pg, site: Served, a: str, b: str, step: int | None = None) -> None:
    pg.goto(f"{site.url}compare.html#a={a.replace('/', '%2F')}&b={b.replace('/', '%2F')}" + ("" if step is None else f"&step={step}"))
    pg.wait_for_selector(f"html[data-ready='true'][data-step='{0 if step is None else step}']", timeout=20000)


# -- the CLI --------------------------------------------------------------------------------------

def test_view_folder_builds_every_viewer_and_both_pages(archive):
    for name in ALL:
        assert (archive / name / "index.html").is_file(), name
    for f in ("index.html", "compare.html", "viewer/archive.js", "viewer/compare.js", "viewer/archive.css", "viewer/data.js",
              "viewer/worker.js", "viewer/timeline.js", "viewer/vendor/uPlot.esm.js"):
        assert (archive / f).is_file(), f
    assert len(list((archive / "viewer" / "runs").glob("*.json"))) == len(ALL)
    assert not (archive / "broken" / "index.html").exists()


def test_view_of_a_folder_without_recordings_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes").mkdir()
    assert_one_line_error(acc("view", str(tmp_path / "empty"), "--build-only", check=False), "no recordings")
    assert_one_line_error(acc("view", str(tmp_path / "nowhere"), "--build-only", check=False), "nowhere")


# -- the table ------------------------------------------------------------------------------------

def test_rows_hold_what_the_stores_say(page, site):
    open_archive(page, site)
    assert sorted(shown_runs(page)) == sorted(ALL)
    for name in ALL:
        rec = Recording.open(site.path / name)
        assert cell(page, name, "td.name a").get_attribute("href") == f"{name}/index.html"
        texts = cell(page, name, "td").all_text_contents()
        assert texts[2] == (rec.condition or "–") and texts[5] == str(rec.steps) and texts[6] == rec.status
        assert texts[4] == str(rec.meta["seed"]) and texts[7] == rec.meta["note"]
        for summary in ("loss", "weight_cosine_offdiag", "dead_features"):
            td = cell(page, name, f"td[data-final='{summary}']")
            if summary not in rec.summaries:
                assert td.text_content() == "–" and td.get_attribute("data-value") == "", (name, summary)
                continue
            last = float(rec.summary(summary)[-1])
            assert float(td.get_attribute("data-value")) == last, (name, summary)
            assert close(td.text_content(), last), (name, summary, td.text_content())
    assert cell(page, "more/slow1", "td.settings").text_content() == "bcl.som_lr 0.002"
    assert cell(page, "med0", "td.settings").text_content() == "–"  # bcl-med's own som_lr is its default
    assert "lr 0.1" in cell(page, "loops/a", "td.settings").text_content()  # record(): its config
    # a run's name opens its own viewer
    page.click("#runs tr[data-run='more/slow1'] td.name a")
    page.wait_for_selector(READY, timeout=15000)
    assert page.url.split("#")[0].endswith("/more/slow1/index.html")


def test_every_column_sorts_and_the_box_filters(page, site):
    open_archive(page, site)
    loss = {name: float(Recording.open(site.path / name).summary("loss")[-1]) for name in ALL}
    sort_by(page, "final-loss")
    assert shown_runs(page) == sorted(ALL, key=loss.get)
    sort_by(page, "final-loss")
    assert shown_runs(page) == sorted(ALL, key=loss.get, reverse=True)
    assert page.locator("#runs thead th[aria-sort='descending']").get_attribute("data-col") == "final-loss"
    sort_by(page, "final-dead_features")  # runs without dead_features (control, record()) last
    dead = shown_runs(page)
    assert set(dead[-3:]) == {"ctl1", "loops/a", "loops/b"}
    sort_by(page, "steps")
    steps = [int(t) for t in page.eval_on_selector_all("#runs tbody tr td:nth-child(6)", "tds => tds.map((t) => t.textContent)")]
    assert steps == sorted(steps)
    sort_by(page, "name")
    assert shown_runs(page) == sorted(ALL)
    for column in ("condition", "settings", "seed", "status", "note", "created", "size", "final-weight_cosine_offdiag"):
        sort_by(page, column)
        assert page.locator("#runs thead th[aria-sort='ascending']").get_attribute("data-col") == column

    page.fill("#filter", "bcl-med")
    assert shown_runs(page) == ["med0"]
    page.fill("#filter", "LEVEL down")
    assert shown_runs(page) == ["more/slow1"]
    page.fill("#filter", "bcl-slow 0.002")  # every word
    assert shown_runs(page) == ["more/slow1"]
    page.fill("#filter", "no such run")
    assert shown_runs(page) == [] and page.locator("#no-match").is_visible()
    page.fill("#filter", "")
    assert len(shown_runs(page)) == len(ALL)


# -- the overlays ---------------------------------------------------------------------------------

CHART_SERIES = """(id) => {
  const e = document.querySelector(`#overlays [data-chart='${id}'] .step-chart`);
  return e ? e.chart.series.map((s) => [s.label, Array.from(s.values)]) : null;
}"""


def test_ticked_runs_overlay_their_timelines_and_two_open_the_compare_page(page, site):
    open_archive(page, site)
    assert page.locator("#overlays .step-chart").count() == 0
    for name in ("slow0", "more/slow1", "ctl1"):
        page.check(f"#runs tr[data-run='{name}'] input[type=checkbox]")
        page.wait_for_selector(READY, timeout=15000)
    charts = page.eval_on_selector_all("#overlays [data-chart]", "fs => fs.map((f) => f.dataset.chart)")
    assert charts[:5] == ["loss", "dead_features", "weight_cosine_offdiag", "som_target_cosine_offdiag", "grad_cosine_offdiag"]
    drawn = canvases(page, "overlays")
    assert len(drawn) >= 5 and all(c["distinct"] >= 2 for c in drawn), drawn
    for summary in ("loss", "weight_cosine_offdiag", "dead_features"):
        series = page.evaluate(CHART_SERIES, summary)
        has = [n for n in ("slow0", "more/slow1", "ctl1") if summary in Recording.open(site.path / n).summaries]
        assert [label for label, _ in series] == has  # control has no dead_features: no line
        for label, values in series:
            stored = Recording.open(site.path / label).summary(summary).astype(np.float64)
            assert np.array_equal(np.asarray(values, dtype=np.float64), stored), (summary, label)
    legend = page.locator("#overlays [data-chart='loss'] .u-legend").text_content()
    assert "slow0" in legend and "more/slow1" in legend and "ctl1" in legend
    colours = page.eval_on_selector_all("#runs tr.ticked .swatch", "ss => ss.map((s) => s.style.background)")
    assert len(set(colours)) == 3
    assert page.locator("#compare-link").get_attribute("aria-disabled") == "true"

    # drag to zoom one chart: every chart follows; a double-click resets
    over = page.locator("#overlays [data-chart='loss'] .u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    page.mouse.up()
    ranges = page.eval_on_selector_all("#overlays .step-chart", "es => es.map((e) => [Number(e.dataset.xMin), Number(e.dataset.xMax)])")
    assert all(r == ranges[0] for r in ranges) and 0 < ranges[0][0] < ranges[0][1] < 13, ranges
    page.mouse.dblclick(box["x"] + box["width"] * 0.5, y)
    assert page.locator("#overlays [data-chart='loss'] .step-chart").get_attribute("data-x-max") == "13"

    page.uncheck("#runs tr[data-run='ctl1'] input[type=checkbox]")
    page.wait_for_selector(READY, timeout=15000)
    assert [label for label, _ in page.evaluate(CHART_SERIES, "loss")] == ["slow0", "more/slow1"]
    assert page.evaluate("location.hash") == "#runs=slow0,more%2Fslow1"
    link = page.locator("#compare-link")
    assert link.get_attribute("aria-disabled") == "false"
    assert link.get_attribute("href") == "compare.html#a=slow0&b=more%2Fslow1"
    link.click()
    page.wait_for_selector("html[data-ready='true'][data-step='0']", timeout=20000)
    assert page.url.endswith("compare.html#a=slow0&b=more%2Fslow1&step=0")


def test_record_runs_overlay_their_scalar_keys(page, ours):
    open_archive(page, ours, "#runs=loops%2Fa,loops%2Fb")
    ids = page.eval_on_selector_all("#overlays [data-chart]", "fs => fs.map((f) => f.dataset.chart)")
    assert ids[0] == "loss" and len(ids) == 2, ids  # loss and accuracy; no BCL summary in either
    accuracy = page.evaluate(CHART_SERIES, ids[1])
    assert [label for label, _ in accuracy] == ["loops/a", "loops/b"]
    assert np.array_equal(accuracy[0][1], Recording.open(ours.path / "loops/a").summary("accuracy").astype(np.float64))


# -- the compare page -----------------------------------------------------------------------------

SETTLED = "() => window.accCompare.stores.every((s) => [...s.entries.values()].every((e) => e.value))"
DIFFS = "() => Object.fromEntries([...document.querySelectorAll('[data-diff]')].map((e) => [e.dataset.diff, [e.textContent, e.dataset.value || null]]))"


def assert_diffs_match_numpy(pg, a: Path, b: Path, step: int) -> dict:
    """Every key's data-diff at `step`: 'identical' exactly when numpy finds A and B bit-equal, else max
    |A − B|; for a key of names (labels, neighbour indices), how many elements differ."""
    shown = pg.evaluate(DIFFS)
    ra, rb = Recording.open(a).step(step), Recording.open(b).step(step)
    named = {e["key"] for e in Recording.open(a).key_table if e["render"] in NAMES}  # (as the table says, not as the page)
    assert set(shown) == set(ra) | set(rb)
    for key in ra.keys() & rb.keys():
        x, y = ra[key], rb[key]
        text, value = shown[key]
        if x.tobytes() == y.tobytes():
            assert text == "identical", (key, text)
        elif key in named:
            count = int((x != y).sum())
            assert text == f"{count:,} of {x.size:,} differ" and int(value) == count, (key, text, value, count)
        else:
            expected = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max())
            assert text.startswith("max |A − B| ") and float(value) == expected, (key, text, value, expected)
    return shown


def test_compare_says_where_two_runs_part_as_diff_does(page, site):
    a, b = site.path / "slow0", site.path / "med0"
    facts = diff(a, b)
    assert (facts.first_step, facts.first_key) == (0, "som_delta")  # the diff helper's ground truth
    open_compare(page, site, "slow0", "med0")
    shown = assert_diffs_match_numpy(page, a, b, 0)
    order = [e["key"] for e in Recording.open(a).key_table]
    before = order[:order.index("som_delta")]
    assert all(shown[k][0] == "identical" for k in before), {k: shown[k] for k in before}
    assert shown["som_delta"][0] != "identical"
    assert page.locator("tr.first-diff").get_attribute("data-key") == "som_delta"
    # A, B and A − B side by side; A − B drawn where they differ only
    row = page.locator("[data-section='trace-som-targets'] .compare-row[data-key='som_targets']")
    assert row.locator("[data-side='diff'] .missing").text_content().startswith("identical")
    assert row.locator("[data-side='a'] canvas.thumbs").count() == row.locator("[data-side='b'] canvas.thumbs").count() == 1

    page.keyboard.press("End")
    page.wait_for_selector("html[data-ready='true'][data-step='11']", timeout=15000)
    assert_diffs_match_numpy(page, a, b, 11)
    assert row.locator("[data-side='diff'] canvas.thumbs").is_visible()
    assert row.locator("[data-side='diff'] .legend .mid").text_content() == "(white: 0)"  # diverging, centred on 0
    diverging = canvases(page, "cosine")
    assert all(c["distinct"] >= 2 for c in diverging) and len(diverging) == 9, diverging  # 3 keys x (A, B, A − B)


def test_one_scrubber_drives_both_runs(page, ours):
    open_compare(page, ours, "slow0", "more/slow1", 3)
    assert page.locator("#step-input").get_attribute("max") == "11"  # the shorter run: 12 steps
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("html[data-ready='true'][data-step='4']", timeout=15000)
    assert page.evaluate("location.hash") == "#a=slow0&b=more%2Fslow1&step=4"
    page.keyboard.press("Shift+ArrowRight")
    page.wait_for_selector("html[data-ready='true'][data-step='11']", timeout=15000)  # 14 clamped to 11
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector("html[data-ready='true'][data-step='10']", timeout=15000)
    page.evaluate("location.hash = '#a=slow0&b=more%2Fslow1&step=6'")
    page.wait_for_selector("html[data-ready='true'][data-step='6']", timeout=15000)
    drawn = page.eval_on_selector_all("[data-section='trace-strength'] .panel", "ps => ps.map((p) => p.dataset.step)")
    assert drawn == ["6", "6"]  # A's and B's panels
    assert_diffs_match_numpy(page, ours.path / "slow0", ours.path / "more/slow1", 6)
    assert "A has 12 steps, B 14" in page.locator("#settings-differ").text_content()
    marks = page.eval_on_selector_all("[data-section='timeline'] .step-chart", "es => es.map((e) => e.chart.step)")
    assert len(marks) >= 5 and set(marks) == {6}, marks  # every chart marks the step shown


def test_a_key_only_one_run_has_is_said_so(page, ours):
    open_compare(page, ours, "ctl1", "slow0", 2)
    shown = page.evaluate(DIFFS)
    assert shown["strength"][0].startswith("only in B")
    assert shown["batch_images"][0] != "identical"  # seeds 1 and 0: other batches
    assert_diffs_match_numpy(page, ours.path / "ctl1", ours.path / "slow0", 2)  # labels: how many differ, not A − B
    head = page.locator(".compare-row[data-key='neighbors'] [data-side='diff'] .cell-head").text_content()
    assert head.startswith("A ≠ B"), head  # (feature indices: where they differ, not their difference)
    assert "only in B" in page.locator(".compare-row[data-key='strength'] .diff-text").text_content()
    assert "condition control → bcl-slow" in page.locator("#settings-differ").text_content()


def test_compare_reads_only_what_open_sections_draw(page, ours):
    open_compare(page, ours, "slow0", "med0", 0)
    page.wait_for_function(SETTLED, timeout=15000)  # the prefetches of step 1 are done
    page.evaluate("document.querySelectorAll('details[data-section]').forEach((d) => { d.open = d.dataset.section === 'batch'; })")
    before = len(page.watch.requests)
    page.evaluate("window.accCompare.go(9)")
    page.wait_for_selector("html[data-ready='true'][data-step='9']", timeout=15000)
    asked = page.watch.requests[before:]
    assert [u for u in asked if "/tensors/batch_images/" in u], asked
    assert not [u for u in asked if "/tensors/" in u and "/tensors/batch_images/" not in u and "/tensors/batch_labels/" not in u], asked


def test_compare_record_runs(page, site):
    a, b = site.path / "loops/a", site.path / "loops/b"
    open_compare(page, site, "loops/a", "loops/b", 2)
    shown = assert_diffs_match_numpy(page, a, b, 2)
    assert all(text == "identical" for text, _ in shown.values())
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("html[data-ready='true'][data-step='3']", timeout=15000)
    shown = assert_diffs_match_numpy(page, a, b, 3)
    assert shown["w"][0] != "identical" and shown["accuracy"][0] == "identical"
    assert page.locator(".compare-row[data-key='w'] [data-side='diff'] canvas").count() >= 1
    assert "lr 0.1 → 0.2" in page.locator("#settings-differ").text_content()
