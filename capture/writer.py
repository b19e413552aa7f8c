"""Writing committed steps behind the training loop, on another core.

The loop's side (`RecordingSession`) fills a `Ring`: `blocks` blocks of `rows` steps of every
captured key, in one piece of shared memory. Each capture is copied once, straight into its row
(`StepInspector.into`). A filled block is handed to the writer, which computes the summaries,
encodes and writes the files and publishes the steps (`Recorder.write`), then gives the block back.

The writer is a process of its own (`ProcessWriter`, `python -m capture.writer`), so compression and
summaries never take turns with training on the GIL. It shares the ring through a memfd. The
training process holds the recording's writer lock; the writer ends as soon as that process does,
however it ends (what it published is whole: files are replaced atomically or only new rows
written in place, `steps_completed` raised last), so a killed run reads `interrupted` at once. Where a process cannot be used (not
Linux; a vocabulary whose own summaries live in a script's `__main__`; a `memory://` store;
`ACC_CAPTURE_WRITER=thread`) the writer is a thread
(`ThreadWriter`) with the same interface.
"""

from __future__ import annotations

import mmap
import os
import pickle
import queue
import select
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from capture.crash import EXIT_CODE
from capture.recorder import Recorder, save_state_to, state_bytes

VARIABLE = "ACC_CAPTURE_WRITER"  # "thread": write on a thread of the training process


class Ring:
    """`blocks` blocks, each holding `rows` steps of every key of `signature` ({key: (shape, dtype)}),
    in one shared mapping (a memfd, `fd`; or the one `fd` names in the writer process). Where no
    memfd can be had (a file-size limit forbids it) the mapping is private and `fd` None: a process
    writer is then sent the blocks' bytes."""

    def __init__(self, signature: dict[str, tuple[tuple[int, ...], str]], rows: int, blocks: int = 3,
                 fd: int | None = None):
        self.signature, self.rows, self.blocks = signature, rows, blocks
        offsets, size = [], 0
        for _ in range(blocks):
            here = {}
            for key, (shape, dtype) in signature.items():
                size = -(-size // 64) * 64
                here[key] = size
                size += rows * int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            offsets.append(here)
        if fd is None:
            fd = os.memfd_create("acc-capture-ring", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, max(size, 1))
            except OSError:  # (RLIMIT_FSIZE counts a memfd too)
                os.close(fd)
                fd = None
        self.fd = fd
        self._map = mmap.mmap(-1 if fd is None else fd, max(size, 1))
        self.arrays: list[dict[str, np.ndarray]] = [
            {key: np.ndarray((rows, *shape), np.dtype(dtype), buffer=self._map, offset=here[key])
             for key, (shape, dtype) in signature.items()} for here in offsets]

    def spec(self) -> tuple:
        """What the writer process needs to map the same ring (with the descriptor)."""
        return self.signature, self.rows, self.blocks

    def block(self, index: int, n: int) -> dict[str, np.ndarray]:
        """The first n steps of block `index`, by key."""
        return {key: arr[:n] for key, arr in self.arrays[index].items()}

    def close(self) -> None:
        """Let go of the memfd; the mapping lives as long as an array of it (numpy does not pin it
        against mmap.close, so it is never closed by hand)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class WriterError(OSError):
    """The writer process ended without a word (it was killed, or failed to start)."""


class ThreadWriter:
    """The writer as a thread of the training process (see the module); blocks are written in order."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.ring: Ring | None = None
        self.steps_completed = recorder.steps_completed
        self._queue: queue.Queue = queue.Queue()
        self._busy: set[int] = set()
        self._done = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="acc-capture-writer", daemon=True)
        self._thread.start()

    def attach(self, ring: Ring) -> None:
        self.ring = ring

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            index, t0, n, state = item
            if self._error is None:
                try:
                    self.recorder.write(t0, self.ring.block(index, n), state)
                    self.steps_completed = self.recorder.steps_completed
                except BaseException as e:  # handed to the training thread
                    self._error = e
            with self._done:
                self._busy.discard(index)
                self._done.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, index: int, t0: int, n: int, state: dict | None) -> None:
        """Write the first n steps of block `index` (steps t0..) and then the training state after
        them (serialised here: its tensors go on changing)."""
        self._raise()
        with self._done:
            self._busy.add(index)
        self._queue.put((index, t0, n, None if state is None else state_bytes(state)))

    @property
    def busy(self) -> bool:
        """Blocks handed over are still being written."""
        return bool(self._busy)

    def free(self, index: int) -> None:
        """Wait until block `index` is written (raises the writer's error)."""
        with self._done:
            self._done.wait_for(lambda: index not in self._busy)
        self._raise()

    def wait(self) -> None:
        """Wait until everything submitted is written (raises the writer's error)."""
        with self._done:
            self._done.wait_for(lambda: not self._busy)
        self._raise()

    def close(self, status: str) -> None:
        """Write what was submitted, then leave the recording `status` (interrupted after an error, which
        is raised) and release the lock."""
        self._queue.put(None)
        self._thread.join()
        try:
            self.recorder.finish("interrupted" if self._error else status)
        except OSError:
            self.recorder.close()
            if self._error is None:
                raise
        self._raise()


class ProcessWriter:
    """The writer as a process of its own (see the module), driven over a socket: "open", "ring" (with
    the memfd), "write" and "finish" messages; it answers each write with the steps it has completed."""

    def __init__(self, recorder: Recorder, vocabularies: list[str]):
        self.recorder = recorder
        self.ring: Ring | None = None
        self.steps_completed = recorder.steps_completed
        self._busy: set[int] = set()
        self._states: dict[int, int | None] = {}  # a memfd per ring block for the state handed over with it
        self._error: BaseException | None = None
        self.process, self._socket = _take_started() or _spawn()
        self._conn = Connection(os.dup(self._socket.fileno()))
        self._send(("open", str(recorder.path), vocabularies, recorder.expect_steps))

    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except OSError:
            self._lost()

    def _lost(self) -> None:
        """The writer process is gone: a crash point ends this process too; else it is an error."""
        code = self.process.wait()
        if code == EXIT_CODE:
            os._exit(EXIT_CODE)
        raise WriterError(f"the writer process ended unexpectedly (exit code {code})")

    def _receive(self) -> tuple:
        """Take one answer from the writer: ("done", block, steps completed), ("error", exception,
        block or None) or ("finished", steps completed)."""
        try:
            answer = self._conn.recv()
        except (EOFError, OSError):
            self._lost()
        if answer[0] == "done":
            self._busy.discard(answer[1])
            self.steps_completed = answer[2]
        elif answer[0] == "error":
            self._busy.discard(answer[2])
            self._error = self._error or answer[1]
        else:
            self.steps_completed = answer[1]
        return answer

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _pump(self) -> None:
        while self._conn.poll():
            self._receive()

    def attach(self, ring: Ring) -> None:
        self.ring = ring
        self._send(("ring", ring.spec() if ring.fd is not None else None))
        if ring.fd is not None:
            socket.send_fds(self._socket, [b"r"], [ring.fd])

    def submit(self, index: int, t0: int, n: int, state: dict | None) -> None:
        """Hand block `index` over, with the training state after it serialised into the block's
        memfd (made once, its pages used again; see `_state_memfd`); the message only says its size.
        A message is read only when the writer is done with the one before: 1.7 MB of state in it
        kept training waiting (0.9 ms a step, every key)."""
        self._pump()
        self._raise()
        self._busy.add(index)
        values = None if self.ring.fd is not None else self.ring.block(index, n)  # (a private ring: sent)
        fd = self._state_memfd(index) if state is not None else None
        if fd is not None:
            with os.fdopen(os.dup(fd), "r+b") as file:  # (the dup shares the memfd's offset: back to 0)
                file.seek(0)
                save_state_to(file, state)
                state = file.tell()  # (its size; bytes past it are an earlier state's, never read)
        elif state is not None:
            state = state_bytes(state)
        self._send(("write", index, t0, n, state, values))
        if fd is not None:
            socket.send_fds(self._socket, [b"s"], [fd])

    def _state_memfd(self, index: int) -> int | None:
        """Block `index`'s memfd for the training state (None where no memfd can be had): the writer
        has read it before it answers that block, and a block is filled again only after."""
        if index not in self._states:
            try:
                self._states[index] = os.memfd_create("acc-capture-state", os.MFD_CLOEXEC)
            except OSError:
                self._states[index] = None
        return self._states[index]

    @property
    def busy(self) -> bool:
        self._pump()
        return bool(self._busy)

    def free(self, index: int) -> None:
        while index in self._busy:
            self._receive()
        self._raise()

    def wait(self) -> None:
        while self._busy:
            self._receive()
        self._raise()

    def close(self, status: str) -> None:
        try:
            self._send(("finish", status))
            while self._receive()[0] != "finished":
                pass
            self.process.wait()
        finally:
            self._conn.close()
            self._socket.close()
            for fd in filter(None, self._states.values()):
                os.close(fd)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.recorder.close()  # (the lock, once the writer process is gone)
        self._raise()


def _from_memfd(sock: socket.socket, size: int) -> bytes:
    """The first `size` bytes of the memfd the training process sends next on `sock` (see
    ProcessWriter.submit)."""
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    try:
        parts, done = [], 0
        while done < size:
            part = os.pread(fds[0], size - done, done)
            if not part:
                raise EOFError(f"the training state ended at byte {done} of {size}")
            parts.append(part)
            done += len(part)
        return b"".join(parts)
    finally:
        os.close(fds[0])


def _spawn(torch: bool = False) -> tuple[subprocess.Popen, socket.socket]:
    """A writer process, waiting for its "open" message, and this end of its socket (`torch`: it
    imports torch first)."""
    ours, theirs = socket.socketpair()
    paths = [str(Path(__file__).resolve().parent.parent), *(p or os.getcwd() for p in sys.path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}  # (it imports what this process can)
    process = subprocess.Popen([sys.executable, "-m", "capture.writer", str(theirs.fileno()), *(["torch"] if torch else [])],
                               pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
    theirs.close()
    return process, ours


_started: tuple[subprocess.Popen, socket.socket] | None = None


def prestart(torch: bool = False) -> None:
    """Start a writer process now, so that its imports overlap the caller's own start-up (the CLI
    calls this before it loads torch and the data); the next recording's writer takes it. Unused,
    it ends with this process. `torch`: the recording stores float16, which the writer converts
    with torch; it imports torch now too, rather than at its first write (about 2 s, while
    training waits for the ring)."""
    global _started
    if _started is None and _processes():
        _started = _spawn(torch)


def _take_started() -> tuple[subprocess.Popen, socket.socket] | None:
    global _started
    started, _started = _started, None
    if started is not None and started[0].poll() is not None:  # (it ended: start another)
        started[1].close()
        return None
    return started


def vocabularies_of(keys) -> list[str] | None:
    """Where the writer process imports the vocabularies whose own summaries or derived keys a
    recording of `keys` computes ("module:qualname" each); None if one cannot be imported there
    (defined in __main__)."""
    from acc.step_inspector import TensorKey

    out = []
    for vocabulary in getattr(keys, "merged_from", (keys,)):
        if all(getattr(getattr(vocabulary, name), "__func__", None) is getattr(TensorKey, name).__func__
               for name in ("summaries", "derived")):
            continue  # nothing of its own
        module, name = vocabulary.__module__, vocabulary.__qualname__
        if module == "__main__" or "<" in name or not _importable(module):
            return None
        out.append(f"{module}:{name}")
    return out


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def start_writer(recorder: Recorder, keys) -> ThreadWriter | ProcessWriter:
    """The writer for a recording of `keys`: a process where it can be (see the module), else a thread."""
    sources = vocabularies_of(keys)
    if not _processes() or sources is None or not recorder.store.shared:
        return ThreadWriter(recorder)
    return ProcessWriter(recorder, sources)


def _processes() -> bool:
    """Whether writers may be processes here at all (Linux's memfd, and not ACC_CAPTURE_WRITER=thread)."""
    return os.environ.get(VARIABLE) != "thread" and hasattr(os, "memfd_create")


# -- the writer process -----------------------------------------------------------------------------

def _vocabularies(sources: list[str]) -> tuple[dict, dict]:
    """The own summaries and the derived keys of the vocabularies at `sources` (see vocabularies_of)."""
    import importlib

    own, derived = {}, {}
    for source in sources:
        module, name = source.split(":")
        vocabulary = importlib.import_module(module)
        for part in name.split("."):
            vocabulary = getattr(vocabulary, part)
        own.update(vocabulary.summaries())
        derived.update(vocabulary.derived())
    return own, derived


def _end_with_parent() -> None:
    """End this process as soon as the training process does (killed or not): what it published stays."""
    parent = os.getppid()
    try:
        fd = os.pidfd_open(parent)
    except (AttributeError, OSError):
        fd = None

    def watch() -> None:
        while True:
            if fd is not None:
                select.select([fd], [], [])
                os._exit(0)
            if os.getppid() != parent:
                os._exit(0)
            threading.Event().wait(0.05)

    threading.Thread(target=watch, name="acc-capture-parent", daemon=True).start()


def _error(e: BaseException) -> BaseException:
    """`e` if it pickles, else a RuntimeError saying the same."""
    try:
        pickle.dumps(e)
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


def serve(fd: int, with_torch: bool = False) -> None:
    """The writer process: answer the training process's messages until "finish" (`with_torch`:
    import torch first; see `prestart`)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (Ctrl-C is the training process's to handle)
    _end_with_parent()
    if with_torch:
        import torch  # noqa: F401
    sock = socket.socket(fileno=fd)
    conn = Connection(os.dup(fd))
    recorder, ring, failed = None, None, False
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the training process let go of this writer without a word
            return
        kind = message[0]
        if kind == "finish":
            try:
                if recorder is not None:
                    recorder.finish("interrupted" if failed else message[1])
            except BaseException as e:
                conn.send(("error", _error(e), None))
            conn.send(("finished", recorder.steps_completed if recorder else 0))
            return
        try:
            if kind == "open":
                _, location, sources, expect = message
                own, derived = _vocabularies(sources)
                recorder = Recorder.attach(location, own, expect, derived)
            elif kind == "ring" and message[1] is not None:
                _, fds, _, _ = socket.recv_fds(sock, 1, 1)
                ring = Ring(*message[1], fd=fds[0])
            elif kind == "write":
                _, index, t0, n, state, values = message
                if isinstance(state, int):  # (its size: the bytes come in a memfd)
                    state = _from_memfd(sock, state)
                if not failed:
                    recorder.write(t0, values if values is not None else ring.block(index, n), state)
                conn.send(("done", index, recorder.steps_completed))
        except BaseException as e:
            failed = True
            conn.send(("error", _error(e), message[1] if kind == "write" else None))

if __name__ == "__main__":
    serve(int(sys.argv[1]), with_torch="torch" in sys.argv[2:])
