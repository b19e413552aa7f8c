"""The recorder: steps a run in chunks and writes every capture to a Zarr v3 recording (format v1)."""

from __future__ import annotations

import asyncio
import datetime as _dt
import queue
import threading
import os
from dataclasses import dataclass, field
from pathlib import Path

import numcodecs
import numpy as np
import torch
import zarr
from zarr.core.sync import sync

from acc.conditions import RunConfig
from acc.recipe import InspectorHooks, Run
from acc.step_inspector import StepInspector, StepTensorKey
from capture import format as fmt
from capture.codecs import IsalGzipCodec

COMPRESSOR = IsalGzipCodec(level=1)  # plain gzip on disk: browsers decode it natively (DecompressionStream)


@dataclass
class Policy:
    """Which steps keep their full tensors (summaries are kept for every step) and which keys are stored."""

    keys: list[StepTensorKey]
    full_every: int | None = None
    full_steps: list[tuple[int, int]] = field(default_factory=list)

    def is_full(self, step: int) -> bool:
        if self.full_every is None and not self.full_steps:
            return True
        if self.full_every is not None and step % self.full_every == 0:
            return True
        return any(a <= step <= b for a, b in self.full_steps)

    def to_dict(self) -> dict:
        return {"full_every": self.full_every, "full_steps": [list(r) for r in self.full_steps]}


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """[(start, stop)] of the consecutive True stretches."""
    out, start = [], None
    for i, f in enumerate(flags + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i))
            start = None
    return out


async def _write_all(writes: list[tuple[zarr.Array, slice, np.ndarray]]) -> None:
    await asyncio.gather(*(arr.async_array.setitem(sel, block) for arr, sel, block in writes))


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool = version("acc-capture")
    except PackageNotFoundError:
        tool = "unknown"
    return {"acc_capture": tool, "torch": torch.__version__, "zarr": zarr.__version__,
            "numpy": np.__version__, "numcodecs": numcodecs.__version__}


class Recorder:
    """Creates a recording at `path` and appends finished steps to it.

    `steps_completed` in the root attributes is raised only after every array of those steps is
    written; each file is replaced atomically, so a kill at any moment leaves the completed steps
    intact. The process holds an flock on the directory while it writes (see `format.lock_writer`).
    """

    def __init__(self, path: Path, config: RunConfig, policy: Policy, total_steps: int, *,
                 seed: int, device: str, note: str, command: str):
        self.path = Path(path)
        self.policy = policy
        self.steps_completed = 0
        sizes = {"step": total_steps, **fmt.dim_sizes(config)}
        self.root = zarr.open_group(self.path, mode="w", zarr_format=3)  # (clears the directory)
        self._lock = fmt.lock_writer(self.path)
        self.meta = {
            "format": fmt.FORMAT_VERSION, "status": "recording", "steps_completed": 0,
            "keys": [k.value for k in policy.keys], "condition": config.condition, "config": config.to_dict(),
            "policy": policy.to_dict(), "seed": seed, "device": device, "note": note, "command": command,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "versions": versions(),
        }
        self._write_meta()
        tensors = self.root.create_group("tensors")
        self.tensors = {}
        for key in policy.keys:
            dims = ("step", *key.dims)
            shape = tuple(sizes[d] for d in dims)
            dtype = fmt.key_dtype(key)
            self.tensors[key] = tensors.create_array(
                key.value, shape=shape, chunks=(1, *shape[1:]), dtype=dtype, compressors=COMPRESSOR,
                fill_value=fmt.fill_value(dtype), dimension_names=dims)
        summary = self.root.create_group("summary")
        captured = fmt.condition_keys(config)
        self.summary_names = fmt.summary_names(captured)
        self.summaries = {}
        for name in [*self.summary_names, fmt.FULL_CAPTURE]:
            dims, dtype = (((), "bool") if name == fmt.FULL_CAPTURE else fmt.SUMMARIES[name][:2])
            dims = ("step", *dims)
            shape = tuple(sizes[d] for d in dims)
            self.summaries[name] = summary.create_array(
                name, shape=shape, chunks=(fmt.SUMMARY_CHUNK, *shape[1:]), dtype=dtype, compressors=COMPRESSOR,
                fill_value=fmt.fill_value(np.dtype(dtype)), dimension_names=dims)

    def _write_meta(self) -> None:
        self.root.attrs[fmt.ATTRS_KEY] = self.meta

    def write(self, steps: list[tuple[int, dict[StepTensorKey, torch.Tensor]]]) -> None:
        """Append finished steps (in order, starting at steps_completed), then publish them."""
        if not steps:
            return
        t0, t1 = self.steps_completed, self.steps_completed + len(steps)
        if [s for s, _ in steps] != list(range(t0, t1)):
            raise RuntimeError(f"steps out of order: expected {t0}..{t1 - 1}, got {[s for s, _ in steps]}")
        full = [self.policy.is_full(s) for s, _ in steps]
        writes = []  # (array, selection, block): all of them go to zarr in one concurrent batch
        for key, arr in self.tensors.items():
            for a, b in _runs(full):
                block = torch.stack([steps[i][1][key] for i in range(a, b)]).numpy()
                writes.append((arr, slice(t0 + a, t0 + b), block.astype(arr.dtype, copy=False)))
        rows = [fmt.summarize(captures, self.summary_names) for _, captures in steps]
        for name in self.summary_names:
            writes.append((self.summaries[name], slice(t0, t1), np.stack([r[name] for r in rows])))
        writes.append((self.summaries[fmt.FULL_CAPTURE], slice(t0, t1), np.array(full)))
        sync(_write_all(writes))
        self.steps_completed = t1
        self.meta["steps_completed"] = t1
        self._write_meta()

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
        while (steps := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.recorder.write(steps)
                except BaseException as e:  # handed to the training thread
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, steps: list) -> None:
        self._raise()
        self._queue.put(steps)

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
    try:
        done = 0
        while done < steps:
            n = min(chunk_steps, steps - done)
            run.trainer.train(n, training_metrics_fn=hooks.metrics_fn)
            writer.submit(inspector.drain())
            done += n
            if on_progress:
                on_progress(n)
    finally:
        hooks.remove()
        writer.close()
