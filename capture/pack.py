"""One file per run: `pack` puts a recording into a zip file, `unpack` gives the directory back.

The zip holds the recording's files under their relative paths (`zarr.json`, `tensors/...`), so
zarr-python's `zarr.storage.ZipStore(OUT.zip, mode="r")` opens it as the same group, and
`Recording.open(OUT.zip)` reads it in place (capture.store.ZipStore: a ranged read is a `pread`).
Entries are stored, not deflated (the large tensors are compressed already), with a fixed timestamp, so the same
recording always packs to the same bytes. Unpacking gives back the same files with the same bytes.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from capture.recording import Recording, RecordingError
from capture.store import LOCK_KEY, DirStore, Store, ZipStore, is_url

EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold: packing is deterministic


class PackError(Exception):
    """Bad input for pack or unpack; the message says why in one line."""


def pack(source: str | Path | Store, out: Path, force: bool = False) -> int:
    """Write the recording at `source` (a directory or a URL) into the zip file `out`; returns its size.

    Refuses a recording being written, an `out` inside the recording, and an existing `out` unless
    `force`. The zip appears whole or not at all (written under a temporary name, then renamed).
    """
    try:
        rec = Recording.open(source)
    except RecordingError as e:
        raise PackError(str(e)) from None
    store = rec.store
    if isinstance(store, ZipStore):
        raise PackError(f"{store.location} is a zip file already")
    if rec.status == "recording":
        raise PackError(f"another process is writing {store.location}; pack it when it is done")
    out = Path(out)
    if is_url(str(out)):
        raise PackError(f"pack writes a local zip file, not {out}")
    if out.is_dir():
        raise PackError(f"{out} is a directory; give the zip file's name, e.g. {out / (store.name + '.zip')}")
    if out.exists() and not force:
        raise PackError(f"{out} exists; pass --force to replace it")
    if store.local is not None and out.absolute().resolve().is_relative_to(store.local.absolute().resolve()):
        raise PackError(f"{out} is inside the recording {store.location}; put the zip elsewhere")
    if not out.parent.is_dir():
        raise PackError(f"no such directory: {out.parent}")
    files = [key for key, _ in store.list() if key != LOCK_KEY]
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key in files:
                info = zipfile.ZipInfo(key, EPOCH)
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                zf.writestr(info, store.get(key), compress_type=zipfile.ZIP_STORED)
            for folder in _empty_folders(store):
                info = zipfile.ZipInfo(folder + "/", EPOCH)
                info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                zf.writestr(info, b"")
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out.stat().st_size


def _empty_folders(store: Store) -> list[str]:
    """The empty folders of a local recording (a zip keeps them as entries of their own)."""
    if not isinstance(store, DirStore):
        return []
    root = store.local
    return sorted(Path(d).relative_to(root).as_posix() for d, subdirs, files in os.walk(root)
                  if not subdirs and not files and Path(d) != root)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_names(infos: list[zipfile.ZipInfo], archive: Path) -> None:
    """Refuse entries that would land outside the target directory, or are not plain files and folders."""
    seen = set()
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.rstrip("/")).parts
        if (not name or name.startswith("/") or "\\" in name or "\x00" in name or not parts
                or any(p in ("", ".", "..") or ":" in p for p in parts)):
            raise PackError(f"{archive} holds the path {name!r}, which would land outside the target directory; refusing it")
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise PackError(f"{archive} holds {name!r}, which is not a plain file or folder (a link?); refusing it")
        key = "/".join(parts)
        if key in seen:
            raise PackError(f"{archive} holds {name!r} twice; refusing it")
        seen.add(key)


def unpack(archive: Path, dest: Path) -> int:
    """Extract the packed recording `archive` into the new or empty directory `dest`; returns the number of files.

    Refuses a zip that is not a recording, entries that would escape `dest`, and a `dest` that holds
    anything. Extracts into a temporary directory beside `dest`, then renames it: `dest` appears
    whole or not at all.
    """
    archive, dest = Path(archive), Path(dest)
    if is_url(str(dest)):
        raise PackError(f"unpack writes a local directory, not {dest}")
    if not archive.is_file():
        raise PackError(f"no such file: {archive}")
    if not zipfile.is_zipfile(archive):
        raise PackError(f"not a zip file: {archive}")
    if dest.exists() and not dest.is_dir():
        raise PackError(f"{dest} exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()):
        raise PackError(f"{dest} is not empty; unpack into a new or empty directory")
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        _check_names(infos, archive)
        try:
            Recording.open(ZipStore(archive))
        except RecordingError as e:
            raise PackError(f"not a packed recording: {archive} ({e})") from None
        parent = dest.absolute().parent
        if not parent.is_dir():
            raise PackError(f"no such directory: {parent}")
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{dest.name}.", suffix=".unpack"))
        try:
            files = 0
            for info in infos:
                target = tmp.joinpath(*PurePosixPath(info.filename.rstrip("/")).parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as f:  # (zipfile checks each entry's CRC)
                    shutil.copyfileobj(src, f, 1 << 20)
                files += 1
            os.chmod(tmp, 0o777 & ~_umask())
            if dest.is_dir():
                dest.rmdir()
            os.rename(tmp, dest)
        except zipfile.BadZipFile as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise PackError(f"corrupt zip {archive}: {e}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return files
