"""`acc-capture run`'s loop: the BCL recipe recorded through `record()`, a chunk of steps at a time.

The recipe's hooks capture every key and commit each step into the session; after each chunk of
steps the session is flushed with the training state after them, so `resume` continues exactly.
"""

from __future__ import annotations

from typing import Callable

import torch

from acc.recipe import InspectorHooks, Run
from capture.session import RecordingSession


def train_and_record(run: Run, session: RecordingSession, steps: int, chunk_steps: int,
                     on_progress: Callable[[int], None] | None = None, threads: int | None = None) -> None:
    """Train `steps` steps of `run`, `chunk_steps` at a time; each chunk is written while the next trains.

    `on_progress(n)` is called as each chunk of n steps has trained. Training uses `threads` torch
    threads (default: one fewer than it had, leaving a core to the writer; the same for every policy,
    since the thread count changes the rounding of training's sums, and recordings of one run under
    two policies must agree bit for bit).
    """
    session.flush_by_hand(chunk_steps)  # flushed here, with the state that continues after the chunk
    hooks = InspectorHooks(run, session.inspector, commit=session.commit)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or max(1, before - 1))  # a core for the writer: oversubscribed, both crawl
    try:
        done = 0
        while done < steps:
            n = min(chunk_steps, steps - done)
            run.trainer.train(n, training_metrics_fn=hooks.metrics_fn)
            session.flush(run.state_dict(copy=False))  # (serialised at once)
            done += n
            if on_progress:
                on_progress(n)
    finally:
        torch.set_num_threads(before)
        hooks.remove()
