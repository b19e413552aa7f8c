"""The `acc-capture` command line."""

from __future__ import annotations

import gc
import json
import shlex
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
from capture.store import StoreError

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


MAX_CHUNK_STEPS = 1000  # the ring of shared memory holds three chunks of every key (BCL's: 2.3 MB a step)


def check_chunk_steps(chunk_steps: int) -> None:
    if not 1 <= chunk_steps <= MAX_CHUNK_STEPS:
        raise Fail(f"--chunk-steps must be from 1 to {MAX_CHUNK_STEPS}, not {chunk_steps}")


def location(text: str) -> Path | str:
    """A URL as it is (s3://bucket/prefix), anything else a local path; a URL that cannot be used
    (no credentials, an unknown scheme, a typo such as s3:/bucket) fails here, before anything is written."""
    from capture.store import is_url, local_path, open_store

    try:
        open_store(text)
    except StoreError as e:
        raise Fail(str(e)) from None
    return text if is_url(text) else local_path(text)


def check_output(path: Path | str, force: bool) -> None:
    """Refuse to write over anything we should not (and, for a URL, fail now if the store cannot be reached)."""
    from capture.session import check_path, check_store
    from capture.store import open_store

    try:
        if isinstance(path, Path):
            check_path(path, force)
        else:
            check_store(open_store(path), force)
    except (FileExistsError, PermissionError, StoreError) as e:
        raise Fail(str(e).replace("force=True (--force)", "--force")) from None


class StepsPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} steps/s" if task.speed else "- steps/s")


@app.command()
def run(
    steps: Annotated[int, typer.Option(help="Training steps to record.")] = 200,
    condition: Annotated[str, typer.Option(help="Condition to train under (see `conditions`).")] = "bcl-slow",
    out_dir: Annotated[Optional[str], typer.Option("--out", help="Recording directory, or a URL such as s3://bucket/prefix "
                                                   "\\[default: next free recordings/runN].")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the model's initialisation and the data order.")] = 0,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per step \\[default: 128].")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate \\[default: 1e-3].")] = None,
    som_lr: Annotated[Optional[float], typer.Option(help="BCL SOM learning rate \\[default: the condition's].")] = None,
    neighborhood_k: Annotated[Optional[int], typer.Option(help="BCL neighbours per feature \\[default: 8].")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="BCL rank-score temperature \\[default: 5.0].")] = None,
    recompute_every: Annotated[Optional[int], typer.Option(help="BCL steps between neighbour recomputations \\[default: 50].")] = None,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.auto,
    chunk_steps: Annotated[int, typer.Option(help=f"Steps trained between writes to disk (1 to {MAX_CHUNK_STEPS}).")] = 20,
    full_every: Annotated[Optional[int], typer.Option(help="Keep full tensors only every M-th step (summaries always).")] = None,
    full_steps: Annotated[Optional[str], typer.Option(help="Keep full tensors for these steps, e.g. 0-50,1000-1050.")] = None,
    keys: Annotated[Optional[str], typer.Option(help="Store only these tensor keys, comma-separated \\[default: all].")] = None,
    dtype: Annotated[LargeFloat, typer.Option(help="Store the large float tensors as this type: float16 halves an archive "
                                              "and rounds each value (summaries stay exact).")] = LargeFloat.float32,
    note: Annotated[str, typer.Option(help="Free text stored with the recording.")] = "",
    data_root: Annotated[Optional[Path], typer.Option(help="A directory holding MNIST/raw/ \\[default: the shipped copy].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing recording at --out.")] = False,
) -> None:
    """Train under a condition and record every step's tensors to a Zarr recording."""
    from acc.conditions import check_seed

    if steps <= 0:
        raise Fail(f"--steps must be a positive number of steps, not {steps}")
    check_chunk_steps(chunk_steps)
    if full_every is not None and full_every <= 0:
        raise Fail(f"--full-every must be positive, not {full_every}")
    from capture.writer import prestart

    prestart(torch=dtype.value == "float16")  # the writer process: its start-up overlaps the imports of torch and the data's loading
    from acc.data import DataError
    from acc.recipe import build_run, captured_keys, resolve_device
    from capture.session import record
    try:
        check_seed(seed)
        config = make_config(condition, batch_size=batch_size, lr=lr, som_lr=som_lr, neighborhood_k=neighborhood_k,
                             temperature=temperature, recompute_every=recompute_every)
        ranges = fmt.parse_ranges(full_steps) if full_steps is not None else []
        dev = resolve_device(device.value)
    except (UnknownCondition, ValueError) as e:
        raise Fail(str(e)) from None
    if config.bcl and config.bcl.neighborhood_k >= config.hidden_dim:
        raise Fail(f"--neighborhood-k must be below the {config.hidden_dim} features")
    only = None if keys is None else [k.value for k in parse_keys(keys, captured_keys(config), condition)]
    from capture.session import next_free_run

    path = location(out_dir) if out_dir is not None else next_free_run()
    check_output(path, force)
    try:
        run_ = build_run(config, seed, dev, data_root)
    except DataError as e:
        raise Fail(str(e)) from None
    command = shlex.join(["acc-capture", *sys.argv[1:]])
    try:
        session = record(path, StepTensorKey, note=note, config=config.to_dict(), seed=seed, full_every=full_every,
                         full_steps=ranges, only=only, dtype=dtype.value, chunk_steps=chunk_steps, force=force,
                         condition=condition, device=dev, command=command, recipe=fmt.BCL_RECIPE, expect_steps=steps)
    except BlockingIOError:
        raise Fail(f"another process is writing {path}") from None
    except (FileExistsError, PermissionError, StoreError) as e:
        raise Fail(str(e)) from None
    _record_with_progress(run_, session, steps, chunk_steps, f"{condition} -> {path}")
    size = Recording.open(path).size_bytes()
    out.print(f"recorded {steps} steps of {condition} to {path} ({size / 1e6:.1f} MB, {size / 1e6 / steps:.2f} MB/step)")
    out.print(f"view it:  acc-capture view {shlex.quote(str(path))}")


def _record_with_progress(run_, session, steps: int, chunk_steps: int, label: str) -> None:
    """Record with a progress bar; always leave the recording complete or interrupted, never half-published.

    The bar is redrawn as each chunk of steps has trained, not by a thread of its own (which took
    turns with training on the interpreter lock), and what start-up made (torch, zarr, the data)
    is frozen out of the garbage collector's full passes (one took 0.2 s of a 1000-step run)."""
    from capture.runner import train_and_record

    def advance(n: int) -> None:
        bar.advance(task, n)
        bar.refresh()

    try:
        with Progress(TextColumn("[bold]recording[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      StepsPerSecond(), TimeRemainingColumn(), console=Console(stderr=True), transient=False,
                      auto_refresh=False) as bar:
            task = bar.add_task(label, total=steps)
            gc.freeze()
            train_and_record(run_, session, steps, chunk_steps, on_progress=advance)
    except KeyboardInterrupt:
        session.close("interrupted")
        raise Fail(f"interrupted; {session.steps_completed} complete steps kept in {session.path}") from None
    except BaseException:
        session.close("interrupted")
        raise
    session.close("complete")


@app.command()
def resume(
    path: Annotated[str, typer.Argument(help="A recording directory, or a URL (s3://bucket/prefix).")],
    steps: Annotated[int, typer.Option(help="Further steps to record.")] = 50,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.auto,
    chunk_steps: Annotated[int, typer.Option(help=f"Steps trained between writes to disk (1 to {MAX_CHUNK_STEPS}).")] = 20,
    data_root: Annotated[Optional[Path], typer.Option(help="A directory holding MNIST/raw/ \\[default: the shipped copy].")] = None,
) -> None:
    """Continue a recording where it stopped, bit-exactly, appending to it."""
    from acc.conditions import RunConfig
    from acc.data import DataError
    from acc.recipe import build_run, resolve_device
    from capture.recorder import StateError
    from capture.session import RecordingSession

    if steps <= 0:
        raise Fail(f"--steps must be a positive number of steps, not {steps}")
    check_chunk_steps(chunk_steps)
    from capture.writer import prestart

    prestart()
    rec = open_recording(path)
    if rec.recipe != fmt.BCL_RECIPE:
        raise Fail(f"{path} was not recorded by `acc-capture run`; a loop recorded with record() goes on in that loop")
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
        session, _ = RecordingSession.resume(path, StepTensorKey, command, expect_steps=rec.steps + steps,
                                             apply=run_.load_state_dict)
    except BlockingIOError:
        raise Fail(f"another process is writing {path}") from None
    except (FileNotFoundError, StateError) as e:
        raise Fail(str(e)) from None
    start = session.steps_completed
    _record_with_progress(run_, session, steps, chunk_steps, f"{rec.condition} {path} from step {start}")
    out.print(f"recorded steps {start}..{start + steps - 1} of {rec.condition} to {path} ({session.steps_completed} steps in all)")
    out.print(f"view it:  acc-capture view {shlex.quote(str(path))}")


def open_recording(path: Path | str) -> Recording:
    try:
        return Recording.open(path)
    except RecordingError as e:
        raise Fail(str(e)) from None


def describe(rec: Recording) -> dict:
    m = rec.meta
    table = {e["key"]: e for e in rec.key_table}
    return {
        "path": str(rec.path), "format": m["format"], "condition": rec.condition, "status": rec.status,
        "steps_completed": rec.steps, "full_steps": int(rec.full_capture.sum()), "seed": m.get("seed"),
        "device": m.get("device"), "note": m.get("note", ""), "created": m.get("created"), "command": m.get("command"),
        "config": m.get("config"), "policy": m.get("policy"), "versions": m.get("versions"),
        "size_bytes": rec.size_bytes(),
        "recipe": rec.recipe, "vocabulary": m.get("vocabulary"),
        "keys": {k: {"shape": list(a.shape[1:]), "dtype": str(a.dtype), "dims": list(a.metadata.dimension_names[1:]),
                     "render": table[k]["render"], "description": table[k].get("description", "")}
                 for k, a in rec.tensors.items()},
        "summaries": sorted(rec.summaries),
    }


@app.command()
def info(
    path: Annotated[str, typer.Argument(help="A recording: a directory, a zip file from `pack`, or a URL (s3://bucket/prefix).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show what a recording holds: condition, steps, status, keys with shapes, size on disk."""
    d = describe(open_recording(path))
    if as_json:
        print(json.dumps(d, indent=2))
        return
    steps = d["steps_completed"]
    size = d["size_bytes"] / 1e6
    if d["recipe"] == fmt.BCL_RECIPE:
        bcl = d["config"].get("bcl")
        what = ("condition", d["condition"] + (f"  ({', '.join(f'{k} {v}' for k, v in bcl.items())})" if bcl else "  (no BCL)"))
    else:
        what = ("config", json.dumps(d["config"]) if d["config"] else "-")
    rows = [
        ("recording", f"{d['path']}  (acc-capture format {d['format']}, keys of {d['vocabulary']})"),
        what,
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
        lines.append(f"  {k:<{width}}  {shape:<18} {v['dtype']:<8} ({', '.join(v['dims']) or 'scalar'})"
                     + (f"  {v['description']}" if v["description"] else ""))
    lines.append("summaries:    " + ", ".join(d["summaries"]))
    print("\n".join(lines))


@app.command("diff")
def diff_runs(
    a: Annotated[str, typer.Argument(metavar="A", help="A recording (a directory, a zip file from `pack`, or a URL).")],
    b: Annotated[str, typer.Argument(metavar="B", help="Another recording.")],
    steps: Annotated[Optional[str], typer.Option(help="Compare only these steps, e.g. 100-200 \\[default: all].")] = None,
    atol: Annotated[float, typer.Option(help="Values within this absolute difference count as equal \\[default: bit for bit].",
                                                 show_default=False)] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    whole: Annotated[bool, typer.Option("--all", help="Read every key over the whole range, not only up to its first difference.")] = False,
) -> None:
    """Compare two recordings step by step: which settings differ, and where the tensors first part.
    Exit 0 when identical, 1 when they differ, 2 on bad input."""
    from capture.diff import DiffError, diff, parse_steps

    try:
        result = diff(a, b, steps=parse_steps(steps) if steps is not None else None, atol=atol, whole=whole)
    except (RecordingError, DiffError, StoreError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(2) from None
    print(result.to_json() if as_json else result.to_text())
    raise typer.Exit(0 if result.identical else 1)


@app.command()
def view(
    location: Annotated[str, typer.Argument(metavar="PATH", help="A recording (a directory, a zip file from `pack`, or a URL), "
                                            "or a folder of recordings (an archive).")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 to serve on.")] = 8765,
    no_open: Annotated[bool, typer.Option("--no-open", help="Do not open a browser.")] = False,
    build_only: Annotated[bool, typer.Option("--build-only", help="Only write the viewer files; do not serve.")] = False,
) -> None:
    """Build the static viewer inside the recording directory and serve it on 127.0.0.1. Given a folder
    of recordings (in it or one level down): build each one's viewer and the archive's pages, serve the folder."""
    from viewer import ViewerError, build
    from viewer.archive import build_archive
    from viewer.server import make_server, serve_until_interrupted

    from capture.store import is_url, local_path

    path = location if is_url(location) else local_path(location)
    folder = isinstance(path, Path) and path.is_dir() and not (path / "zarr.json").exists()  # not a recording: a folder of them
    rec = None if folder else open_recording(path)
    try:  # bind first: a bad or busy port is refused before anything is written
        server = None if build_only else make_server(None, port)
    except ViewerError as e:
        raise Fail(str(e)) from None
    try:
        if rec is not None and rec.store.local is None:  # a zip or a URL: the viewer from memory, the data from the store
            index = _viewer_beside(rec, server, build_only)
        else:
            index = build_archive(path, warn=lambda m: print(f"warning: {m}", file=sys.stderr)) if folder else build(rec)
        print(f"{'archive' if folder else 'viewer'} written to {index}")
        if server is not None:
            if server.source is None:
                server.set_root(path if folder else rec.path)
            serve_until_interrupted(server, open_browser=not no_open)
    except ViewerError as e:
        raise Fail(str(e)) from None
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.server_close()


def _viewer_beside(rec: Recording, server, build_only: bool) -> str:
    """The viewer of a recording that is not a local directory. Served: its files are made in memory
    and served in front of the recording's store (nothing is written). `--build-only`: written into
    the store (a bucket prefix, which a static web host can then serve); refused for a zip (read-only)."""
    from capture.store import Overlay, ZipStore
    from viewer.build import viewer_files

    if build_only and isinstance(rec.store, ZipStore):
        raise Fail(f"{rec.path} is a zip file, read-only: `view` serves it as it is; to write the viewer into it, "
                   "unpack it, view --build-only the directory and pack it again")
    files = viewer_files(rec)
    if build_only:
        page = files.pop("index.html")
        try:
            rec.store.put_many(files.items())
            rec.store.put("index.html", page)  # last: the page appears once what it reads is there
        except (OSError, StoreError) as e:
            raise Fail(str(e)) from None
        return f"{rec.path}/index.html"
    server.source = Overlay(rec.store, files)
    return f"memory, served beside {rec.path} (nothing written)"


@app.command("serve")
def serve_live(
    path: Annotated[Optional[str], typer.Argument(help="A recording to continue (none: a new recording, see --condition).")] = None,
    condition: Annotated[Optional[str], typer.Option(help="Start a new recording of this condition (bcl-slow if not given) at the next free recordings/runN.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of a new recording (0 if not given).")] = None,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.auto,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 to serve on.")] = 8765,
    no_open: Annotated[bool, typer.Option("--no-open", help="Do not open a browser.")] = False,
) -> None:
    """Serve a recording with a live session: the page's Step buttons train and append steps, as `resume` would."""
    import signal

    from capture.store import local_path
    from viewer.server import serve_until_interrupted

    def stop(signum, frame):  # `kill` stops the session as Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server = open_live_server(None if path is None else local_path(path), condition, seed, device.value, port)
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
    """`serve`'s server with its live session (capture.live.open_live_server, on the viewer's server
    and page builder), not yet serving. Bad input raises Fail."""
    from capture.live import LiveError, open_live_server as open_live
    from viewer import ViewerError, build, make_server

    try:
        return open_live(path, condition, seed, device, port, Path(recordings_dir), make_server=make_server, build=build)
    except (LiveError, ViewerError, RecordingError) as e:
        raise Fail(str(e)) from None


@app.command("pack")
def pack_run(
    path: Annotated[str, typer.Argument(help="A recording (a directory or a URL).")],
    out_file: Annotated[Path, typer.Argument(metavar="OUT.zip", help="The zip file to write.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing OUT.zip.")] = False,
) -> None:
    """Put a recording into one zip file (entries stored as they are: the large tensors are compressed already).
    `info`, `view`, `diff` and Recording.open read the zip in place; zarr's ZipStore opens it too."""
    from capture.pack import PackError, pack

    try:
        size = pack(path, out_file, force=force)
    except PackError as e:
        raise Fail(str(e)) from None
    print(f"packed {path} into {out_file} ({size / 1e6:.1f} MB)")


@app.command("unpack")
def unpack_run(
    archive: Annotated[str, typer.Argument(metavar="ZIP", help="A zip file written by `acc-capture pack`.")],
    dest: Annotated[Path, typer.Argument(metavar="DIR", help="A new or empty directory to unpack into.")],
) -> None:
    """Give back the recording directory of a packed zip: the same files with the same bytes."""
    from capture.pack import PackError, unpack
    from capture.store import local_path

    try:
        files = unpack(local_path(archive), dest)
    except PackError as e:
        raise Fail(str(e)) from None
    print(f"unpacked {archive} into {dest} ({files} files)")


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
