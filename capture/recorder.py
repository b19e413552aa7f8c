"""The recorder: steps a run in chunks and writes every capture to a Zarr v3 recording (format v1)."""

from __future__ import annotations

import datetime as _dt
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numcodecs
import numpy as np
import torch
import zarr
from isal import igzip
from zarr.codecs import BytesCodec, ShardingCodec

from acc.conditions import RunConfig
from acc.recipe import InspectorHooks, Run
from acc.step_inspector import StepInspector, StepTensorKey
from capture import format as fmt
from capture.codecs import IsalGzipCodec

CHUNK_KEYS = {"name": "default", "separator": "."}  # c.17.0.0: one flat folder per array, no mkdir per step
COMPRESSOR = IsalGzipCodec(level=1)  # plain gzip on disk: browsers decode it natively (DecompressionStream)
LITTLE = BytesCodec(endian="little")


@dataclass
class Policy:
    """Which steps keep their full tensors (summaries are kept for every step), which keys are
    stored, and as what: `large_float` is the storage type of the float tensors larger than
    format.SMALL_BYTES a step (float16 halves them, rounding each value; summaries are computed
    from the float32 captures either way)."""

    keys: list[StepTensorKey]
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
        return {"full_every": self.full_every, "full_steps": [list(r) for r in self.full_steps], "large_float": self.large_float}


class _Chunker:
    """Turns the values of consecutive steps into whole files of one array, ready to write.

    A file holds `files.steps` steps (see `format.file_layout`): one gzip chunk of them all (small
    tensors, summaries), or a shard of one gzip chunk per step (large tensors). The file being
    filled is kept in memory, its chunks already encoded, and written whole each time it changes,
    so nothing is read back, nothing is encoded twice and no file is ever half-written. Steps not
    written (a `--full-every` policy) read as the fill value: rows of the fill value in a chunk,
    empty chunks in a shard.
    """

    def __init__(self, root: Path, arr: zarr.Array, start_step: int):
        files = fmt.file_layout(arr)
        if files is None:
            raise ValueError(f"{arr.path} has codecs {arr.metadata.codecs}; this recorder writes bytes(little) + gzip")
        self.arr, self.per_file, self.sharded = arr, files.steps, files.sharded
        self.index, self.dirty = -1, False
        if start_step % self.per_file:  # resuming inside a file: keep its first steps
            self._start(start_step // self.per_file)
            first = self.index * self.per_file
            if self.sharded:
                try:
                    data = (root / fmt.chunk_key(arr, self.index)).read_bytes()
                    self.encoded[: start_step - first] = fmt.shard_chunks(data, self.per_file)[: start_step - first]
                except FileNotFoundError:  # none of its steps kept full tensors
                    pass
            else:
                self.rows[: start_step - first] = arr[first:start_step]
            self.dirty = True

    def _start(self, index: int) -> None:
        self.index, self.dirty = index, False
        if self.sharded:
            self.encoded: list[bytes | None] = [None] * self.per_file
            self.pending: dict[int, np.ndarray] = {}  # step in the shard -> values not encoded yet
        else:
            self.rows = np.full((self.per_file, *self.arr.shape[1:]), self.arr.fill_value, dtype=self.arr.dtype)

    def _file(self) -> tuple[str, Callable[[], bytes]]:
        """The current file: its store key, and a function that encodes it (run on the writing pool)."""
        key = fmt.chunk_key(self.arr, self.index)
        if not self.sharded:
            rows = self.rows.copy()
            return key, lambda: _gzip(rows)
        encoded, pending, self.pending = self.encoded, self.pending, {}

        def shard() -> bytes:
            for i, values in pending.items():
                encoded[i] = _gzip(values)
            return fmt.encode_shard(encoded)

        return key, shard

    def files(self, t0: int, block: np.ndarray, keep: np.ndarray | None) -> list[tuple[str, Callable[[], bytes]]]:
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
                self.dirty = True
        if self.dirty:
            out.append(self._file())
        return out


def _as_dtype(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`block` as `dtype`: float32 to float16 through torch (the same rounding as numpy's, several times faster)."""
    if block.dtype == dtype:
        return block
    if dtype == np.float16 and block.dtype == np.float32:
        return torch.from_numpy(np.ascontiguousarray(block)).to(torch.float16).numpy()
    return block.astype(dtype)


def _gzip(data: np.ndarray) -> bytes:
    """The `bytes` (little-endian, C order) then `gzip` codecs, by ISA-L (the same gzip format, several times faster)."""
    return igzip.compress(np.ascontiguousarray(data, data.dtype.newbyteorder("<")), min(COMPRESSOR.level, 3), mtime=0)


_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="acc-capture-write")


def _write_files(root: Path, files: list[tuple[str, Callable[[], bytes]]]) -> None:
    """Encode each file and write it atomically (a temporary name, then a rename), two at a time.

    Encoding here, rather than through zarr's setitem, skips zarr's per-chunk bookkeeping (which
    costs more than the compression) and its read-modify-write of partial chunks and shards.
    `_Chunker` checks that every array has a layout this encodes (`format.file_layout`).
    """

    def put(item: tuple[str, Callable[[], bytes]]) -> None:
        key, encode = item
        data = encode()
        target = root / key
        tmp = target.with_name(target.name + ".partial")
        try:
            tmp.write_bytes(data)
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
        os.replace(tmp, target)

    for _ in _POOL.map(put, files):  # (raises the first error)
        pass


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _state_file(path: Path, step: int) -> Path:
    return path / fmt.STATE_GROUP / f"step-{step:08d}.pt"


def save_state(path: Path, step: int, state: dict) -> None:
    """The training state after `step` steps, written atomically (loaded with weights_only=True)."""
    target = _state_file(path, step)
    tmp = target.with_name(target.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, target)


def load_state(path: Path, step: int) -> dict:
    file = _state_file(path, step)
    if not file.is_file():
        raise FileNotFoundError(f"no saved training state for step {step} in {path}")
    return torch.load(file, weights_only=True)


def prune_states(path: Path, keep: int) -> None:
    """Remove the saved states other than `keep` (after `keep` is published)."""
    for f in (path / fmt.STATE_GROUP).glob("step-*.pt*"):
        if f != _state_file(path, keep):
            f.unlink(missing_ok=True)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool = version("acc-capture")
    except PackageNotFoundError:
        tool = "unknown"
    return {"acc_capture": tool, "torch": torch.__version__, "zarr": zarr.__version__,
            "numpy": np.__version__, "numcodecs": numcodecs.__version__}


class Recorder:
    """Appends finished steps to a recording: `Recorder.create(...)` a new one, `Recorder.append(path, n)` to go on.

    `steps_completed` in the root attributes is raised only after every array of those steps, and
    the training state that continues from there, are written; each file is replaced atomically,
    so a kill at any moment leaves the completed steps intact and resumable (a killed write can leave a `.partial` file beside its chunk; nothing reads it). The process holds an
    flock on the directory while it writes (see `format.lock_writer`).
    """

    def __init__(self, path: Path, root: zarr.Group, meta: dict, lock: int):
        self.path, self.root, self.meta, self._lock = Path(path), root, meta, lock
        self.steps_completed: int = meta["steps_completed"]
        p = meta["policy"]
        self.policy = Policy([StepTensorKey(k) for k in meta["keys"]], p["full_every"], [tuple(r) for r in p["full_steps"]],
                             p.get("large_float", "float32"))
        self.tensors = {StepTensorKey(k): root["tensors"][k] for k in meta["keys"]}
        self.summaries = dict(root["summary"].arrays())
        self.summary_names = [n for n in fmt.SUMMARIES if n in self.summaries]
        self._chunkers = {arr.path: _Chunker(self.path, arr, self.steps_completed)
                          for arr in [*self.tensors.values(), *self.summaries.values()]}

    @classmethod
    def create(cls, path: Path, config: RunConfig, policy: Policy, total_steps: int, *,
               seed: int, device: str, note: str, command: str) -> Recorder:
        """A new recording with its arrays allocated for `total_steps` steps."""
        root = zarr.open_group(path, mode="w", zarr_format=3)  # (clears the directory)
        lock = fmt.lock_writer(Path(path))
        meta = {
            "format": fmt.FORMAT_VERSION, "status": "recording", "steps_completed": 0,
            "keys": [k.value for k in policy.keys], "condition": config.condition, "config": config.to_dict(),
            "policy": policy.to_dict(), "seed": seed, "device": device, "note": note, "command": command,
            "created": _now(), "versions": versions(), "resumed": [],
        }
        sizes = {"step": total_steps, **fmt.dim_sizes(config)}
        tensors = root.create_group("tensors")
        for key in policy.keys:
            dims = ("step", *key.dims)
            shape = tuple(sizes[d] for d in dims)
            dtype = fmt.key_dtype(key)
            per_step = int(np.prod(shape[1:])) * dtype.itemsize
            if per_step <= fmt.SMALL_BYTES:  # many steps a chunk
                layout = {"chunks": (fmt.SMALL_CHUNK, *shape[1:]), "compressors": COMPRESSOR}
            else:  # a chunk per step, SHARD_STEPS chunks a file
                if dtype.kind == "f":
                    dtype = np.dtype(policy.large_float)
                layout = {"chunks": (fmt.SHARD_STEPS, *shape[1:]), "compressors": None,
                          "serializer": ShardingCodec(chunk_shape=(1, *shape[1:]), codecs=[LITTLE, COMPRESSOR], index_codecs=[LITTLE])}
            tensors.create_array(key.value, shape=shape, dtype=dtype, fill_value=fmt.fill_value(dtype), dimension_names=dims,
                                 chunk_key_encoding=CHUNK_KEYS, **layout)
        summary = root.create_group("summary")
        for name in [*fmt.summary_names(fmt.condition_keys(config)), fmt.FULL_CAPTURE]:
            dims, dtype = ((), "bool") if name == fmt.FULL_CAPTURE else fmt.SUMMARIES[name][:2]
            dims = ("step", *dims)
            shape = tuple(sizes[d] for d in dims)
            summary.create_array(name, shape=shape, chunks=(fmt.SUMMARY_CHUNK, *shape[1:]), dtype=dtype,
                                 compressors=COMPRESSOR, fill_value=fmt.fill_value(np.dtype(dtype)), dimension_names=dims,
                                 chunk_key_encoding=CHUNK_KEYS)
        root.create_group(fmt.STATE_GROUP)
        root.attrs[fmt.ATTRS_KEY] = meta
        return cls(path, root, meta, lock)

    @classmethod
    def append(cls, path: Path, more_steps: int, command: str) -> tuple[Recorder, dict]:
        """Reopen a recording to add `more_steps` after its completed steps.

        Returns the recorder and the training state saved at `steps_completed`. Whatever an
        interrupted writer left beyond `steps_completed` is discarded. Raises BlockingIOError if
        another process is writing the recording, FileNotFoundError if no state was saved.
        """
        lock = fmt.lock_writer(Path(path))
        try:
            root = zarr.open_group(path, mode="r+", zarr_format=3)
            meta = dict(root.attrs[fmt.ATTRS_KEY])
            done = meta["steps_completed"]
            state = load_state(Path(path), done)
            recorder = cls(path, root, meta, lock)
            recorder._resize(done)  # drops the chunks of discarded steps
            recorder._resize(done + more_steps)
            meta["status"] = "recording"
            meta["resumed"] = [*meta.get("resumed", []), {"at_step": done, "command": command, "time": _now()}]
            root.attrs[fmt.ATTRS_KEY] = meta
        except BaseException:
            os.close(lock)
            raise
        return recorder, state

    def _resize(self, total_steps: int) -> None:
        for arr in [*self.tensors.values(), *self.summaries.values()]:
            if arr.shape[0] != total_steps:
                arr.resize((total_steps, *arr.shape[1:]))

    def grow(self, more_steps: int) -> None:
        """Make room for `more_steps` steps after the completed ones."""
        if self.summaries[fmt.FULL_CAPTURE].shape[0] < self.steps_completed + more_steps:
            self._resize(self.steps_completed + more_steps)

    def _write_meta(self) -> None:
        self.root.attrs[fmt.ATTRS_KEY] = self.meta

    def write(self, steps: list[tuple[int, dict[StepTensorKey, torch.Tensor]]], state: dict | None = None) -> None:
        """Append finished steps (in order, starting at steps_completed) and the state after them; then publish."""
        if not steps:
            return
        t0, t1 = self.steps_completed, self.steps_completed + len(steps)
        if [s for s, _ in steps] != list(range(t0, t1)):
            raise RuntimeError(f"steps out of order: expected {t0}..{t1 - 1}, got {[s for s, _ in steps]}")
        full = np.array([self.policy.is_full(s) for s, _ in steps])
        blocks = {key: torch.stack([captures[key] for _, captures in steps]).numpy() for key in steps[0][1]}
        sums = fmt.summarize(blocks, self.summary_names)
        sums[fmt.FULL_CAPTURE] = full
        files = []  # (store key, its encoder): encoded and written concurrently
        for key, arr in self.tensors.items():
            files += self._chunkers[arr.path].files(t0, blocks[key], full)
        for name, values in sums.items():
            files += self._chunkers[self.summaries[name].path].files(t0, values, None)
        _write_files(self.path, files)
        if state is not None:
            save_state(self.path, t1, state)
        self.steps_completed = t1
        self.meta["steps_completed"] = t1
        self._write_meta()
        if state is not None:
            prune_states(self.path, keep=t1)

    def finish(self, status: str) -> None:
        self.meta["status"] = status
        self._write_meta()
        self.close()

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # (releases the flock)
            self._lock = None


class BackgroundWriter:
    """Runs `Recorder.write` on a thread behind a bounded queue, so compression overlaps training.

    Chunks are written in the order submitted; at most `depth` chunks wait in memory. An error in
    the writer is raised in the submitting thread at the next `submit()` or at `close()`.
    """

    def __init__(self, recorder: Recorder, depth: int = 2):
        self.recorder = recorder
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="acc-capture-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.recorder.write(*item)
                except BaseException as e:  # handed to the training thread
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, steps: list, state: dict | None = None) -> None:
        self._raise()
        self._queue.put((steps, state))

    def close(self) -> None:
        """Wait until everything submitted is on disk (or failed), then raise any error."""
        self._queue.put(None)
        self._thread.join()
        self._raise()


def record(run: Run, recorder: Recorder, steps: int, chunk_steps: int, on_progress=None) -> None:
    """Train `steps` steps of `run`, `chunk_steps` at a time; each chunk is written while the next trains.

    `on_progress(n)` is called as each chunk of n steps has trained.
    """
    inspector = StepInspector()
    hooks = InspectorHooks(run, inspector)
    writer = BackgroundWriter(recorder)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1))  # leave a core to the writer: oversubscribed, both crawl
    try:
        done = 0
        while done < steps:
            n = min(chunk_steps, steps - done)
            run.trainer.train(n, training_metrics_fn=hooks.metrics_fn)
            writer.submit(inspector.drain(), run.state_dict())
            done += n
            if on_progress:
                on_progress(n)
    finally:
        torch.set_num_threads(threads)
        hooks.remove()
        writer.close()
