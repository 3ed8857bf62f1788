"""A real HTTP server on 127.0.0.1 that serves a GEO-shaped folder, for offline tests.

It answers GET and HEAD, honours ``Range: bytes=N-`` (206 + ``Content-Range``) so that
resumed downloads can be tested, logs every request, and injects failures per URL path:

- ``"404"``: answer 404 Not Found;
- ``"500"``: answer 500 Internal Server Error;
- ``"cut_once"``: send the headers with the full ``Content-Length``, half of the body, then
  close the connection (once; later requests are served normally);
- ``"cut_always"``: the same on every request.

Use as a context manager::

    with GeoServer(root) as srv:
        srv.faults["/series/GSE1nnn/GSE1000/suppl/GSE1000_RAW.tar"] = "cut_once"
        bm.io.read_geo("GSE1000", base_url=srv.url)
"""

from __future__ import annotations

import os
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["GeoServer"]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def _serve(self, *, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        rng = self.headers.get("Range")
        owner = self.server.owner
        with owner.lock:
            owner.requests.append((self.command, path, rng))
            fault = owner.faults.get(path)
            if fault == "cut_once" and not head:
                owner.faults.pop(path)
        if fault in {"404", "500"}:
            self._status(int(fault))
            return
        rel = path.lstrip("/")
        target = (owner.root / rel).resolve()
        if ".." in Path(rel).parts or not target.is_file() or owner.root not in target.parents:
            self._status(404)
            return
        data = target.read_bytes()
        total = len(data)
        start = 0
        if rng and not head:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            if not m or int(m.group(1)) >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                return
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if head:
            return
        if fault in {"cut_once", "cut_always"}:
            self.wfile.write(body[: max(1, len(body) // 2)])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def _status(self, code: int) -> None:
        msg = f"{code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(msg)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD":
            self.wfile.write(msg)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: GeoServer


class GeoServer:
    """Serve ``root`` on ``http://127.0.0.1:<free port>`` in a background thread."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self.faults: dict[str, str] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> GeoServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GeoServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def gets(self, suffix: str = "") -> list[tuple[str, str, str | None]]:
        """GET requests whose path ends with ``suffix``."""
        with self.lock:
            return [r for r in self.requests if r[0] == "GET" and r[1].endswith(suffix)]
