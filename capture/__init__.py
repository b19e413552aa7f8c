"""acc-capture: record every tensor of every training step to Zarr, replay it in a static viewer.

The public face: `record()` (a recording of any training loop, keys from a `TensorKey` vocabulary),
`watch()` / `merge()` (keys of a model's modules, without writing hooks), `Recording` (reading one
back), `diff()` (where two recordings part). What records imports torch; reading does not, so it is
loaded on first use.
"""

from acc.step_inspector import CaptureError, StepInspector, TensorKey
from capture.diff import DiffResult, diff
from capture.recording import Recording, RecordingError

_LAZY = {"record": "capture.session", "RecordingSession": "capture.session",
         "watch": "capture.modules", "merge": "capture.modules", "Watch": "capture.modules"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'capture' has no attribute {name!r}")


__all__ = ["CaptureError", "DiffResult", "Recording", "RecordingError", "RecordingSession", "StepInspector", "TensorKey",
           "Watch", "diff", "merge", "record", "watch"]
