"""The static viewer: `build(rec)` writes it into a recording, `serve(path, port)` serves it on 127.0.0.1."""

from viewer.build import ViewerError, build
from viewer.server import make_server, serve

__all__ = ["ViewerError", "build", "make_server", "serve"]
