"""A fake Google Secret Manager REST endpoint on 127.0.0.1.

It answers ``GET /v1/<version name>:access`` as the real service does: ``{"name": ..., "payload":
{"data": base64}}`` for a version in ``secrets``, 403 (PERMISSION_DENIED) for a name in ``denied``, and
404 (NOT_FOUND) for any other name. Every request path is recorded. Point the real client at it with
``DEEPFACE_SECRET_MANAGER_ENDPOINT=<url>`` (`deepface.secrets`) or ``client_options``.
Nothing here is product logic: it only plays the other side of the wire.
"""

from __future__ import annotations

import base64
import json
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from helpers.servers import LoopbackServer


class FakeSecretManager(LoopbackServer):
    """``secrets``: ``{version name: bytes}``; ``denied``: version names answered 403; ``requests``:
    the paths received."""

    def __init__(self, secrets: dict[str, bytes] | None = None, denied: set[str] | None = None) -> None:
        self.secrets = dict(secrets or {})
        self.denied = set(denied or ())
        self.requests: list[str] = []
        super().__init__("fake-secrets")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answer(self, path: str) -> tuple[int, dict]:
        self.requests.append(path)
        if not (path.startswith("/v1/") and path.endswith(":access")):
            return 404, _error(404, "NOT_FOUND", f"no such method: {path}")
        name = path[len("/v1/"):-len(":access")]
        if name in self.denied:
            return 403, _error(403, "PERMISSION_DENIED",
                               f"Permission 'secretmanager.versions.access' denied for resource '{name}'")
        if name not in self.secrets:
            return 404, _error(404, "NOT_FOUND", f"Secret Version [{name}] not found.")
        data = base64.b64encode(self.secrets[name]).decode("ascii")
        return 200, {"name": name, "payload": {"data": data}}

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                status, body = fake._answer(unquote(urlsplit(self.path).path))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        return Handler


def _error(code: int, status: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "status": status}}
