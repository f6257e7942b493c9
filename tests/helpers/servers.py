"""Test servers on 127.0.0.1 (ephemeral ports, background threads, shut down after use).

- ``HttpFileServer``: serves in-memory files over HTTP with Range support, an optional required header
  (401 without it, 403 when wrong), redirects, a record of every request, and fault injection: cut the
  connection after N bytes, or ignore Range requests.
- ``LoopbackServer``: what every fake server here shares (``fake_vertex``, ``fake_secret_manager`` too): a
  threaded HTTP server on a free port of 127.0.0.1, started and stopped as a context manager.
- ``GcsEmulator``: the gcp-storage-emulator package with in-memory storage, plus an anonymous client.

Fixtures ``http_server`` and ``gcs_emulator`` wrap them (``gcs_emulator`` sets STORAGE_EMULATOR_HOST
for the test). Use them from a test module with ``from helpers.servers import gcs_emulator, http_server``.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received: method, path (with query) and headers."""

    method: str
    path: str
    headers: dict[str, str]


class LoopbackServer:
    """A ``ThreadingHTTPServer`` on a free port of 127.0.0.1 answering with ``self._handler_class()``, in
    a daemon thread: served inside ``with``, shut down (and its thread joined) on exit. Subclasses set
    their own attributes, then call ``super().__init__(name)``."""

    def __init__(self, name: str) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=name, daemon=True)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


class HttpFileServer(LoopbackServer):
    """A small HTTP file server for tests.

    Attributes (change them at any time):
        files: ``{url path without leading '/': bytes}``.
        required_header: ``(name, value)`` every request must carry (401 if absent, 403 if different).
        redirects: ``{url path without leading '/': absolute URL}`` answered with a 302.
        cuts: ``{url path: N}``: the next GET of that path sends only N body bytes, then drops the
            connection (Content-Length announced the full size); each entry is used once. See ``cut``.
        ignore_range: answer Range requests with the whole file (200), like servers without Range support.
        statuses: ``{url path: HTTP status}`` answered (empty body) instead of the file, e.g. 500.
        requests: every request received, in order.
    """

    def __init__(self, files: dict[str, bytes] | None = None, *, required_header: tuple[str, str] | None = None):
        self.files = dict(files or {})
        self.required_header = required_header
        self.redirects: dict[str, str] = {}
        self.cuts: dict[str, int] = {}
        self.ignore_range = False
        self.statuses: dict[str, int] = {}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        super().__init__("http-file-server")

    def url(self, path: str = "", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path}"

    def gets(self, path: str) -> list[RecordedRequest]:
        """The GET requests received for ``path`` (without leading '/', query ignored)."""
        return [r for r in self.requests if r.method == "GET" and urlsplit(r.path).path == "/" + path]

    def cut(self, path: str, after_bytes: int) -> None:
        """Make the next GET of ``path`` drop the connection after ``after_bytes`` bytes of body."""
        with self._lock:
            self.cuts[path] = after_bytes

    def _take_cut(self, path: str) -> int | None:
        with self._lock:
            return self.cuts.pop(path, None)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # keep test output quiet
                pass

            def _refuse(self, status: HTTPStatus) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self):
                self._serve(send_body=False)

            def do_GET(self):
                self._serve(send_body=True)

            def _serve(self, send_body: bool) -> None:
                server.requests.append(RecordedRequest(self.command, self.path, dict(self.headers.items())))
                path = unquote(urlsplit(self.path).path)
                if server.required_header:
                    name, value = server.required_header
                    if self.headers.get(name) is None:
                        return self._refuse(HTTPStatus.UNAUTHORIZED)
                    if self.headers.get(name) != value:
                        return self._refuse(HTTPStatus.FORBIDDEN)
                path = path.lstrip("/")
                if path in server.statuses:
                    return self._refuse(HTTPStatus(server.statuses[path]))
                if path in server.redirects:
                    self.send_response(HTTPStatus.FOUND)
                    self.send_header("Location", server.redirects[path])
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                data = server.files.get(path)
                if data is None:
                    return self._refuse(HTTPStatus.NOT_FOUND)
                start = self._range_start(len(data))
                if start is not None and start >= len(data):
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                body = data if start is None else data[start:]
                if start is None:
                    self.send_response(HTTPStatus.OK)
                else:
                    self.send_response(HTTPStatus.PARTIAL_CONTENT)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Accept-Ranges", "none" if server.ignore_range else "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not send_body:
                    return
                cut = server._take_cut(path)
                if cut is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _range_start(self, size: int) -> int | None:
                """The start of a 'bytes=N-' or 'bytes=N-M' Range header (end ignored), else None."""
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
                if server.ignore_range or not match:
                    return None
                return int(match.group(1))

        return Handler


class GcsEmulator:
    """gcp-storage-emulator with in-memory storage on an ephemeral port.

    ``endpoint`` is the value for STORAGE_EMULATOR_HOST; ``client`` an anonymous storage.Client for it.
    """

    def __init__(self):
        from gcp_storage_emulator.server import create_server

        self._server = create_server("127.0.0.1", 0, in_memory=True)
        self._client = None

    def __enter__(self) -> GcsEmulator:
        self._server.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.stop()

    @property
    def endpoint(self) -> str:
        # the emulator binds port 0 itself; its HTTP server knows the port it got
        host, port = self._server._api._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def client(self):
        if self._client is None:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            self._client = storage.Client(
                project="test", credentials=AnonymousCredentials(),
                client_options=ClientOptions(api_endpoint=self.endpoint),
            )
        return self._client

    def upload(self, bucket: str, files: dict[str, bytes]) -> None:
        """Create ``bucket`` if needed and upload ``{object name: bytes}`` to it."""
        target = self.client.bucket(bucket)
        if not target.exists():
            target = self.client.create_bucket(bucket)
        for name, data in files.items():
            target.blob(name).upload_from_string(data)

    def make_composite(self, bucket: str, name: str) -> None:
        """Make object ``name`` look like a composite upload (``gcloud storage cp`` of a large file, or a
        compose): GCS keeps a CRC32C for those but no MD5. The emulator computes an MD5 even for composed
        objects, so the stored one is blanked here (listed as null; downloads then carry only the CRC32C)."""
        self._server._storage.get_file_obj(bucket, name)["md5Hash"] = None


@pytest.fixture
def http_server():
    """An empty HttpFileServer; fill ``http_server.files`` in the test."""
    with HttpFileServer() as server:
        yield server


@pytest.fixture
def gcs_emulator(monkeypatch: pytest.MonkeyPatch):
    """A running GcsEmulator, with STORAGE_EMULATOR_HOST pointing at it for the test."""
    with GcsEmulator() as emulator:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.endpoint)
        yield emulator
