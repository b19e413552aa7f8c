"""Where a recording's files live: a local directory, a zip file (read-only), or an object store URL.

`open_store(location)` gives a `Store` with the few operations the recorder, the reader, the viewer's
server and pack/unpack need: whole files written atomically (and, in a local directory, bytes
written in place), whole or ranged reads, sizes, listing,
deletion, the writer lock, and a zarr store over the same files for the metadata. Keys are the
recording's relative paths with `/` (e.g. `tensors/loss/c.0.0`); the bytes are the same everywhere.

- a local directory (`DirStore`): a file is written to `<name>.partial` and renamed into place (a
  large one past the page cache, `_write_file`); the writer lock is an `flock` on the directory (`format.lock_writer`).
- a zip file (`ZipStore`, read-only): what `acc-capture pack` writes, entries stored, not deflated, so
  a ranged read is a `pread` at the entry's offset in the zip.
- a URL (`ObjectStore`, through obstore): `s3://bucket/prefix` (credentials, region and endpoint from
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN for temporary credentials, AWS_REGION or
  AWS_DEFAULT_REGION, AWS_ENDPOINT_URL; nothing else is read), `gs://` and `az://`
  (obstore's own variables) and `memory://name` (in this process only). An object PUT is atomic; the
  writer lock is an object holding the writer's host, pid and a heartbeat (`ObjectLock`).

obstore rather than fsspec/s3fs, by measurement (benchmarks/bench_storage.py, moto in a process of its
own on 127.0.0.1, a 200-step recording of 328 files, 263 MB, 16 uploads at a time, on a busy 2-core
machine, four runs): obstore uploaded it in 1.9 to 2.5 s, s3fs in 2.4 to 4.0 s, and obstore's client
spent 0.4 s of CPU on it against s3fs's 1.3 s; one small PUT took 4.1 to 5.1 ms against 6.4 to 9.7 ms
(the recorder publishes a few small objects every chunk of steps). obstore's requests run in Rust,
off the GIL, so uploads do not compete with training for the interpreter. zarr-python reads both
(`zarr.storage.ObjectStore`).
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import mmap
import os
import re
import shutil
import socket
import struct
import threading
import time
import weakref
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import zarr

from capture.crash import crash_point

PARTIAL = ".partial"  # a local file being written; renamed into place when whole
URL = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$", re.ASCII)
TYPO = re.compile(r"^(s3|gs|az|abfs|memory|file):/?([^/].*)?$", re.ASCII)  # s3:/bucket, s3:bucket


class StoreError(OSError):
    """A location that cannot be used (an unreachable endpoint, no such bucket, refused credentials, a
    read-only zip); the message says why in one line. An OSError, as a failing disk's errors are."""


def is_url(location: str | os.PathLike) -> bool:
    """True for `scheme://...` (file:// excepted: that is a local path)."""
    m = URL.match(str(location)) if isinstance(location, str) else None
    return m is not None and m[1] != "file"


def local_path(location: str | os.PathLike) -> Path:
    """A local location as a Path: `file:///data/run1` as /data/run1 (Path() alone would make it file:/data/run1)."""
    text = os.fspath(location)
    return Path(text[len("file://"):]) if isinstance(text, str) and text.startswith("file://") else Path(text)


class Store:
    """The files of one recording. Subclasses implement the primitives; keys use `/`."""

    location: str | Path  # as given: a Path for a directory or a zip, the URL for an object store
    name: str  # the recording's name (last part of its path)
    read_only: bool = False
    local: Path | None = None  # the directory, for a local directory store
    shared: bool = True  # another process opens the same files from `location` (not memory://)

    def __str__(self) -> str:
        return str(self.location)

    def describe(self, key: str) -> str:
        """Where `key` is, for messages."""
        return f"{self.location}/{key}"

    # -- reading
    def get(self, key: str) -> bytes:
        """The whole file (FileNotFoundError if there is none)."""
        raise NotImplementedError

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """`length` bytes from `start` (fewer if the file ends first)."""
        raise NotImplementedError

    def get_tail(self, key: str, length: int) -> tuple[bytes, int]:
        """The last `length` bytes (all of a shorter file) and the file's size, in one read."""
        raise NotImplementedError

    def size(self, key: str) -> int:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
            return True
        except FileNotFoundError:
            return False

    def list(self, prefix: str = "") -> list[tuple[str, int]]:
        """(key, size) of every file under `prefix` (a folder, '' for all), sorted by key."""
        raise NotImplementedError

    def total_size(self) -> int:
        return sum(size for _, size in self.list())

    def is_empty(self) -> bool:
        return not self.list()

    # -- writing
    def put(self, key: str, data: bytes | list[bytes]) -> None:
        """Write the whole file atomically: a reader sees the old file or the new one, never a part.
        `data`: its bytes (any contiguous buffer), or a list of its parts in order (a shard's:
        `format.shard_parts`)."""
        raise NotImplementedError

    def put_many(self, items: Iterable[tuple[str, bytes | list[bytes]]]) -> None:
        for key, data in items:
            self.put(key, data)

    def write_at(self, key: str, offset: int, data: bytes) -> None:
        """Overwrite bytes [offset, offset + len(data)) of an existing file in place, leaving the
        others as they are (a local directory only: `local` is set). A crash may leave these bytes
        half written, never the others."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove a file if it is there."""
        raise NotImplementedError

    def clear(self) -> None:
        """Remove every file of the recording."""
        for key, _ in self.list():
            self.delete(key)

    def check_writable(self) -> None:
        """Raise StoreError (one line) if nothing could be written here."""
        if self.read_only:
            raise StoreError(f"{self.location} is read-only")

    # -- zarr and the writer lock
    def zarr(self, read_only: bool = True):
        """A zarr-python store over the same files."""
        raise NotImplementedError

    def lock(self) -> WriterLock:
        """Take the writer lock (BlockingIOError if a live writer holds it)."""
        raise StoreError(f"{self.location} is read-only")

    def writer_alive(self) -> bool:
        """True while a writer holds the lock (a `recording` status with no writer is `interrupted`)."""
        return False


class WriterLock:
    def release(self) -> None:
        pass


# -- a local directory ------------------------------------------------------------------------------

class _Flock(WriterLock):
    def __init__(self, fd: int):
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # (releases the flock)
            self.fd = None


DIRECT_BYTES = 1 << 16  # a file at least this large is written past the page cache (O_DIRECT) where it can be
_BLOCK = 4096  # O_DIRECT's alignment of memory, length and offset (a larger one is refused, and falls back)
_PIECE = 4 << 20  # bytes written at a time, through each writing thread's page-aligned buffer
_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP)  # how a file system says it does not do O_DIRECT
_direct = hasattr(os, "O_DIRECT")  # (False once a file system here refuses it)
_buffers = threading.local()


def _write_file(path: Path, data: bytes | list[bytes]) -> None:
    """Write `data` (bytes, or parts in order) as the new file `path`. A large file goes straight to
    the disk (O_DIRECT, in whole blocks from a page-aligned buffer this thread reuses, then cut to
    its length): a recording is written once and not read back by its writer, so its files need no
    page cache, and on a long run they would fill it; on some virtual machines fresh page-cache
    pages are also dear (`benchmarks/bench_record.py` prints what this machine's cost). Where
    O_DIRECT is refused, the file is written the usual way."""
    global _direct
    parts = [memoryview(p).cast("B") for p in (data if isinstance(data, list) else [data])]  # (as bytes, whatever their type)
    if _direct and sum(p.nbytes for p in parts) >= DIRECT_BYTES:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
        except OSError as e:
            if e.errno not in _REFUSED:
                raise
            _direct = False
        else:
            try:
                if _write_direct(fd, parts):
                    return
                _direct = False
            finally:
                os.close(fd)
    with open(path, "wb") as f:
        f.writelines(parts)


def _write_direct(fd: int, parts: list[memoryview]) -> bool:
    """Write `parts` one after the other into `fd` (opened with O_DIRECT), copied into this thread's
    aligned buffer and written a buffer at a time, the last padded to a whole block; False if the
    file system refuses it at once."""
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = mmap.mmap(-1, _PIECE)
    with memoryview(buffer) as view:
        written = filled = 0

        def flush() -> None:
            padded = -(-filled // _BLOCK) * _BLOCK
            view[filled:padded] = bytes(padded - filled)
            _pwrite_all(fd, view[:padded], written)

        try:
            for part in parts:
                done = 0
                while done < len(part):
                    n = min(len(part) - done, _PIECE - filled)
                    view[filled:filled + n] = part[done:done + n]
                    filled, done = filled + n, done + n
                    if filled == _PIECE:
                        flush()
                        written, filled = written + _PIECE, 0
            if filled:
                flush()
        except OSError as e:
            if e.errno not in _REFUSED or written:
                raise
            return False
    os.ftruncate(fd, written + filled)
    return True


def _pwrite_all(fd: int, data: memoryview | bytes, offset: int) -> None:
    """Write all of `data` at `offset` of `fd` (a short write goes on; no progress is an error)."""
    data, done = memoryview(data), 0
    while done < len(data):
        n = os.pwrite(fd, data[done:], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, f"write made no progress at byte {offset + done}")
        done += n


class DirStore(Store):
    """A recording directory on this machine."""

    def __init__(self, path: str | os.PathLike):
        self.local = self.location = Path(path)
        self.name = self.local.resolve().name

    def describe(self, key: str) -> str:
        return str(self.local / key)

    def get(self, key: str) -> bytes:
        return (self.local / key).read_bytes()

    def get_range(self, key: str, start: int, length: int) -> bytes:
        fd = os.open(self.local / key, os.O_RDONLY)
        try:
            return os.pread(fd, length, start)
        finally:
            os.close(fd)

    def get_tail(self, key: str, length: int) -> tuple[bytes, int]:
        fd = os.open(self.local / key, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            return os.pread(fd, min(length, size), max(size - length, 0)), size
        finally:
            os.close(fd)

    def size(self, key: str) -> int:
        return (self.local / key).stat().st_size

    def exists(self, key: str) -> bool:
        return (self.local / key).is_file()

    def list(self, prefix: str = "") -> list[tuple[str, int]]:
        top = self.local / prefix if prefix else self.local
        if not top.is_dir():
            return []
        out = []
        for folder, _, files in os.walk(top):
            for f in files:
                p = Path(folder, f)
                if p.is_file():
                    out.append((p.relative_to(self.local).as_posix(), p.stat().st_size))
        return sorted(out)

    def is_empty(self) -> bool:
        return not self.local.is_dir() or not any(self.local.iterdir())

    def put(self, key: str, data: bytes | list[bytes]) -> None:
        target = self.local / key
        tmp = target.with_name(target.name + PARTIAL)
        crash_point("mid-file", half_file=(tmp, data))
        try:
            _write_file(tmp, data)
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_file(tmp, data)
        os.replace(tmp, target)

    def write_at(self, key: str, offset: int, data: bytes) -> None:
        fd = os.open(self.local / key, os.O_WRONLY)
        try:
            crash_point("mid-row", half_at=(fd, offset, data))
            _pwrite_all(fd, data, offset)
        finally:
            os.close(fd)

    def delete(self, key: str) -> None:
        (self.local / key).unlink(missing_ok=True)

    def clear(self) -> None:
        if self.local.is_dir():
            shutil.rmtree(self.local)

    def check_writable(self) -> None:
        pass  # (session.check_path says what is wrong with a local path, in its own words)

    def zarr(self, read_only: bool = True):
        return zarr.storage.LocalStore(self.local, read_only=read_only)

    def lock(self) -> WriterLock:
        from capture import format as fmt

        return _Flock(fmt.lock_writer(self.local))

    def writer_alive(self) -> bool:
        from capture import format as fmt

        return self.local.is_dir() and fmt.writer_alive(self.local)


# -- a zip file -----------------------------------------------------------------------------------

class ZipStore(Store):
    """A recording packed into one zip file (`acc-capture pack`). Read-only.

    Entries are stored (not deflated), so a ranged read is a `pread` at the entry's data offset in
    the zip file; a deflated entry (a zip made by another tool) is read whole and sliced.
    """

    read_only = True

    def __init__(self, path: str | os.PathLike):
        self.location = self.file = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.file)
        except (zipfile.BadZipFile, OSError) as e:
            raise StoreError(f"not a zip file: {self.file} ({e})") from None
        self.name = self.file.name.removesuffix(".zip")
        self._entries = {i.filename: i for i in self._zip.infolist() if not i.is_dir()}
        self._offsets: dict[str, int] = {}
        self._fd = os.open(self.file, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)
        weakref.finalize(self, self._zip.close)

    def describe(self, key: str) -> str:
        return f"{self.file}:{key}"

    def __reduce__(self):  # (a dask task carries the path; the process that runs it opens the zip once)
        return _zip_store, (str(self.file),)

    def _entry(self, key: str) -> zipfile.ZipInfo:
        try:
            return self._entries[key]
        except KeyError:
            raise FileNotFoundError(f"no {key} in {self.file}") from None

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        """Where the entry's bytes start: after its local header (whose name and extra field lengths
        may differ from the central directory's)."""
        at = self._offsets.get(info.filename)
        if at is None:
            header = os.pread(self._fd, 30, info.header_offset)
            if len(header) != 30 or header[:4] != b"PK\x03\x04":
                raise OSError(f"corrupt zip {self.file}: bad local header for {info.filename}")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            at = self._offsets[info.filename] = info.header_offset + 30 + name_len + extra_len
        return at

    def get(self, key: str) -> bytes:
        info = self._entry(key)
        if info.compress_type != zipfile.ZIP_STORED:
            return self._zip.read(info)
        return os.pread(self._fd, info.file_size, self._data_offset(info))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        info = self._entry(key)
        if info.compress_type != zipfile.ZIP_STORED:
            return self._zip.read(info)[start:start + length]
        length = max(0, min(length, info.file_size - start))
        return os.pread(self._fd, length, self._data_offset(info) + start)

    def get_tail(self, key: str, length: int) -> tuple[bytes, int]:
        size = self._entry(key).file_size
        return self.get_range(key, max(size - length, 0), min(length, size)), size

    def size(self, key: str) -> int:
        return self._entry(key).file_size

    def exists(self, key: str) -> bool:
        return key in self._entries

    def list(self, prefix: str = "") -> list[tuple[str, int]]:
        start = prefix.rstrip("/") + "/" if prefix else ""
        return sorted((k, i.file_size) for k, i in self._entries.items() if k.startswith(start))

    def total_size(self) -> int:
        return self.file.stat().st_size

    def put(self, key: str, data: bytes | list[bytes]) -> None:
        raise PermissionError(f"{self.file} is a zip file, read-only (unpack it to change it)")

    def delete(self, key: str) -> None:
        self.put(key, b"")

    def check_writable(self) -> None:
        raise StoreError(f"{self.file} is a zip file, read-only; record into a directory and `acc-capture pack` it")

    def zarr(self, read_only: bool = True):
        return zarr.storage.ZipStore(self.file, mode="r")


# -- an object store ------------------------------------------------------------------------------

LOCK_KEY = "state/writer-lock.json"  # the writer lock of a recording in an object store
HEARTBEAT_S = 10.0  # the lock's holder rewrites it this often
STALE_S = 60.0  # a lock not rewritten for this long is a dead writer's
_UPLOADS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="acc-capture-upload")
_MEMORY: dict[str, object] = {}  # memory:// stores of this process, by URL
WEB_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
             ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png"}


def _error_line(e: BaseException) -> str:
    """obstore's multi-line error text as one short line."""
    text = " ".join(str(e).split())
    return text[:240] + ("..." if len(text) > 240 else "")


class ObjectStore(Store):
    """A recording under a URL, through obstore. Every file is one object; a PUT is atomic."""

    def __init__(self, url: str, read_only: bool = False):
        self.location = self.url = url.rstrip("/")
        m = URL.match(self.url)
        self.scheme, rest = m[1], m[2]
        self.shared = self.scheme != "memory"
        self.name = rest.rstrip("/").rsplit("/", 1)[-1] or rest
        self.read_only = read_only
        self._store = self._make(self.scheme, rest)

    def _make(self, scheme: str, rest: str):
        from datetime import timedelta

        from obstore import store as obs

        bucket, _, prefix = rest.partition("/")
        prefix = prefix.strip("/")
        if scheme != "memory" and not bucket:
            raise StoreError(f"{self.url}: no bucket in the URL (write {scheme}://bucket/prefix)")
        retry = {"max_retries": 3, "retry_timeout": timedelta(seconds=30)}
        client = {"connect_timeout": "5s", "timeout": "120s"}
        if scheme == "s3":
            env = os.environ
            key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
            if not key or not secret:
                raise StoreError(f"no credentials for {self.url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
            region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
            config = {"access_key_id": key, "secret_access_key": secret, "region": region}
            if env.get("AWS_SESSION_TOKEN"):  # (temporary credentials)
                config["session_token"] = env["AWS_SESSION_TOKEN"]
            endpoint = env.get("AWS_ENDPOINT_URL")
            if endpoint:
                config["endpoint"] = endpoint
                client["allow_http"] = endpoint.startswith("http://")
            return obs.S3Store(bucket, prefix=prefix or None, config=config, client_options=client, retry_config=retry)
        if scheme == "memory":
            if self.url not in _MEMORY:
                _MEMORY[self.url] = obs.MemoryStore()
            return _MEMORY[self.url]
        if scheme in ("gs", "az", "abfs"):
            try:
                return obs.from_url(self.url, client_options=client, retry_config=retry)
            except Exception as e:
                raise StoreError(f"{self.url}: {_error_line(e)}") from None
        raise StoreError(f"{self.url}: unknown storage scheme {scheme!r} (s3, gs, az, abfs and memory are known)")

    def __reduce__(self):  # (a dask task carries the URL; the process that runs it makes one client for it)
        return _object_store, (self.url, self.read_only)

    def explain(self, e: BaseException, key: str | None = None) -> BaseException:
        """An obstore error as FileNotFoundError (no such object), PermissionError, or StoreError (one line)."""
        text = str(e)
        where = f"{self.url}/{key}" if key else self.url
        if "NoSuchBucket" in text:
            bucket = URL.match(self.url)[2].split("/", 1)[0]
            return StoreError(f"no such bucket: {bucket} ({self.url})")
        if "error sending request" in text or "connection" in text.lower() and "Generic" in text:
            endpoint = os.environ.get("AWS_ENDPOINT_URL") if self.scheme == "s3" else None
            return StoreError(f"cannot reach the object store for {self.url}" + (f" at {endpoint}" if endpoint else "")
                              + ": connection failed")
        if "ExpiredToken" in text:
            return StoreError(f"the credentials for {self.url} have expired (renew AWS_SESSION_TOKEN and its keys)")
        if "token request" in text:  # (gs://, az://: no credentials found where obstore looks for them)
            return StoreError(f"no credentials for {self.url}: {_error_line(e)[:160]}")
        if any(c in text for c in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken")):
            return StoreError(f"the object store refused the credentials for {self.url} (check AWS_ACCESS_KEY_ID "
                              "and AWS_SECRET_ACCESS_KEY)")
        if "AccessDenied" in text or "403 Forbidden" in text or type(e).__name__ in ("PermissionDeniedError", "UnauthenticatedError"):
            return PermissionError(f"no permission for {where}")
        if isinstance(e, FileNotFoundError):
            return FileNotFoundError(f"no such object: {where}")
        if any(c in text for c in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraint")):
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            return StoreError(f"the bucket of {self.url} is not in the region {region}: set AWS_REGION to its region")
        status = re.search(r"non-2xx status code: (\d{3}[^:]*)", text)
        if status and "<Code>" not in text and "performing HEAD" not in text:  # (a HEAD's error has no body)
            # an HTTP server answered, but not as an S3 API does (with an S3 error document)
            endpoint = os.environ.get("AWS_ENDPOINT_URL") if self.scheme == "s3" else None
            return StoreError(f"the server for {self.url}" + (f" at {endpoint}" if endpoint else "")
                              + f" answered {status[1].strip()} with no S3 error: is it an S3 API endpoint?")
        return StoreError(f"{where}: {_error_line(e)}")

    def _call(self, fn, *args, key: str | None = None, **kwargs):
        try:
            return fn(self._store, *args, **kwargs)
        except (StoreError, PermissionError) as e:
            raise e from None
        except Exception as e:
            raise self.explain(e, key) from None

    def get(self, key: str) -> bytes:
        import obstore

        return bytes(self._call(obstore.get, key, key=key).bytes())

    def get_range(self, key: str, start: int, length: int) -> bytes:
        import obstore

        if length <= 0:
            return b""
        return bytes(self._call(obstore.get, key, key=key, options={"range": (start, start + length)}).bytes())

    def get_tail(self, key: str, length: int) -> tuple[bytes, int]:
        import obstore

        result = self._call(obstore.get, key, key=key, options={"range": {"suffix": length}})
        return bytes(result.bytes()), int(result.meta["size"])

    def size(self, key: str) -> int:
        import obstore

        return int(self._call(obstore.head, key, key=key)["size"])

    def list(self, prefix: str = "") -> list[tuple[str, int]]:
        import obstore

        start = prefix.rstrip("/") + "/" if prefix else None
        out = []
        stream = self._call(obstore.list, start)
        try:
            for batch in stream:
                out += [(m["path"], int(m["size"])) for m in batch]
        except Exception as e:
            raise self.explain(e) from None
        return sorted(out)

    def is_empty(self) -> bool:
        import obstore

        try:
            for batch in obstore.list(self._store, chunk_size=1):
                if batch:
                    return False
        except Exception as e:
            raise self.explain(e) from None
        return True

    def put(self, key: str, data: bytes | list[bytes]) -> None:
        import obstore

        if self.read_only:
            raise PermissionError(f"{self.url} is read-only")
        kind = WEB_TYPES.get(os.path.splitext(key)[1])  # a bucket that serves the viewer sends it with its type
        data = b"".join(data) if isinstance(data, list) else data
        self._call(obstore.put, key, data, key=key, **({"attributes": {"Content-Type": kind}} if kind else {}))

    def put_many(self, items: Iterable[tuple[str, bytes | list[bytes]]]) -> None:
        """Upload concurrently (each PUT atomic); raises the first error after all have finished."""
        items = list(items)
        for done, _ in enumerate(_UPLOADS.map(lambda item: self.put(*item), items), 1):
            if done == len(items) // 2:
                crash_point("upload")  # (half of a chunk's files uploaded, the rest on their way)

    def delete(self, key: str) -> None:
        import obstore

        try:
            self._call(obstore.delete, key, key=key)
        except FileNotFoundError:
            pass

    def clear(self) -> None:
        import obstore

        keys = [k for k, _ in self.list()]
        for i in range(0, len(keys), 1000):
            self._call(obstore.delete, keys[i:i + 1000])

    def check_writable(self) -> None:
        """Reach the store and list the prefix: a missing bucket, refused credentials or an unreachable
        endpoint is a StoreError (no permission: PermissionError) before anything is written."""
        super().check_writable()
        self.is_empty()

    def zarr(self, read_only: bool = True):
        return _Explained(zarr.storage.ObjectStore(self._store, read_only=read_only), self)

    def lock(self) -> WriterLock:
        return ObjectLock(self)

    def writer_alive(self) -> bool:
        try:
            holder = json.loads(self.get(LOCK_KEY))
        except (FileNotFoundError, ValueError):
            return False
        return _holder_alive(holder)


class _Explained(zarr.storage.WrapperStore):
    """zarr's ObjectStore whose errors are the ones this module raises (one line each): what the
    recorder and the reader do through zarr fails as clearly as what they do through the Store."""

    def __init__(self, store, owner: ObjectStore):
        super().__init__(store)
        self.owner = owner

    def _with_store(self, store):
        return type(self)(store, self.owner)

    async def _run(self, call):
        try:
            return await call
        except Exception as e:
            raise self.owner.explain(e) from None

    async def _iterate(self, items):
        try:
            async for item in items:
                yield item
        except Exception as e:
            raise self.owner.explain(e) from None

    async def get(self, *args, **kwargs):
        return await self._run(self._store.get(*args, **kwargs))

    async def get_partial_values(self, *args, **kwargs):
        return await self._run(self._store.get_partial_values(*args, **kwargs))

    async def exists(self, key):
        return await self._run(self._store.exists(key))

    async def set(self, key, value):
        return await self._run(self._store.set(key, value))

    async def set_if_not_exists(self, key, value):
        return await self._run(self._store.set_if_not_exists(key, value))

    async def delete(self, key):
        return await self._run(self._store.delete(key))

    async def delete_dir(self, prefix):
        return await self._run(self._store.delete_dir(prefix))

    def list(self):
        return self._iterate(self._store.list())

    def list_prefix(self, prefix):
        return self._iterate(self._store.list_prefix(prefix))

    def list_dir(self, prefix):
        return self._iterate(self._store.list_dir(prefix))


def _now() -> float:
    return time.time()


def _holder_alive(holder: dict) -> bool:
    """A lock's holder is alive if it beat recently and, on this host, its process is still there."""
    if not isinstance(holder, dict):
        return False
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    beat = holder.get("time")
    return isinstance(beat, (int, float)) and _now() - beat < STALE_S


class ObjectLock(WriterLock):
    """The writer lock of a recording in an object store: the object `state/writer-lock.json`,
    holding the writer's host, pid and the time of its last heartbeat (rewritten every HEARTBEAT_S).

    Taken with a conditional PUT (create only if absent) where the store supports it; a lock whose
    holder is gone (same host, no such pid) or silent for STALE_S seconds is taken over. Deleted on
    release. It keeps two well-behaved writers apart; it is not a consensus protocol (two hosts
    taking over the same stale lock in the same instant could both win).
    """

    def __init__(self, store: ObjectStore):
        import obstore

        self.store = store
        self.token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        try:
            holder = json.loads(store.get(LOCK_KEY))
        except FileNotFoundError:
            holder = None
        except ValueError:
            holder = {}
        if holder is not None:
            if _holder_alive(holder):
                raise BlockingIOError(f"{store.url} is being written by {holder.get('host')} pid {holder.get('pid')}")
            store.delete(LOCK_KEY)
        try:
            store._call(obstore.put, LOCK_KEY, self._body(), key=LOCK_KEY, mode="create")
        except StoreError as e:
            if "already exists" in str(e) or "Precondition" in str(e):
                raise BlockingIOError(f"{store.url} is being written by another process") from None
            if "not supported" not in str(e).lower() and "NotImplemented" not in str(e):
                raise
            store.put(LOCK_KEY, self._body())  # (a store without conditional PUT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="acc-capture-lock", daemon=True)
        self._thread.start()

    def _body(self) -> bytes:
        host, pid, _ = self.token.split(":")
        return json.dumps({"host": host, "pid": int(pid), "time": _now(), "token": self.token,
                           "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}).encode()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.store.put(LOCK_KEY, self._body())
            except Exception:  # (a missed beat; the next one tries again)
                pass

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        try:
            self.store.delete(LOCK_KEY)
        except Exception:
            pass


# -- files in memory over a store -----------------------------------------------------------------

class Overlay(Store):
    """Read-only: `files` (key -> bytes, in memory) in front of `base`. The viewer of a zip or a
    bucket recording is served this way: its page and scripts from memory, the data from the store."""

    read_only = True

    def __init__(self, base: Store, files: dict[str, bytes]):
        self.base, self.files = base, dict(files)
        self.location, self.name = base.location, base.name

    def describe(self, key: str) -> str:
        return self.base.describe(key)

    def get(self, key: str) -> bytes:
        return self.files[key] if key in self.files else self.base.get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if key in self.files:
            return self.files[key][start:start + max(length, 0)]
        return self.base.get_range(key, start, length)

    def get_tail(self, key: str, length: int) -> tuple[bytes, int]:
        if key in self.files:
            data = self.files[key]
            return data[max(len(data) - length, 0):], len(data)
        return self.base.get_tail(key, length)

    def size(self, key: str) -> int:
        return len(self.files[key]) if key in self.files else self.base.size(key)

    def list(self, prefix: str = "") -> list[tuple[str, int]]:
        start = prefix.rstrip("/") + "/" if prefix else ""
        mine = {k: len(v) for k, v in self.files.items() if k.startswith(start)}
        return sorted({**dict(self.base.list(prefix)), **mine}.items())

    def put(self, key: str, data: bytes | list[bytes]) -> None:
        raise PermissionError(f"{self.location} is served read-only")

    def delete(self, key: str) -> None:
        self.put(key, b"")


# -- choosing one -----------------------------------------------------------------------------------

_OPENED: dict[tuple, Store] = {}  # zip and object stores unpickled in this process (dask workers)


def _zip_store(path: str) -> ZipStore:
    st = os.stat(path)
    key = ("zip", path, st.st_mtime_ns, st.st_size)
    if key not in _OPENED:
        _OPENED[key] = ZipStore(path)
    return _OPENED[key]


def _object_store(url: str, read_only: bool) -> ObjectStore:
    key = ("url", url, read_only, *(os.environ.get(v) for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                               "AWS_REGION", "AWS_ENDPOINT_URL")))
    if key not in _OPENED:
        _OPENED[key] = ObjectStore(url, read_only)
    return _OPENED[key]


def open_store(location: str | os.PathLike | Store) -> Store:
    """The store at `location`: a Store as is; a URL; a zip file; else a local directory (which need
    not exist yet). Raises StoreError for a URL that cannot be used (one line)."""
    if isinstance(location, Store):
        return location
    if is_url(location):
        return ObjectStore(str(location))
    text = os.fspath(location)
    typo = TYPO.match(text) if isinstance(text, str) else None  # (a Path too: Path("s3://b/x") is s3:/b/x)
    if typo:
        raise StoreError(f"{location} looks like a URL missing a slash: write {typo[1]}://{(typo[2] or '').lstrip('/')}")
    path = local_path(location)
    if path.is_file() and zipfile.is_zipfile(path):
        return ZipStore(path)
    return DirStore(path)
