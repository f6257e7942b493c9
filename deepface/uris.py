"""The names of the fetch stage's sources: URIs, and the relative names a source lists.

- `redact_uri(uri)`: ``uri`` without user info, fragment and token-like query parameters, safe to log
  and record; `RedactQueries` does the same to the arguments of other libraries' log records.
- `scheme_of(source)`: ``"local"`` (a plain path or ``file://``), ``"gs"``, ``"http"`` or ``"https"``.
- `sibling_uri(uri, name)` and `is_prefix(source)`: a file beside a source, and whether a source names
  every file under it (a trailing ``/``, a bucket or host alone, or a local directory).
- `checked_relative_name(name, source)`: a clean relative POSIX output name.
- `parse_md5sums(data, uri)`: ``{relative name: md5}`` of an ``MD5SUMS`` file.

Each raises `DeepFaceError` for what it refuses: an unsupported scheme; a name that is absolute, holds
``..``, is not UTF-8 or is too long to store with its ``.part`` suffix; a line not in md5sum format.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import PurePosixPath
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from deepface.errors import DeepFaceError
from deepface.files import local_path

MD5SUMS_NAME = "MD5SUMS"
PART_SUFFIX = ".part"  # a file being downloaded is <name>.part until complete and verified
MAX_NAME_BYTES = 255  # NAME_MAX of Linux file systems (and of GCS FUSE mounts)

_MD5SUMS_LINE = re.compile(r"(?P<md5>[0-9a-fA-F]{32}) [ *](?P<name>.+)")
_TOKEN_PARAMETER = re.compile(
    r"token|sig|key|auth|credential|password|passwd|secret|session|access|x-goog-|x-amz-", re.IGNORECASE
)
_SCHEMES = ("gs", "http", "https")


def redact_uri(uri: str) -> str:
    """``uri`` without user info, fragment and token-like query parameters (safe to log and record).

    >>> redact_uri("https://user:pw@host/a.tgz?X-Goog-Signature=abc&alt=media")
    'https://host/a.tgz?alt=media'
    """
    if "://" not in uri or uri.startswith("file://"):
        return uri
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, _safe_query(parts.query), ""))


def _safe_query(query: str) -> str:
    """A URL query string without its token-like parameters."""
    return urlencode([(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not _TOKEN_PARAMETER.search(k)])


class RedactQueries(logging.Filter):
    """Removes token-like query parameters from the arguments of other libraries' log records.

    urllib3 logs every request's path with its query at DEBUG level (``deepface -v``), which would
    print a signed URL's signature.
    """

    _QUERY = re.compile(r"\?([^\s\"'#]*)")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._QUERY.sub(lambda m: "?" + _safe_query(m.group(1)), arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def scheme_of(source: str) -> str:
    """'local' for plain paths and file:// URIs, else the URI scheme (validated)."""
    if source.startswith("file://") or "://" not in source:
        return "local"
    scheme = source.split("://", 1)[0].lower()
    if scheme not in _SCHEMES:
        raise DeepFaceError(
            f"unsupported source {redact_uri(source)!r}: use a local path, file://, gs://, https:// or http://"
        )
    return scheme


def sibling_uri(uri: str, name: str) -> str:
    """The URI of ``name`` in the same directory as ``uri`` (or inside it, when ``uri`` ends in '/')."""
    if scheme_of(uri) == "local":
        path = local_path(uri)
        return str((path if uri.endswith("/") or path.is_dir() else path.parent) / name)
    parts = urlsplit(uri)
    directory = parts.path if parts.path.endswith("/") else posixpath.dirname(parts.path)
    return urlunsplit((parts.scheme, parts.netloc, directory.rstrip("/") + "/" + name, "", ""))


def is_prefix(source: str) -> bool:
    if scheme_of(source) == "local":
        return source.endswith("/") or local_path(source).is_dir()
    return urlsplit(source).path.endswith("/") or urlsplit(source).path == ""


def checked_relative_name(name: str, source: str) -> str:
    """``name`` as a clean relative POSIX path, refusing anything that would escape the output directory,
    is not UTF-8 (the manifest could not record it) or is too long to store with its ``.part`` suffix."""
    clean = name
    while clean.startswith("./"):
        clean = clean[2:]
    path = PurePosixPath(clean)
    if path.is_absolute() or not path.parts or ".." in path.parts:
        raise DeepFaceError(
            f"refusing file name {name!r} listed under {redact_uri(source)}: it would be written outside the "
            "output directory; remove it from the source"
        )
    try:
        longest = max(len(part.encode("utf-8")) for part in path.parts)
    except UnicodeEncodeError:
        raise DeepFaceError(
            f"refusing file name {name!r} listed under {redact_uri(source)}: it is not UTF-8 text; rename it"
        ) from None
    if longest + len(PART_SUFFIX) > MAX_NAME_BYTES:
        raise DeepFaceError(
            f"refusing file name {name!r} listed under {redact_uri(source)}: a name of {longest} bytes is too long "
            f"to store (at most {MAX_NAME_BYTES - len(PART_SUFFIX)}); rename it"
        )
    return path.as_posix()


# ----------------------------------------------------------------------------------------------------
# MD5SUMS files


def parse_md5sums(data: bytes, uri: str) -> dict[str, str]:
    """``{relative name: md5}`` from an ``md5sum``-format file (``<md5>  <name>`` or ``<md5> *<name>``)."""
    checksums = {}
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _MD5SUMS_LINE.fullmatch(line.rstrip("\r"))
        if not match:
            raise DeepFaceError(
                f"{redact_uri(uri)} line {number} is not in md5sum format ('<32 hex digits>  <name>'): "
                "fix or remove that file"
            )
        name = checked_relative_name(match["name"], uri)
        checksums[name] = match["md5"].lower()
    return checksums
