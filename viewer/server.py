"""A small static file server for one recording: 127.0.0.1 only, nothing outside the directory."""

from __future__ import annotations

import errno
import os
import posixpath
import sys
import threading
import webbrowser
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from viewer.build import ViewerError

HOST = "127.0.0.1"
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


class RecordingHandler(SimpleHTTPRequestHandler):
    """Serves regular files under `directory`; refuses `..`, NUL bytes and anything a symlink leads out to."""

    protocol_version = "HTTP/1.1"  # keep-alive: a step is a dozen small requests
    disable_nagle_algorithm = True  # answer each small request at once, not after the client's ACK

    def __init__(self, *args, directory: str, **kwargs):
        self.root = os.path.realpath(directory)
        super().__init__(*args, directory=self.root, **kwargs)

    def resolve(self) -> tuple[str | None, HTTPStatus]:
        """The real path of the requested file, or None and the status to answer with."""
        raw = urlsplit(self.path).path
        path = unquote(raw, errors="strict") if "%" in raw else raw
        if "\x00" in path or "\\" in path or not path.startswith("/"):
            return None, HTTPStatus.BAD_REQUEST
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            return None, HTTPStatus.FORBIDDEN
        if not parts or path.endswith("/"):
            parts.append("index.html")
        real = os.path.realpath(os.path.join(self.root, *parts))
        if os.path.commonpath([real, self.root]) != self.root:
            return None, HTTPStatus.FORBIDDEN
        if not os.path.isfile(real):
            return None, HTTPStatus.NOT_FOUND
        return real, HTTPStatus.OK

    def translate_path(self, path: str) -> str:  # used by send_head once resolve() accepted the request
        return self._resolved

    def send_head(self):
        try:
            real, status = self.resolve()
        except UnicodeDecodeError:
            real, status = None, HTTPStatus.BAD_REQUEST
        if real is None:
            self.send_error(status)
            return None
        self._resolved = real
        return super().send_head()

    def end_headers(self):
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def copyfile(self, source, outputfile):
        """Send the file with sendfile(2) where the platform has it: no copy through Python."""
        self.wfile.flush()
        self.connection.sendfile(source)

    def list_directory(self, path):
        self.send_error(HTTPStatus.NOT_FOUND)
        return None

    def guess_type(self, path) -> str:
        return TYPES.get(posixpath.splitext(path)[1].lower(), "application/octet-stream")

    def log_message(self, format, *args) -> None:  # quiet: no line per request
        pass


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that hung up mid-answer (a browser dropping a prefetch) is no error worth a trace."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"


def make_server(directory: str | Path, port: int = 0) -> RecordingServer:
    """Bind a server for `directory` on 127.0.0.1:`port` (0: any free port); does not start serving."""
    directory = Path(directory)
    if not (directory / "index.html").is_file():
        raise ViewerError(f"no viewer in {directory}; build it first (acc-capture view --build-only)")
    if not 0 <= port <= 65535:
        raise ViewerError(f"--port must be between 0 and 65535, not {port}")
    try:
        return RecordingServer((HOST, port), partial(RecordingHandler, directory=str(directory)))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ViewerError(f"port {port} on {HOST} is already in use; pick another with --port") from None
        if e.errno == errno.EACCES:
            raise ViewerError(f"not allowed to listen on port {port}; pick one above 1023 with --port") from None
        raise ViewerError(f"cannot listen on {HOST}:{port}: {e.strerror or e}") from None


def serve(directory: str | Path, port: int = 8765, open_browser: bool = True) -> None:
    """Serve the recording until Ctrl-C; print the URL and open it in a browser unless told not to."""
    server = make_server(directory, port)
    print(f"serving {directory} at {server.url}  (Ctrl-C to stop)", flush=True)
    if open_browser:
        threading.Timer(0.2, webbrowser.open, args=(server.url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
