"""`record()`: record any PyTorch training loop, one committed step at a time.

    from capture import TensorKey, record

    class Keys(TensorKey):
        LOSS = "loss", (), "scalar"
        HIDDEN = "hidden", ("image", "unit"), "heatmap"

    with record("recordings/mlp", Keys, note="lr 0.1") as rec:
        for step in range(1000):
            ...                                      # forward, loss.backward()
            rec.inspector.capture(Keys.LOSS, loss)
            rec.inspector.capture(Keys.HIDDEN, h)
            rec.commit()                             # this step is complete
            opt.step()

Shapes and dtypes are fixed by the first committed step; a later step that differs is refused by
`commit()`, naming the key. Each capture is copied once, into a row of the session's ring of
shared buffers (capture.writer; a CUDA tensor by way of a page-locked buffer, asynchronously: see
StepInspector); every `chunk_steps` steps a filled block of it goes to the writer, a process of its
own, which writes it while the loop goes on. Leaving the `with` normally writes every step (status
`complete`); leaving it by an exception writes every committed step (status `interrupted`).
"""

from __future__ import annotations

import operator
import os
from pathlib import Path
from typing import Callable

import torch

from acc.step_inspector import CaptureError, StepInspector, TensorKey
from capture import format as fmt
from capture.recorder import Policy, Recorder
from capture.store import Store, is_url, open_store
from capture.writer import Ring, start_writer

__all__ = ["CaptureError", "RecordingSession", "record"]


class RecordingSession:
    """An open recording: `inspector` collects a step's captures, `commit()` ends the step.

    Made by `record()` (a new recording) or `RecordingSession.resume()` (going on with one).
    """

    def __init__(self, recorder: Recorder, keys: type[TensorKey], chunk_steps: int | None):
        self.recorder = recorder
        self.keys: type[TensorKey] = keys
        self.inspector = StepInspector(self.keys)
        self.chunk_steps = chunk_steps  # None: only `flush()` hands steps to the writer
        self.rows = chunk_steps or 20  # steps a block of the ring holds
        self.step: int = recorder.steps_completed  # the step being captured
        self._writer = start_writer(recorder, keys)
        self._ring: Ring | None = None  # made at the first commit, from its captures
        self._slots: list[list[dict]] = []  # [block][row]: {key: torch view of that row}
        self._block, self._n, self._t0 = 0, 0, self.step  # the block being filled, its rows filled, its first step
        self._signature: dict[TensorKey, tuple[tuple[int, ...], torch.dtype]] | None = None
        self._closed = False

    @property
    def path(self) -> Path:
        return self.recorder.path

    @property
    def writing(self) -> bool:
        """The writer has committed steps in hand, still to be written."""
        return self._writer.busy

    @property
    def steps_completed(self) -> int:
        """Steps written and published (committed steps may still be on their way)."""
        return self._writer.steps_completed

    @classmethod
    def resume(cls, path: str | Path, keys: type[TensorKey], command: str, chunk_steps: int | None = None,
               expect_steps: int = 0, apply: Callable[[dict], None] | None = None) -> tuple[RecordingSession, dict]:
        """Go on with a recording after its completed steps; also returns the training state saved there,
        given first to `apply` (the run's `load_state_dict`) before the recording changes. Raises
        FileNotFoundError if none was saved, StateError if it cannot be read or `apply` refuses it,
        BlockingIOError if another process is writing the recording."""
        recorder, state = Recorder.append(path, keys, command, expect_steps, apply=apply)
        return cls(recorder, keys, chunk_steps), state

    def sync(self) -> None:
        """Write every committed step now and wait until they are on disk (raises the writer's error)."""
        self.flush()
        self._writer.wait()

    def flush_by_hand(self, rows: int) -> None:
        """Steps go to the writer only at `flush()`, which comes at least every `rows` steps."""
        self.chunk_steps = None
        if self._ring is None:
            self.rows = rows
        elif self._ring.rows < rows:
            self._grow(rows)

    # -- the loop's side
    def commit(self) -> None:
        """End the current step: its captures are checked against the first step's and put in the ring."""
        if self._closed:
            self.inspector.take()
            raise CaptureError(f"commit(): the recording {self.path} is closed")
        captures = self.inspector.take()
        self._check(captures)
        if self._ring is None:
            self._start_ring(captures)
        elif self._n == self._ring.rows:  # (flushed by hand, later than promised)
            self._grow(2 * self._ring.rows)
        slots = self._slots[self._block][self._n]
        for key, value in captures.items():
            if value is not slots[key]:  # (else captured in place)
                slots[key].copy_(value)
        self._n += 1
        self.step += 1
        if self.chunk_steps and self._n >= self.chunk_steps:
            self.flush()
        self._offer()

    def _start_ring(self, captures: dict[TensorKey, torch.Tensor]) -> None:
        signature = {}
        for key, value in captures.items():
            dtype = str(value.dtype).removeprefix("torch.")
            signature[key.value] = (tuple(value.shape), "float32" if dtype == "bfloat16" else dtype)
        self._use_ring(Ring(signature, max(self.rows, 1)))

    def _use_ring(self, ring: Ring) -> None:
        self._writer.attach(ring)
        self._ring, self._block = ring, 0
        members = {k.value: k for k in self.keys}
        self._slots = []
        for arrays in ring.arrays:
            views = {members[k]: torch.from_numpy(a) for k, a in arrays.items()}
            self._slots.append([{k: v[row] for k, v in views.items()} for row in range(ring.rows)])

    def _grow(self, rows: int) -> None:
        """A ring of `rows` rows a block, holding the rows filled so far."""
        self._writer.wait()  # (every block handed over is written: only the current one is in use)
        old = self._ring
        ring = Ring(old.signature, rows)
        for key, values in old.block(self._block, self._n).items():
            ring.arrays[0][key][: self._n] = values
        self._use_ring(ring)
        old.close()

    def _offer(self) -> None:
        """The next step's captures go straight into their row of the ring."""
        if self._ring is not None and self._n < self._ring.rows:
            self.inspector.into(self._slots[self._block][self._n])

    def _check(self, captures: dict[TensorKey, torch.Tensor]) -> None:
        step = self.step
        if not captures:
            raise CaptureError(f"commit(): nothing was captured in step {step}")
        got = {k: (tuple(v.shape), v.dtype) for k, v in captures.items()}
        if self._signature is None:
            dtypes = {k: str(dtype).removeprefix("torch.") for k, (_, dtype) in got.items()}
            try:  # (bfloat16 is stored as float32)
                fmt.check_first_step({f"{k.value} {shape}": (k.dims, shape, "float32" if dtypes[k] == "bfloat16" else dtypes[k])
                                      for k, (shape, _) in got.items()})
            except ValueError as e:
                raise CaptureError(str(e)) from None
            self._signature = got
            return
        first = self._signature
        for key in first:
            if key not in got:
                raise CaptureError(f"step {step} did not capture {key.value} (the first step did)")
        for key, (shape, dtype) in got.items():
            if key not in first:
                raise CaptureError(f"step {step} captured {key.value}, which the first step did not")
            if (shape, dtype) != first[key]:
                raise CaptureError(f"{key.value}: step {step} has shape {shape} {dtype}, "
                                   f"the first step had {first[key][0]} {first[key][1]}")

    def flush(self, state: dict | None = None) -> None:
        """Hand the committed steps to the writer, with the training state after them (for resume)."""
        if not self._n:
            return
        self._writer.submit(self._block, self._t0, self._n, state)  # (the writer serialises the state at once)
        self._t0 += self._n
        self._n = 0
        self._block = (self._block + 1) % self._ring.blocks
        self._writer.free(self._block)  # (written two flushes ago, normally long since)
        self._offer()

    def discard(self) -> None:
        """Drop the step being captured and the committed steps not yet handed to the writer."""
        self.inspector.take()
        self.step -= self._n
        self._n = 0
        self._offer()

    # -- the end
    def close(self, status: str = "complete") -> None:
        """Write every committed step, then leave the recording `status` (complete or interrupted)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        except BaseException:
            status = "interrupted"
            raise
        finally:
            try:
                self.inspector.take()  # (drops the step being captured; a failure here loses no committed step)
            finally:
                try:
                    self._writer.close(status)
                finally:
                    if self._ring is not None:
                        self._slots = []
                        self._ring.close()

    def __enter__(self) -> RecordingSession:
        return self

    def __exit__(self, kind, error, tb) -> None:
        self.close("complete" if kind is None else "interrupted")


def next_free_run(base: Path = Path("recordings")) -> Path:
    """`base`/runN for the first N from 1 that is not taken."""
    n = 1
    while (base / f"run{n}").exists():
        n += 1
    return base / f"run{n}"


def check_path(path: Path, force: bool) -> None:
    """Refuse to write over anything we should not (raises FileExistsError or PermissionError, one line)."""
    from capture.recording import Recording, RecordingError

    if path.exists() and not path.is_dir():
        raise FileExistsError(f"output path exists and is not a directory: {path}")
    if not path.exists():
        parent = next(p for p in path.absolute().parents if p.exists())
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot create {path}: {parent} is not a writable directory")
        return
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write into {path}")
    if not any(path.iterdir()):
        return
    try:
        Recording.open(path)
    except RecordingError as e:
        if (path / "zarr.json").exists():
            raise FileExistsError(f"{path} holds something that is not a readable recording, refusing to touch it ({e})") from None
        raise FileExistsError(f"output directory is not empty and is not a recording, refusing to touch it: {path}") from None
    if not force:
        raise FileExistsError(f"a recording already exists at {path}; pass force=True (--force) to replace it")
    if fmt.writer_alive(path):
        raise FileExistsError(f"another process is writing {path}; not replacing it")


def check_store(store: Store, force: bool) -> None:
    """check_path for a URL: reach the store and refuse to replace what we should not. Raises
    StoreError (an unreachable endpoint, no such bucket, refused credentials), PermissionError,
    FileExistsError; one line each, and nothing written."""
    from capture.recording import Recording, RecordingError

    store.check_writable()
    if store.is_empty():
        return
    try:
        Recording.open(store)
    except RecordingError as e:
        raise FileExistsError(f"{store} holds objects that are not a readable recording, refusing to touch them ({e})") from None
    if not force:
        raise FileExistsError(f"a recording already exists at {store}; pass force=True (--force) to replace it")
    if store.writer_alive():
        raise FileExistsError(f"another process is writing {store}; not replacing it")


def record(path: str | Path, keys: type[TensorKey], *, note: str = "", config: dict | None = None,
           seed: int | None = None, full_every: int | None = None, full_steps: list[tuple[int, int]] | None = None,
           only: list[TensorKey | str] | None = None, dtype: str = "float32", chunk_steps: int = 20,
           force: bool = False, **meta) -> RecordingSession:
    """Open a new recording at `path` for the keys of `keys` (a TensorKey enum); use it as a context manager.

    - `config`: any JSON-able dict, stored and shown as the run's configuration; `seed`, `note`: stored.
    - `full_every` / `full_steps`: keep full tensors only every M-th step / in these (start, end)
      ranges (summaries are kept for every step); `only`: store only these keys' tensors.
    - `dtype="float16"`: store the large float32 tensors as halves (summaries stay exact).
    - `chunk_steps`: steps written at a time, behind the loop.
    - `force`: replace a recording already at `path`.
    `path` is a directory, or a URL (`s3://bucket/prefix` with the AWS_* variables, `gs://`,
    `memory://name`): the same files, uploaded behind the loop (capture.store).
    Raises ValueError for a bad argument, FileExistsError / PermissionError for a path it must not
    or cannot write, StoreError for a store it cannot reach; nothing is written then. (`meta`, for the tool's own recipe: condition, device,
    command, recipe, and expect_steps, a hint of how many steps will come.)
    """
    if unknown := set(meta) - {"condition", "device", "command", "recipe", "expect_steps"}:
        raise TypeError(f"record() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    if not (isinstance(keys, type) and issubclass(keys, TensorKey) and len(keys)):
        raise ValueError(f"keys must be a TensorKey enum with members, not {keys!r}")
    if unknown := set(keys.derived()) - {k.value for k in keys}:
        raise ValueError(f"{keys.__name__}.derived() names {', '.join(sorted(unknown))}, not a key of {keys.__name__}")
    _check_names(keys)
    if full_every is not None and (isinstance(full_every, bool) or not isinstance(full_every, int) or full_every < 1):
        raise ValueError(f"full_every must be a positive integer, not {full_every!r}")
    if isinstance(chunk_steps, bool) or not isinstance(chunk_steps, int) or chunk_steps < 1:
        raise ValueError(f"chunk_steps must be a positive integer, not {chunk_steps!r}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', not {dtype!r}")
    bad_ranges = ValueError(f"full_steps must be a list of (start, end) ranges with 0 <= start <= end, not {full_steps!r}")
    try:
        ranges = [(int(a), int(b)) for a, b in (full_steps or [])]
    except (TypeError, ValueError):
        raise bad_ranges from None
    if any(a < 0 or b < a for a, b in ranges):
        raise bad_ranges
    if isinstance(only, (str, TensorKey)):
        only = [only]  # (one key)
    try:
        stored = None if only is None else [StepInspector(keys).key(k).value for k in only]
    except CaptureError as e:
        raise ValueError(f"only: {e}") from None
    if seed is not None:
        if isinstance(seed, bool) or not hasattr(seed, "__index__"):
            raise ValueError(f"seed must be an integer or None, not {seed!r}")
        seed = operator.index(seed)  # (an int, or numpy's)
    for field, value in {"note": note, **{k: meta.get(k) for k in ("condition", "device", "command", "recipe")}}.items():
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{field} must be a string, not {value!r}")
    _check_json(config)
    if is_url(path):  # an object store: reached and checked before anything is written
        path = open_store(path)
        check_store(path, force)
        if not path.is_empty():
            path.clear()
    else:
        path = Path(path)
        check_path(path, force)
        if path.exists() and any(path.iterdir()):
            import shutil

            shutil.rmtree(path)
    policy = Policy(stored, full_every, ranges, dtype)
    recorder = Recorder.create(path, keys, policy, meta.pop("expect_steps", 0), note=note, config=config, seed=seed, **meta)
    return RecordingSession(recorder, keys, chunk_steps)


def _check_names(keys: type[TensorKey]) -> None:
    """Refuse a vocabulary whose names would clash in the recording: with the summaries' names (a
    scalar key's summary is named as the key, a tensor's norm `<key>_norm`, and the recording's own
    `nonfinite` and `full_capture`), with `to_xarray`'s `summary_` prefix, or with the `step` dimension."""
    reserved = {fmt.NONFINITE, fmt.FULL_CAPTURE}
    norms = {f"{k.value}_norm": k.value for k in keys if k.dims}
    for k in keys:
        if k.value in reserved or k.value.startswith("summary_") or k.value == "step":
            raise ValueError(f"{keys.__name__}.{k.name}: {k.value!r} is a name the recording keeps for itself "
                             f"(step, {', '.join(sorted(reserved))}, summary_...)")
        if not k.dims and k.value in norms:
            raise ValueError(f"{keys.__name__}.{k.name}: the summary of scalar {k.value!r} would have the name of "
                             f"the norm of {norms[k.value]!r}")
        if "step" in k.dims:
            raise ValueError(f"{keys.__name__}.{k.name}: 'step' is the recording's first dimension, not one of a key's")
    scalars = {k.value for k in keys if not k.dims}
    for name in keys.summaries():
        if name in reserved or name in scalars or name in norms:
            raise ValueError(f"{keys.__name__}.summaries() names {name!r}, the name of a summary the recording makes itself")


def _check_json(config) -> None:
    import json

    if config is None:
        return
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, not {type(config).__name__}")
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"config is not JSON-able: {e}") from None

