"""The prediction request of the verification server: Vertex AI's ``{"instances": [...]}``, checked.

An instance is either

- ``{"image": IMAGE}``: embed one face -> ``{"embedding": [D floats]}``, or
- ``{"image_a": IMAGE, "image_b": IMAGE}``: verify a pair -> ``{"score", "value", "threshold", "same"}``,

where IMAGE is the image file (JPEG, PNG, ...) in base64, as a string or as ``{"b64": string}`` (Vertex AI's
convention for binary values). `parse_request(body, ...)` returns the instances as `Instance` tuples, or
raises `RequestError` with the HTTP status and a one-line message naming the instance and field:

- 413: a body over ``max_request_bytes`` (the server checks before reading it), an image over
  ``max_image_bytes``;
- 400: not JSON, no ``instances`` list, none or more than ``max_instances`` of them, an instance of other
  fields, a value that is not base64.

Example::

    parse_request(b'{"instances": [{"image": "iVBORw0..."}]}', max_instances=64, max_image_bytes=10**6)
    # [Instance(kind="embed", images=[("instances[0].image", b"\\x89PNG...")])]
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import NamedTuple

EMBED_FIELDS = frozenset({"image"})
VERIFY_FIELDS = frozenset({"image_a", "image_b"})
USAGE = 'each instance is {"image": BASE64} (an embedding) or {"image_a": BASE64, "image_b": BASE64} (a verification)'


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line ``message`` for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Instance(NamedTuple):
    """One instance: ``kind`` ``"embed"`` (one image) or ``"verify"`` (two), and its images as
    ``(name for messages, file bytes)``."""

    kind: str
    images: list[tuple[str, bytes]]


def parse_request(body: bytes, *, max_instances: int, max_image_bytes: int) -> list[Instance]:
    """The instances of a prediction request body (see the module docstring).

    Raises:
        RequestError: 400 or 413, naming the problem and the fix.
    """
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(400, f"the request body is not JSON ({error}): send {{\"instances\": [...]}}.") from None
    instances = request.get("instances") if isinstance(request, dict) else None
    if not isinstance(instances, list):
        raise RequestError(400, f'the request body must be a JSON object {{"instances": [...]}}; {USAGE}.')
    if not instances:
        raise RequestError(400, "no instances: send at least one.")
    if len(instances) > max_instances:
        raise RequestError(400, f"too many instances: {len(instances)}, at most {max_instances} per request; "
                                "split the request.")
    return [_instance(index, instance, max_image_bytes) for index, instance in enumerate(instances)]


def _instance(index: int, instance, max_image_bytes: int) -> Instance:
    where = f"instances[{index}]"
    fields = set(instance) if isinstance(instance, dict) else None
    if fields == EMBED_FIELDS:
        kind = "embed"
    elif fields == VERIFY_FIELDS:
        kind = "verify"
    else:
        found = f"fields {sorted(fields)}" if fields is not None else f"a {type(instance).__name__}"
        raise RequestError(400, f"{where} has {found}: {USAGE}.")
    return Instance(kind, [(f"{where}.{name}", _image(f"{where}.{name}", instance[name], max_image_bytes))
                           for name in sorted(fields)])


def _image(where: str, value, max_image_bytes: int) -> bytes:
    """The file bytes of one base64 field (a string or ``{"b64": string}``)."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        value = value["b64"]
    if not isinstance(value, str):
        raise RequestError(400, f"{where} must be the image file in base64 (a string or {{\"b64\": string}}), "
                                f"not a {type(value).__name__}.")
    if len(value) * 3 // 4 > max_image_bytes + 3:  # before decoding: base64 holds 3 bytes per 4 characters
        raise RequestError(413, f"{where} is too large: about {len(value) * 3 // 4} bytes, at most "
                                f"{max_image_bytes} (max_image_bytes); send a smaller image.")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(400, f"{where} is not valid base64 ({error}): encode the image file with "
                                "standard base64.") from None
    if len(data) > max_image_bytes:
        raise RequestError(413, f"{where} is too large: {len(data)} bytes, at most {max_image_bytes} "
                                "(max_image_bytes); send a smaller image.")
    if not data:
        raise RequestError(400, f"{where} is empty: send the image file in base64.")
    return data
