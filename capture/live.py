"""Live stepping: one session owns a model, trains it on request and appends each step to its recording.

`InspectAPI.handle(method, path, body)` answers the `/inspect/` HTTP API of the original plan with
no HTTP framework of its own; the viewer's server routes requests to it. Training runs on a worker
thread, so `state` answers while a step runs; a second step request meanwhile gets 409.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from acc.conditions import CONDITIONS, RunConfig, check_seed, make_config
from acc.recipe import build_run, resolve_device
from acc.step_inspector import StepTensorKey
from capture import format as fmt
from capture.crash import crash_point
from capture.recorder import save_state
from capture.recording import Recording, RecordingError
from capture.runner import train_and_record
from capture.session import RecordingSession, check_path, next_free_run, record

MAX_STEPS_PER_REQUEST = 500


class LiveError(Exception):
    """A live session cannot open; the message says why in one line."""


class LiveSession:
    """A recording open for appending, with the run that continues it exactly as `resume` would."""

    def __init__(self, path: Path, device: str = "auto", chunk_steps: int = 10, command: str = "acc-capture serve"):
        rec = Recording.open(path)
        if rec.recipe != fmt.BCL_RECIPE:
            raise ValueError(f"{path} was not recorded by `acc-capture run`; only those can be stepped live")
        self.path, self.condition, self.chunk_steps = Path(path), rec.condition, chunk_steps
        self.config = RunConfig.from_dict(rec.condition, rec.meta["config"])
        self.run = build_run(self.config, rec.meta["seed"], resolve_device(device))
        self.session, _ = RecordingSession.resume(self.path, StepTensorKey, command, apply=self.run.load_state_dict)

    @classmethod
    def create(cls, path: Path, condition: str, seed: int = 0, device: str = "auto", note: str = "") -> LiveSession:
        """A new, empty recording of `condition` at `path`, opened for stepping."""
        config = make_config(condition)
        dev = resolve_device(device)
        run = build_run(config, seed, dev)
        command = shlex.join(["acc-capture", "serve", "--condition", condition])
        session = record(path, StepTensorKey, note=note, config=config.to_dict(), seed=seed, condition=condition,
                         device=dev, command=command, recipe=fmt.BCL_RECIPE)
        save_state(session.path, 0, run.state_dict(copy=False))
        session.close("complete")
        return cls(path, device)

    @property
    def steps(self) -> int:
        return self.session.steps_completed

    @property
    def recorder(self):
        return self.session.recorder

    def step(self, n: int) -> None:
        """Train and record n steps; they are on disk when this returns."""
        train_and_record(self.run, self.session, n, self.chunk_steps)
        crash_point("live-step")
        self.session.sync()

    def close(self) -> None:
        self.session.close("complete")

    def abandon(self) -> None:
        """After a failure inside a step: drop the steps not yet handed to the writer, wait for those
        that were, and close (the recording stays complete up to them, resumable)."""
        self.session.discard()
        try:
            self.session.close("complete")
        except Exception:  # the writer's own failure: what it published is intact
            self.session.recorder.close()


class InspectAPI:
    """The `/inspect/` endpoints over at most one LiveSession. `handle()` returns (HTTP status, JSON body)."""

    def __init__(self, session: LiveSession | None = None, recordings_dir: Path = Path("recordings"),
                 on_new_recording=None, device: str = "auto", on_change=None):
        self.session, self.recordings_dir, self.device = session, Path(recordings_dir), device
        self.on_new_recording = on_new_recording  # called with the path of a recording made by setup
        # called with a recording's path after steps were appended to it or its session closed, while no
        # other request can change it (the server rebuilds the recording's viewer there)
        self.on_change = on_change
        self._lock = threading.Lock()  # held while a step runs
        self._busy_with = 0
        self._error: BaseException | None = None

    # -- routing
    def handle(self, method: str, path: str, body: bytes = b"") -> tuple[int, object]:
        path = path.split("?", 1)[0].rstrip("/")
        try:
            if method == "GET" and path == "/inspect/state":
                return 200, self.state()
            if method == "GET" and path == "/inspect/history":
                return self._with_session(self.history)
            if method == "GET" and (m := re.fullmatch(r"/inspect/step/([^/]+)", path)):
                return self._with_session(lambda session: self.step_data(session, m.group(1)))
            if method == "POST" and path in ("/inspect/setup", "/inspect/step", "/inspect/teardown"):
                try:
                    args = json.loads(body or b"{}")
                except (ValueError, RecursionError) as e:  # (not JSON, not UTF-8, a 5,000-digit number, nested too deep)
                    return 400, {"error": f"malformed JSON body: {str(e)[:200]}"}
                if not isinstance(args, dict):
                    return 400, {"error": "the JSON body must be an object"}
                return {"/inspect/setup": self.setup, "/inspect/step": self.step,
                        "/inspect/teardown": self.teardown}[path](args)
            if path.startswith("/inspect/"):
                return 404, {"error": f"no endpoint {method} {path}"}
            return 404, {"error": "not an /inspect/ path"}
        except _Reply as r:
            return r.status, {"error": r.message}

    def _with_session(self, fn):
        session = self.session  # (read once: a teardown may end it meanwhile; its recording stays readable)
        if session is None:
            raise _Reply(409, "no active session; POST /inspect/setup first")
        return 200, fn(session)

    # -- endpoints
    def state(self) -> dict:
        s = self.session
        if s is None:
            return {"active": False, "busy": False, "step": None, "total_steps": 0, "condition": None,
                    "conditions": list(CONDITIONS)}
        return {
            "active": True, "conditions": list(CONDITIONS), "busy": self._lock.locked(), "running_steps": self._busy_with,
            "step": s.steps - 1 if s.steps else None, "total_steps": s.steps, "condition": s.condition, "path": str(s.path),
            "model_dim": s.config.hidden_dim, "image_shape": [1, 28, 28],
        }

    def setup(self, args: dict) -> tuple[int, dict]:
        condition, seed = args.get("condition", "bcl-slow"), args.get("seed", 0)
        if not isinstance(condition, str) or condition not in CONDITIONS:
            raise _Reply(400, f"unknown condition {condition!r}; choose one of: {', '.join(CONDITIONS)}")
        try:
            check_seed(seed)
        except ValueError as e:
            raise _Reply(400, str(e)) from None
        if not self._lock.acquire(blocking=False):
            raise _Reply(409, "a step is running; try again when it is done")
        try:
            self._close_session()
            path = next_free_run(self.recordings_dir)
            self.session = LiveSession.create(path, condition, seed=seed, device=self.device)
        finally:
            self._lock.release()
        if self.on_new_recording:
            self.on_new_recording(path)
        return 200, {"status": "ready", **self.state()}

    def step(self, args: dict) -> tuple[int, dict]:
        n = args.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_STEPS_PER_REQUEST:
            raise _Reply(400, f"n must be an integer from 1 to {MAX_STEPS_PER_REQUEST}, not {n!r}")
        if self.session is None:
            raise _Reply(409, "no active session; POST /inspect/setup first")
        if not self._lock.acquire(blocking=False):
            raise _Reply(409, f"a step of {self._busy_with} is already running")
        try:
            s = self.session  # (read once, under the lock: a teardown may have ended it since the check above)
            if s is None:
                raise _Reply(409, "no active session; POST /inspect/setup first")
            self._busy_with = n
            before = s.steps
            worker = threading.Thread(target=self._step_worker, args=(s, n), name="acc-capture-step", daemon=True)
            worker.start()
            worker.join()  # this request waits; others (state) are answered meanwhile
            if self._error is not None:
                # the model may have trained steps that never reached the disk: keep what the writer was
                # handed, then continue from the state saved with it
                self.session = None
                s.abandon()
                if s.steps != before:
                    self._changed(s.path)
                why = f"training failed after {s.steps - before} of {n} steps were recorded: {self._error}"
                try:
                    self.session = LiveSession(s.path, self.device, s.chunk_steps)
                except Exception as e:
                    raise _Reply(500, f"{why}; the session is closed ({e})") from None
                raise _Reply(500, why)
            if s.steps != before:
                self._changed(s.path)
            last = s.steps - 1
            rec = Recording.open(s.path)
            return 200, {"step": last, "steps_completed": s.steps, "loss": float(rec.summary("loss")[last]),
                         "keys": rec.keys, "path": str(s.path)}
        finally:
            self._busy_with = 0
            self._lock.release()

    def _step_worker(self, session: LiveSession, n: int) -> None:
        self._error = None
        try:
            session.step(n)
        except Exception as e:  # reported to the client as 500
            self._error = e

    def teardown(self, args: dict) -> tuple[int, dict]:
        if not self._lock.acquire(blocking=False):
            raise _Reply(409, "a step is running; try again when it is done")
        try:
            self._close_session()
        finally:
            self._lock.release()
        return 200, {"status": "torn_down"}

    def close(self) -> None:
        """Close the session for good, first waiting for a running step to finish (Ctrl-C of `serve`)."""
        with self._lock:
            self._close_session()

    def _close_session(self) -> None:
        """(with the lock held) Leave the session's recording complete and resumable."""
        if self.session is not None:
            s, self.session = self.session, None
            s.close()
            self._changed(s.path)

    def _changed(self, path: Path) -> None:
        if self.on_change is not None:
            self.on_change(path)

    def history(self, session: LiveSession) -> list[dict]:
        rec = Recording.open(session.path)
        names = [n for n in ("loss", "win_rate", "feature_novelty", "gradient_weight", "contender_weight",
                             "attraction_weight", "image_coverage", "dead_features") if n in rec.summaries]
        cols = {n: rec.summary(n).tolist() for n in names}
        return [{"step": t, "keys": rec.keys, **{n: cols[n][t] for n in names}} for t in range(rec.steps)]

    def step_data(self, session: LiveSession, text: str) -> dict:
        try:
            n = int(text)
        except ValueError:
            raise _Reply(400, f"step must be an integer, not {text!r}") from None
        rec = Recording.open(session.path)
        if not 0 <= n < rec.steps:
            raise _Reply(404, f"step {n} is not recorded (steps 0..{rec.steps - 1})")
        if not rec.full_capture[n]:
            raise _Reply(404, f"step {n} kept summaries only")
        data = rec.step(n)
        return {"step": n, "keys": list(data), **{k: _jsonable(v) for k, v in data.items()}}


def _jsonable(a: np.ndarray):
    return a.item() if a.ndim == 0 else np.where(np.isfinite(a), a, None).tolist() if a.dtype.kind == "f" else a.tolist()


class _Reply(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def open_live_server(path: Path | None, condition: str | None, seed: int | None, device: str, port: int,
                     recordings_dir: Path, *, make_server: Callable, build: Callable):
    """What `serve` starts, not yet serving: a server bound to 127.0.0.1:`port` (made by `make_server(None,
    port)`) whose `api` (an InspectAPI) holds a session on `path`, or on a new recording of `condition`
    at the next free `recordings_dir`/runN, with the page built into the recording by `build(rec)`.
    Bad input raises LiveError; what `make_server` or `build` raise passes through."""
    if path is not None and (condition is not None or seed is not None):
        raise LiveError("--condition and --seed are for a new recording; a recording continues with its own")
    if path is None and (condition := condition or "bcl-slow") not in CONDITIONS:
        raise LiveError(f"unknown condition {condition!r}; choose one of: {', '.join(CONDITIONS)}")
    if seed is not None:
        try:
            check_seed(seed)
        except ValueError as e:
            raise LiveError(str(e)) from None
    if path is not None:
        try:
            rec = Recording.open(path)
        except RecordingError as e:
            raise LiveError(str(e)) from None
        if rec.status == "recording":
            raise LiveError(f"another process is writing {path}")
    server = make_server(None, port)  # bind first: a port in use fails before anything is loaded or written
    try:
        api = _open_session(path, condition, seed or 0, device, Path(recordings_dir))
        try:
            build(Recording.open(api.session.path))
            server.set_root(api.session.path)
        except BaseException:
            api.close()
            raise
        server.attach(api)
    except BaseException:
        server.server_close()
        raise
    return server


def _open_session(path: Path | None, condition: str | None, seed: int, device: str, recordings_dir: Path):
    """An InspectAPI with a session on `path`, or on a new recording of `condition` at the next free runN."""
    from acc.data import DataError

    command = shlex.join(["acc-capture", *sys.argv[1:]])
    try:
        if path is None:
            new = next_free_run(recordings_dir)
            check_path(new, force=False)
            session = LiveSession.create(new, condition, seed=seed, device=device)
        else:
            session = LiveSession(path, device, command=command)
    except BlockingIOError:
        raise LiveError(f"another process is writing {path}") from None
    except FileNotFoundError as e:  # no saved training state to continue from
        raise LiveError(str(e)) from None
    except (DataError, RecordingError, ValueError, FileExistsError, PermissionError) as e:
        raise LiveError(str(e)) from None
    return InspectAPI(session, recordings_dir=recordings_dir, device=device)
