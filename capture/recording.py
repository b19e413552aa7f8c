"""Reading a recording back: `Recording.open(path)`, arrays by name, `.step(n)`, `.summary(name)`."""

from __future__ import annotations

import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from isal import igzip

from acc.step_inspector import RENDERS
from capture import format as fmt
from capture.codecs import use_fast_gzip

use_fast_gzip()  # the same gzip bytes, decoded by ISA-L: reading a step is about twice as fast


class RecordingError(Exception):
    """The path is not a readable recording; the message says why in one line."""


def _read_meta(path: Path) -> dict:
    if not path.exists():
        raise RecordingError(f"no such directory: {path}")
    if not path.is_dir():
        raise RecordingError(f"not a recording (not a directory): {path}")
    meta_file = path / "zarr.json"
    if not meta_file.is_file():
        raise RecordingError(f"not a recording (no zarr.json): {path}")
    try:
        doc = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordingError(f"corrupt {meta_file}: {e}") from None
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    meta = attrs.get(fmt.ATTRS_KEY) if isinstance(attrs, dict) else None
    if not isinstance(meta, dict):
        raise RecordingError(f"not an acc-capture recording (zarr.json has no '{fmt.ATTRS_KEY}' attributes): {path}")
    if not _is_int(meta.get("format")) or meta["format"] not in fmt.READABLE_FORMATS:
        raise RecordingError(f"recording format {meta.get('format')!r} is not one this tool reads "
                             f"({', '.join(map(str, fmt.READABLE_FORMATS))}): {path}")
    if meta["format"] == 1:  # before the key table: every v1 recording is a BCL run
        meta = {**meta, "key_table": fmt.v1_key_table(), "vocabulary": "StepTensorKey", "recipe": fmt.BCL_RECIPE}
    check_meta(meta, str(meta_file))
    return meta


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _key_entry(e) -> bool:
    return (isinstance(e, dict) and isinstance(e.get("key"), str) and isinstance(e.get("dims"), list)
            and all(isinstance(d, str) for d in e["dims"]) and e.get("render") in RENDERS
            and isinstance(e.get("signed", False), bool) and isinstance(e.get("description", ""), str))


_FIELDS = {  # field: (required, check)
    "status": (True, lambda v: v in ("recording", "complete", "interrupted")),
    "steps_completed": (True, lambda v: _is_int(v) and v >= 0),
    "keys": (True, lambda v: isinstance(v, list) and all(isinstance(k, str) for k in v) and len(set(v)) == len(v)),
    "key_table": (True, lambda v: isinstance(v, list) and all(map(_key_entry, v))),
    "condition": (False, lambda v: v is None or isinstance(v, str)),
    "config": (True, lambda v: v is None or isinstance(v, dict)),
    "policy": (True, lambda v: v is None or _policy(v)),
    "recipe": (False, lambda v: v is None or isinstance(v, str)),
    "vocabulary": (False, lambda v: v is None or isinstance(v, str)),
    "seed": (False, lambda v: v is None or _is_int(v)),
    "device": (False, lambda v: v is None or isinstance(v, str)),
    "note": (False, lambda v: v is None or isinstance(v, str)),
    "command": (False, lambda v: v is None or isinstance(v, str)),
    "created": (False, lambda v: v is None or isinstance(v, str)),
    "versions": (False, lambda v: v is None or (isinstance(v, dict) and all(isinstance(x, str) for x in v.values()))),
    "resumed": (False, lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v)),
}


def _policy(p) -> bool:
    return (isinstance(p, dict) and (p.get("full_every") is None or (_is_int(p["full_every"]) and p["full_every"] > 0))
            and isinstance(p.get("full_steps", []), list)
            and all(isinstance(r, list) and len(r) == 2 and all(map(_is_int, r)) for r in p.get("full_steps", []))
            and p.get("large_float", "float32") in ("float32", "float16")
            and (p.get("only") is None or (isinstance(p["only"], list) and all(isinstance(k, str) for k in p["only"]))))


def check_meta(meta: dict, where: str) -> None:
    """Raise RecordingError naming the first field of the root attributes that a reader cannot use."""
    def bad(why: str) -> RecordingError:
        return RecordingError(f"corrupt {where}: {fmt.ATTRS_KEY}.{why}")

    for field, (required, ok) in _FIELDS.items():
        if field not in meta:
            if required:
                raise bad(f"{field} is missing")
            continue
        if not ok(meta[field]):
            raise bad(f"{field} has an impossible value: {json.dumps(meta[field])[:80]}")
    table = [e["key"] for e in meta["key_table"]]
    if len(set(table)) != len(table):
        raise bad("key_table names a key twice")
    if unknown := [k for k in meta["keys"] if k not in table]:
        raise bad(f"keys names {unknown[0]!r}, which key_table lacks")
    if meta.get("recipe") == fmt.BCL_RECIPE:  # `resume` rebuilds the run from these
        from acc.conditions import RunConfig

        if not _is_int(meta.get("seed")) or meta["seed"] < 0:
            raise bad(f"seed has an impossible value for a run: {json.dumps(meta.get('seed'))[:80]}")
        if not isinstance(meta.get("condition"), str):
            raise bad("condition is missing")
        try:
            RunConfig.from_dict(meta["condition"], meta["config"])
        except Exception as e:
            raise bad(f"config does not describe a run ({type(e).__name__}: {e})") from None


_POOL = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="acc-capture-read")


def _read_row(path: Path, arr: zarr.Array, files: fmt.Files | None, n: int) -> np.ndarray:
    """Step `n` of one array. In the layouts this tool writes (`format.file_layout`), the bytes of
    the step are read from its file and decoded by ISA-L directly (zarr's generic path costs
    twice as much or more); otherwise zarr reads it."""
    if files is None:
        return arr[n]
    index, row = divmod(n, files.steps)
    file = path / fmt.chunk_key(arr, index)
    try:
        packed = fmt.read_shard_chunk(file, files.steps, row) if files.sharded else file.read_bytes()
    except FileNotFoundError:  # an unwritten chunk reads as the fill value
        packed = None
    if packed is None:
        return np.full(arr.shape[1:], arr.fill_value, dtype=arr.dtype)
    values = np.frombuffer(igzip.decompress(packed), arr.dtype.newbyteorder("<"))
    if not files.sharded:
        values = values.reshape(arr.chunks)[row]
    return values.reshape(arr.shape[1:]).astype(arr.dtype)


class Recording:
    """A recording on disk. Only its first `steps` (= steps_completed) steps are trusted."""

    def __init__(self, path: Path, meta: dict, root: zarr.Group):
        self.path, self.meta, self._root = path, meta, root
        self.steps: int = int(meta["steps_completed"])
        self.key_table: list[dict] = [e for e in meta["key_table"]]
        order = {e["key"]: i for i, e in enumerate(self.key_table)}
        self.keys: list[str] = sorted(meta["keys"], key=order.__getitem__)  # stored keys, in the table's order
        self.condition: str | None = meta.get("condition")
        self.recipe: str | None = meta.get("recipe")
        self.tensors: dict[str, zarr.Array] = {k: root["tensors"][k] for k in self.keys}
        self.summaries: dict[str, zarr.Array] = dict(root["summary"].arrays())
        self._files = {k: fmt.file_layout(arr) for k, arr in self.tensors.items()}
        for name, arr in [*self.tensors.items(), *self.summaries.items()]:
            if arr.shape[0] < self.steps:
                raise RecordingError(f"corrupt recording {path}: steps_completed is {self.steps} but {name} "
                                     f"holds {arr.shape[0]} steps")

    @classmethod
    def open(cls, path: str | Path) -> Recording:
        path = Path(path)
        meta = _read_meta(path)
        try:
            root = zarr.open_group(zarr.storage.LocalStore(path, read_only=True), mode="r", zarr_format=3)
            return cls(path, meta, root)
        except RecordingError:
            raise
        except Exception as e:  # whatever zarr makes of damaged array metadata: one line, not a traceback
            raise RecordingError(f"corrupt recording {path}: {type(e).__name__}: {e}") from None

    @property
    def status(self) -> str:
        """complete, recording (a writer is at work) or interrupted (stopped before it finished)."""
        status = self.meta["status"]
        if status == "recording" and not fmt.writer_alive(self.path):
            return "interrupted"
        return status

    @functools.cached_property
    def full_capture(self) -> np.ndarray:
        """[steps] bool: which steps have their full tensors."""
        return self.summary(fmt.FULL_CAPTURE)

    def summary(self, name: str) -> np.ndarray:
        """A per-step summary array, e.g. `loss` [steps] or `win_rate` [steps, D]."""
        if name not in self.summaries:
            raise KeyError(f"no summary {name!r}; this recording has: {', '.join(sorted(self.summaries))}")
        return self.summaries[name][: self.steps]

    def step(self, n: int) -> dict[str, np.ndarray]:
        """Every stored tensor of step `n`, by key (raises IndexError beyond the completed steps)."""
        if not 0 <= n < self.steps:
            raise IndexError(f"step {n} is not in this recording (steps 0..{self.steps - 1})")
        if not self.full_capture[n]:
            raise LookupError(f"step {n} kept summaries only (policy {self.meta.get('policy')}); see .full_capture")
        values = _POOL.map(lambda k: _read_row(self.path, self.tensors[k], self._files[k], n), self.tensors)
        return dict(zip(self.tensors, values))

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def __repr__(self) -> str:
        return f"Recording({str(self.path)!r}, condition={self.condition!r}, steps={self.steps}, status={self.status!r})"
