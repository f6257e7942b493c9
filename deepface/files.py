"""Small file helpers shared by every stage: atomic writes, hashing, JSON.

Outputs are written to a temporary name beside the target and renamed into place, so an interrupted
stage never leaves a file that looks complete. Paths may be local or ``gs://`` (through tf.io.gfile,
imported lazily: objects in GCS appear atomically when their upload finishes).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deepface.errors import DeepFaceError


def is_remote(path: str | os.PathLike) -> bool:
    """True for URIs that need tf.io.gfile (gs://, s3://, ...)."""
    return "://" in str(path) and not str(path).startswith("file://")


def local_path(path: str | os.PathLike) -> Path:
    """A local Path for a plain path or a file:// URI."""
    text = str(path)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def tf_path(path: str | os.PathLike) -> str:
    """A path string tf.io understands: remote URIs as they are, file:// URIs as local paths."""
    return str(path) if is_remote(path) else str(local_path(path))


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of an image file: local, file:// or remote (through tf.io.gfile).

    Raises:
        DeepFaceError: no such file, naming it as `tf_path` writes it.
    """
    if is_remote(path):
        import tensorflow as tf  # lazy: only remote reads need it

        if not tf.io.gfile.exists(str(path)):
            raise DeepFaceError(f"Image file {path} does not exist: check the path.")
        with tf.io.gfile.GFile(str(path), "rb") as handle:
            return handle.read()
    local = local_path(path)
    if not local.is_file():
        raise DeepFaceError(f"Image file {local} does not exist: check the path.")
    return local.read_bytes()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open ``path`` for writing under a temporary name; rename into place only on success.

    An OSError of the write (a full disk in write, fsync or rename; a folder it may not write) names
    ``path`` in its ``filename`` (`deepface.errors.os_error_message` reads it), never only the temporary
    name or none. The temporary file is removed on any error; a failure of that removal is not raised,
    so the first error is the one the caller sees.
    """
    if is_remote(path):
        import tensorflow as tf  # lazy: only remote writes need it

        with tf.io.gfile.GFile(str(path), mode) as handle:
            yield handle
        return
    target = local_path(path)
    temporary_prefix = f".{target.name}."
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix, suffix=".tmp", dir=target.parent)
    except OSError as error:
        _name_target(error, target, temporary_prefix)
        raise
    handle = os.fdopen(fd, mode)
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        umask = os.umask(0)  # mkstemp creates 0600 files: give the output the usual permissions
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException as error:
        with contextlib.suppress(OSError):  # never hide the first error: closing flushes again (ENOSPC)
            handle.close()
        with contextlib.suppress(OSError):  # ... and unlink may fail too (a read-only disk)
            os.unlink(tmp)
        if isinstance(error, OSError):
            _name_target(error, target, temporary_prefix)
        raise


# Errors of writing a file (not of e.g. a network read in the caller's block): they concern the file written.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM})


def _name_target(error: OSError, target: Path, temporary_prefix: str) -> None:
    """Make ``target`` the file name of ``error`` when it names none (a write's ENOSPC) or the temporary."""
    named = error.filename
    if named is not None and os.path.basename(str(named)).startswith(temporary_prefix):
        error.filename, error.filename2 = str(target), None
    elif named is None and error.errno in WRITE_ERRNOS:
        error.filename = str(target)


@contextlib.contextmanager
def errors_name(path: str | os.PathLike) -> Iterator[None]:
    """Inside, an OSError of writing (`WRITE_ERRNOS`) that names no file (``write``, ``fsync`` and ``close``
    name none) gets ``path`` as its ``filename``, so its one-line message names the file being written."""
    try:
        yield
    except OSError as error:
        if error.filename is None and error.errno in WRITE_ERRNOS:
            error.filename = str(path)
        raise


TEMPORARY_GLOB = ".*.tmp"  # atomic_open's temporary names: .<target name>.<random>.tmp


def remove_temporaries(directory: str | os.PathLike) -> int:
    """Delete the temporaries that an interrupted (killed) atomic write left in ``directory``; returns how many.

    Call it only when no other writer works in that directory (a stage resuming its own output).
    """
    removed = 0
    for leftover in local_path(directory).glob(TEMPORARY_GLOB):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, fixed indent, trailing newline): same object, same bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, dumps_json(obj))


def read_json(path: str | os.PathLike) -> Any:
    if is_remote(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(str(path), "r") as handle:
            return json.load(handle)
    with open(local_path(path), encoding="utf-8") as handle:
        return json.load(handle)


def md5_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    return hash_file(path, "md5", chunk_size)


def hash_file(path: str | os.PathLike, algorithm: str = "sha256", chunk_size: int = 1 << 20) -> str:
    digest = hashlib.new(algorithm)
    with open(local_path(path), "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()
