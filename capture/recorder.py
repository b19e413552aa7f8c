"""The recorder: writes committed steps into a Zarr v3 recording (format v2), behind training.

`Recorder` owns the files of one recording: it makes the arrays at the first write, from the shapes
and dtypes of the first step's captures, grows them as steps come, and publishes `steps_completed`
only after everything it counts is on disk. `capture.writer` runs it in a process of its own (or on
a thread) so compression overlaps training. `capture.session` (`record()`) is the one way steps reach them.

`Recorder.write` takes a block of steps already stacked by key (capture.writer's `Ring`), so the
writer copies nothing; it runs in the writer process (capture.writer), where torch is not imported
unless a float16 cast needs it.
"""

from __future__ import annotations

import datetime as _dt
import functools
import io
import json
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BytesCodec, ShardingCodec

from capture import codecs
from capture import format as fmt
from capture.crash import crash_point
from capture.store import PARTIAL, Store, WriterLock, open_store

CHUNK_KEYS = {"name": "default", "separator": "."}  # c.17.0.0: one flat folder per array, no mkdir per step
LITTLE = BytesCodec(endian="little")


@dataclass
class Policy:
    """Which steps keep their full tensors (summaries are kept for every step), which keys are
    stored (`only`; None: every captured key), and as what: `large_float` is the storage type of
    the float32 tensors larger than format.SMALL_BYTES a step (float16 halves them, rounding each
    value; summaries are computed from the captures either way)."""

    only: list[str] | None = None
    full_every: int | None = None
    full_steps: list[tuple[int, int]] = field(default_factory=list)
    large_float: str = "float32"

    def is_full(self, step: int) -> bool:
        if self.full_every is None and not self.full_steps:
            return True
        if self.full_every is not None and step % self.full_every == 0:
            return True
        return any(a <= step <= b for a, b in self.full_steps)

    def to_dict(self) -> dict:
        return {"full_every": self.full_every, "full_steps": [list(r) for r in self.full_steps],
                "large_float": self.large_float, "only": self.only}

    @classmethod
    def from_dict(cls, d: dict) -> Policy:
        return cls(d.get("only"), d.get("full_every"), [tuple(r) for r in d.get("full_steps") or []],
                   d.get("large_float", "float32"))


class _File(NamedTuple):
    """A file to write: its store key, a function that gives its bytes (or its parts, in order), and where they go: `at` None
    for the whole file (replaced atomically), else an offset in the existing file (written in place)."""

    key: str
    encode: Callable[[], bytes | list[bytes]]  # (a shard: its parts, `format.shard_parts`)
    at: int | None = None


class _Chunker:
    """Turns the values of consecutive steps into the files of one array, ready to write.

    A file holds `files.steps` steps (see `format.file_layout`): one uncompressed chunk of them all
    (small tensors, summaries; one gzip chunk in earlier recordings), or a shard of one chunk per
    step, each stored as its array's codec says (large tensors; capture.codecs). The file being
    filled is kept in memory, its chunks already encoded. A shard or a gzip chunk is written whole
    each time it changes, so nothing is read back, nothing is encoded twice and no file is ever
    half-written. An uncompressed chunk is written whole the first time, then only the rows of the
    new steps, in place (on this machine's disk; whole to an object store): a crash can then tear
    only rows no published step is in. Steps not written (a `--full-every` policy) read as the fill
    value: rows of the fill value in a chunk, empty chunks in a shard.
    """

    def __init__(self, store: Store, arr: zarr.Array, start_step: int):
        files = fmt.file_layout(arr)
        if files is None:
            raise ValueError(f"{arr.path} has codecs {arr.metadata.codecs}; this recorder writes bytes(little) [+ gzip or blosc] "
                             f"[+ crc32c], or shards of them")
        self.arr, self.per_file, self.sharded, self.codec, self.crc = arr, files.steps, files.sharded, files.codec, files.crc
        self.in_place = store.local is not None and (files.codec, files.crc) == ("bytes", False)  # (rows written into the file on disk)
        self.index, self.dirty = -1, False
        if start_step % self.per_file:  # resuming inside a file: keep its first steps
            self._start(start_step // self.per_file)
            first = self.index * self.per_file
            if self.sharded:
                try:
                    data = store.get(fmt.chunk_key(arr, self.index))
                    self.encoded[: start_step - first] = fmt.shard_chunks(data, self.per_file)[: start_step - first]
                except FileNotFoundError:  # none of its steps kept full tensors
                    pass
            else:
                self.rows[: start_step - first] = arr[first:start_step]
            self.dirty = True

    def _start(self, index: int) -> None:
        self.index, self.dirty, self.written = index, False, False  # written: the file is on disk, whole
        self.lo, self.hi = self.per_file, 0  # the rows changed since the file was last written
        self.key = fmt.chunk_key(self.arr, index)
        if self.sharded:
            self.encoded: list[bytes | None] = [None] * self.per_file
            self.pending: dict[int, np.ndarray] = {}  # step in the shard -> values not encoded yet
        else:
            self.rows = np.full((self.per_file, *self.arr.shape[1:]), self.arr.fill_value, dtype=self.arr.dtype)

    def _file(self) -> _File:
        """What to write of the current file (its bytes are made on the writing pool, before the next
        write changes it: `Recorder.write` waits for its files)."""
        key = self.key
        if not self.sharded:
            rows, lo, hi = self.rows, self.lo, self.hi
            self.lo, self.hi = self.per_file, 0
            if not self.in_place:  # (the whole file each time)
                return _File(key, lambda: codecs.encode(self.codec, rows, self.crc))
            if self.written:
                return _File(key, lambda: codecs.encode("bytes", rows[lo:hi]), lo * rows.strides[0])
            self.written = True
            return _File(key, lambda: codecs.encode("bytes", rows))
        encoded, pending, self.pending, codec, crc = self.encoded, self.pending, {}, self.codec, self.crc

        def shard() -> list[bytes]:
            for i, values in pending.items():
                encoded[i] = codecs.encode(codec, values, crc)
            return fmt.shard_parts(encoded)

        return _File(key, shard)

    def files(self, t0: int, block: np.ndarray, keep: np.ndarray | None) -> list[_File]:
        """The files that steps t0.. change; `keep[i]` False leaves step t0+i unwritten."""
        block = _as_dtype(block, self.arr.dtype)
        out = []
        for i in range(len(block)):
            index, row = divmod(t0 + i, self.per_file)
            if index != self.index:
                if self.dirty:
                    out.append(self._file())
                self._start(index)
            if keep is None or keep[i]:
                if self.sharded:
                    self.pending[row] = block[i]
                else:
                    self.rows[row] = block[i]
                    self.lo, self.hi = min(self.lo, row), max(self.hi, row + 1)
                self.dirty = True
        if self.dirty:
            out.append(self._file())
            self.dirty = False  # (written: the next steps make it dirty again)
        return out


def _as_dtype(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`block` as `dtype`: float32 to float16 through torch (the same rounding as numpy's, several times faster)."""
    if block.dtype == dtype:
        return block
    if dtype == np.float16 and block.dtype == np.float32:
        import torch

        return torch.from_numpy(np.ascontiguousarray(block)).to(torch.float16).numpy()
    return block.astype(dtype)


_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="acc-capture-write")


@functools.cache
def _blas():
    """The BLAS libraries numpy uses (threadpoolctl), made once they are loaded."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _write_files(store: Store, files: list[_File], more: Callable[[], list[_File]] = list) -> None:
    """Encode each file and write it, two at a time: whole and atomically (`Store.put`: a temporary
    name then a rename on disk, one PUT in an object store), or its new rows in place
    (`Store.write_at`); to an object store, encode two at a time and upload many at a time.
    `more()` runs while the first files are encoded, and gives the rest.

    Encoding here, rather than through zarr's setitem, skips zarr's per-chunk bookkeeping (which
    costs more than the compression) and its read-modify-write of partial chunks and shards.
    `_Chunker` checks that every array has a layout this encodes (`format.file_layout`).
    """
    local = store.local is not None

    def write(file: _File) -> None:
        if file.at is None:
            store.put(file.key, file.encode())
        else:
            store.write_at(file.key, file.at, file.encode())

    job = write if local else (lambda file: (file.key, file.encode()))
    jobs = [_POOL.submit(job, file) for file in files]
    try:
        jobs += [_POOL.submit(job, file) for file in more()]
    finally:
        wait(jobs)
    if local:
        for done in jobs:
            done.result()  # (raises the first error)
    else:
        store.put_many(done.result() for done in jobs)


def _state_key(step: int) -> str:
    return f"{fmt.STATE_GROUP}/step-{step:08d}.pt"


def save_state_to(file, state: dict) -> None:
    """Serialise a training state into a binary file object, as `save_state` stores it (torch.save;
    loaded with weights_only=True)."""
    import torch

    torch.save(state, file)


def state_bytes(state: dict) -> bytes:
    """A training state as the bytes `save_state` writes."""
    buffer = io.BytesIO()
    save_state_to(buffer, state)
    return buffer.getvalue()


def save_state(store: Store | Path, step: int, state: dict | bytes) -> None:
    """The training state after `step` steps (a dict, or its `state_bytes`), written atomically."""
    open_store(store).put(_state_key(step), state if isinstance(state, bytes) else state_bytes(state))


def has_state(store: Store | Path, step: int) -> bool:
    return open_store(store).exists(_state_key(step))


class StateError(ValueError):
    """A saved training state that cannot be read, or that does not fit the run meant to go on from
    it; the message says which, in one line."""


def _one_line(e: Exception) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]


def load_state(store: Store | Path, step: int) -> dict:
    """The training state saved after `step` steps, its tensors on the CPU (a run on another device
    loads them onto its own). FileNotFoundError if none was saved, StateError if it cannot be read."""
    import torch

    store = open_store(store)
    try:
        data = store.get(_state_key(step))
    except FileNotFoundError:
        raise FileNotFoundError(f"no saved training state for step {step} in {store}") from None
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:  # a damaged or truncated file: whatever torch's unpickler makes of it
        raise StateError(f"the training state saved at step {step} in {store} cannot be read: it is damaged, "
                         f"or not a state this tool saved ({type(e).__name__})") from None


def prune_states(store: Store | Path, keep: int) -> None:
    """Remove the saved states other than `keep` (after `keep` is published)."""
    store = open_store(store)
    for key, _ in store.list(fmt.STATE_GROUP):
        name = key.rsplit("/", 1)[-1]
        if name.startswith("step-") and ".pt" in name and key != _state_key(keep):
            store.delete(key)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        tool = version("acc-capture")
    except PackageNotFoundError:
        tool = "unknown"
    return {"acc_capture": tool, "torch": torch.__version__, "zarr": zarr.__version__,
            "numpy": np.__version__, "numcodecs": numcodecs.__version__}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Recorder:
    """Appends committed steps to a recording: `Recorder.create(...)` a new one, `Recorder.append(path)` to go on.

    The arrays are made at the first write, from the first step's captures: one per stored key
    (shape `[steps, ...its shape]`, its dimension names from the key table) and one per summary.
    They grow as steps come (allocated ahead; readers trust only `steps_completed`) and are cut to
    `steps_completed` at `finish()`. `steps_completed` in the root attributes is raised only after
    every file of those steps, and the training state that continues from there, are written; each
    file is replaced atomically or, for an uncompressed chunk, has only rows of new steps written in
    place, so a kill at any moment leaves the completed steps intact and resumable. The process holds the recording's writer lock while it writes (`Store.lock`: an
    flock on a local directory, a lock object in an object store).
    """

    def __init__(self, store: Store, root: zarr.Group, meta: dict, lock: WriterLock | None, own: dict,
                 expect_steps: int = 0, derived: dict | None = None):
        self.store, self.root, self.meta, self._lock = store, root, meta, lock
        self.path: Path | str = store.location
        self.own, self.expect_steps = own, expect_steps  # the vocabulary's own summaries (TensorKey.summaries())
        self.derived = derived or {}  # and its derived keys (TensorKey.derived()), computed here
        self.steps_completed: int = meta["steps_completed"]
        self.policy = Policy.from_dict(meta["policy"] or {})
        self.tensors = {k: root["tensors"][k] for k in meta["keys"]}
        self.summaries = dict(root["summary"].arrays())
        self.capacity = min((a.shape[0] for a in [*self.tensors.values(), *self.summaries.values()]), default=0)
        self._specs: dict[str, fmt.Summary] | None = None  # the summaries computed, known at the first write
        self._derived_every: dict = {}  # the derived keys made at every step (a summary needs them), and
        self._derived_kept: dict = {}   # those made only at the steps kept; both known at the first write
        self._chunkers = {arr.path: _Chunker(self.store, arr, self.steps_completed)
                          for arr in [*self.tensors.values(), *self.summaries.values()]}
        self._saved = self.steps_completed  # the step of the newest training state (there may be none)

    @classmethod
    def attach(cls, location: Path | str, own: dict, expect_steps: int = 0, derived: dict | None = None) -> Recorder:
        """The recorder of a recording that `create` or `append` prepared, in the process that writes it
        (the writer process): it goes on from the recording's metadata; the lock is its preparer's."""
        store = open_store(location)
        root = zarr.open_group(store.zarr(read_only=False), mode="r+", zarr_format=3)
        return cls(store, root, dict(root.attrs[fmt.ATTRS_KEY]), None, own, expect_steps, derived)

    @classmethod
    def create(cls, path: Path | str | Store, vocabulary, policy: Policy, expect_steps: int = 0,
               **meta) -> Recorder:
        """A new recording at `path` (a directory, cleared; or a URL), with no arrays until the first write.
        `meta` goes into the root attributes: condition, config, seed, device, note, command, recipe."""
        store = open_store(path)
        root = zarr.open_group(store.zarr(read_only=False), mode="w", zarr_format=3)  # (clears the directory)
        lock = store.lock()
        meta = {
            "format": fmt.FORMAT_VERSION, "status": "recording", "steps_completed": 0, "keys": [],
            "key_table": vocabulary.table(), "vocabulary": vocabulary.__name__,
            "condition": None, "config": None, "recipe": None, "seed": None, "device": None, "note": "", "command": "",
            **meta, "policy": policy.to_dict(), "created": _now(), "versions": versions(), "resumed": [],
        }
        root.create_group("tensors")
        root.create_group("summary")
        root.create_group(fmt.STATE_GROUP)
        root.attrs[fmt.ATTRS_KEY] = meta
        return cls(store, root, meta, lock, vocabulary.summaries(), expect_steps, vocabulary.derived())

    @classmethod
    def append(cls, path: Path | str | Store, vocabulary, command: str, expect_steps: int = 0,
               need_state: bool = True, apply: Callable[[dict], None] | None = None) -> tuple[Recorder, dict | None]:
        """Reopen a recording to add steps after its completed ones.

        Returns the recorder and the training state saved at `steps_completed` (None if there is none
        and `need_state` is False); `apply(state)`, the run's `load_state_dict`, is called with it
        before anything changes. Whatever an interrupted writer left beyond `steps_completed` is
        discarded, stale `.partial` files included. Raises BlockingIOError if another process is
        writing it, FileNotFoundError if a state is needed and none was saved, StateError if it
        cannot be read or `apply` refuses it (nothing changed then).
        """
        store = open_store(path)
        lock = store.lock()
        try:
            root = zarr.open_group(store.zarr(read_only=False), mode="r+", zarr_format=3)
            meta = dict(root.attrs[fmt.ATTRS_KEY])
            done = meta["steps_completed"]
            saved = has_state(store, done)
            if need_state and not saved:
                raise FileNotFoundError(f"no saved training state for step {done} in {path}")
            state = load_state(store, done) if saved else None
            if apply is not None and state is not None:
                try:
                    apply(state)
                except Exception as e:  # a state of another run, or of another version of it
                    raise StateError(f"the training state saved at step {done} in {path} does not fit this run "
                                     f"({_one_line(e)})") from None
            for key, _ in store.list():
                if key.endswith(PARTIAL):
                    store.delete(key)
            prune_states(store, keep=done)  # (those an interrupted writer saved past `done`)
            recorder = cls(store, root, meta, lock, vocabulary.summaries(), expect_steps, vocabulary.derived())
            recorder._resize(done)  # drops the chunks of discarded steps
            meta["status"] = "recording"
            meta["resumed"] = [*meta.get("resumed", []), {"at_step": done, "command": command, "time": _now()}]
            root.attrs[fmt.ATTRS_KEY] = meta
            crash_point("resume")
        except BaseException:
            lock.release()
            raise
        return recorder, state

    def _arrays(self) -> list[zarr.Array]:
        return [*self.tensors.values(), *self.summaries.values()]

    def _resize(self, steps: int) -> None:
        for arr in self._arrays():
            if arr.shape[0] != steps:
                arr.resize((steps, *arr.shape[1:]))
        self.capacity = steps

    def _reserve(self, steps: int) -> None:
        """Room for `steps` steps, allocated ahead so the arrays' metadata is rewritten seldom."""
        if steps > self.capacity:
            self._resize(max(steps, self.expect_steps, 2 * self.capacity, 64))

    def _allocate(self, first: dict[str, np.ndarray], n: int) -> None:
        """Make the arrays of a new recording from its first step (`first`: every key's value, derived
        keys too, stacked [1, ...]); `n` steps are coming."""
        table = {e["key"]: e for e in self.meta["key_table"]}
        captured = {k: (v.shape[1:], v.dtype) for k, v in first.items()}
        for key, (shape, _) in captured.items():  # (a derived key's function's; captures are checked as they come)
            if len(shape) != len(table[key]["dims"]):
                raise ValueError(f"{key} has shape {shape}, but the key table gives it dims {table[key]['dims']}")
        fmt.check_first_step({k: (table[k]["dims"], shape, dtype.name) for k, (shape, dtype) in captured.items()})
        sizes = {dim: size for k, (shape, _) in captured.items() for dim, size in zip(table[k]["dims"], shape)}
        only = self.policy.only
        stored = [k for k in table if k in captured and (only is None or k in only)]
        capacity = max(n, self.expect_steps)
        tensors = self.root["tensors"]
        for key in stored:
            shape, dtype = (capacity, *captured[key][0]), captured[key][1]
            per_step = int(np.prod(shape[1:])) * dtype.itemsize
            if per_step <= fmt.SMALL_BYTES:  # many steps a chunk
                layout = {"chunks": (fmt.SMALL_CHUNK, *shape[1:]), "compressors": None}  # (written in place)
            else:  # a chunk per step, SHARD_STEPS chunks a file, stored as its first step says (capture.codecs)
                if dtype == np.float32:
                    dtype = np.dtype(self.policy.large_float)
                inner = [LITTLE, *codecs.zarr_codecs(codecs.choose(_as_dtype(first[key][:1], dtype)[0]), dtype.itemsize)]
                layout = {"chunks": (fmt.SHARD_STEPS, *shape[1:]), "compressors": None,
                          "serializer": ShardingCodec(chunk_shape=(1, *shape[1:]), codecs=inner, index_codecs=[LITTLE])}
            self.tensors[key] = tensors.create_array(
                key, shape=shape, dtype=dtype, fill_value=fmt.fill_value(dtype), dimension_names=("step", *table[key]["dims"]),
                chunk_key_encoding=CHUNK_KEYS, **layout)
        summary = self.root["summary"]
        for name, (dims, dtype, _, _) in {**self._specs, fmt.FULL_CAPTURE: ((), "bool", (), None)}.items():
            if any(d not in sizes for d in dims):
                continue  # a vocabulary summary over a dimension no captured key has
            shape = (capacity, *(sizes[d] for d in dims))
            self.summaries[name] = summary.create_array(
                name, shape=shape, chunks=(fmt.SUMMARY_CHUNK, *shape[1:]), dtype=dtype, compressors=None,
                fill_value=fmt.fill_value(np.dtype(dtype)), dimension_names=("step", *dims), chunk_key_encoding=CHUNK_KEYS)
        self.capacity = capacity
        self.meta["keys"] = stored
        self._chunkers = {arr.path: _Chunker(self.store, arr, 0) for arr in self._arrays()}

    def write(self, t0: int, blocks: dict[str, np.ndarray], state: dict | bytes | None = None) -> None:
        """Append steps t0.. (`blocks`: each captured key's values of those steps, stacked: [n, ...];
        t0 must be steps_completed) and the training state after them; then publish them. BLAS is
        held to one thread meanwhile: the same bits whatever the cores, and training's core left alone."""
        n = len(next(iter(blocks.values()))) if blocks else 0
        if not n:
            return
        if t0 != self.steps_completed:
            raise RuntimeError(f"steps out of order: expected step {self.steps_completed}, got {t0}")
        with _blas().limit(limits=1, user_api="blas"):
            self._write(t0, n, blocks, state)

    def _write(self, t0: int, n: int, blocks: dict[str, np.ndarray], state: dict | bytes | None) -> None:
        t1 = t0 + n
        full = np.array([self.policy.is_full(s) for s in range(t0, t1)])
        if self._specs is None:
            first = fmt.derive({k: v[:1] for k, v in blocks.items()}, self.derived)  # (every key's first step)
            new = not self.tensors and not self.summaries
            own = fmt.summaries({k: (v.shape[1:], v.dtype) for k, v in first.items()}, self.own,
                                derived=first.keys() - blocks.keys() if new else ())
            # a new recording's summaries; or, appending, those of the recording's this tool computes
            self._specs = own if new else {name: s for name, s in own.items() if name in self.summaries}
            if new:
                self._allocate(first, t1)
            needed = {k for s in self._specs.values() for k in s[2]}  # (derived at every step; the others where kept)
            self._derived_every = {k: d for k, d in self.derived.items() if k in needed}
            self._derived_kept = {k: d for k, d in self.derived.items() if k in self.tensors and k not in needed}
        blocks = self._derive(blocks, full)
        for key in self.derived.keys() & self.tensors.keys():  # (captures are checked as they come: RecordingSession)
            if blocks[key].shape[1:] != self.tensors[key].shape[1:]:
                raise ValueError(f"{key}: steps {t0}.. have shape {blocks[key].shape[1:]}, the recording's is {self.tensors[key].shape[1:]}")
        self._reserve(t1)
        files = []  # (store key, its encoder): encoded and written concurrently
        for key, arr in self.tensors.items():
            files += self._chunkers[arr.path].files(t0, blocks[key], full)

        def summary_files() -> list[_File]:  # (while the tensors' files are encoded)
            sums = fmt.summarize(blocks, self._specs)
            for name, values in sums.items():
                if name in self.summaries and values.shape != (n, *self.summaries[name].shape[1:]):
                    raise ValueError(f"summary {name}: its function gave shape {values.shape} for {n} steps, "
                                     f"not {(n, *self.summaries[name].shape[1:])} (step, {', '.join(self._specs[name][0])})")
            sums[fmt.FULL_CAPTURE] = full
            return [file for name, values in sums.items() if name in self.summaries
                    for file in self._chunkers[self.summaries[name].path].files(t0, values, None)]

        _write_files(self.store, files, summary_files)
        if state is not None:
            save_state(self.store, t1, state)
        crash_point("data-written")
        self.steps_completed = t1
        self.meta["steps_completed"] = t1
        self._write_meta()
        crash_point("published")
        if state is not None:
            self.store.delete(_state_key(self._saved))  # (superseded; a missing one is no error)
            self._saved = t1

    def _derive(self, blocks: dict[str, np.ndarray], kept: np.ndarray) -> dict[str, np.ndarray]:
        """`blocks` with the derived keys added that a summary needs, at every step, and those only
        stored, at the `kept` steps (whose tensors the recording keeps); their other rows are left
        unset: nothing reads them."""
        out = fmt.derive(blocks, self._derived_every)
        some = {k: d for k, d in self._derived_kept.items() if k not in out}  # (not captured by the loop)
        if not some or kept.all():
            return fmt.derive(out, some)
        inputs = {k for needs, _ in some.values() for k in needs}
        part = fmt.derive({k: out[k][kept] for k in inputs if k in out}, some) if kept.any() else {}
        for key in some:
            values, arr = part.get(key), self.tensors[key]
            shape, dtype = (arr.shape[1:], arr.dtype) if values is None else (values.shape[1:], values.dtype)
            out[key] = np.empty((len(kept), *shape), dtype)
            if values is not None:
                out[key][kept] = values
        return out

    def _write_meta(self) -> None:
        """The root attributes (`steps_completed` among them): the group's zarr.json, one atomic put."""
        document = {"attributes": {**self.root.attrs.asdict(), fmt.ATTRS_KEY: self.meta}, "zarr_format": 3,
                    "node_type": "group"}
        self.store.put("zarr.json", json.dumps(document, indent=2).encode())

    def finish(self, status: str) -> None:
        """Cut the arrays to the completed steps, set the status and release the lock."""
        try:
            self._resize(self.steps_completed)
            self.meta["status"] = status
            self._write_meta()
        finally:
            self.close()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
