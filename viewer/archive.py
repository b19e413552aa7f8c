"""The archive of a folder of recordings: `build_archive(folder)` finds the recordings in it (directly,
or one level down), builds each one's own viewer, and writes two static pages beside them:

- `index.html`: one row per recording (its settings, its final values), sortable and filterable;
  ticking runs overlays their timelines, read by the page from each recording's `summary/` arrays;
- `compare.html#a=RUN&b=RUN&step=N`: two runs side by side at the same step, with their difference.

Their JS and CSS go to `FOLDER/viewer/` (the viewer's static files, ours among them). What the pages
need to start is inlined as JSON (the run list, each run's summary array metadata); what the compare
page needs of a run (the page data of its own viewer: arrays, key table, layout) is one JSON file per
run under `FOLDER/viewer/runs/`, fetched for the two runs shown only.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2

from capture import format as fmt
from capture.recording import Recording, RecordingError
from viewer.build import ASSETS_DIR, STATIC, TEMPLATES, ViewerError, array_meta, build, page_data, page_layout, static_files

RUNS_DIR = "runs"  # in FOLDER/viewer/: one JSON file per run, the compare page's
INDEX, COMPARE = "index.html", "compare.html"
# the summaries the archive overlays and shows the last value of, in this order: (name, title)
OVERLAYS = (
    ("loss", "loss"),
    ("dead_features", f"dead features (win_rate < {fmt.DEAD_WIN_RATE})"),
    ("weight_cosine_offdiag", "mean off-diagonal cosine of the weights"),
    ("som_target_cosine_offdiag", "mean off-diagonal cosine of the SOM targets"),
    ("grad_cosine_offdiag", "mean off-diagonal cosine of the masked gradients"),
)
# the table's columns of values at the last step: (summary, header)
FINAL = (("loss", "final loss"), ("weight_cosine_offdiag", "final weight cosine"), ("dead_features", "final dead features"))


@dataclass
class Run:
    """One recording of the archive, as the pages show it."""

    rec: Recording
    path: str  # relative to the folder, with "/"

    def row(self) -> dict:
        """The table row: every column's text and its value to sort by."""
        rec, meta = self.rec, self.rec.meta
        size = rec.size_bytes()
        finals = {name: final_value(rec, name) for name, _ in FINAL}
        return {
            "path": self.path,
            "condition": rec.condition or "",
            "settings": [(k, show_setting(v)) for k, v in rec.changed_settings()],
            "seed": meta.get("seed"),
            "steps": rec.steps,
            "status": rec.status,
            "note": meta.get("note") or "",
            "created": meta.get("created") or "",
            "size": size,
            "size_text": f"{size / 1e6:.1f} MB",
            "final": {name: (sort_number(v), show_number(v)) for name, v in finals.items()},
        }


def natural_key(text: str) -> list:
    """run2 before run10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def find_recordings(folder: Path) -> list[Path]:
    """The directories in `folder` with a zarr.json (a Zarr group: a recording, or something that says
    why not when opened), directly or one level down; never inside one, nor in the archive's assets."""
    def dirs(parent: Path) -> list[Path]:
        try:
            return sorted((p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")),
                          key=lambda p: natural_key(p.name))
        except OSError:
            return []

    found = []
    for child in dirs(folder):
        if (child / "zarr.json").is_file():
            found.append(child)
        elif child.name != ASSETS_DIR:
            found += [g for g in dirs(child) if (g / "zarr.json").is_file()]
    return found


def show_setting(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def final_value(rec: Recording, name: str) -> float | None:
    """The summary's value at the last completed step (None: no such summary, or no step)."""
    arr = rec.summaries.get(name)
    if arr is None or rec.steps == 0 or arr.ndim != 1:
        return None
    return float(arr[rec.steps - 1])


def show_number(v: float | None) -> str:
    """As the pages print numbers (stats.js formatValue): 4 significant digits."""
    if v is None:
        return "–"
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        mantissa, exp = f"{v:.3e}".split("e")
        return f"{mantissa}e{int(exp):+d}"
    text = f"{v:#.4g}"  # (JS toPrecision(4): exponent notation from 1e4 on, as here)
    if "e" in text:
        mantissa, exp = text.split("e")
        return f"{mantissa.rstrip('.')}e{int(exp):+d}"
    return text.rstrip(".")


def sort_number(v: float | None) -> str:
    """The value a cell sorts by, as the page reads it (Number(...)); empty: none."""
    return "" if v is None else repr(v) if math.isfinite(v) else "NaN"


def overlays(runs: list[Run]) -> list[dict]:
    """The charts the archive can overlay: OVERLAYS, then every other scalar key any run has (record())."""
    charts = [{"id": name, "title": title, "summary": name} for name, title in OVERLAYS]
    known = {name for name, _ in OVERLAYS}
    for run in runs:
        for e in run.rec.key_table:
            key = e["key"]
            if not e["dims"] and key not in known and key in run.rec.summaries:
                known.add(key)
                title = " — ".join(filter(None, (key, e.get("description", ""))))
                charts.append({"id": f"scalar-{len(charts)}", "title": title, "summary": key})
    return charts


def summary_arrays(rec: Recording, names: set[str]) -> dict:
    """The array metadata (as the viewer's reader takes it) of the summaries among `names` this run has."""
    out = {}
    for name in sorted(names & set(rec.summaries)):
        meta = array_meta(f"summary/{name}", rec.summaries[name])
        if not isinstance(meta, str) and len(meta["shape"]) == 1:
            out[name] = meta
    return out


def run_file(i: int) -> str:
    return f"{ASSETS_DIR}/{RUNS_DIR}/{i}.json"


def _json_safe(x):
    """JSON has no NaN or Infinity: such numbers become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def compare_data(run: Run) -> dict:
    """What the compare page reads of a run: its own viewer's page data and what the run card shows."""
    view = page_layout(run.rec)
    data, _ = page_data(run.rec, view)
    # what the run viewer's template takes from the layout beside the page data: questions, what is open, where tables go
    for spec, section in zip(data["sections"], view.sections):
        spec.update(question=section.question, open=section.open)
    for spec, table in zip(data["tables"], view.tables):
        spec.update(question=table.question, after=table.after)
    meta = run.rec.meta
    data["info"] = {"path": run.path, "config": meta.get("config"), "seed": meta.get("seed"),
                    "note": meta.get("note") or "", "created": meta.get("created") or "",
                    "device": meta.get("device"), "settings": [[k, show_setting(v)] for k, v in run.rec.changed_settings()]}
    return _json_safe(data)


def write_atomic(path: Path, text: str) -> None:
    """Write a file whole under a temporary name, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _write_assets(folder: Path, files: dict[str, str]) -> None:
    """The viewer's static files into FOLDER/viewer/ (ours among them), and `files` (path: text)."""
    assets = folder / ASSETS_DIR
    if assets.exists() and not assets.is_dir():
        raise ViewerError(f"{assets} is in the way of the archive's assets and is not a directory")
    if (assets / "zarr.json").is_file() and any((assets / d).is_dir() for d in ("tensors", "summary")):
        raise ViewerError(f"{assets} is a recording; rename it: the archive's assets go there")
    runs = assets / RUNS_DIR
    runs.mkdir(parents=True, exist_ok=True)
    for old in runs.glob("*.json"):  # runs of an earlier build
        if f"{ASSETS_DIR}/{RUNS_DIR}/{old.name}" not in files:
            old.unlink()
    for f in static_files():
        (assets / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(STATIC / f, assets / f)
    for name, text in files.items():
        write_atomic(folder / name, text)


def build_archive(folder: str | Path, warn: Callable[[str], None] = lambda message: None) -> Path:
    """Build every recording's viewer and the archive's two pages in `folder`; return index.html's path.

    A directory that looks like a recording but does not open is left out, with a warning; no
    recording at all raises ViewerError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ViewerError(f"not a directory: {folder}")
    runs: list[Run] = []
    for path in find_recordings(folder):
        try:
            rec = Recording.open(path)
        except RecordingError as e:
            warn(f"left out of the archive: {e}")
            continue
        build(rec)  # its own viewer, as `acc-capture view RECORDING` builds it
        runs.append(Run(rec, path.relative_to(folder).as_posix()))
    if not runs:
        raise ViewerError(f"no recordings in {folder} (looked for recording directories in it and one level down)")

    charts = overlays(runs)
    wanted = {c["summary"] for c in charts}
    listed = [{"path": r.path, "name": r.path, "condition": r.rec.condition, "steps": r.rec.steps, "data": run_file(i),
               "arrays": summary_arrays(r.rec, wanted)} for i, r in enumerate(runs)]
    rows = [r.row() for r in runs]
    env = _environment()
    common = {"folder": folder.resolve().name, "assets": ASSETS_DIR}
    index = env.get_template("archive.html").render(
        **common, rows=rows, finals=FINAL, data={"runs": listed, "charts": charts})
    compare = env.get_template("compare.html").render(
        **common, data={"runs": [{k: v for k, v in r.items() if k != "arrays"} for r in listed]})
    files = {INDEX: index, COMPARE: compare}
    files.update({run_file(i): json.dumps(compare_data(r), separators=(",", ":"), allow_nan=False)
                  for i, r in enumerate(runs)})
    try:
        _write_assets(folder, files)
    except OSError as e:
        raise ViewerError(f"cannot write the archive into {folder}: {e.strerror or e}") from None
    return folder / INDEX
