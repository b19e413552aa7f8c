"""Write the static viewer into a recording: `index.html` at its root, our JS/CSS under `viewer/`.

The page carries everything it needs to start as inline JSON: the recording's own key table (what
each key's dimensions are, how it is drawn), the page layout made from it (viewer/layout.py), and
the metadata of every array (shape, chunks, dtype, dimension names, fill value, codecs), so the
browser fetches no `zarr.json` at all, only chunks. Where each inner chunk of a sharded array lies
in its shard file is copied from the shard indexes into one binary file beside the JS
(`viewer/shard-index.bin`, see `shard_index`): the page fetches it once instead of one shard index
per shard.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import jinja2
import numpy as np

from capture import format as fmt
from capture.codecs import parse as parse_codecs
from capture.recording import Recording
from capture.store import Store, StoreError, open_store
from viewer import layout

STATIC = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent / "templates"
ASSETS_DIR = "viewer"  # inside the recording
ARCHIVE_MODULES = {"archive.js", "compare.js", "settings.js"}  # the archive's pages (viewer/archive.py), not the run page
SHARD_INDEX = "shard-index.bin"  # in ASSETS_DIR
# viewer/ is a folder inside a Zarr group: make it an empty group so zarr-python lists it cleanly
EMPTY_GROUP = {"zarr_format": 3, "node_type": "group", "attributes": {}}

DTYPES = {"float32", "float16", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "bool"}


class ViewerError(Exception):
    """Something the user must hear, in one line (the CLI prints it and exits 1)."""


def key_table(rec: Recording) -> list[dict]:
    """The recording's key table as the page reads it; `bcl` marks the keys only BCL conditions have,
    `named` those whose values name things (compared equal or not: `Recording.named_keys`)."""
    bcl = layout.is_bcl(rec.meta)
    return [{"value": e["key"], "name": e["name"], "dims": list(e["dims"]), "bcl": bcl and e["key"] in layout.BCL_ONLY,
             "render": e["render"], "signed": bool(e.get("signed", False)), "description": e.get("description", ""),
             "named": e["key"] in rec.named_keys}
            for e in rec.key_table]


def page_layout(rec: Recording) -> layout.Layout:
    """BCL's page for a recording of BCL's keys, else the page made from the key table alone."""
    if layout.is_bcl(rec.meta):
        return layout.bcl_layout(rec.key_table)
    sizes: dict[str, int] = {}
    for arr in rec.tensors.values():
        for dim, size in zip(list(arr.metadata.dimension_names or [])[1:], arr.shape[1:]):
            sizes.setdefault(dim, size)
    summaries = {name: list(arr.metadata.dimension_names or [])[1:] for name, arr in rec.summaries.items()}
    return layout.generic_layout(rec.key_table, summaries, sizes)


def _codec_names(codecs) -> list[str]:
    return [c.get("name") if isinstance(c, dict) else str(c) for c in codecs or []]


def _chunk_codecs(codecs) -> tuple[list[str], str] | str:
    """The codec lists the recorder writes and reads (`capture.codecs.parse`: `bytes`, then `gzip` or
    `blosc` or neither, then `crc32c` or not; the viewer's codecs.js undoes each): (their names, the
    byte order), or why not."""
    names = _codec_names(codecs)
    parsed = parse_codecs([c if isinstance(c, dict) else {"name": str(c)} for c in codecs or []])
    return f"codecs {names}" if parsed is None else (names, parsed[2])


def _shard_layout(shape: list[int], shard: list[int], config: dict) -> dict | str:
    """What reading one inner chunk of a `sharding_indexed` array takes, or why the viewer cannot.

    The viewer reads whole steps: an inner chunk holds whole steps (every element after the step
    dimension), so the inner chunks of a shard lie one after another along the step dimension.
    """
    inner = list(config.get("chunk_shape") or [])
    if len(inner) != len(shape) or len(shard) != len(shape):
        return f"inner chunk shape {inner}"
    if inner[1:] != shape[1:] or shard[1:] != shape[1:]:
        return f"shards {shard} or inner chunks {inner} split a step of {shape}"
    if inner[0] < 1 or shard[0] % inner[0]:
        return f"inner chunks {inner} do not tile shards {shard}"
    chunk = _chunk_codecs(config.get("codecs"))
    if isinstance(chunk, str):
        return f"inner {chunk}"
    index = config.get("index_codecs") or []
    names = _codec_names(index)
    if names not in (["bytes"], ["bytes", "crc32c"]):
        return f"index codecs {names}"
    if ((index[0].get("configuration") or {}).get("endian") or "little") != "little":
        return "a big-endian shard index"
    location = config.get("index_location", "end")
    if location not in ("start", "end"):
        return f"index location {location}"
    return {"inner": inner, "codecs": chunk[0], "endian": chunk[1],
            "index": {"location": location, "crc32c": names[-1] == "crc32c"}}


def array_meta(path: str, arr) -> dict | str:
    """What the JS reader needs of one array, or a string saying why it cannot read it.

    `chunks` is the shape of the unit the reader decodes: the chunk of a plain array, the inner
    chunk of a sharded one. A sharded array also has `shard` (the shard shape, the chunk grid's)
    and `index` (where the shard index lies, whether a crc32c follows it); a plain one has both null.
    """
    m = arr.metadata.to_dict()
    dtype = str(m.get("data_type"))
    if dtype not in DTYPES:
        return f"data type {dtype}"
    grid = m.get("chunk_grid", {})
    if grid.get("name") != "regular":
        return f"chunk grid {grid.get('name')}"
    shape, grid_chunks = list(m["shape"]), list(grid["configuration"]["chunk_shape"])
    codecs = m.get("codecs", [])
    if _codec_names(codecs) == ["sharding_indexed"]:
        layout = _shard_layout(shape, grid_chunks, codecs[0].get("configuration") or {})
        if isinstance(layout, str):
            return layout
        chunks, shard, index = layout["inner"], grid_chunks, layout["index"]
        names, endian = layout["codecs"], layout["endian"]
    else:
        chunk = _chunk_codecs(codecs)
        if isinstance(chunk, str):
            return chunk
        (names, endian), chunks, shard, index = chunk, grid_chunks, None, None
    enc = m.get("chunk_key_encoding", {})
    if enc.get("name") not in ("default", "v2"):
        return f"chunk key encoding {enc.get('name')}"
    sep = (enc.get("configuration") or {}).get("separator", "/" if enc.get("name") == "default" else ".")
    fill = m.get("fill_value")
    return {
        "path": path, "shape": shape, "chunks": chunks, "shard": shard, "index": index,
        "dtype": dtype, "dims": list(m.get("dimension_names") or []), "fill": fill,
        "codecs": names, "endian": endian, "encoding": enc.get("name"), "sep": sep,
    }


def collect_arrays(rec: Recording) -> tuple[dict, list[str]]:
    arrays, skipped = {}, []
    groups = (("tensors", rec.tensors), ("summary", rec.summaries))
    for group, members in groups:
        for name, arr in sorted(members.items()):
            meta = array_meta(f"{group}/{name}", arr)
            if isinstance(meta, str):
                skipped.append(f"{group}/{name} ({meta})")
            else:
                arrays[f"{group}/{name}"] = meta
    return arrays, skipped


def _shard_file(meta: dict, shard: int) -> str:
    """The key of shard `shard` along the step dimension, as zarr names it (see zarr.js `chunkKey`)."""
    coords = [str(shard)] + ["0"] * (len(meta["chunks"]) - 1)
    return meta["sep"].join(coords if meta["encoding"] == "v2" else ["c", *coords])


def _shard_entries(store: Store, meta: dict, chunks: int) -> np.ndarray | None:
    """(offset, nbytes) of inner chunks [0, chunks) of a sharded array, read from its shard indexes
    (16 bytes an inner chunk, not the chunks): a [chunks, 2] uint64 array, EMPTY for a chunk not
    written (or in a shard file that is not there). None if a shard cannot be read or is not what
    its index says: the page then reads that array's shard indexes itself, and says what is wrong."""
    per = meta["shard"][0] // meta["chunks"][0]
    size = 16 * per + (4 if meta["index"]["crc32c"] else 0)
    at_start = meta["index"]["location"] == "start"
    out = np.full((math.ceil(chunks / per) * per, 2), fmt.EMPTY, dtype=np.uint64)
    for shard in range(math.ceil(chunks / per)):
        key = f"{meta['path']}/{_shard_file(meta, shard)}"
        try:  # (one read: a local file, a zip entry or an object)
            if at_start:
                raw, file_size = store.get_range(key, 0, 16 * per), store.size(key)
            else:
                tail, file_size = store.get_tail(key, size)
                raw = tail[:16 * per] if file_size >= size else b""
        except FileNotFoundError:
            continue  # no step of this shard was written
        except (OSError, StoreError):
            return None
        if len(raw) != 16 * per:
            return None
        entries = np.frombuffer(raw, dtype="<u8").reshape(per, 2)
        data = (size, file_size) if at_start else (0, file_size - size)
        written = entries[:, 0] != fmt.EMPTY
        offsets, nbytes = entries[written, 0], entries[written, 1]
        if ((offsets < data[0]) | (nbytes == 0) | (nbytes > data[1]) | (offsets > data[1] - nbytes)).any():
            return None
        out[shard * per:(shard + 1) * per] = entries
    return out[:chunks]


def shard_index(store: Store | Path, arrays: dict, steps: int) -> tuple[bytes, dict | None]:
    """The shard index file of the viewer and its description for the page (None: no sharded array).

    For every sharded array, the (offset, nbytes) of each inner chunk whose steps are all among the
    `steps` completed, in chunk order: one part per array, one after another, each pair two uint32
    (little-endian; 0xffffffff twice for a chunk not written) when every chunk ends below 4 GiB,
    else two uint64. The page gets {path, bytes, width, arrays: {array: {at, chunks}}}: where each
    array's part starts (in bytes) and how many inner chunks it covers; a step beyond them (a live
    session added it) is found through its shard's own index. The recorder never moves a chunk it
    has written, so the file stays right for the steps it covers while a recording grows.
    """
    store = open_store(store)  # (a recording's Store, or its directory)
    parts = {}
    for name, meta in arrays.items():
        if meta["shard"]:
            entries = _shard_entries(store, meta, min(steps, meta["shape"][0]) // meta["chunks"][0])
            if entries is not None:
                parts[name] = entries
    if not parts:
        return b"", None
    written = [e[e[:, 0] != fmt.EMPTY] for e in parts.values()]
    end = max((int((w[:, 0] + w[:, 1]).max()) for w in written if len(w)), default=0)
    width, dtype = (4, "<u4") if end < 2**32 - 1 else (8, "<u8")
    out, described, at = [], {}, 0
    for name, entries in parts.items():
        values = entries.astype(dtype)  # EMPTY (2^64-1) becomes 0xffffffff
        if width == 4:
            values[entries == fmt.EMPTY] = 2**32 - 1
        out.append(values.tobytes())
        described[name] = {"at": at, "chunks": len(entries)}
        at += values.nbytes
    spec = {"path": f"{ASSETS_DIR}/{SHARD_INDEX}", "bytes": at, "width": width, "arrays": described}
    return b"".join(out), spec


def _plain(value) -> bool:
    return not isinstance(value, (dict, list)) or (isinstance(value, list) and all(map(_plain, value)) and len(value) <= 16)


def _inline(values: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())


def config_rows(config: dict | None) -> list[tuple[str, str | list]]:
    """A configuration (any JSON object) as rows (label, text) for the page: a group of plain values on
    one line ("som_lr 0.001, ..."), a group holding groups as rows of its own (label, [rows])."""
    rows: list[tuple[str, str | list]] = []
    for group, values in (config or {}).items():
        if isinstance(values, dict) and values and not all(map(_plain, values.values())):
            rows.append((str(group), config_rows(values)))
        elif isinstance(values, dict):
            rows.append((str(group), _inline(values) or "{}"))
        elif isinstance(values, list) and not _plain(values):
            rows.append((str(group), config_rows({str(i): v for i, v in enumerate(values)})))
        else:
            rows.append((str(group), "none" if values is None else str(values)))
    return rows


def page_data(rec: Recording, view: layout.Layout | None = None) -> tuple[dict, bytes | None]:
    """What the page inlines, and the bytes of its shard index file (None: it has none)."""
    arrays, skipped = collect_arrays(rec)
    index, index_spec = shard_index(rec.store, arrays, rec.steps)
    meta = rec.meta
    view = view or page_layout(rec)
    return {
        "run": {
            "name": rec.name, "condition": rec.condition, "steps": rec.steps, "status": rec.status,
            "keys": rec.keys, "policy": meta.get("policy"), "dead_win_rate": fmt.DEAD_WIN_RATE,
            "bcl": view.kind == "bcl" and bool((meta.get("config") or {}).get("bcl")),
            "kind": view.kind, "vocabulary": meta.get("vocabulary"),
            "all_full": bool(rec.steps == 0 or rec.full_capture.all()),
        },
        "keys": key_table(rec),
        "arrays": arrays,
        "skipped": skipped,
        "sections": [s.to_json() for s in view.sections],
        "tables": [t.to_json() for t in view.tables],
        "timeline": [c.to_json() for c in view.timeline],
        "timeline_heatmap": view.timeline_heatmap,
        "names": view.names,
        "shard_index": index_spec,
    }, (index if index_spec else None)


def render(rec: Recording) -> tuple[str, bytes | None]:
    """The page, and the bytes of its shard index file (None: it has none)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    meta = rec.meta
    view = page_layout(rec)
    data, index = page_data(rec, view)
    # the run page's modules, preloaded (the archive's pages have their own)
    modules = sorted(p.name for p in STATIC.glob("*.js") if p.name not in ARCHIVE_MODULES) + ["vendor/uPlot.esm.js"]
    return env.get_template("index.html").render(
        run=data["run"], meta=meta, config_rows=config_rows(meta.get("config")), sections=view.sections,
        tables=view.tables, data=data, assets=ASSETS_DIR, modules=modules, versions=meta.get("versions") or {},
        full_steps=int(rec.full_capture.sum()) if rec.steps else 0,
    ), index


def static_files() -> list[Path]:
    """The viewer's static files (vendor/ included), relative to STATIC."""
    return sorted(p.relative_to(STATIC) for p in STATIC.rglob("*") if p.is_file())


def _write_atomic(path: Path, content: str | bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def viewer_files(rec: Recording) -> dict[str, bytes]:
    """The viewer's files by their path in the recording (index.html last): for a recording that is
    not a local directory (a zip, a URL), served beside it or written into its store."""
    html, index_bytes = render(rec)
    files = {f"{ASSETS_DIR}/{f.as_posix()}": (STATIC / f).read_bytes() for f in static_files()}
    files[f"{ASSETS_DIR}/zarr.json"] = (json.dumps(EMPTY_GROUP, indent=2) + "\n").encode()
    if index_bytes is not None:  # before the page that describes it
        files[f"{ASSETS_DIR}/{SHARD_INDEX}"] = index_bytes
    files["index.html"] = html.encode("utf-8")
    return files


def build(rec: Recording) -> Path:
    """Write index.html and viewer/ into the recording; return the path of index.html."""
    root = Path(rec.path)
    html, index_bytes = render(rec)
    assets = root / ASSETS_DIR
    try:
        if assets.exists() and not assets.is_dir():
            raise ViewerError(f"cannot write the viewer: {assets} exists and is not a directory")
        assets.mkdir(exist_ok=True)
        files = static_files()
        wanted = {f.as_posix() for f in files} | {"zarr.json"}
        if index_bytes is not None:
            wanted.add(SHARD_INDEX)
        for old in sorted(assets.rglob("*"), reverse=True):  # what an older viewer version left (a folder's files first)
            if old.is_dir() and not old.is_symlink():
                if not any(old.iterdir()):
                    old.rmdir()
            elif old.relative_to(assets).as_posix() not in wanted:
                old.unlink()
        for f in files:
            (assets / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(STATIC / f, assets / f)
        _write_atomic(assets / "zarr.json", json.dumps(EMPTY_GROUP, indent=2) + "\n")
        if index_bytes is not None:  # before the page that describes it
            _write_atomic(assets / SHARD_INDEX, index_bytes)
        index = root / "index.html"
        _write_atomic(index, html)
    except OSError as e:
        raise ViewerError(f"cannot write the viewer into {root}: {e.strerror or e}") from None
    return index
