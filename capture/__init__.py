"""acc-capture: record every tensor of every training step to Zarr, replay it in a static viewer."""

from capture.recording import Recording, RecordingError

__all__ = ["Recording", "RecordingError"]
