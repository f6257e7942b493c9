"""A fingerprint of the data folder: a short text that changes when the data behind a URI changes.

Pipeline caches key a task on its parameters, not on the bytes behind a path: a fetch task given the same
``data_uri`` stays cached when the folder's files change. The pipeline therefore fingerprints the folder
in an uncached step and passes the fingerprint to fetch, so that fetch (and everything after it) reruns
exactly when the data changed. A fingerprint reads listings and checksums, never the data itself, where
the source keeps checksums:

- a local folder (plain path or ``file://``): each file's relative name, size and MD5: the one its
  ``MD5SUMS`` file lists (what fetch verifies), else computed from its bytes;
- ``gs://``: each object's name, size, stored MD5 (CRC32C for composite objects) and generation, from
  one listing (no download);
- ``http(s)://``: the bytes of its ``MD5SUMS`` file (fetch lists such a folder through it).

As in fetch, the URI names a folder (a trailing ``/`` is implied) and a ``manifest.json`` in it is not
data (fetch writes its own). An empty URI (the pipeline's synthetic data, made from its parameters) has
the constant fingerprint `SYNTHETIC`.
"""

from __future__ import annotations

import hashlib
import json
import logging

from deepface.contracts import MANIFEST_FILE
from deepface.errors import DeepFaceError
from deepface.files import md5_file
from deepface.outputs import LOCK_FILE
from deepface.uris import MD5SUMS_NAME, parse_md5sums, redact_uri, scheme_of, sibling_uri

logger = logging.getLogger(__name__)

SYNTHETIC = "synthetic"


def fingerprint_source(uri: str, *, auth_header_env: str | None = None, auth_secret: str | None = None,
                       timeout: float = 60.0) -> str:
    """The fingerprint of the data folder ``uri``: ``"<scheme> <N> files sha256:<hex>"``, or `SYNTHETIC`
    when ``uri`` is empty. Equal for the same files with the same contents (listing order, timestamps and
    the URI itself do not count), different when a file is added, removed, renamed or changes size or
    checksum (a local file listed in ``MD5SUMS`` counts by its listed MD5, which fetch checks it against).

    Args:
        uri: the pipeline's ``data_uri``: a local folder, ``file://``, ``gs://`` or ``http(s)://`` URI.
        auth_header_env: name of the environment variable holding the HTTP header for ``http(s)://``
            (`deepface.settings.FetchSettings.auth_header_env`).
        auth_secret: or the Secret Manager secret version holding it (`FetchSettings.auth_secret`).
        timeout: seconds to wait for an HTTP server.

    Raises:
        DeepFaceError: the folder does not exist, is empty, cannot be listed or read (naming the URI and
            the fix), or its MD5SUMS file is malformed.
    """
    if not uri:
        return SYNTHETIC
    from deepface.transfer import Interrupted  # not for the synthetic data: no requests or tqdm to import

    prefix = uri if uri.endswith("/") else uri + "/"
    scheme = scheme_of(prefix)
    try:
        if scheme == "local":
            count, described = _local(prefix)
        elif scheme == "gs":
            count, described = _gcs(prefix)
        else:
            count, described = _http(prefix, auth_header_env, auth_secret, timeout)
    except Interrupted as error:
        raise DeepFaceError(
            f"could not list {redact_uri(prefix)} to fingerprint it: {error}; check data_uri and run again"
        ) from error
    if not count:
        raise DeepFaceError(f"no files under {redact_uri(prefix)}: check data_uri")
    fingerprint = f"{scheme} {count} files sha256:{hashlib.sha256(described).hexdigest()}"
    logger.info("fingerprint of %s: %s", redact_uri(prefix), fingerprint)
    return fingerprint


def _describe(entries: list[list]) -> bytes:
    """One unambiguous byte string for ``[name, ...]`` entries, in name order."""
    return json.dumps(sorted(entries), separators=(",", ":")).encode("ascii")


def _local(prefix: str) -> tuple[int, bytes]:
    from deepface.transfer import LocalBackend

    backend = LocalBackend()
    files = [file for file in backend.list(prefix) if file.name not in (MANIFEST_FILE, LOCK_FILE)]
    md5sums_uri = sibling_uri(prefix, MD5SUMS_NAME)
    listing = backend.read_optional(md5sums_uri)
    listed = parse_md5sums(listing, md5sums_uri) if listing is not None else {}
    entries = [[file.name, file.size, listed.get(file.name) or md5_file(file.uri)] for file in files]
    return len(entries), _describe(entries)


def _gcs(prefix: str) -> tuple[int, bytes]:
    from deepface.transfer import GcsBackend

    backend = GcsBackend()  # its client (credentials, emulator) and its errors (access, missing bucket)
    bucket, name_prefix = backend._split(prefix)
    with backend._errors(prefix):
        blobs = list(backend.client.list_blobs(
            bucket, prefix=name_prefix, fields="items(name,size,md5Hash,crc32c,generation),nextPageToken",
        ))
    entries = [
        [blob.name[len(name_prefix):], blob.size,
         f"md5:{blob.md5_hash}" if blob.md5_hash else f"crc32c:{blob.crc32c}", blob.generation]
        for blob in blobs
        # as fetch: no folder placeholders (names ending in /), no manifest.json
        if not blob.name.endswith("/") and blob.name[len(name_prefix):] != MANIFEST_FILE
    ]
    return len(entries), _describe(entries)


def _http(prefix: str, auth_header_env: str | None, auth_secret: str | None, timeout: float) -> tuple[int, bytes]:
    from deepface.fetch import auth_header
    from deepface.transfer import HttpBackend

    backend = HttpBackend(auth_header(auth_header_env, auth_secret), auth_header_env, timeout)
    md5sums_uri = sibling_uri(prefix, MD5SUMS_NAME)
    listing = backend.read_optional(md5sums_uri)
    if listing is None:
        raise DeepFaceError(
            f"no {MD5SUMS_NAME} at {redact_uri(md5sums_uri)} (missing or access refused): an http(s):// data_uri "
            f"is listed through the {MD5SUMS_NAME} file it holds; add one, or if the server needs a login name "
            "the environment variable holding the header in auth_header_env (or the secret in auth_secret)"
        )
    return len({MD5SUMS_NAME, *parse_md5sums(listing, md5sums_uri)}), listing  # the files it lists, and itself
