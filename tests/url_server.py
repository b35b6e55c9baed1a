"""A static file server on 127.0.0.1 for tests of URL weights (standard library only).

    with FileServer() as srv:
        srv.files["/moco/ckpt.pth.tar"] = data
        url = srv.url("/moco/ckpt.pth.tar")

Serves ``files`` (path -> bytes) with ``Content-Length`` and ``Range`` (``bytes=N-``) support,
404 for anything else, and records every request as ``(method, path, range header)``. ``short[path] = n``
makes every GET of ``path`` announce the whole remaining length but send at most ``n`` bytes and close the
connection (a server that stops early). The server thread is a daemon, each connection times out after
30 s, and ``__exit__`` shuts it down.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.short: dict[str, int] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        assert self._server is not None, "use FileServer as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def gets(self, path: str | None = None) -> int:
        return sum(1 for method, p, _ in self.requests if method == "GET" and (path is None or p == path))

    def __enter__(self) -> FileServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 30

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _answer(self, body: bool) -> None:
                rng = self.headers.get("Range")
                owner.requests.append((self.command, self.path, rng))
                data = owner.files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(rng.split("=", 1)[1].split("-", 1)[0]) if rng and rng.startswith("bytes=") else 0
                if start >= len(data) and start > 0:
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                part = data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(part)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    cut = owner.short.get(self.path)
                    self.wfile.write(part if cut is None else part[:cut])
                    if cut is not None:
                        self.close_connection = True

            def do_GET(self) -> None:
                self._answer(body=True)

            def do_HEAD(self) -> None:
                self._answer(body=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
