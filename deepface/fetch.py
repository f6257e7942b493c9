"""The fetch stage: copy source files into a local directory, verifying their MD5 checksums.

A source is a local path, a ``file://``, ``gs://``, ``https://`` or ``http://`` URI. A source ending in
``/`` (or a local directory) is a prefix: every file under it is fetched, keeping its relative name. An
``http(s)://`` prefix is listed through the ``MD5SUMS`` file it holds (HTTP has no directory listing).

Each file is streamed in chunks to ``<name>.part`` and renamed when complete and verified, so a file under
its final name is always whole. An interrupted download resumes from its ``.part`` file: with an HTTP
``Range`` request (starting again from zero when the server ignores it) or a ranged GCS read.

The expected MD5 of a file comes from, in order: the ``md5`` argument (one single-file source only), an
``MD5SUMS`` file (``md5sum`` format) beside the source, the published VGGFace2 checksums by file name,
the MD5 that GCS stores with a gs:// object. Otherwise the computed MD5 is recorded as ``unverified``.
A mismatch deletes the file and raises.

An optional HTTP header carrying credentials is read from the environment variable whose *name* is given
(``auth_header_env``); its value is never logged nor written anywhere, and is not sent to another host
after a redirect. Recorded URIs lose their user info and token-like query parameters.

``manifest.json`` (written last) maps each fetched file's relative name to its sanitised source, size,
MD5 and how the MD5 was verified.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import posixpath
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import click
import requests
import urllib3
from tqdm import tqdm

from deepface.contracts import MANIFEST_FILE, remove_manifest, write_manifest
from deepface.errors import DeepFaceError
from deepface.files import local_path, md5_file

logger = logging.getLogger(__name__)

MD5SUMS_NAME = "MD5SUMS"
CHUNK_SIZE = 1 << 20
PART_SUFFIX = ".part"  # a file being downloaded is <name>.part until complete and verified
MAX_NAME_BYTES = 255  # NAME_MAX of Linux file systems (and of GCS FUSE mounts)

# Published checksums of the VGGFace2 release archives, by file name.
KNOWN_MD5 = {
    "vggface2_train.tar.gz": "88813c6b15de58afc8fa75ea83361d7f",
    "vggface2_test.tar.gz": "bb7a323824d1004e14e00c23974facd3",
}

# How a file's MD5 was checked (the manifest's "verified" field).
VERIFIED_BY_OPTION = "md5-option"
VERIFIED_BY_MD5SUMS = "MD5SUMS"
VERIFIED_BY_KNOWN = "known-vggface2"
VERIFIED_BY_GCS = "gcs-object-md5"
UNVERIFIED = "unverified"

_MD5_PATTERN = re.compile(r"[0-9a-f]{32}")
_MD5SUMS_LINE = re.compile(r"(?P<md5>[0-9a-fA-F]{32}) [ *](?P<name>.+)")
_HEADER_LINE = re.compile(r"(?P<name>[A-Za-z0-9-]+):\s*(?P<value>.*)", re.DOTALL)
_TOKEN_PARAMETER = re.compile(
    r"token|sig|key|auth|credential|password|passwd|secret|session|access|x-goog-|x-amz-", re.IGNORECASE
)
_SCHEMES = ("gs", "http", "https")


class _Interrupted(Exception):
    """A transfer stopped part-way (connection cut, timeout, server error): worth resuming."""


# ----------------------------------------------------------------------------------------------------
# URIs


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


class _RedactQueries(logging.Filter):
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


_REDACT_QUERIES = _RedactQueries()


def _scheme(source: str) -> str:
    """'local' for plain paths and file:// URIs, else the URI scheme (validated)."""
    if source.startswith("file://") or "://" not in source:
        return "local"
    scheme = source.split("://", 1)[0].lower()
    if scheme not in _SCHEMES:
        raise DeepFaceError(
            f"unsupported source {redact_uri(source)!r}: use a local path, file://, gs://, https:// or http://"
        )
    return scheme


def _sibling(uri: str, name: str) -> str:
    """The URI of ``name`` in the same directory as ``uri`` (or inside it, when ``uri`` ends in '/')."""
    if _scheme(uri) == "local":
        path = local_path(uri)
        return str((path if uri.endswith("/") or path.is_dir() else path.parent) / name)
    parts = urlsplit(uri)
    directory = parts.path if parts.path.endswith("/") else posixpath.dirname(parts.path)
    return urlunsplit((parts.scheme, parts.netloc, directory.rstrip("/") + "/" + name, "", ""))


def _is_prefix(source: str) -> bool:
    if _scheme(source) == "local":
        return source.endswith("/") or local_path(source).is_dir()
    return urlsplit(source).path.endswith("/") or urlsplit(source).path == ""


def _checked_relative_name(name: str, source: str) -> str:
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
# Backends: one per kind of source. Each lists a prefix, describes one file, reads a small optional
# file (MD5SUMS) and streams a file from an offset into a _PartFile.


@dataclass(frozen=True)
class SourceFile:
    """One file to fetch: where to read it, its relative output name, and (when the source knows them)
    its size and the MD5 the storage holds for it."""

    uri: str
    name: str
    size: int | None = None
    stored_md5: str | None = None


class _PartFile:
    """``<name>.part`` opened for appending; writes advance the progress bar, disk errors become DeepFaceError."""

    def __init__(self, path: Path, progress: tqdm):
        self.path = path
        self.progress = progress
        try:
            self._handle: BinaryIO = open(path, "ab")
        except OSError as error:
            raise _disk_error(path, error) from error

    @property
    def offset(self) -> int:
        return self._handle.tell()

    def write(self, chunk: bytes) -> int:
        try:
            written = self._handle.write(chunk)
        except OSError as error:
            raise _disk_error(self.path, error) from error
        self.progress.update(len(chunk))
        return written

    def restart(self) -> None:
        """Drop what was written: the source is being read again from byte 0."""
        self._handle.seek(0)
        self._handle.truncate()
        self.progress.reset(total=self.progress.total)

    def seek(self, position: int, whence: int = 0) -> int:  # the GCS client rewinds to 0 to restart
        if (position, whence) != (0, 0):
            raise OSError(f"{self.path} only supports rewinding to the start")
        self.restart()
        return 0

    def close(self) -> None:
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        except OSError as error:
            raise _disk_error(self.path, error) from error


def _disk_error(path: Path, error: OSError) -> DeepFaceError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some disk space or choose another output directory (--out)"
    else:
        hint = "check its permissions or choose another output directory (--out)"
    return DeepFaceError(f"cannot write {path}: {error.strerror or error}; {hint}")


class LocalBackend:
    """Plain paths and file:// URIs."""

    def list(self, prefix: str) -> list[SourceFile]:
        root = local_path(prefix)
        if not root.is_dir():
            raise DeepFaceError(f"source directory {prefix} does not exist: check the path")
        files = []
        for directory, subdirs, names in os.walk(root):
            subdirs.sort()
            for name in names:
                path = Path(directory, name)
                if path.is_file():
                    relative = path.relative_to(root).as_posix()
                    files.append(SourceFile(str(path), relative, path.stat().st_size))
        return files

    def describe(self, uri: str) -> SourceFile:
        path = local_path(uri)
        if not path.is_file():
            raise DeepFaceError(f"source file {uri} does not exist: check the path (--source)")
        return SourceFile(uri, path.name, path.stat().st_size)

    def read_optional(self, uri: str) -> bytes | None:
        path = local_path(uri)
        return path.read_bytes() if path.is_file() else None

    def download(self, source: SourceFile, part: _PartFile, chunk_size: int) -> None:
        with open(local_path(source.uri), "rb") as handle:
            handle.seek(part.offset)
            for chunk in iter(lambda: handle.read(chunk_size), b""):
                part.write(chunk)


class GcsBackend:
    """gs:// URIs through google-cloud-storage (anonymous client when STORAGE_EMULATOR_HOST is set)."""

    def __init__(self):
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from google.auth.exceptions import DefaultCredentialsError
            from google.cloud import storage

            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                project = os.environ.get("GOOGLE_CLOUD_PROJECT", "emulator")
                self._client = storage.Client(project=project, credentials=AnonymousCredentials())
            else:
                try:
                    self._client = storage.Client()
                except (DefaultCredentialsError, OSError) as error:
                    raise DeepFaceError(
                        f"no Google Cloud credentials to read gs:// sources ({error.__class__.__name__}): run "
                        "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
                    ) from error
        return self._client

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        bucket, _, name = uri[len("gs://"):].partition("/")
        return bucket, name

    @contextlib.contextmanager
    def _errors(self, uri: str) -> Iterator[None]:
        from google.api_core import exceptions
        from google.cloud.storage.exceptions import DataCorruption

        try:
            yield
        except exceptions.NotFound as error:
            raise DeepFaceError(f"{uri} not found (or its bucket does not exist): check the URI") from error
        except (exceptions.Forbidden, exceptions.Unauthorized) as error:
            raise DeepFaceError(
                f"access to {uri} denied: give the account running this (see `gcloud auth list` or the "
                "pipeline's service account) roles/storage.objectViewer on the bucket"
            ) from error
        except DataCorruption as error:
            raise _Interrupted(f"checksum of the data received from {uri} did not match") from error
        except (exceptions.GoogleAPIError, OSError) as error:  # requests' errors are OSErrors too
            raise _Interrupted(f"{error.__class__.__name__} while reading {uri}") from error

    def list(self, prefix: str) -> list[SourceFile]:
        bucket, name_prefix = self._split(prefix)
        with self._errors(prefix):
            blobs = list(self.client.list_blobs(bucket, prefix=name_prefix))
        return [
            SourceFile(f"gs://{bucket}/{blob.name}", blob.name[len(name_prefix):], blob.size, _hex_md5(blob))
            for blob in sorted(blobs, key=lambda blob: blob.name)
            if not blob.name.endswith("/")  # folder placeholders
        ]

    def describe(self, uri: str) -> SourceFile:
        bucket, name = self._split(uri)
        with self._errors(uri):
            blob = self.client.bucket(bucket).get_blob(name)
        if blob is None:
            raise DeepFaceError(f"{uri} not found (or its bucket does not exist): check the URI")
        return SourceFile(uri, posixpath.basename(name), blob.size, _hex_md5(blob))

    def read_optional(self, uri: str) -> bytes | None:
        bucket, name = self._split(uri)
        with self._errors(uri):
            blob = self.client.bucket(bucket).get_blob(name)
            return None if blob is None else blob.download_as_bytes(raw_download=True)

    def download(self, source: SourceFile, part: _PartFile, chunk_size: int) -> None:
        bucket, name = self._split(source.uri)
        if source.size is not None and part.offset >= source.size:
            return  # complete already (the ranged request would be unsatisfiable)
        with self._errors(source.uri):
            blob = self.client.bucket(bucket).blob(name)
            # raw: the stored bytes (those the MD5s describe), never a decompressed copy. A ranged read
            # cannot be checked by the client library; the whole file's MD5 is checked afterwards.
            offset = part.offset
            blob.download_to_file(part, start=offset or None, raw_download=True, checksum=None if offset else "auto")


def _hex_md5(blob) -> str | None:
    """The hex MD5 GCS keeps for ``blob`` (None for composite objects, which only have a CRC32C)."""
    return base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else None


class _SecretHeaderSession(requests.Session):
    """A requests session sending one secret header, dropped when a redirect leads to another host."""

    def __init__(self, secret_header: tuple[str, str] | None):
        super().__init__()
        self._secret_name = secret_header[0] if secret_header else None
        if secret_header:
            self.headers[secret_header[0]] = secret_header[1]

    def rebuild_auth(self, prepared_request, response):
        super().rebuild_auth(prepared_request, response)  # drops Authorization the same way
        if self._secret_name and self.should_strip_auth(response.request.url, prepared_request.url):
            prepared_request.headers.pop(self._secret_name, None)


class HttpBackend:
    """http:// and https:// URIs through requests, with an optional header from the environment."""

    def __init__(self, secret_header: tuple[str, str] | None, auth_header_env: str | None, timeout: float):
        logging.getLogger("urllib3.connectionpool").addFilter(_REDACT_QUERIES)  # added once
        self._secret_header = secret_header
        self._auth_header_env = auth_header_env
        self._timeout = timeout
        self._session = None

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = _SecretHeaderSession(self._secret_header)
        return self._session

    def _get(self, uri: str, headers: dict[str, str] | None = None) -> requests.Response:
        try:
            return self.session.get(uri, headers=headers, stream=True, timeout=self._timeout)
        except requests.RequestException as error:  # its text holds the full URL: name the class only
            raise _Interrupted(f"{error.__class__.__name__} while connecting to {redact_uri(uri)}") from None

    def _refusal(self, uri: str, status: int) -> DeepFaceError:
        safe = redact_uri(uri)
        if status == 404:
            return DeepFaceError(f"{safe} not found (HTTP 404): check the URL (--source)")
        if self._auth_header_env:
            hint = (
                f"the header from ${self._auth_header_env} was sent but refused: check its value "
                "('Header-Name: value', or a bare value for 'Authorization: value')"
            )
        else:
            hint = (
                "if the server needs a login, put the header in an environment variable, e.g. "
                "export FETCH_AUTH='Authorization: Bearer ...' (or 'Cookie: ...'), and pass "
                "--auth-header-env FETCH_AUTH"
            )
        return DeepFaceError(f"{safe} refused access (HTTP {status}): {hint}")

    def list(self, prefix: str) -> list[SourceFile]:
        listing = self.read_optional(_sibling(prefix, MD5SUMS_NAME))
        if listing is None:
            raise DeepFaceError(
                f"cannot list {redact_uri(prefix)}: HTTP has no directory listing and there is no "
                f"{MD5SUMS_NAME} file there; give each file as its own --source"
            )
        names = sorted({MD5SUMS_NAME, *parse_md5sums(listing, _sibling(prefix, MD5SUMS_NAME))})
        return [SourceFile(_sibling(prefix, quote(name)), name) for name in names]

    def describe(self, uri: str) -> SourceFile:
        return SourceFile(uri, unquote(posixpath.basename(urlsplit(uri).path)))

    def read_optional(self, uri: str) -> bytes | None:
        with self._get(uri) as response:
            if response.status_code in (401, 403, 404, 410):
                return None
            if response.status_code >= 400:
                raise _Interrupted(f"HTTP {response.status_code} from {redact_uri(uri)}")
            try:
                return response.content
            except requests.RequestException as error:
                raise _Interrupted(f"{error.__class__.__name__} while reading {redact_uri(uri)}") from None

    def download(self, source: SourceFile, part: _PartFile, chunk_size: int) -> None:
        offset = part.offset
        headers = {"Range": f"bytes={offset}-"} if offset else None
        with self._get(source.uri, headers) as response:
            status = response.status_code
            if status == 416 and _range_total(response) == offset:
                return  # the .part file already holds every byte
            if status == 416:
                logger.info("%s: the partial file does not fit the source; downloading again", source.name)
                part.restart()
                return self.download(source, part, chunk_size)
            if status in (401, 403, 404, 410):
                raise self._refusal(source.uri, status)
            if status >= 400:
                raise _Interrupted(f"HTTP {status} from {redact_uri(source.uri)}")
            if offset and status != 206:
                logger.info("%s: the server ignored the Range request; downloading from the start", source.name)
                part.restart()
            elif offset and _range_start(response) != offset:
                raise _Interrupted(f"{redact_uri(source.uri)} answered a different range than asked for")
            total = _range_total(response) if status == 206 else _int_or_none(response.headers.get("Content-Length"))
            if total is not None:
                part.progress.total = total
                part.progress.refresh()
            try:
                # the stored bytes, not decoded even if the server says Content-Encoding: gzip
                for chunk in response.raw.stream(chunk_size, decode_content=False):
                    part.write(chunk)
            except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError) as error:
                raise _Interrupted(f"{error.__class__.__name__} while reading {redact_uri(source.uri)}") from None


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _range_start(response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _range_total(response) -> int | None:
    match = re.search(r"/(\d+)\s*$", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


# ----------------------------------------------------------------------------------------------------
# Checksums


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
        name = _checked_relative_name(match["name"], uri)
        checksums[name] = match["md5"].lower()
    return checksums


def _checked_md5_option(md5: str | None, sources: list[str]) -> str | None:
    if md5 is None:
        return None
    value = md5.strip().lower()
    if not _MD5_PATTERN.fullmatch(value):
        raise DeepFaceError(f"--md5 {md5!r} is not an MD5 (32 hexadecimal digits)")
    if len(sources) != 1 or _is_prefix(sources[0]):
        raise DeepFaceError("--md5 applies to a single file: give exactly one --source that is not a prefix")
    return value


def _expected_md5(file: SourceFile, md5_option: str | None, md5sums: dict[str, str]) -> tuple[str | None, str]:
    """The MD5 ``file`` must have, and how that was learnt (VERIFIED_BY_* or UNVERIFIED)."""
    basename = posixpath.basename(file.name)
    if md5_option:
        return md5_option, VERIFIED_BY_OPTION
    if file.name in md5sums:
        return md5sums[file.name], VERIFIED_BY_MD5SUMS
    if basename in KNOWN_MD5:
        return KNOWN_MD5[basename], VERIFIED_BY_KNOWN
    if file.stored_md5:
        return file.stored_md5, VERIFIED_BY_GCS
    return None, UNVERIFIED


# ----------------------------------------------------------------------------------------------------
# The stage


@dataclass(frozen=True)
class _Planned:
    """A file to fetch with the backend that reads it and its expected MD5."""

    backend: object
    file: SourceFile
    expected_md5: str | None
    verified: str


def read_auth_header(auth_header_env: str | None) -> tuple[str, str] | None:
    """``(name, value)`` of the HTTP header held by environment variable ``auth_header_env``.

    The variable holds ``"Header-Name: value"`` or a bare value, meaning ``"Authorization: value"``.
    """
    if not auth_header_env:
        return None
    value = os.environ.get(auth_header_env)
    if not value or not value.strip():
        raise DeepFaceError(
            f"environment variable {auth_header_env} (named by --auth-header-env) is not set or empty: export "
            f"it with the header, e.g. {auth_header_env}='Authorization: Bearer ...'"
        )
    match = _HEADER_LINE.fullmatch(value.strip())
    if match and match["value"].strip():
        return match["name"], match["value"].strip()
    return "Authorization", value.strip()


def _plan(
    sources: list[str], md5_option: str | None, backends: dict[str, object]
) -> list[_Planned]:
    """Every file of every source, with its expected MD5; refuses empty prefixes and clashing names."""
    planned: dict[str, _Planned] = {}
    for source in sources:
        backend = backends[_scheme(source)]
        if _is_prefix(source):
            files = backend.list(source)
            if not files:
                raise DeepFaceError(f"no files under {redact_uri(source)}: check the prefix (--source)")
        else:
            files = [backend.describe(source)]
        md5sums_uri = _sibling(source, MD5SUMS_NAME)
        md5sums_data = backend.read_optional(md5sums_uri) if md5_option is None else None
        md5sums = parse_md5sums(md5sums_data, md5sums_uri) if md5sums_data is not None else {}
        for file in files:
            name = _checked_relative_name(file.name, source)
            if name == MANIFEST_FILE:
                logger.info("skipping %s: the fetch stage writes its own %s", redact_uri(file.uri), MANIFEST_FILE)
                continue
            if name in planned:
                raise DeepFaceError(
                    f"two sources give the same file name {name!r} ({redact_uri(planned[name].file.uri)} and "
                    f"{redact_uri(file.uri)}): fetch them into different --out directories"
                )
            file = SourceFile(file.uri, name, file.size, file.stored_md5)
            planned[name] = _Planned(backend, file, *_expected_md5(file, md5_option, md5sums))
    return list(planned.values())


def _already_present(target: Path, item: _Planned) -> str | None:
    """The MD5 of ``target`` when it is already a complete, matching copy of the source, else None."""
    if not target.is_file():
        return None
    if item.expected_md5 is None and (item.file.size is None or target.stat().st_size != item.file.size):
        return None  # nothing to compare with: fetch again
    actual = md5_file(target)
    if item.expected_md5 is not None and actual != item.expected_md5:
        logger.info("%s is present but its MD5 differs from the expected one; fetching it again", target)
        return None
    return actual


def _download_with_resume(item: _Planned, part_path: Path, retries: int, chunk_size: int) -> None:
    """Stream the source into ``part_path``, resuming from what it holds, retrying ``retries`` times."""
    source = item.file
    for attempt in range(retries + 1):
        offset = part_path.stat().st_size if part_path.exists() else 0
        if source.size is not None and offset > source.size:
            offset = 0
            part_path.unlink()
        if offset:
            logger.info("%s: resuming from byte %d", source.name, offset)
        with tqdm(
            total=source.size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=source.name, disable=None, leave=False,
        ) as progress:
            part = _PartFile(part_path, progress)
            try:
                item.backend.download(source, part, chunk_size)
                return
            except _Interrupted as error:
                if attempt == retries:
                    raise DeepFaceError(
                        f"download of {source.name} from {redact_uri(source.uri)} stopped after {part.offset} "
                        f"bytes ({error}); the partial file {part_path} is kept: run the same command again to "
                        "resume"
                    ) from error
                logger.warning("%s: %s; resuming (retry %d of %d)", source.name, error, attempt + 1, retries)
            finally:
                part.close()


def _fetch_one(item: _Planned, out_dir: Path, retries: int, chunk_size: int) -> dict:
    """Fetch one planned file into ``out_dir`` and return its manifest entry."""
    source = item.file
    target = out_dir / source.name
    entry = {"source": redact_uri(source.uri), "verified": item.verified}
    present_md5 = _already_present(target, item)
    if present_md5 is not None:
        logger.info("%s already present (%d bytes, MD5 %s)", source.name, target.stat().st_size, present_md5)
        return {**entry, "bytes": target.stat().st_size, "md5": present_md5}

    part_path = target.with_name(target.name + PART_SUFFIX)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _disk_error(target.parent, error) from error
    started = time.monotonic()
    resumed_from = part_path.stat().st_size if part_path.exists() else 0
    _download_with_resume(item, part_path, retries, chunk_size)

    size = part_path.stat().st_size
    if source.size is not None and size != source.size:
        raise DeepFaceError(
            f"{source.name}: got {size} bytes, the source has {source.size}; run the same command again to resume"
        )
    actual = md5_file(part_path)
    if item.expected_md5 is not None and actual != item.expected_md5:
        part_path.unlink()
        raise DeepFaceError(
            f"MD5 mismatch for {source.name} from {redact_uri(source.uri)}: expected {item.expected_md5} "
            f"({item.verified}), got {actual}. The bad file was deleted. Fetch it again; if the source is a "
            "different file on purpose, give its checksum with --md5 or an MD5SUMS file beside it"
        )
    try:
        os.replace(part_path, target)
    except OSError as error:
        raise _disk_error(target, error) from error
    elapsed = max(time.monotonic() - started, 1e-9)
    logger.info(
        "%s: %d bytes (%d new) in %.2f s, %.1f MB/s, MD5 %s (%s)",
        source.name, size, size - resumed_from, elapsed, (size - resumed_from) / elapsed / 1e6, actual, item.verified,
    )
    return {**entry, "bytes": size, "md5": actual}


def _checked_out_dir(out_dir: str | os.PathLike) -> Path:
    if "://" in str(out_dir) and not str(out_dir).startswith("file://"):
        raise DeepFaceError(
            f"--out {out_dir} must be a local directory (on Vertex AI, write to /gcs/BUCKET/... instead of gs://)"
        )
    return local_path(out_dir)


def _prepare_out_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        remove_manifest(path)  # the output is incomplete until the new one is written
        # The manifest is this stage's only atomic write: remove what a kill inside it left. (Not
        # io.remove_temporaries: a fetched file may itself be named like a temporary, .<name>.tmp.)
        for stale in path.glob(f".{MANIFEST_FILE}.*.tmp"):
            stale.unlink()
    except OSError as error:
        raise _disk_error(path, error) from error


def fetch(
    sources: str | Iterable[str],
    out_dir: str | os.PathLike,
    *,
    md5: str | None = None,
    auth_header_env: str | None = None,
    retries: int = 2,
    timeout: float = 60.0,
    chunk_size: int = CHUNK_SIZE,
) -> dict:
    """Copy ``sources`` into ``out_dir``, verify their MD5s, and write ``out_dir/manifest.json``.

    Args:
        sources: local paths or file://, gs://, https://, http:// URIs; one ending in '/' (or a local
            directory) is a prefix whose files are all fetched, keeping their relative names.
        out_dir: local output directory.
        md5: expected MD5 (hex) of the single file source.
        auth_header_env: NAME of an environment variable holding an HTTP header for http(s) sources
            (``"Header-Name: value"``, or a bare value for ``Authorization``).
        retries: how many times an interrupted transfer is resumed before giving up (a rerun resumes too).
        timeout: seconds to wait for an HTTP server to connect or send data.
        chunk_size: bytes read and written at a time.

    Returns:
        The manifest: ``{"files": {name: {"source", "bytes", "md5", "verified"}}, ...}``.
    """
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    sources = [os.fspath(source) for source in sources]
    if not sources:
        raise DeepFaceError("no source given: pass at least one --source")
    if retries < 0:
        raise DeepFaceError(f"retries must be >= 0, got {retries}")
    md5_option = _checked_md5_option(md5, sources)
    out_path = _checked_out_dir(out_dir)
    http = HttpBackend(read_auth_header(auth_header_env), auth_header_env, timeout)
    backends = {"local": LocalBackend(), "gs": GcsBackend(), "http": http, "https": http}

    try:
        planned = _plan(sources, md5_option, backends)
    except _Interrupted as error:
        raise DeepFaceError(f"could not list or describe the sources: {error}; check them and run again") from error
    _prepare_out_dir(out_path)
    logger.info("fetching %d file(s) from %d source(s) into %s", len(planned), len(sources), out_path)
    started = time.monotonic()
    files = {item.file.name: _fetch_one(item, out_path, retries, chunk_size) for item in planned}
    total = sum(entry["bytes"] for entry in files.values())
    logger.info(
        "%d file(s), %d bytes, ready in %s after %.2f s", len(files), total, out_path, time.monotonic() - started
    )

    manifest = {"stage": "fetch", "files": dict(sorted(files.items()))}
    write_manifest(out_path, manifest)  # last: the output is complete
    return manifest


@click.command("fetch")
@click.option(
    "--source", "sources", multiple=True, required=True, metavar="URI",
    help="Local path, file://, gs://, https:// or http:// URI; a trailing '/' (or a directory) fetches every "
    "file under it. Repeatable.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--md5", default=None, metavar="HEX", help="Expected MD5 of the single file source.")
@click.option(
    "--auth-header-env", default=None, metavar="NAME",
    help="Name of an environment variable holding an HTTP header for http(s) sources, 'Header-Name: value' "
    "or a bare value for 'Authorization: value'. The value itself is never logged or recorded.",
)
@click.option("--retries", default=2, show_default=True, type=click.IntRange(min=0),
              help="Resume an interrupted transfer this many times before giving up.")
def command(sources: tuple[str, ...], out_dir: str, md5: str | None, auth_header_env: str | None, retries: int):
    """Copy source files into OUT, verify their MD5s and write OUT/manifest.json."""
    manifest = fetch(list(sources), out_dir, md5=md5, auth_header_env=auth_header_env, retries=retries)
    click.echo(f"fetched {len(manifest['files'])} file(s) into {out_dir}")
