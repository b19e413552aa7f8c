"""The `acc-capture` command line."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from acc.conditions import CONDITIONS, UnknownCondition, make_config
from acc.step_inspector import StepTensorKey
from capture import format as fmt
from capture.recording import Recording, RecordingError

app = typer.Typer(
    help="Record every tensor of every BCL training step to Zarr, and replay it in a static viewer.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
out = Console(highlight=False)


class Fail(Exception):
    """A bad input or an environment problem: one line on stderr, exit code 1."""


class LargeFloat(str, Enum):
    float32 = "float32"
    float16 = "float16"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def next_free_run(base: Path = Path("recordings")) -> Path:
    n = 1
    while (base / f"run{n}").exists():
        n += 1
    return base / f"run{n}"


def parse_keys(text: str | None, condition_keys: list[StepTensorKey], condition: str) -> list[StepTensorKey]:
    if text is None:
        return condition_keys
    keys = []
    for name in filter(None, (p.strip() for p in text.split(","))):
        try:
            key = StepTensorKey(name)
        except ValueError:
            raise Fail(f"unknown key {name!r}; see `acc-capture conditions` for the keys") from None
        if key not in condition_keys:
            raise Fail(f"key {name!r} is not captured by condition {condition!r} (it has no BCL)")
        if key not in keys:
            keys.append(key)
    if not keys:
        raise Fail("--keys names no key")
    return keys


def check_output(path: Path, force: bool) -> bool:
    """Refuse to write over anything we should not; True if an old recording is to be replaced."""
    if path.exists() and not path.is_dir():
        raise Fail(f"output path exists and is not a directory: {path}")
    if not path.exists():
        parent = next(p for p in path.absolute().parents if p.exists())
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise Fail(f"cannot create {path}: {parent} is not a writable directory")
        return False
    if not any(path.iterdir()):
        return False
    try:
        Recording.open(path)
    except RecordingError as e:
        if (path / "zarr.json").exists():
            raise Fail(f"{path} holds something that is not a readable recording, refusing to touch it ({e})") from None
        raise Fail(f"output directory is not empty and is not a recording, refusing to touch it: {path}") from None
    if not force:
        raise Fail(f"a recording already exists at {path}; pass --force to replace it")
    if fmt.writer_alive(path):
        raise Fail(f"another process is writing {path}; not replacing it")
    return True


class StepsPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} steps/s" if task.speed else "- steps/s")


@app.command()
def run(
    steps: Annotated[int, typer.Option(help="Training steps to record.")] = 200,
    condition: Annotated[str, typer.Option(help="Condition to train under (see `conditions`).")] = "bcl-slow",
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Recording directory [default: next free recordings/runN].")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the model's initialisation and the data order.")] = 0,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per step [default: 128].")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate [default: 1e-3].")] = None,
    som_lr: Annotated[Optional[float], typer.Option(help="BCL SOM learning rate [default: the condition's].")] = None,
    neighborhood_k: Annotated[Optional[int], typer.Option(help="BCL neighbours per feature [default: 8].")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="BCL rank-score temperature [default: 5.0].")] = None,
    recompute_every: Annotated[Optional[int], typer.Option(help="BCL steps between neighbour recomputations [default: 50].")] = None,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.auto,
    chunk_steps: Annotated[int, typer.Option(help="Steps trained between writes to disk.")] = 20,
    full_every: Annotated[Optional[int], typer.Option(help="Keep full tensors only every M-th step (summaries always).")] = None,
    full_steps: Annotated[Optional[str], typer.Option(help="Keep full tensors for these steps, e.g. 0-50,1000-1050.")] = None,
    keys: Annotated[Optional[str], typer.Option(help="Store only these tensor keys, comma-separated [default: all].")] = None,
    dtype: Annotated[LargeFloat, typer.Option(help="Store the large float tensors as this type: float16 halves an archive "
                                              "and rounds each value (summaries stay exact).")] = LargeFloat.float32,
    note: Annotated[str, typer.Option(help="Free text stored with the recording.")] = "",
    data_root: Annotated[Optional[Path], typer.Option(help="A directory holding MNIST/raw/ [default: the shipped copy].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing recording at --out.")] = False,
) -> None:
    """Train under a condition and record every step's tensors to a Zarr recording."""
    from acc.data import DataError
    from acc.recipe import build_run, resolve_device
    from capture.recorder import Policy, Recorder

    if steps <= 0:
        raise Fail(f"--steps must be a positive number of steps, not {steps}")
    for name, value in (("--chunk-steps", chunk_steps), ("--full-every", full_every), ("--batch-size", batch_size),
                        ("--neighborhood-k", neighborhood_k), ("--recompute-every", recompute_every)):
        if value is not None and value <= 0:
            raise Fail(f"{name} must be positive, not {value}")
    try:
        config = make_config(condition, batch_size=batch_size, lr=lr, som_lr=som_lr, neighborhood_k=neighborhood_k,
                             temperature=temperature, recompute_every=recompute_every)
        ranges = fmt.parse_ranges(full_steps) if full_steps else []
        dev = resolve_device(device.value)
    except (UnknownCondition, ValueError) as e:
        raise Fail(str(e)) from None
    if config.bcl and config.bcl.neighborhood_k >= config.hidden_dim:
        raise Fail(f"--neighborhood-k must be below the {config.hidden_dim} features")
    policy = Policy(parse_keys(keys, fmt.condition_keys(config), condition), full_every, ranges, dtype.value)
    path = out_dir if out_dir is not None else next_free_run()
    replace = check_output(path, force)
    try:
        run_ = build_run(config, seed, dev, data_root)
    except DataError as e:
        raise Fail(str(e)) from None
    if replace:
        shutil.rmtree(path)
    command = shlex.join(["acc-capture", *sys.argv[1:]])
    try:
        recorder = Recorder.create(path, config, policy, steps, seed=seed, device=dev, note=note, command=command)
    except BlockingIOError:
        raise Fail(f"another process is writing {path}") from None
    _record_with_progress(run_, recorder, steps, chunk_steps, f"{condition} -> {path}")
    size = Recording.open(path).size_bytes()
    out.print(f"recorded {steps} steps of {condition} to {path} ({size / 1e6:.1f} MB, {size / 1e6 / steps:.2f} MB/step)")
    out.print(f"view it:  acc-capture view {shlex.quote(str(path))}")


def _record_with_progress(run_, recorder, steps: int, chunk_steps: int, label: str) -> None:
    """Record with a progress bar; always leave the recording complete or interrupted, never half-published."""
    from capture.recorder import record

    status = "interrupted"
    try:
        with Progress(TextColumn("[bold]recording[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      StepsPerSecond(), TimeRemainingColumn(), console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task(label, total=steps)
            record(run_, recorder, steps, chunk_steps, on_progress=lambda n: bar.advance(task, n))
        status = "complete"
    except KeyboardInterrupt:
        raise Fail(f"interrupted; {recorder.steps_completed} complete steps kept in {recorder.path}") from None
    finally:
        try:
            recorder.finish(status)
        except OSError:
            recorder.close()


@app.command()
def resume(
    path: Annotated[Path, typer.Argument(help="A recording directory.")],
    steps: Annotated[int, typer.Option(help="Further steps to record.")] = 50,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.auto,
    chunk_steps: Annotated[int, typer.Option(help="Steps trained between writes to disk.")] = 20,
    data_root: Annotated[Optional[Path], typer.Option(help="A directory holding MNIST/raw/ [default: the shipped copy].")] = None,
) -> None:
    """Continue a recording where it stopped, bit-exactly, appending to it."""
    from acc.conditions import RunConfig
    from acc.data import DataError
    from acc.recipe import build_run, resolve_device
    from capture.recorder import Recorder

    if steps <= 0:
        raise Fail(f"--steps must be a positive number of steps, not {steps}")
    if chunk_steps <= 0:
        raise Fail(f"--chunk-steps must be positive, not {chunk_steps}")
    rec = open_recording(path)
    if rec.status == "recording":
        raise Fail(f"another process is writing {path}")
    config = RunConfig.from_dict(rec.condition, rec.meta["config"])
    try:
        dev = resolve_device(device.value)
        run_ = build_run(config, rec.meta["seed"], dev, data_root)
    except (DataError, ValueError) as e:
        raise Fail(str(e)) from None
    command = shlex.join(["acc-capture", *sys.argv[1:]])
    try:
        recorder, state = Recorder.append(path, steps, command)
    except BlockingIOError:
        raise Fail(f"another process is writing {path}") from None
    except FileNotFoundError as e:
        raise Fail(str(e)) from None
    start = recorder.steps_completed
    run_.load_state_dict(state)
    _record_with_progress(run_, recorder, steps, chunk_steps, f"{rec.condition} {path} from step {start}")
    out.print(f"recorded steps {start}..{start + steps - 1} of {rec.condition} to {path} ({recorder.steps_completed} steps in all)")
    out.print(f"view it:  acc-capture view {shlex.quote(str(path))}")


def open_recording(path: Path) -> Recording:
    try:
        return Recording.open(path)
    except RecordingError as e:
        raise Fail(str(e)) from None


def describe(rec: Recording) -> dict:
    m = rec.meta
    return {
        "path": str(rec.path), "format": m["format"], "condition": rec.condition, "status": rec.status,
        "steps_completed": rec.steps, "full_steps": int(rec.full_capture.sum()), "seed": m.get("seed"),
        "device": m.get("device"), "note": m.get("note", ""), "created": m.get("created"), "command": m.get("command"),
        "config": m.get("config"), "policy": m.get("policy"), "versions": m.get("versions"),
        "size_bytes": rec.size_bytes(),
        "keys": {k: {"shape": list(a.shape[1:]), "dtype": str(a.dtype), "dims": list(a.metadata.dimension_names[1:])}
                 for k, a in rec.tensors.items()},
        "summaries": sorted(rec.summaries),
    }


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="A recording directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show what a recording holds: condition, steps, status, keys with shapes, size on disk."""
    d = describe(open_recording(path))
    if as_json:
        print(json.dumps(d, indent=2))
        return
    steps = d["steps_completed"]
    bcl = (d["config"] or {}).get("bcl")
    size = d["size_bytes"] / 1e6
    rows = [
        ("recording", f"{d['path']}  (acc-capture format {d['format']})"),
        ("condition", d["condition"] + (f"  ({', '.join(f'{k} {v}' for k, v in bcl.items())})" if bcl else "  (no BCL)")),
        ("status", d["status"] + ("  (stopped before it finished; every counted step is intact)"
                                  if d["status"] == "interrupted" else "")),
        ("steps", f"{steps} completed, {d['full_steps']} with full tensors"),
        ("seed, device", f"{d['seed']}, {d['device']}"),
        ("note", d["note"] or "-"),
        ("created", f"{d['created']} by: {d['command']}"),
        ("size on disk", f"{size:.1f} MB" + (f" ({size / steps:.3f} MB per step)" if steps else "")),
    ]
    lines = [f"{k:<14}{v}" for k, v in rows]
    lines.append("keys:")
    width = max(map(len, d["keys"]), default=0)
    for k, v in d["keys"].items():
        shape = "[" + ", ".join(map(str, v["shape"])) + "]"
        lines.append(f"  {k:<{width}}  {shape:<18} {v['dtype']:<8} ({', '.join(v['dims']) or 'scalar'})")
    lines.append("summaries:    " + ", ".join(d["summaries"]))
    print("\n".join(lines))


@app.command()
def view(
    path: Annotated[Path, typer.Argument(help="A recording directory.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 to serve on.")] = 8765,
    no_open: Annotated[bool, typer.Option("--no-open", help="Do not open a browser.")] = False,
    build_only: Annotated[bool, typer.Option("--build-only", help="Only write the viewer files; do not serve.")] = False,
) -> None:
    """Build the static viewer inside the recording directory and serve it on 127.0.0.1."""
    from viewer import ViewerError, build, serve

    rec = open_recording(path)
    try:
        index = build(rec)
        print(f"viewer written to {index}")
        if not build_only:
            serve(rec.path, port, open_browser=not no_open)
    except ViewerError as e:
        raise Fail(str(e)) from None
    except KeyboardInterrupt:
        pass


@app.command("serve")
def serve_live(
    path: Annotated[Optional[Path], typer.Argument(help="A recording to continue (none: a new recording, see --condition).")] = None,
    condition: Annotated[Optional[str], typer.Option(help="Start a new recording of this condition (bcl-slow if not given) at the next free recordings/runN.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of a new recording (0 if not given).")] = None,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.auto,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 to serve on.")] = 8765,
    no_open: Annotated[bool, typer.Option("--no-open", help="Do not open a browser.")] = False,
) -> None:
    """Serve a recording with a live session: the page's Step buttons train and append steps, as `resume` would."""
    import signal

    from viewer.server import serve_until_interrupted

    def stop(signum, frame):  # `kill` stops the session as Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server = open_live_server(path, condition, seed, device.value, port)
    except KeyboardInterrupt:
        raise Fail("interrupted before the session opened") from None
    api = server.api
    print(f"live session on {api.session.path} ({api.session.condition}, {api.session.steps} steps recorded)")
    serve_until_interrupted(server, open_browser=not no_open)  # (until Ctrl-C)
    session = api.session
    try:
        if (running := api.state().get("running_steps")) and session is not None:
            print(f"waiting for the running step of {running} to be recorded (Ctrl-C again to stop now)",
                  file=sys.stderr, flush=True)
        api.close()  # waits for a running step; leaves the recording complete and resumable
    except KeyboardInterrupt:
        where = f"; the steps recorded so far are intact in {session.path}" if session is not None else ""
        raise Fail(f"interrupted while a step was running{where}") from None
    if session is not None:
        print(f"session closed: {session.path} has {session.steps} steps, complete")
        print(f"continue it:  acc-capture serve {shlex.quote(str(session.path))}")


def open_live_server(path: Path | None, condition: str | None = None, seed: int | None = None, device: str = "auto",
                     port: int = 8765, recordings_dir: Path = Path("recordings")):
    """What `serve` starts, not yet serving: a server bound to 127.0.0.1:`port` whose `api` (an InspectAPI)
    holds a session on `path`, or on a new recording of `condition` at the next free `recordings_dir`/runN,
    with the viewer built into the recording. Bad input raises Fail."""
    from viewer import ViewerError, build
    from viewer.server import make_server

    if path is not None and (condition is not None or seed is not None):
        raise Fail("--condition and --seed are for a new recording; a recording continues with its own")
    if path is None and (condition := condition or "bcl-slow") not in CONDITIONS:
        raise Fail(f"unknown condition {condition!r}; choose one of: {', '.join(CONDITIONS)}")
    if seed is not None and seed < 0:
        raise Fail(f"--seed must not be negative, not {seed}")
    if path is not None:
        rec = open_recording(path)
        if rec.status == "recording":
            raise Fail(f"another process is writing {path}")
    try:
        server = make_server(None, port)  # bind first: a port in use fails before anything is loaded or written
    except ViewerError as e:
        raise Fail(str(e)) from None
    try:
        api = _open_session(path, condition, seed or 0, device, Path(recordings_dir))
        try:
            build(Recording.open(api.session.path))
            server.set_root(api.session.path)
        except (ViewerError, RecordingError) as e:
            api.close()
            raise Fail(str(e)) from None
        server.attach(api)
    except BaseException:
        server.server_close()
        raise
    return server


def _open_session(path: Path | None, condition: str | None, seed: int, device: str, recordings_dir: Path):
    """An InspectAPI with a session on `path`, or on a new recording of `condition` at the next free runN."""
    from acc.data import DataError
    from capture.live import InspectAPI, LiveSession

    command = shlex.join(["acc-capture", *sys.argv[1:]])
    try:
        if path is None:
            new = next_free_run(recordings_dir)
            check_output(new, force=False)
            session = LiveSession.create(new, condition, seed=seed, device=device)
        else:
            session = LiveSession(path, device, command=command)
    except BlockingIOError:
        raise Fail(f"another process is writing {path}") from None
    except FileNotFoundError as e:  # no saved training state to continue from
        raise Fail(str(e)) from None
    except (DataError, RecordingError, ValueError) as e:
        raise Fail(str(e)) from None
    return InspectAPI(session, recordings_dir=recordings_dir, device=device)


@app.command()
def conditions() -> None:
    """List the training conditions and their settings."""
    table = Table("condition", "som_lr", "k", "temperature", "recompute_every", "batch", "lr", box=None)
    for name, c in CONDITIONS.items():
        b = c.bcl
        table.add_row(name, *(str(getattr(b, f)) if b else "-" for f in ("som_lr", "neighborhood_k", "temperature", "recompute_every")),
                      str(c.batch_size), str(c.lr))
    out.print(table)
    out.print("\nkeys every condition captures: " + ", ".join(k.value for k in StepTensorKey if not k.bcl))
    out.print("keys BCL conditions add: " + ", ".join(k.value for k in StepTensorKey if k.bcl))
    out.print("override a setting with run --som-lr, --neighborhood-k, --temperature, --recompute-every, --batch-size, --lr")


def main() -> None:
    """Entry point: every failure is one line on stderr and a non-zero exit, never a traceback."""
    try:
        code = app(standalone_mode=False)
    except Fail as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as e:  # usage errors: unknown option, bad value, missing argument
        if e.format_message():  # (no arguments at all: the help was already printed)
            print(f"error: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
