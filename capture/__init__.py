"""acc-capture: record every tensor of every training step to Zarr, replay it in a static viewer."""

from acc.step_inspector import CaptureError, StepInspector, TensorKey
from capture.diff import DiffResult, diff
from capture.recording import Recording, RecordingError
from capture.session import RecordingSession, record

__all__ = ["CaptureError", "DiffResult", "Recording", "RecordingError", "RecordingSession", "StepInspector", "TensorKey", "diff", "record"]
