"""Recording format v1: array names, dimension names and the per-step summaries (docs/FORMAT.md)."""

from __future__ import annotations

from typing import Callable

import fcntl
import os
from pathlib import Path

import numpy as np

from acc.conditions import RunConfig
from acc.step_inspector import StepTensorKey as K

FORMAT_VERSION = 1
ATTRS_KEY = "acc_capture"
SUMMARY_CHUNK = 1024  # steps per chunk of a summary array
STATE_GROUP = "state"  # training state at the last completed step, for resume
DEAD_WIN_RATE = 0.01  # a feature whose win_rate is below this is dead

INT_KEYS = {K.NEIGHBORS, K.BATCH_LABELS}


def dim_sizes(config: RunConfig) -> dict[str, int]:
    side = int(round(config.input_dim ** 0.5))
    return {
        "image": config.batch_size, "channel": 1, "height": side, "width": side,
        "feature": config.hidden_dim, "other_feature": config.hidden_dim,
        "pixel": config.input_dim, "neighbor": config.bcl.neighborhood_k if config.bcl else 0,
    }


def condition_keys(config: RunConfig) -> list[K]:
    """The keys a run of this configuration captures (the control condition has no BCL keys)."""
    return [k for k in K if config.bcl is not None or not k.bcl]


def key_dtype(key: K) -> np.dtype:
    return np.dtype(np.int32 if key in INT_KEYS else np.float32)


def fill_value(dtype: np.dtype):
    """What an unwritten step reads as: NaN for floats, -1 for integers, False for booleans."""
    return {"f": float("nan"), "i": -1, "b": False}[dtype.kind]


def _offdiag_mean(m):
    n = m.shape[0]
    return (m.sum() - m.diagonal().sum()) / (n * n - n)


# name -> (dims after "step", dtype, the keys it needs, how to compute it from one step's captures)
Summary = tuple[tuple[str, ...], str, tuple[K, ...], Callable[[dict], object]]  # (one step's torch tensors -> a value)
SUMMARIES: dict[str, Summary] = {
    "loss": ((), "float32", (K.LOSS,), lambda s: s[K.LOSS]),
    **{
        k.value: (k.dims, "float32", (k,), (lambda s, k=k: s[k]))
        for k in (K.WIN_RATE, K.FEATURE_NOVELTY, K.GRADIENT_WEIGHT, K.CONTENDER_WEIGHT, K.ATTRACTION_WEIGHT, K.IMAGE_COVERAGE)
    },
    "dead_features": ((), "int32", (K.WIN_RATE,), lambda s: (s[K.WIN_RATE] < DEAD_WIN_RATE).sum()),
    "weight_cosine_offdiag": ((), "float32", (K.WEIGHT_COSINE_MATRIX,), lambda s: _offdiag_mean(s[K.WEIGHT_COSINE_MATRIX])),
    "som_target_cosine_offdiag": ((), "float32", (K.SOM_TARGET_COSINE_MATRIX,), lambda s: _offdiag_mean(s[K.SOM_TARGET_COSINE_MATRIX])),
    "grad_cosine_offdiag": ((), "float32", (K.GRAD_COSINE_MATRIX,), lambda s: _offdiag_mean(s[K.GRAD_COSINE_MATRIX])),
    "grad_raw_norm": ((), "float32", (K.GRAD_RAW,), lambda s: s[K.GRAD_RAW].norm()),
    "grad_masked_norm": ((), "float32", (K.GRAD_MASKED,), lambda s: s[K.GRAD_MASKED].norm()),
    "som_delta_norm": ((), "float32", (K.SOM_DELTA,), lambda s: s[K.SOM_DELTA].norm()),
    "update_norm": ((), "float32", (K.ENCODER_WEIGHTS, K.ENCODER_WEIGHTS_POST),
                    lambda s: (s[K.ENCODER_WEIGHTS_POST] - s[K.ENCODER_WEIGHTS]).norm()),
    "nonfinite": ((), "int32", (), lambda s: sum(int((~t.isfinite()).sum()) for t in s.values() if t.is_floating_point())),
}
# written by the recorder from its policy, not computed from the captures
FULL_CAPTURE = "full_capture"


def summary_names(captured: list[K]) -> list[str]:
    have = set(captured)
    return [name for name, (_, _, needs, _) in SUMMARIES.items() if set(needs) <= have]


def summarize(step: dict, names: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        dims, dtype, _, fn = SUMMARIES[name]
        value = fn(step)
        out[name] = np.asarray(value.numpy() if hasattr(value, "numpy") else value, dtype=dtype)
    return out


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """'0-50,1000-1050,7' -> [(0, 50), (1000, 1050), (7, 7)], inclusive at both ends."""
    ranges = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            raise ValueError(f"--full-steps: {part!r} is not a step or a range like 0-50") from None
        if a < 0 or b < a:
            raise ValueError(f"--full-steps: {part!r} is not a range of steps (need 0 <= start <= end)")
        ranges.append((a, b))
    return ranges


def lock_writer(path: Path) -> int:
    """Take the recording's writer lock: an flock on the directory itself, released when the process ends.

    Raises BlockingIOError if another process holds it. A status of `recording` with the lock free
    means the writer died: the recording is `interrupted`.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    return fd


def writer_alive(path: Path) -> bool:
    """True while a process holds the recording's writer lock."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
