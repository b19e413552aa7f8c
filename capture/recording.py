"""Reading a recording back: `Recording.open(path)`, arrays by name, `.step(n)`, `.summary(name)`."""

from __future__ import annotations

import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr

from acc.step_inspector import NAMES, RENDERS
from capture import codecs
from capture import format as fmt
from capture.store import DirStore, ObjectStore, Store, StoreError, open_store

codecs.use_fast_gzip()  # the same gzip bytes, decoded by ISA-L: reading a step is about twice as fast


class RecordingError(Exception):
    """The path is not a readable recording; the message says why in one line."""


def open_recording_store(location: str | Path | Store) -> Store:
    """The store of the recording at `location` (a directory, a zip file, a URL), or RecordingError."""
    try:
        store = open_store(location)
    except StoreError as e:
        raise RecordingError(str(e)) from None
    if isinstance(store, DirStore):
        if not store.local.exists():
            raise RecordingError(f"no such directory: {store.local}")
        if not store.local.is_dir():
            raise RecordingError(f"not a recording (not a directory, nor a zip file): {store.local}")
    return store


def _read_meta(store: Store) -> dict:
    path, meta_file = store.location, store.describe("zarr.json")
    try:
        text = store.get("zarr.json")
    except (FileNotFoundError, IsADirectoryError):
        if isinstance(store, ObjectStore):  # a 404: no such object, or no S3 API there
            try:
                store.is_empty()  # (a listing: an S3 API answers it; any other web server fails it)
            except StoreError as e:
                raise RecordingError(str(e)) from None
            except (OSError, ValueError):
                pass
        raise RecordingError(f"not a recording (no zarr.json): {path}") from None
    except (StoreError, PermissionError) as e:
        raise RecordingError(str(e)) from None
    except OSError as e:
        raise RecordingError(f"cannot read {meta_file}: {e.strerror or e}") from None
    try:
        doc = json.loads(text)
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
    return with_defaults(meta)


def with_defaults(meta: dict) -> dict:
    """The metadata with every optional field present (what an older or hand-made recording left
    out reads as its default), so that readers need not guess."""
    policy = {"full_every": None, "full_steps": [], "large_float": "float32", "only": None, **(meta.get("policy") or {})}
    table = [{"name": e["key"].upper(), "signed": False, "description": "", **e} for e in meta["key_table"]]
    defaults = {"condition": None, "recipe": None, "vocabulary": None, "seed": None, "device": None, "note": "",
                "command": "", "created": None, "versions": {}, "resumed": []}
    return {**defaults, **{k: v for k, v in meta.items() if v is not None or k not in ("note", "command", "versions", "resumed")},
            "policy": policy, "key_table": table}


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


def _zarr_read(store: Store, arr: zarr.Array, where: slice) -> np.ndarray:
    """`arr[where]` through zarr; a damaged chunk (whatever zarr makes of it) is a RecordingError of one line."""
    try:
        return arr[where]
    except Exception as e:
        raise RecordingError(f"corrupt data in {store.describe(arr.path)} (steps {where.start}..{where.stop - 1}): "
                             f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]) from None


def _decoded(arr: zarr.Array, files: fmt.Files, data: bytes) -> np.ndarray:
    """One stored chunk of `arr` (the inner chunk of a sharded one) as its flat little-endian values
    (raises ValueError for a damaged one: capture.codecs.decode)."""
    nbytes = int(np.prod(arr.chunks)) * arr.dtype.itemsize
    return np.frombuffer(codecs.decode(files.codec, data, nbytes, files.crc), arr.dtype.newbyteorder("<"))


def _read_row(store: Store | Path, arr: zarr.Array, files: fmt.Files | None, n: int, kept: bool = False) -> np.ndarray:
    """Step `n` of one array. In the layouts this tool writes (`format.file_layout`), the bytes of
    the step are read from its file in `store` (a Store, or a recording directory) and decoded
    directly (capture.codecs: zarr's generic path costs twice as much or more); otherwise zarr reads it.
    An unwritten step reads as the fill value, unless it is `kept` (the recording says the step kept
    its full tensors): then its missing bytes are damage, a RecordingError."""
    store = open_store(store)
    if files is None:
        return _zarr_read(store, arr, slice(n, n + 1))[0]
    index, row = divmod(n, files.steps)
    key = fmt.chunk_key(arr, index)
    file = store.describe(key)
    try:
        try:
            packed = fmt.read_shard_chunk(store, key, files.steps, row) if files.sharded else store.get(key)
        except FileNotFoundError:  # an unwritten chunk reads as the fill value
            packed = None
        if packed is None:
            if kept:
                raise RecordingError(f"corrupt recording: step {n} of {arr.path} is missing from {file}, "
                                     f"though summary/{fmt.FULL_CAPTURE} says the step kept its full tensors")
            return np.full(arr.shape[1:], arr.fill_value, dtype=arr.dtype)
        values = _decoded(arr, files, packed)
        if not files.sharded:
            values = values.reshape(arr.chunks)[row]
        return values.reshape(arr.shape[1:]).astype(arr.dtype)
    except (ValueError, OSError, StoreError) as e:  # a truncated file, a bad index entry, a broken chunk
        text = " ".join(str(e).split())
        raise RecordingError(text if file in text else f"corrupt data in {file} (step {n}): {text}") from None


def _read_file(store: Store, arr: zarr.Array, index: int, steps: int) -> np.ndarray:
    """Steps [index * per_file, + steps) of `arr`, from its file `index` read whole (see `format.file_layout`)."""
    files = fmt.file_layout(arr)
    key = fmt.chunk_key(arr, index)
    shape, dtype = arr.shape[1:], arr.dtype
    try:
        data = store.get(key)
    except FileNotFoundError:  # no step of this file was written: the fill value
        return np.full((steps, *shape), arr.fill_value, dtype=dtype)
    try:
        if not files.sharded:
            return _decoded(arr, files, data).reshape(files.steps, *shape)[:steps].astype(dtype)
        out = np.empty((steps, *shape), dtype=dtype)
        for i, chunk in enumerate(fmt.shard_chunks(data, files.steps)[:steps]):
            out[i] = arr.fill_value if chunk is None else _decoded(arr, files, chunk).reshape(shape)
        return out
    except ValueError as e:  # a truncated file, a broken chunk
        raise RecordingError(f"corrupt data in {store.describe(key)}: {' '.join(str(e).split())}"[:300]) from None


class _Files:
    """Steps [0, steps) of `arr` as an array-like whose blocks are its files, for `dask.array.from_array`:
    a block of a file's steps is read by `_read_file` (one read of the file), so one task reads one file."""

    def __init__(self, store: Store, arr: zarr.Array, steps: int, per_file: int):
        self.store, self.arr, self.per_file = store, arr, per_file
        self.shape, self.dtype, self.ndim = (steps, *arr.shape[1:]), arr.dtype, arr.ndim

    def __getitem__(self, index: tuple) -> np.ndarray:
        """`index`: a slice of steps, then the other dimensions' (dask asks for one file's steps at a time)."""
        start, stop, _ = index[0].indices(self.shape[0])
        parts = []
        for i in range(start // self.per_file, -(-stop // self.per_file)):  # the files that hold steps [start, stop)
            first = i * self.per_file
            block = _read_file(self.store, self.arr, i, min(self.per_file, self.shape[0] - first))
            parts.append(block[max(start - first, 0):stop - first])
        if not parts:
            return np.empty((0, *self.shape[1:]), self.dtype)[(slice(None), *index[1:])]
        return (parts[0] if len(parts) == 1 else np.concatenate(parts))[(slice(None), *index[1:])]


def _lazy(store: Store, arr: zarr.Array, steps: int, name: str):
    """Steps [0, steps) of `arr` as a dask array of one chunk per file (one task reads one file)."""
    import dask.array as da

    files = fmt.file_layout(arr)
    if files is None:  # a layout this tool does not write: zarr reads it, a chunk at a time
        return da.from_zarr(arr, name=name)[:steps]
    chunks = (tuple(min(files.steps, steps - first) for first in range(0, steps, files.steps)), *arr.shape[1:])
    return da.from_array(_Files(store, arr, steps, files.steps), chunks=chunks, name=name, asarray=False,
                         fancy=False, meta=np.empty((0,) * arr.ndim, dtype=arr.dtype))


class Recording:
    """A recording: a directory, a zip file (`acc-capture pack`) or a URL (`s3://bucket/prefix`).
    Only its first `steps` (= steps_completed) steps are trusted.

    `path` is where it is (a Path for a directory or a zip, the URL string otherwise), `store` its
    files (capture.store), `name` the last part of its path."""

    def __init__(self, store: Store, meta: dict, root: zarr.Group):
        self.store, self.meta, self._root = store, meta, root
        self.path: Path | str = store.location
        self.name: str = store.name
        self.steps: int = int(meta["steps_completed"])
        self.key_table: list[dict] = [e for e in meta["key_table"]]
        order = {e["key"]: i for i, e in enumerate(self.key_table)}
        self.keys: list[str] = sorted(meta["keys"], key=order.__getitem__)  # stored keys, in the table's order
        # keys whose values name things (class labels, neighbour indices): compared equal or not, never subtracted
        self.named_keys: set[str] = {e["key"] for e in self.key_table if e["render"] in NAMES}
        self.condition: str | None = meta.get("condition")
        self.recipe: str | None = meta.get("recipe")
        self.tensors: dict[str, zarr.Array] = {k: root["tensors"][k] for k in self.keys}
        self.summaries: dict[str, zarr.Array] = dict(root["summary"].arrays())
        self._files = {k: fmt.file_layout(arr) for k, arr in self.tensors.items()}
        if self.steps and fmt.FULL_CAPTURE not in self.summaries:
            raise RecordingError(f"corrupt recording {self.path}: it has no summary/{fmt.FULL_CAPTURE}, which says "
                                 "which steps kept their full tensors")
        for name, arr in [*self.tensors.items(), *self.summaries.items()]:
            if arr.shape[0] < self.steps:
                raise RecordingError(f"corrupt recording {self.path}: steps_completed is {self.steps} but {name} "
                                     f"holds {arr.shape[0]} steps")

    @classmethod
    def open(cls, path: str | Path | Store) -> Recording:
        """Open the recording at a directory, a zip file or a URL (RecordingError, one line, if it is none)."""
        store = open_recording_store(path)
        path = store.location
        meta = _read_meta(store)
        try:
            root = zarr.open_group(store.zarr(read_only=True), mode="r", zarr_format=3)
            return cls(store, meta, root)
        except RecordingError:
            raise
        except Exception as e:  # whatever zarr makes of damaged array metadata: one line, not a traceback
            raise RecordingError(f"corrupt recording {path}: {type(e).__name__}: {e}") from None

    @property
    def status(self) -> str:
        """complete, recording (a writer is at work) or interrupted (stopped before it finished)."""
        status = self.meta["status"]
        if status == "recording" and not self.store.writer_alive():
            return "interrupted"
        return status

    @functools.cached_property
    def full_capture(self) -> np.ndarray:
        """[steps] bool: which steps have their full tensors."""
        if fmt.FULL_CAPTURE not in self.summaries and self.steps == 0:  # stopped before its first write: no arrays
            return np.zeros(0, dtype=bool)
        return self.summary(fmt.FULL_CAPTURE)

    def summary(self, name: str) -> np.ndarray:
        """A per-step summary array, e.g. `loss` [steps] or `win_rate` [steps, D]."""
        if name not in self.summaries:
            raise KeyError(f"no summary {name!r}; this recording has: {', '.join(sorted(self.summaries))}")
        return _zarr_read(self.store, self.summaries[name], slice(0, self.steps))

    def step(self, n: int) -> dict[str, np.ndarray]:
        """Every stored tensor of step `n`, by key (raises IndexError beyond the completed steps)."""
        if not 0 <= n < self.steps:
            raise IndexError(f"step {n} is not in this recording (steps 0..{self.steps - 1})")
        if not self.full_capture[n]:
            raise LookupError(f"step {n} kept summaries only (policy {self.meta.get('policy')}); see .full_capture")
        values = _POOL.map(lambda k: _read_row(self.store, self.tensors[k], self._files[k], n, kept=True), self.tensors)
        return dict(zip(self.tensors, values))

    def to_xarray(self):
        """The completed steps as one lazy xarray Dataset (needs xarray and dask: `pip install acc-capture[analysis]`).

        - one variable per stored tensor, under its key (`rank_score`: step, image, feature), and one
          per summary, prefixed `summary_` (`summary_loss`, `summary_full_capture`, ...);
        - the recording's dimension names, a `step` coordinate 0..steps-1 (only the completed steps,
          for an interrupted recording too), the run's attributes (`ds.attrs`: the root attributes,
          with the status as `Recording.status` says) and each key's table entry (`ds[key].attrs`);
        - dask chunks aligned with the files: one chunk per shard (20 steps) of a large tensor, per
          64-step chunk of a small one, per 1024 steps of a summary; a task reads its file whole
          (one read, also from a bucket) and decodes it as `step()` does (capture.codecs);
        - values as stored (no masking): a step without full tensors reads as the fill value (NaN, -1).

        It reads from wherever the recording is (a directory, a zip, a bucket), and its graph
        pickles (the store, not the data), so a dask.distributed cluster computes it in parallel.
        Plain `xarray.open_zarr(path, group="tensors")` opens the same arrays too (one task a step).
        """
        import xarray as xr

        attrs = {**self.meta, "status": self.status}
        if not self.steps:
            return xr.Dataset(coords={"step": np.arange(0)}, attrs=attrs)
        table = {e["key"]: e for e in self.key_table}
        token = f"{self.store.location}|{self.meta.get('created')}|{self.steps}"
        variables = {}
        for name, arr in [*self.tensors.items(), *((f"summary_{n}", a) for n, a in self.summaries.items())]:
            dims = tuple(arr.metadata.dimension_names or [f"{name}_dim_{i}" for i in range(arr.ndim)])
            entry = table.get(name, {})
            variables[name] = xr.Variable(dims, _lazy(self.store, arr, self.steps, f"{name}-{token}"),
                                          {f: entry[f] for f in ("dims", "render", "signed", "description") if f in entry})
        return xr.Dataset(variables, coords={"step": np.arange(self.steps)}, attrs=attrs)

    def size_bytes(self) -> int:
        """Bytes of every file of the recording (of the zip file, for a packed one)."""
        return self.store.total_size()

    def changed_settings(self) -> list[tuple[str, object]]:
        """The settings of the run that differ from its condition's defaults, as ("bcl.som_lr", 0.005)
        pairs (a setting the defaults have and the run lacks: None); for a recording not made by
        `acc-capture run`, or of a condition unknown here, its whole config."""
        from acc.conditions import CONDITIONS

        config = _flat(self.meta.get("config") or {})
        if self.recipe != fmt.BCL_RECIPE or self.condition not in CONDITIONS:
            return list(config.items())
        defaults = _flat(CONDITIONS[self.condition].to_dict())
        missing = object()
        changed = [(k, v) for k, v in config.items() if defaults.get(k, missing) != v]
        return changed + [(k, None) for k in defaults if k not in config]

    def __repr__(self) -> str:
        return f"Recording({str(self.path)!r}, condition={self.condition!r}, steps={self.steps}, status={self.status!r})"


def _flat(d, prefix: str = "") -> dict:
    """A nested configuration as {"bcl.som_lr": 0.001, ...} (an empty or null group stays one entry)."""
    if not isinstance(d, dict) or not d:
        return {prefix: d} if prefix else {}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out
