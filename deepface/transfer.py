"""Where the fetch stage reads from, and the ``.part`` file it writes to.

One backend per kind of source (see `deepface.uris.scheme_of`): `LocalBackend` (plain paths and
``file://``), `GcsBackend` (``gs://``) and `HttpBackend` (``http(s)://``), each with the same methods:

- ``list(prefix)`` -> the `SourceFile`s under a prefix (an ``http(s)://`` prefix through its MD5SUMS file);
- ``describe(uri)`` -> the `SourceFile` of one file;
- ``read_optional(uri)`` -> the bytes of a small file, or None when it is absent;
- ``download(source, part, chunk_size)`` streams a file into a `PartFile`, from the offset it holds
  (an HTTP ``Range`` request, restarting from zero when the server ignores it, or a ranged GCS read),
  or into a `HashSink`, which only hashes the bytes (a gs:// object verified in place, never stored).

A gs:// `SourceFile` also carries the object's generation, the version that was listed and verified.

They raise `Interrupted` for a transfer worth resuming (connection cut, timeout, server error, received
data failing its checksum) and `DeepFaceError` for what a retry will not fix (missing file, refused
access, no credentials, a full or read-only disk: `disk_error`). The secret HTTP header is not sent to
another host after a redirect, and no error message or log record holds it or a token-like query parameter.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit

import requests
import urllib3
from tqdm import tqdm

from deepface.errors import DeepFaceError, os_error_message
from deepface.files import local_path
from deepface.uris import MD5SUMS_NAME, RedactQueries, parse_md5sums, redact_uri, sibling_uri

logger = logging.getLogger(__name__)

_REDACT_QUERIES = RedactQueries()


class Interrupted(Exception):
    """A transfer stopped part-way (connection cut, timeout, server error): worth resuming."""


# ----------------------------------------------------------------------------------------------------
# Backends: one per kind of source. Each lists a prefix, describes one file, reads a small optional
# file (MD5SUMS) and streams a file from an offset into a PartFile.


@dataclass(frozen=True)
class SourceFile:
    """One file to fetch: where to read it, its relative output name, and (when the source knows them)
    its size, the MD5 the storage holds for it and its GCS generation (the object version read)."""

    uri: str
    name: str
    size: int | None = None
    stored_md5: str | None = None
    generation: int | None = None


class PartFile:
    """``<name>.part`` opened for appending; writes advance the progress bar, disk errors become DeepFaceError."""

    def __init__(self, path: Path, progress: tqdm):
        self.path = path
        self.progress = progress
        try:
            self._handle: BinaryIO = open(path, "ab")
        except OSError as error:
            raise disk_error(path, error) from error

    @property
    def offset(self) -> int:
        return self._handle.tell()

    def write(self, chunk: bytes) -> int:
        try:
            written = self._handle.write(chunk)
        except OSError as error:
            raise disk_error(self.path, error) from error
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
            raise disk_error(self.path, error) from error


class HashSink:
    """Where a backend's ``download`` writes when the bytes are only hashed, never stored: the MD5 and
    count of what it received. Same interface as `PartFile` (``offset``, ``write``, rewinding ``seek``).

    >>> sink = HashSink()
    >>> sink.write(b"abc")
    3
    >>> sink.md5
    '900150983cd24fb0d6963f7d28e17f72'
    """

    def __init__(self, progress: tqdm | None = None):
        self.progress = progress
        self.restart()

    @property
    def offset(self) -> int:
        return self.received

    @property
    def md5(self) -> str:
        return self._hash.hexdigest()

    def write(self, chunk: bytes) -> int:
        self._hash.update(chunk)
        self.received += len(chunk)
        if self.progress is not None:
            self.progress.update(len(chunk))
        return len(chunk)

    def restart(self) -> None:
        """Forget what was received: the source is being read again from byte 0."""
        self._hash = hashlib.md5()
        self.received = 0
        if self.progress is not None:
            self.progress.reset(total=self.progress.total)

    def seek(self, position: int, whence: int = 0) -> int:  # the GCS client rewinds to 0 to restart
        if (position, whence) != (0, 0):
            raise OSError("a hash can only be restarted from the beginning")
        self.restart()
        return 0


def disk_error(path: Path, error: OSError) -> DeepFaceError:
    """The user error for an OSError writing ``path``: one line naming the path and the fix for its errno
    (`deepface.errors.os_error_message`)."""
    return DeepFaceError(os_error_message(error, path, action="write"))


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
            raise DeepFaceError(f"source file {uri} does not exist: check the path (sources)")
        return SourceFile(uri, path.name, path.stat().st_size)

    def read_optional(self, uri: str) -> bytes | None:
        path = local_path(uri)
        return path.read_bytes() if path.is_file() else None

    def download(self, source: SourceFile, part: PartFile, chunk_size: int) -> None:
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
            raise Interrupted(f"checksum of the data received from {uri} did not match") from error
        except (exceptions.GoogleAPIError, OSError) as error:  # requests' errors are OSErrors too
            raise Interrupted(f"{error.__class__.__name__} while reading {uri}") from error

    def list(self, prefix: str) -> list[SourceFile]:
        bucket, name_prefix = self._split(prefix)
        with self._errors(prefix):
            blobs = list(self.client.list_blobs(bucket, prefix=name_prefix))
        return [
            SourceFile(f"gs://{bucket}/{blob.name}", blob.name[len(name_prefix):], blob.size, _hex_md5(blob),
                       blob.generation)
            for blob in sorted(blobs, key=lambda blob: blob.name)
            if not blob.name.endswith("/")  # folder placeholders
        ]

    def describe(self, uri: str) -> SourceFile:
        bucket, name = self._split(uri)
        with self._errors(uri):
            blob = self.client.bucket(bucket).get_blob(name)
        if blob is None:
            raise DeepFaceError(f"{uri} not found (or its bucket does not exist): check the URI")
        return SourceFile(uri, posixpath.basename(name), blob.size, _hex_md5(blob), blob.generation)

    def read_optional(self, uri: str) -> bytes | None:
        bucket, name = self._split(uri)
        with self._errors(uri):
            blob = self.client.bucket(bucket).get_blob(name)
            return None if blob is None else blob.download_as_bytes(raw_download=True)

    def download(self, source: SourceFile, part: PartFile, chunk_size: int) -> None:
        bucket, name = self._split(source.uri)
        if source.size is not None and part.offset >= source.size:
            return  # complete already (the ranged request would be unsatisfiable)
        with self._errors(source.uri):
            blob = self.client.bucket(bucket).blob(name, generation=source.generation)  # the version listed
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
            raise Interrupted(f"{error.__class__.__name__} while connecting to {redact_uri(uri)}") from None

    def _refusal(self, uri: str, status: int) -> DeepFaceError:
        safe = redact_uri(uri)
        if status == 404:
            return DeepFaceError(f"{safe} not found (HTTP 404): check the URL (sources)")
        if self._secret_header is not None:
            source = f"${self._auth_header_env}" if self._auth_header_env else "the secret (auth_secret)"
            hint = (
                f"the header from {source} was sent but refused: check its value "
                "('Header-Name: value', or a bare value for 'Authorization: value')"
            )
        else:
            hint = (
                "if the server needs a login, put the header in an environment variable, e.g. "
                "export FETCH_AUTH='Authorization: Bearer ...' (or 'Cookie: ...'), and give its name "
                "as auth_header_env=FETCH_AUTH, or in Secret Manager and give the version's name as auth_secret"
            )
        return DeepFaceError(f"{safe} refused access (HTTP {status}): {hint}")

    def list(self, prefix: str) -> list[SourceFile]:
        md5sums_uri = sibling_uri(prefix, MD5SUMS_NAME)
        status, listing = self._read_small(md5sums_uri)
        if status in (401, 403):  # refused, not absent: say so, with the auth_header_env hint
            raise DeepFaceError(
                f"cannot list {redact_uri(prefix)} (HTTP has no directory listing: a prefix is listed by its "
                f"{MD5SUMS_NAME} file): {self._refusal(md5sums_uri, status)}"
            )
        if listing is None:
            raise DeepFaceError(
                f"cannot list {redact_uri(prefix)}: HTTP has no directory listing and there is no "
                f"{MD5SUMS_NAME} file there (HTTP {status}); give each file as its own source"
            )
        names = sorted({MD5SUMS_NAME, *parse_md5sums(listing, md5sums_uri)})
        return [SourceFile(sibling_uri(prefix, quote(name)), name) for name in names]

    def describe(self, uri: str) -> SourceFile:
        return SourceFile(uri, unquote(posixpath.basename(urlsplit(uri).path)))

    def read_optional(self, uri: str) -> bytes | None:
        """The bytes of a small optional file (an MD5SUMS beside a file source); None when the server
        answers 401, 403, 404 or 410 (a file the source does not let us read is treated as absent)."""
        return self._read_small(uri)[1]

    def _read_small(self, uri: str) -> tuple[int, bytes | None]:
        """``(HTTP status, body)``: the body of a successful answer, None with a 401, 403, 404 or 410;
        raises `Interrupted` with any other error status."""
        with self._get(uri) as response:
            status = response.status_code
            if status in (401, 403, 404, 410):
                return status, None
            if status >= 400:
                raise Interrupted(f"HTTP {status} from {redact_uri(uri)}")
            try:
                return status, response.content
            except requests.RequestException as error:
                raise Interrupted(f"{error.__class__.__name__} while reading {redact_uri(uri)}") from None

    def download(self, source: SourceFile, part: PartFile, chunk_size: int) -> None:
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
                raise Interrupted(f"HTTP {status} from {redact_uri(source.uri)}")
            if offset and status != 206:
                logger.info("%s: the server ignored the Range request; downloading from the start", source.name)
                part.restart()
            elif offset and _range_start(response) != offset:
                raise Interrupted(f"{redact_uri(source.uri)} answered a different range than asked for")
            total = _range_total(response) if status == 206 else _int_or_none(response.headers.get("Content-Length"))
            if total is not None:
                part.progress.total = total
                part.progress.refresh()
            try:
                # the stored bytes, not decoded even if the server says Content-Encoding: gzip
                for chunk in response.raw.stream(chunk_size, decode_content=False):
                    part.write(chunk)
            except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError) as error:
                raise Interrupted(f"{error.__class__.__name__} while reading {redact_uri(source.uri)}") from None


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _range_start(response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _range_total(response) -> int | None:
    match = re.search(r"/(\d+)\s*$", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None
