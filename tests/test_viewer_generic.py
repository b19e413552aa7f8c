"""The viewer of a recording of any vocabulary, end to end: a tiny real training loop recorded through
`record()` with keys of every render kind and many data types, its page built by the CLI in a process
that never imported the loop, and drawn in headless Chromium. Also the live page's Setup and Teardown.
"""

from __future__ import annotations

import ast
import json
import math
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from torch import nn

from acc.data import BatchStream, load_mnist
from browser import canvases, close, open_at, serve_in_thread, show, wait_step
from capture import Recording, TensorKey, record
from conftest import acc
from viewer import build

STEPS, BATCH, HIDDEN = 12, 64, 32


class Keys(TensorKey):  # every render kind; int64, uint8, int16, bool, float16 and float64 keys
    IMAGES = "images", ("image", "channel", "height", "width"), "images", False, "the batch as the model saw it"
    TINTED = "tinted", ("image", "rgb", "row", "col"), "images", False, "the batch tinted by label, 20x14, RGB"
    LABELS = "labels", ("image",), "labels", False, "the batch's digits"
    PREDICTED = "predicted", ("image",), "labels", False, "argmax of the logits, as uint8"
    SAMPLE_LOSS = "sample_loss", ("image",), "bars", False, "cross-entropy of each image, float64"
    CORRECT = "correct", ("image",), "bars", False, "whether each image was classified right"
    HIDDEN = "hidden", ("image", "unit"), "heatmap", False, "ReLU activations"
    LOGITS = "logits", ("image", "class"), "heatmap", True, "the model's output"
    SOFTMAX = "softmax", ("image", "class"), "heatmap", False, "class probabilities, float16"
    FC1_WEIGHT = "fc1_weight", ("unit", "pixel"), "weights", True, "one 28x28 row per hidden unit"
    FC1_GRAD = "fc1_grad", ("unit", "pixel"), "weights", True, "its gradient"
    FC2_WEIGHT = "fc2_weight", ("class", "unit"), "weights", True, "rows of 32 values: no images"
    FC2_BIAS = "fc2_bias", ("class",), "bars", True, "output bias"
    CLASS_COUNTS = "class_counts", ("class",), "bars", False, "images of each digit in the batch, int16"
    NEAREST = "nearest", ("unit", "near"), "neighbors", False, "each unit's 4 nearest units by cosine of fc1 rows"
    LOSS = "loss", (), "scalar", False, "mean cross-entropy"
    ACCURACY = "accuracy", (), "scalar", False, "fraction right"
    LR = "lr", (), "scalar", False, "learning rate, float64"


CONFIG = {"model": {"layers": [784, HIDDEN, 10], "activation": "relu"},
          "optimizer": {"name": "SGD", "lr": 0.1, "schedule": {"kind": "step", "every": 5, "gamma": 0.5}},
          "batch_size": BATCH}
SCALARS = [k.value for k in Keys if not k.dims]


def train_and_record(path: Path) -> None:
    """An MLP on a few MNIST batches, every step recorded."""
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(784, HIDDEN), nn.Linear(HIDDEN, 10)
    opt = torch.optim.SGD([*fc1.parameters(), *fc2.parameters()], lr=0.1)
    schedule = torch.optim.lr_scheduler.StepLR(opt, 5, 0.5)
    batches = BatchStream(*load_mnist(), batch_size=BATCH, seed=0)
    tints = torch.rand(10, 3, generator=torch.Generator().manual_seed(1))
    with record(path, Keys, config=CONFIG, seed=0, note="generic viewer fixture", chunk_steps=5) as rec:
        for _ in range(STEPS):
            x, y = batches.next()
            h = F.relu(fc1(x.flatten(1)))
            logits = fc2(h)
            per_image = F.cross_entropy(logits, y, reduction="none")
            loss = per_image.mean()
            opt.zero_grad()
            loss.backward()
            rows = F.normalize(fc1.weight.detach(), dim=1)
            for key, value in [
                (Keys.IMAGES, x), (Keys.TINTED, x[:, :, 4:24, 7:21] * tints[y][:, :, None, None]), (Keys.LABELS, y),
                (Keys.PREDICTED, logits.argmax(1).to(torch.uint8)), (Keys.SAMPLE_LOSS, per_image.double()),
                (Keys.CORRECT, logits.argmax(1) == y), (Keys.HIDDEN, h), (Keys.LOGITS, logits),
                (Keys.SOFTMAX, logits.softmax(1).half()), (Keys.FC1_WEIGHT, fc1.weight), (Keys.FC1_GRAD, fc1.weight.grad),
                (Keys.FC2_WEIGHT, fc2.weight), (Keys.FC2_BIAS, fc2.bias),
                (Keys.CLASS_COUNTS, torch.bincount(y, minlength=10).to(torch.int16)),
                (Keys.NEAREST, (rows @ rows.T).fill_diagonal_(-2).topk(4, dim=1).indices), (Keys.LOSS, loss),
                (Keys.ACCURACY, (logits.argmax(1) == y).float().mean()),
                (Keys.LR, torch.tensor(opt.param_groups[0]["lr"], dtype=torch.float64)),
            ]:
                rec.inspector.capture(key, value)
            rec.commit()
            opt.step()
            schedule.step()


@pytest.fixture(scope="module")
def generic_built(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("generic") / "mlp"
    train_and_record(path)
    proc = acc("view", str(path), "--build-only")  # (a process that never imported this loop)
    assert f"viewer written to {path / 'index.html'}" in proc.stdout
    return path


@pytest.fixture(scope="module")
def generic_site(generic_built):
    served = serve_in_thread(generic_built)
    yield served
    served.stop()


def page_json(path: Path) -> dict:
    html = (path / "index.html").read_text()
    return json.loads(re.search(r'<script type="application/json" id="acc-data">(.*?)</script>', html, re.S).group(1))


def stored(path: Path, key: str, step: int) -> np.ndarray:
    """One step of a key, read with plain zarr."""
    return zarr.open_group(path, mode="r")[f"tensors/{key}"][step]


# JS: the content of the canvases of a panel (legend bars aside): how many distinct pixels, up to 3
PANEL_CANVASES = """(key) => [...document.querySelectorAll(`[data-key="${key}"] canvas`)]
  .filter((c) => !c.classList.contains('legend-bar'))
  .map((c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    for (let i = 0; i < d.length && seen.size < 3; i += 4) seen.add((d[i] << 24) | (d[i + 1] << 16) | (d[i + 2] << 8) | d[i + 3]);
    return { cls: c.className, distinct: seen.size };
  })"""
IMAGES = "(key) => [...document.querySelectorAll(`[data-key=\"${key}\"] canvas.thumbs`)].map((c) => c.toDataURL())"
STORE_ROW = "async ([array, step]) => Array.from(await window.accViewer.store.row(array, step))"


def hover(pg, key: str, canvas: str, x: float, y: float) -> str:
    """Move the mouse to (x, y), fractions of a panel's canvas; return the panel's readout."""
    el = pg.locator(f"[data-key='{key}'] canvas.{canvas}").first
    show(pg, f"[data-key='{key}'] canvas.{canvas}")  # in view (clear of the sticky toolbar), and drawn
    box = el.bounding_box()
    pg.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
    return pg.locator(f"[data-key='{key}'] output.readout").first.text_content()


def hover_cell(pg, key: str, row: int, col: int) -> str:
    canvas = pg.locator(f"[data-key='{key}'] canvas.heatmap").first
    rows, cols = int(canvas.get_attribute("data-rows")), int(canvas.get_attribute("data-cols"))
    return hover(pg, key, "heatmap", (col + 0.5) / cols, (row + 0.5) / rows)


# -- the page is made from the recording alone ------------------------------------------------------

def test_the_page_builder_imports_no_code_of_the_recipes():
    for file in (Path(__file__).parent.parent / "viewer" / name for name in ("build.py", "layout.py")):
        tree = ast.parse(file.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n == "acc" or n.startswith("acc.")], f"{file.name} imports {names}"


def test_page_data_comes_from_the_key_table(generic_built):
    data = page_json(generic_built)
    rec = Recording.open(generic_built)
    assert [(k["value"], k["dims"], k["render"], k["signed"], k["description"]) for k in data["keys"]] == [
        (k.value, list(k.dims), k.render, k.signed, k.description) for k in Keys]
    assert data["run"]["kind"] == "generic" and data["run"]["vocabulary"] == "Keys"
    panels = [p["key"] for s in data["sections"] for p in s["panels"]]
    assert sorted(panels) == sorted(k.value for k in Keys), "one panel per key"
    assert data["sections"][0]["id"] == "keys-scalars"
    assert {t["dim"]: t["columns"] for t in data["tables"]} == {
        "image": ["labels", "predicted", "sample_loss", "correct"], "class": ["fc2_bias", "class_counts"]}
    charted = {s for c in data["timeline"] for s in c["series"]}
    norms = {n for n in rec.summaries if n.endswith("_norm")}
    assert norms == {f"{k.value}_norm" for k in Keys if k.dims and rec.tensors[k.value].dtype.kind == "f"}
    assert charted == set(SCALARS) | norms, "every scalar and every norm is charted"
    assert all(c["log"] for c in data["timeline"] if c["series"][0].endswith("_norm"))
    for dtype in ("int64", "uint8", "int16", "bool", "float16", "float64"):
        assert dtype in {a["dtype"] for a in data["arrays"].values()}, dtype
    assert not data["skipped"]


# -- in the browser -------------------------------------------------------------------------------------

def test_every_key_is_drawn_by_its_render_kind(page, generic_site):
    open_at(page, generic_site, 3)
    assert page.locator("#loss-reading").text_content().startswith("loss ")
    for key in Keys:
        panel = page.locator(f"[data-key='{key.value}']")
        assert panel.count() == 1, key
        show(page, f"[data-key='{key.value}']", 3)
        assert panel.get_attribute("data-step") == "3", f"{key.value} was not drawn"
        assert key.description in panel.locator("figcaption .note").text_content()
        if key.render in ("scalar", "labels"):
            assert panel.locator(f".{key.render}").text_content().strip(), key
            continue
        drawn = page.evaluate(PANEL_CANVASES, key.value)
        assert drawn and all(c["distinct"] >= 2 for c in drawn), (key.value, drawn)
    # rows of square images as thumbnails, other rows as a heatmap; images of 3 channels in colour
    assert page.locator("[data-key='fc1_weight'] canvas.thumbs").count() == 1
    assert page.locator("[data-key='fc2_weight'] canvas.heatmap").count() == 1
    assert page.locator("[data-key='tinted'] canvas.thumbs").count() == 1
    assert page.locator("[data-key='nearest'] canvas.thumbs").count() == 1  # drawn with the rows of fc1_weight
    info = page.locator("[data-section='run-info']").inner_text()
    assert "kind step, every 5, gamma 0.5" in info and "layers [784, 32, 10], activation relu" in info
    assert "vocabulary Keys" in info and "condition" not in info


def test_values_shown_are_the_store(page, generic_site):
    step, path = 7, generic_site.path
    open_at(page, generic_site, step)
    # every array of the step decodes to what zarr reads (int64, uint8, int16, bool, float16, float64)
    for key in Keys:
        shown = np.array(page.evaluate(STORE_ROW, [f"tensors/{key.value}", step]), dtype=np.float64)
        want = stored(path, key.value, step).astype(np.float64).ravel()
        assert np.array_equal(shown, want, equal_nan=True), key.value

    logits, softmax, fc2 = (stored(path, k, step) for k in ("logits", "softmax", "fc2_weight"))
    for r, c in [(0, 0), (17, 3), (63, 9)]:
        m = re.fullmatch(r"image (\d+), class (\d+): (\S+)", hover_cell(page, "logits", r, c))
        assert m and (int(m[1]), int(m[2])) == (r, c) and close(m[3], logits[r, c]), m
        assert close(hover_cell(page, "softmax", r, c).rsplit(": ")[1], float(softmax[r, c]))
    text = hover_cell(page, "fc2_weight", 4, 30)
    assert text.startswith("class 4, unit 30: ") and close(text.rsplit(": ")[1], fc2[4, 30]), text
    # the RGB images: image 0, pixel (10, 7) of a 16-wide grid of 14 x 20 thumbnails
    tinted = stored(path, "tinted", step)
    text = hover(page, "tinted", "thumbs", 7.5 / (16 * 15 - 1), 10.5 / (4 * 21 - 1))
    m = re.fullmatch(r"image 0 \(label (\d+)\), pixel \(10, 7\): rgb\((\S+), (\S+), (\S+)\)", text)
    assert m, text
    assert int(m[1]) == int(stored(path, "labels", step)[0])
    assert all(close(m[i + 2], tinted[0, i, 10, 7]) for i in range(3)), text

    for key in ("labels", "predicted"):
        show(page, f"[data-key='{key}']", step)
        assert page.locator(f"[data-key='{key}'] .labels").text_content() == " ".join(map(str, stored(path, key, step)))
    for key in SCALARS:
        show(page, f"[data-key='{key}']", step)
        assert close(page.locator(f"[data-key='{key}'] .scalar").text_content(), float(stored(path, key, step))), key
    assert close(page.locator("#loss-reading").text_content().split()[1], float(stored(path, "loss", step)))

    for table, columns in (("table-image", ["labels", "predicted", "sample_loss", "correct"]),
                           ("table-class", ["fc2_bias", "class_counts"])):
        show(page, f"#{table}", step)
        rows = page.eval_on_selector_all(f"#{table} tbody tr",
                                         "rs => rs.map(r => [Number(r.dataset.row), [...r.children].slice(1).map(c => c.textContent)])")
        for i, column in enumerate(columns):
            values = stored(path, column, step).astype(np.float64)
            assert len(rows) == len(values)
            for row, cells in rows:
                assert close(cells[i], values[row]), (table, column, row, cells[i], values[row])


def test_tables_sort_by_the_clicked_header(page, generic_site):
    open_at(page, generic_site, 2)
    show(page, "#table-image", 2)
    loss = stored(generic_site.path, "sample_loss", 2)
    order = lambda: page.eval_on_selector_all("#table-image tbody tr", "rs => rs.map(r => Number(r.dataset.image))")  # noqa: E731
    page.click("#table-image thead button[data-col='2']")  # sample_loss: highest first
    assert [loss[i] for i in order()] == sorted(loss, reverse=True)
    assert page.locator("#table-image thead th:nth-child(4)").get_attribute("aria-sort") == "descending"
    page.click("#table-image thead button[data-col='2']")
    assert [loss[i] for i in order()] == sorted(loss)
    page.click("#table-image thead button[data-col='-1']")
    assert order() == list(range(BATCH))
    assert page.locator("#table-image thead button[data-col='-1']").text_content() == "image"


def test_links_arrows_and_the_slider_move_the_step(page, generic_site):
    open_at(page, generic_site, 4)
    show(page, "[data-key='images']", 4)
    before = page.evaluate(IMAGES, "images")
    page.locator("body").click(position={"x": 5, "y": 400})
    page.keyboard.press("ArrowRight")
    wait_step(page, 5)
    assert page.evaluate("location.hash") == "#step=5"
    show(page, "[data-key='images']", 5)
    assert page.evaluate(IMAGES, "images") != before, "the batch was not redrawn"
    page.keyboard.press("Shift+ArrowRight")
    wait_step(page, STEPS - 1)
    page.keyboard.press("ArrowLeft")
    wait_step(page, STEPS - 2)
    page.keyboard.press("Home")
    wait_step(page, 0)
    page.evaluate("location.hash = '#step=9'")
    wait_step(page, 9)
    assert page.locator("#step-input").input_value() == "9"
    page.locator("#step-slider").evaluate("(e) => { e.value = '2'; e.dispatchEvent(new Event('input')); }")
    wait_step(page, 2)
    show(page, "[data-key='hidden']", 2)
    assert page.locator("[data-key='hidden']").get_attribute("data-step") == "2"
    page.goto(generic_site.url + "#step=6")
    wait_step(page, 6)


def test_the_timeline_charts_every_scalar_and_every_norm(page, generic_site):
    open_at(page, generic_site, 0)
    for key in SCALARS:
        chart = page.locator(f"[data-chart='scalar-{key}']")
        assert chart.count() == 1, key
        assert key in chart.locator("figcaption").text_content()
    data = page_json(generic_site.path)
    assert page.locator("[data-section='timeline'] [data-chart]").count() == len(data["timeline"])
    page.wait_for_function("(n) => document.querySelectorAll('[data-section=\"timeline\"] canvas').length >= n",
                           arg=len(data["timeline"]), timeout=15000)
    drawn = canvases(page, "timeline")
    assert drawn and all(c["distinct"] >= 2 for c in drawn), drawn


def test_a_recording_with_no_steps_opens(page, tmp_path):
    path = tmp_path / "empty"
    with record(path, Keys, config=CONFIG):
        pass
    rec = Recording.open(path)
    assert rec.steps == 0 and not rec.tensors
    build(rec)
    site = serve_in_thread(path)
    try:
        page.goto(site.url)
        page.wait_for_selector("html[data-ready='true']")
        assert page.locator("#status").text_content() == "this recording has no completed steps yet"
    finally:
        site.stop()


# -- BCL's per-feature table: the size of each feature's two forces, at every step ----------------------

def test_bcl_table_shows_force_magnitudes_at_every_step(page, sparse_rec, tmp_path):
    """grad_magnitude and som_magnitude, the L2 norms of each feature's row of grad_masked and som_delta, come
    from their [step, feature] summaries: shown at steps without full tensors too."""
    path = shutil.copytree(sparse_rec, tmp_path / "sparse")
    acc("view", str(path), "--build-only")
    rec = Recording.open(path)
    full = rec.step(5)
    for key, source in (("grad_magnitude", "grad_masked"), ("som_magnitude", "som_delta")):
        w = full[source].astype(np.float64)
        assert np.allclose(rec.summary(key)[5], np.sqrt((w * w).sum(axis=1)), rtol=1e-6), key
    site = serve_in_thread(path)
    try:
        for step in (7, 5):  # summaries only, then full tensors
            open_at(page, site, step)
            show(page, "#metrics", step)
            heads = page.eval_on_selector_all("#metrics thead tr:first-child button", "bs => bs.map(b => b.textContent)")
            assert heads[-2:] == ["grad_magnitude", "som_magnitude"], heads
            rows = dict(page.eval_on_selector_all(
                "#metrics tbody tr", "rs => rs.map(r => [Number(r.dataset.feature), [...r.children].slice(-2).map(c => c.textContent)])"))
            for i, key in enumerate(("grad_magnitude", "som_magnitude")):
                values = rec.summary(key)[step]
                assert all(close(rows[d][i], values[d]) for d in range(64)), (step, key)
    finally:
        site.stop()


# -- the live page: Setup and Teardown ----------------------------------------------------------------

@pytest.fixture
def live_server(bcl_rec, tmp_path):
    """`acc-capture serve` on a copy of the session's 30-step bcl-slow recording, serving on a thread."""
    from capture.cli import open_live_server

    server = open_live_server(shutil.copytree(bcl_rec, tmp_path / "rec"), device="cpu", port=None,
                              recordings_dir=tmp_path / "recordings")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    server.api.close()


def test_live_setup_then_teardown(page, live_server, tmp_path):
    page.goto(live_server.url)
    wait_step(page, 0)
    page.wait_for_selector("#live[data-state='idle']")
    assert page.locator("#live-status").text_content() == "Ready, step 30"
    setup, teardown = page.locator("#live [data-act='setup']"), page.locator("#live [data-act='teardown']")
    assert setup.text_content() == "Setup (bcl-slow)" and teardown.is_visible()
    page.select_option("#live-condition", "bcl-med")
    assert setup.text_content() == "Setup (bcl-med)"

    setup.click()  # a new recording of bcl-med at step 0: the page reloads to show it
    page.wait_for_selector("[data-section='run-info'] dd:text('bcl-med')", timeout=120000)
    page.wait_for_selector("#live[data-state='idle']")
    assert page.locator("#live-status").text_content() == "Ready, step 0"
    assert page.locator("#status").text_content() == "no steps recorded yet"
    state = live_server.api.state()
    new = tmp_path / "recordings" / "run1"
    assert (state["condition"], state["total_steps"], Path(state["path"])) == ("bcl-med", 0, new)
    assert Recording.open(tmp_path / "rec").status == "complete"  # the old session was closed

    page.click("#live [data-act='train'][data-n='1']")  # the first step: the page reloads to draw it
    wait_step(page, 0)
    page.wait_for_selector("#live[data-state='idle']")
    assert page.locator("#run-steps").text_content() == "1"

    page.locator("#live [data-act='teardown']").click()
    page.wait_for_selector("#live[data-state='off']")
    assert page.locator("#live-status").text_content() == "inactive"
    assert not page.locator("#live [data-act='train']").first.is_visible() and not teardown.is_visible()
    assert setup.is_visible() and setup.is_enabled()
    assert live_server.api.state()["active"] is False
    rec = Recording.open(new)
    assert (rec.status, rec.steps, rec.condition) == ("complete", 1, "bcl-med")
    assert math.isfinite(float(rec.summary("loss")[0]))
