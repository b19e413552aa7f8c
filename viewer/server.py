"""A small file server for one recording: 127.0.0.1 only, nothing outside the directory.

Started by `acc-capture view` it is a static server. Started by `acc-capture serve` it also answers
the live-stepping API under `/inspect/` (an `InspectAPI`, see capture/live.py), marks the page it
serves as live, rebuilds the recording's viewer after each step and follows `POST /inspect/setup`
to the new recording it makes. A static server has no `/inspect/` at all (404).
"""

from __future__ import annotations

import email.utils
import errno
import io
import json
import math
import os
import posixpath
import re
import sys
import threading
import webbrowser
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from viewer.build import ViewerError

HOST = "127.0.0.1"
API = "/inspect"
MAX_BODY = 64 * 1024  # bytes of a request body (the API's bodies are a few bytes of JSON)
BODY_TIMEOUT = 10.0  # seconds to wait for a body the client announced
RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})", re.ASCII)  # one range of bytes; a list of several is not answered
# marks the page as served by `acc-capture serve`, so it asks /inspect/state (a static page never asks)
LIVE_MARK = b'<meta name="acc-capture-live" content="inspect/">\n'
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


def byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The part of a file of `size` bytes that a Range header asks for: (first, last) inclusive;
    "unsatisfiable" (answer 416); or None: no Range, or one not answered (several ranges, another
    unit, bad syntax), so the whole file goes out with 200 as RFC 9110 allows."""
    m = RANGE.fullmatch(header.strip()) if header else None
    if m is None or not (m[1] or m[2]):
        return None
    if not m[1]:  # bytes=-n: the last n bytes
        n = int(m[2])
        return (max(size - n, 0), size - 1) if n and size else "unsatisfiable"
    first = int(m[1])
    if m[2] and int(m[2]) < first:
        return None
    if first >= size:
        return "unsatisfiable"
    return first, min(int(m[2]) if m[2] else size - 1, size - 1)


def _is_length(text: str) -> bool:
    """A Content-Length: ASCII digits only (str.isdigit also takes '²' and other scripts' digits)."""
    return text.isascii() and text.isdigit() and len(text) <= 20


class RecordingHandler(SimpleHTTPRequestHandler):
    """Serves regular files under the server's root; refuses `..`, NUL bytes and anything a symlink leads out to.

    Answers a request for one range of a file's bytes (`Range: bytes=a-b`, `a-`, `-n`) with 206 and
    those bytes: the viewer reads one inner chunk of a shard that way.
    With an API on the server, also answers `/inspect/...` (GET and POST) with JSON.
    """

    protocol_version = "HTTP/1.1"  # keep-alive: a step is a dozen small requests
    disable_nagle_algorithm = True  # answer each small request at once, not after the client's ACK

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=os.sep, **kwargs)  # (unused: every path is resolved against the root)

    @property
    def root(self) -> str | None:
        return self.server.root  # read per request: `setup` may switch the server to a new recording

    def resolve(self) -> tuple[str | None, HTTPStatus]:
        """The real path of the requested file, or None and the status to answer with."""
        root = self.root
        if root is None:
            return None, HTTPStatus.SERVICE_UNAVAILABLE
        raw = urlsplit(self.path).path
        path = unquote(raw, errors="strict") if "%" in raw else raw
        if "\x00" in path or "\\" in path or not path.startswith("/"):
            return None, HTTPStatus.BAD_REQUEST
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            return None, HTTPStatus.FORBIDDEN
        if not parts or path.endswith("/"):
            parts.append("index.html")
        real = os.path.realpath(os.path.join(root, *parts))
        if os.path.commonpath([real, root]) != root:
            return None, HTTPStatus.FORBIDDEN
        if not os.path.isfile(real):
            return None, HTTPStatus.NOT_FOUND
        return real, HTTPStatus.OK

    def send_head(self):
        self._span = (0, None)
        if self.server.source is not None:
            return self.source_head(self.server.source)
        try:
            real, status = self.resolve()
        except UnicodeDecodeError:
            real, status = None, HTTPStatus.BAD_REQUEST
        if real is None:
            self.send_error(status)
            return None
        if self.server.api is not None and real == os.path.join(self.root, "index.html"):
            return self.live_page(real)
        return self.file_head(real)

    def not_modified(self, mtime: float) -> bool:
        """If-Modified-Since names a time at or after the file's last change (and no If-None-Match)."""
        text = self.headers.get("If-Modified-Since")
        if not text or "If-None-Match" in self.headers:
            return False
        try:
            since = email.utils.parsedate_to_datetime(text)
        except (TypeError, IndexError, OverflowError, ValueError):
            return False
        if since.tzinfo is None:
            return False
        return int(mtime) <= since.timestamp()

    _span = (0, None)  # (offset, count) of the open file that copyfile sends; count None: to its end

    def source_head(self, source):
        """A file of a recording that is not a directory (a zip, a bucket: a capture.store.Store, with
        the viewer's files in memory in front), whole (200) or one range (206, or 416), read from the
        store with a ranged read; the bytes to send, or None."""
        raw = urlsplit(self.path).path
        try:
            path = unquote(raw, errors="strict") if "%" in raw else raw
        except UnicodeDecodeError:
            path = ""
        if "\x00" in path or "\\" in path or not path.startswith("/"):
            self.send_error(HTTPStatus.BAD_REQUEST)
            return None
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            self.send_error(HTTPStatus.FORBIDDEN)
            return None
        if not parts or path.endswith("/"):
            parts.append("index.html")
        key = "/".join(parts)
        try:
            size = source.size(key)
            span = None if self.headers.get("If-Range") else byte_range(self.headers.get("Range"), size)
            if span == "unsatisfiable":
                self.unsatisfiable(size)
                return None
            data = source.get(key) if span is None else source.get_range(key, span[0], span[1] - span[0] + 1)
        except FileNotFoundError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        except Exception as e:  # the store failed (a bucket out of reach): say so, keep serving
            self.send_error(HTTPStatus.BAD_GATEWAY, explain=" ".join(str(e).split())[:200])
            return None
        if span is None:
            self.send_response(HTTPStatus.OK)
        else:
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {span[0]}-{span[0] + len(data) - 1}/{size}")
        self.send_header("Content-Type", self.guess_type(key))
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(data)

    def unsatisfiable(self, size: int) -> None:
        """416: the asked range lies outside a file of `size` bytes."""
        self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
        self.send_header("Content-Range", f"bytes */{size}")
        self.send_header("Content-Length", "0")
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def file_head(self, real: str):
        """Headers for a file, whole (200) or one range of it (206, or 416); the open file to send, or None."""
        try:
            f = open(real, "rb")
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        try:
            st = os.fstat(f.fileno())
            size = st.st_size
            # with If-Range the client wants the range only if the file is unchanged: always safe to send it all
            span = None if self.headers.get("If-Range") else byte_range(self.headers.get("Range"), size)
            if span == "unsatisfiable":
                f.close()
                self.unsatisfiable(size)
                return None
            if span is None and self.not_modified(st.st_mtime):
                f.close()
                self.send_response(HTTPStatus.NOT_MODIFIED)
                self.end_headers()
                return None
            if span is None:
                self.send_response(HTTPStatus.OK)
                length = size
            else:
                first, last = span
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                self._span = (first, last - first + 1)
                length = last - first + 1
            self.send_header("Content-Type", self.guess_type(real))
            self.send_header("Content-Length", str(length))
            self.send_header("Last-Modified", self.date_time_string(int(st.st_mtime)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            return f
        except BaseException:
            f.close()
            raise

    def live_page(self, real: str):
        """The recording's page, marked live (in the answer only: on disk it stays a static page)."""
        try:
            with open(real, "rb") as f:
                html = f.read()
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        html = html.replace(b"</head>", LIVE_MARK + b"</head>", 1)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", TYPES[".html"])
        self.send_header("Content-Length", str(len(html)))
        self.end_headers()
        return io.BytesIO(html)

    # -- the /inspect/ API
    def is_api(self) -> bool:
        path = urlsplit(self.path).path
        return path == API or path.startswith(API + "/")

    def do_GET(self):
        if self.is_api():
            self.api_request("GET")
        else:
            super().do_GET()

    def do_HEAD(self):
        if self.is_api():
            self.send_error(HTTPStatus.NOT_FOUND if self.server.api is None else HTTPStatus.METHOD_NOT_ALLOWED)
        else:
            super().do_HEAD()

    def do_POST(self):
        if self.is_api() and self.server.api is not None:
            self.api_request("POST")
            return
        self.discard_body()  # so that the client reads the answer, not a reset
        if self.is_api():  # a static server: there is no API
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self.close_connection = True
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    def discard_body(self) -> None:
        text = self.headers.get("Content-Length", "0").strip()
        if _is_length(text) and int(text) <= 16 * MAX_BODY and not self.headers.get("Transfer-Encoding"):
            self.read_exactly(int(text), keep=False)

    def discard_chunks(self) -> None:
        """Read and drop a chunked body, up to 16 * MAX_BODY bytes or BODY_TIMEOUT (then stop reading)."""
        self.connection.settimeout(BODY_TIMEOUT)
        try:
            for _ in range(16 * MAX_BODY):
                size = int(self.rfile.readline(64).split(b";")[0].strip() or b"0", 16)
                if size == 0 or size > 16 * MAX_BODY:
                    break
                self.rfile.read(size + 2)  # (the chunk and its CRLF)
            while self.rfile.readline(1024).strip():  # (trailer fields, to the blank line)
                pass
        except (TimeoutError, ValueError, OSError):
            pass
        finally:
            self.connection.settimeout(self.timeout)

    def api_request(self, method: str) -> None:
        api = self.server.api
        if api is None:  # a static server: there is no API (the page never asks one)
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        body = b""
        if method == "POST":
            body = self.read_body()
            if body is None:
                return
        if not self.local_request(method):
            self.send_json(HTTPStatus.FORBIDDEN, {"error": "requests to the API must come from this server's own pages"})
            return
        try:
            status, answer = api.handle(method, self.path, body)
        except Exception as e:  # a bug or a damaged recording: one line for the client, not a dropped connection
            status, answer = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(e).__name__}: {e}"}
        self.send_json(status, answer)

    def local_request(self, method: str) -> bool:
        """Host names this server (no DNS rebinding) and a browser's POST comes from a page of this server."""
        port = self.server.server_address[1]
        names = {f"{HOST}:{port}", f"localhost:{port}"} | ({HOST, "localhost"} if port == 80 else set())
        if self.headers.get("Host", "").lower() not in names:
            return False
        origin = self.headers.get("Origin")
        return method != "POST" or origin is None or origin.lower() in {f"http://{n}" for n in names}

    def read_body(self) -> bytes | None:
        """The request body by its Content-Length (none: empty); None when an error was answered instead."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self.discard_chunks()  # (read before answering: a client still sending would meet a closed socket)
            self.send_json(HTTPStatus.LENGTH_REQUIRED, {"error": "send the body with a Content-Length"})
            return None
        text = self.headers.get("Content-Length", "0").strip()
        if not _is_length(text):
            self.close_connection = True
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": f"bad Content-Length {text[:40]!r}"})
            return None
        length = int(text)
        if length > MAX_BODY:
            self.close_connection = True
            self.discard_body()
            self.send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"the body is over {MAX_BODY} bytes"})
            return None
        body = self.read_exactly(length)
        if len(body) != length:
            self.close_connection = True
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": f"the body ended after {len(body)} of {length} bytes"})
            return None
        return body

    def read_exactly(self, length: int, keep: bool = True) -> bytes:
        """Up to `length` bytes of the body (fewer if the client stops sending); kept or discarded."""
        parts, got = [], 0
        self.connection.settimeout(BODY_TIMEOUT)
        try:
            while got < length and (part := self.rfile.read(min(length - got, MAX_BODY))):
                got += len(part)
                if keep:
                    parts.append(part)
        except TimeoutError:
            pass
        finally:
            self.connection.settimeout(self.timeout)
        return b"".join(parts) if keep else b""

    def send_json(self, status: int, answer) -> None:
        data = _json_bytes(answer)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.cache_control = "no-store"
        self.end_headers()
        try:
            self.wfile.write(data)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    cache_control = None  # for the answer being sent; "no-cache" unless set

    def end_headers(self):
        self.send_header("Cache-Control", self.cache_control or "no-cache")
        self.cache_control = None
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def copyfile(self, source, outputfile):
        """Send the file (or the range of it asked for) with sendfile(2) where the platform has it:
        no copy through Python."""
        offset, count = self._span
        self._span = (0, None)
        self.wfile.flush()
        self.connection.sendfile(source, offset, count)

    def list_directory(self, path):
        self.send_error(HTTPStatus.NOT_FOUND)
        return None

    def guess_type(self, path) -> str:
        return TYPES.get(posixpath.splitext(path)[1].lower(), "application/octet-stream")

    def log_message(self, format, *args) -> None:  # quiet: no line per request
        pass


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True
    root: str | None = None  # the real path of the recording served
    source = None  # instead of `root`: a capture.store.Store to serve (a zip, a bucket, with the viewer in memory)
    api = None  # the InspectAPI when started by `acc-capture serve`; None: a static server

    def handle_error(self, request, client_address) -> None:
        """A client that hung up mid-answer (a browser dropping a prefetch) is no error worth a trace."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"

    def set_root(self, directory: str | Path) -> None:
        directory = Path(directory)
        if not (directory / "index.html").is_file():
            raise ViewerError(f"no viewer in {directory}; build it first (acc-capture view --build-only)")
        self.root = os.path.realpath(directory)

    def attach(self, api) -> None:
        """Answer the /inspect/ API with `api`; keep the served recording's viewer current as it changes."""
        self.build_lock = threading.Lock()  # held while the viewer is rebuilt
        api.on_change = self.rebuild
        api.on_new_recording = self.switch_to
        self.api = api

    def rebuild(self, path: Path) -> bool:
        """Rebuild the viewer in a recording (its steps and status changed): a reload shows them, and so
        does any static server later. A failure is a warning: the page in the browser needs no rebuild."""
        from capture.recording import Recording, RecordingError
        from viewer.build import build

        with self.build_lock:
            try:
                build(Recording.open(path))
                return True
            except (ViewerError, RecordingError, OSError) as e:
                print(f"warning: could not rebuild the viewer in {path}: {e}", file=sys.stderr, flush=True)
                return False

    def switch_to(self, path: Path) -> None:
        """`setup` made a new recording: serve it from now on (its page reloads itself to show it)."""
        if self.rebuild(path):
            self.root = os.path.realpath(path)
            print(f"live session on a new recording: {path}", flush=True)


def make_server(directory: str | Path | None, port: int | None = None, api=None) -> RecordingServer:
    """Bind a server for `directory` on 127.0.0.1:`port` (1 to 65535; None: any free port); does not start serving.

    `api`: an InspectAPI to answer /inspect/ with (as `acc-capture serve` does). `directory` None:
    bind now and `set_root` before serving.
    """
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise ViewerError(f"--port must be from 1 to 65535, not {port!r}")
    if directory is not None and not (Path(directory) / "index.html").is_file():
        raise ViewerError(f"no viewer in {directory}; build it first (acc-capture view --build-only)")
    try:
        server = RecordingServer((HOST, port or 0), RecordingHandler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ViewerError(f"port {port} on {HOST} is already in use; pick another with --port") from None
        if e.errno == errno.EACCES:
            raise ViewerError(f"not allowed to listen on port {port}; pick one above 1023 with --port") from None
        raise ViewerError(f"cannot listen on {HOST}:{port}: {e.strerror or e}") from None
    if directory is not None:
        server.set_root(directory)
    if api is not None:
        server.attach(api)
    return server


def serve_until_interrupted(server: RecordingServer, open_browser: bool = True) -> None:
    """Serve until Ctrl-C, then close the server; print the URL and open it in a browser unless told not to."""
    print(f"serving {server.root or server.source} at {server.url}  (Ctrl-C to stop)", flush=True)
    if open_browser:
        threading.Timer(0.2, webbrowser.open, args=(server.url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def serve(directory: str | Path, port: int = 8765, open_browser: bool = True) -> None:
    """Serve the recording statically until Ctrl-C."""
    server = make_server(directory, port)
    serve_until_interrupted(server, open_browser)


def _json_bytes(answer) -> bytes:
    """JSON with NaN and Inf as null (JSON has no such numbers; a diverged loss must not break the answer)."""
    try:
        text = json.dumps(answer, allow_nan=False, separators=(",", ":"))
    except ValueError:
        text = json.dumps(_finite(answer), allow_nan=False, separators=(",", ":"))
    return text.encode()


def _finite(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
