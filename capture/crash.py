"""Test-only crashes at named points of the write path, to check what a crash there leaves behind.

`ACC_CAPTURE_CRASH=<point>[:<n>]` ends the process with `os._exit(EXIT_CODE)` the n-th time (1 if not
given) `crash_point(<point>)` is reached, as a kill would: no cleanup, no flush, no lock release.
The points: `data-written`, `published`, `mid-file`, `mid-row`, `resume`, `live-step`, `upload` (see
where they are called). A point reached in the writer process ends the training process too, with the same code.
The variable is read once, at import; unset, `crash_point` returns at its first test.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

VARIABLE = "ACC_CAPTURE_CRASH"
EXIT_CODE = 86  # what a crash point exits with (not one the CLI uses)
POINTS = ("data-written", "published", "mid-file", "mid-row", "resume", "live-step", "upload")


def _parse(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    name, _, n = text.partition(":")
    if name not in POINTS or not (n or "1").isdigit() or int(n or "1") < 1:
        raise ValueError(f"{VARIABLE}={text!r}: write <point>[:<n>], a point of {', '.join(POINTS)} and n >= 1")
    return name, int(n or "1")


_ARMED = _parse(os.environ.get(VARIABLE))
_LOCK = threading.Lock()  # (points may be reached from several writing threads at once)
_reached = 0


def crash_point(name: str, half_file: tuple[Path, bytes | list[bytes]] | None = None,
                half_at: tuple[int, int, bytes] | None = None) -> None:
    """End the process here if ACC_CAPTURE_CRASH names this point and this is its n-th time. First
    write half of the bytes meant for a new file (`half_file`: its path and bytes, or their parts) or for a place in
    an open one (`half_at`: its descriptor, the offset and the bytes)."""
    if _ARMED is None or _ARMED[0] != name:
        return
    global _reached
    with _LOCK:
        _reached += 1
        if _reached != _ARMED[1]:
            return
        if half_at is not None:
            fd, offset, data = half_at
            os.pwrite(fd, data[: len(data) // 2], offset)
            os.fsync(fd)
        if half_file is not None:
            path, data = half_file
            data = b"".join(data) if isinstance(data, list) else data
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
        os._exit(EXIT_CODE)
