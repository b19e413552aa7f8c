"""`acc-capture run`'s loop: the BCL recipe recorded through `record()`, a chunk of steps at a time.

The recipe's hooks capture every key and commit each step into the session; after each chunk of
steps the session is flushed with the training state after them, so `resume` continues exactly.
Training takes every core while the writer waits, and leaves it one while the writer works.
"""

from __future__ import annotations

from typing import Callable

import torch

from acc.recipe import InspectorHooks, Run
from capture.session import RecordingSession


def power_of_two(n: int) -> int:
    """The largest power of two at most `n` (at least 1)."""
    return 1 << (max(1, n).bit_length() - 1)


def thread_counts(cores: int) -> tuple[int, int]:
    """Torch threads for training (while the writer works, while it waits) on `cores` cores: one core
    left to a working writer (both crawl when training's threads must take turns with it), every
    core otherwise. Both are powers of two: BCL's training gives the same bits on 1, 2, 4, 8 or 16
    threads (acc.trainer.l1_loss; tests/test_recorder.py), not on 3, so which steps train on which
    count, a matter of timing, cannot change a recording."""
    return power_of_two(cores - 1), power_of_two(cores)


def train_and_record(run: Run, session: RecordingSession, steps: int, chunk_steps: int,
                     on_progress: Callable[[int], None] | None = None, threads: int | None = None) -> None:
    """Train `steps` steps of `run`, `chunk_steps` at a time; each chunk is written while the next trains.

    `on_progress(n)` is called as each chunk of n steps has trained. Training uses `thread_counts`
    of the cores torch has, chosen after each step and each hand-over by whether the writer is
    working; `threads`: that many threads throughout.
    """
    chunk_steps = min(chunk_steps, steps)  # (the ring holds three chunks: no larger than the steps asked for)
    session.flush_by_hand(chunk_steps)  # flushed here, with the state that continues after the chunk
    before = torch.get_num_threads()
    working, waiting = (threads, threads) if threads else thread_counts(before)
    now = working
    torch.set_num_threads(now)

    def follow_the_writer() -> None:
        nonlocal now
        if working == waiting:  # (one core, or `threads`: nothing to follow)
            return
        wanted = working if session.writing else waiting
        if wanted != now:
            torch.set_num_threads(wanted)
            now = wanted

    def commit() -> None:
        session.commit()
        follow_the_writer()

    hooks = InspectorHooks(run, session.inspector, commit=commit)
    try:
        done = 0
        while done < steps:
            n = min(chunk_steps, steps - done)
            run.trainer.train(n, training_metrics_fn=hooks.metrics_fn)
            session.flush(run.state_dict(copy=False))  # (serialised at once)
            follow_the_writer()  # (it has a chunk to write now)
            done += n
            if on_progress:
                on_progress(n)
    finally:
        torch.set_num_threads(before)
        hooks.remove()
