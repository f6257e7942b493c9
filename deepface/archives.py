"""Walking the files of a tar archive or a directory, and the rules that name an image and its identity.

Shared by the stages that read image sources (labels, tfrecords, pairs, detect):

- `check_source(source)` -> ``(local path, kind)``, kind ``"directory"``, ``"archive"`` or ``"list"``.
- `iter_members(source)` yields one `Member` per regular file, in a fixed order: archive order for a tar
  archive (read once, as a stream, nothing extracted), sorted path order for a directory. Links,
  devices and unsafe names are yielded with a ``problem`` and are never read.
- `is_image_name(name)` and `identity_of(name)`: whether a file counts as an image, and of which
  identity (its parent folder); `identity_problem(identity)`: why a name cannot be an identity id.

Memory: a file larger than `MAX_MEMBER_BYTES` (64 MiB; the largest VGGFace2 or LFW image is under 1 MiB)
is never read: it comes with a ``problem`` (logged once, naming the archive and member) and every stage
counts it as ignored. A tar extended header (a PAX record or GNU long name) larger than
`MAX_HEADER_BYTES` is an error. So reading one member holds at most 64 MiB, whatever the archive.

Raises `DeepFaceError` for a remote, missing or unreadable source (permission denied is reported as
such), and for an archive that is corrupt, truncated or lacks its end-of-archive marker (compressed
archives also have their checksum trailer checked).

Example::

    >>> for member in iter_members("lfw.tgz"):
    ...     if not member.problem and is_image_name(member.name):
    ...         data = member.read()  # at most MAX_MEMBER_BYTES
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import functools
import gzip
import logging
import lzma
import os
import posixpath
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from deepface.errors import DeepFaceError, os_error_message
from deepface.files import is_remote, local_path
from deepface.lines import excerpt

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
ARCHIVE_NAME = re.compile(r"\.(tar|tar\.gz|tgz|tar\.bz2|tbz2?|tar\.xz|txz)$", re.IGNORECASE)
MAX_EXAMPLES = 10  # example names kept in manifests and error messages
MAX_MEMBER_BYTES = 64 << 20  # a larger file is never read (an image this large is not a face photo)
MAX_HEADER_BYTES = 1 << 20  # a larger PAX record or GNU long name is an error (tarfile reads it whole)
MAX_IDENTITY_BYTES = 255  # an identity id: a folder name (NAME_MAX of common file systems)
TOO_LARGE = f"larger than {MAX_MEMBER_BYTES >> 20} MiB (deepface.archives.MAX_MEMBER_BYTES): never read"

# Why a file of an archive or directory does not count as an image of an identity.
NOT_AN_IMAGE = "not an image file name"
NO_IDENTITY_FOLDER = "no identity folder"


@dataclasses.dataclass(frozen=True)
class Member:
    """One file of an archive or directory.

    Attributes:
        name: POSIX path inside the source, e.g. ``train/n000002/0001_01.jpg`` (no leading ``./``).
        size: size in bytes.
        read: returns the file's bytes. For a tar stream it works only until the next member is
            produced, and at most once.
        problem: why the entry must not be read (a link or device, an absolute or ``..`` name, a file
            name that is not UTF-8), or None; such entries are counted as ignored by every stage.
    """

    name: str
    size: int
    read: Callable[[], bytes]
    problem: str | None = None


def check_source(source: str | os.PathLike) -> tuple[Path, str]:
    """The local path of ``source`` and its kind: ``"directory"``, ``"archive"`` or ``"list"``.

    A tar archive is recognised by its name (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz), so that a
    stream such as a named pipe works too, or else by its content.
    """
    if is_remote(source):
        raise DeepFaceError(
            f"Source {source} is remote: copy it first with `deepface fetch` (on Vertex AI, use the "
            "/gcs/BUCKET/... path of the mounted bucket)."
        )
    path = local_path(source)
    try:  # permission denied (the file or a folder above it), an I/O error: said as such, not as a bad archive
        if not path.exists():
            raise DeepFaceError(f"Source {source} does not exist: pass an image list, a tar archive or a directory.")
        if path.is_dir():
            return path, "directory"
        if ARCHIVE_NAME.search(path.name) or (path.is_file() and tarfile.is_tarfile(path)):
            return path, "archive"
    except OSError as error:
        raise _os_error(error, path) from None
    return path, "list"


def iter_members(source: str | os.PathLike) -> Iterator[Member]:
    """Yields the regular files of a tar archive (read as one stream) or a directory, in a fixed order.

    Archive members come in archive order (any compression tarfile knows, mode ``r|*``: nothing is
    extracted and the archive is read once); directory files in sorted path order, named relative to
    the directory. Directories, links and other special members are left out.

    Raises:
        DeepFaceError: the source is missing, a list rather than an archive or directory, or the
            archive is corrupt or truncated.
    """
    path, kind = check_source(source)
    if kind == "directory":
        yield from _directory_members(path)
    elif kind == "archive":
        yield from _archive_members(path)
    else:
        raise DeepFaceError(
            f"Source {source} is neither a tar archive nor a directory: pass the image archive "
            "(e.g. vggface2_train.tar.gz) or a directory of identity folders."
        )


def identity_problem(identity: str) -> str | None:
    """Why ``identity`` cannot be an identity id, or None: not UTF-8, longer than `MAX_IDENTITY_BYTES`
    bytes, or holding a tab, a line break or surrounding spaces (classes.txt holds one id per line,
    class_counts.tsv is tab separated). Inner spaces are allowed here; pairs files cannot hold them
    (`deepface.pairs`).

    Example: ``identity_problem("n000002")`` is None; ``identity_problem("x" * 300)`` says it is too long.
    """
    try:
        size = len(identity.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not UTF-8"
    if size > MAX_IDENTITY_BYTES:
        return f"is {size} bytes long, more than the {MAX_IDENTITY_BYTES} an identity id may have"
    if _LINE_BREAKING.search(identity):
        return "has a tab or a line break"
    if identity != identity.strip():
        return "has surrounding spaces"
    return None


_LINE_BREAKING = re.compile(r"[\t\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")  # what str.splitlines() or a TSV splits on


def _os_error(error: OSError, path) -> DeepFaceError:
    """A source that cannot be opened or read (EACCES, EIO...): the system's reason and its fix."""
    return DeepFaceError(os_error_message(error, path, action="read"))


def display_name(name: str) -> str:
    """``name`` printable and JSON-safe: bytes that are not UTF-8 (surrogate escapes) shown as ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _name_problem(name: str) -> str | None:
    parts = name.split("/")
    if name.startswith("/") or ".." in parts:
        return "unsafe name (absolute or '..'): never read"
    try:
        parts[-1].encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not UTF-8"
    return None


def _unreadable(name: str) -> Callable[[], bytes]:
    def read() -> bytes:
        raise DeepFaceError(f"{display_name(name)} is not a regular file with a safe name: it is never read")
    return read


def _raise(error: OSError):
    raise _os_error(error, error.filename)


def _directory_members(root: Path) -> Iterator[Member]:
    for directory, subdirectories, files in os.walk(root, onerror=_raise):
        subdirectories.sort()
        for file_name in sorted(files):
            path = os.path.join(directory, file_name)
            if not os.path.isfile(path):
                continue
            name = os.path.relpath(path, root).replace(os.sep, "/")
            size = os.path.getsize(path)
            problem = _name_problem(name) or _size_problem(root, name, size)
            if problem:
                yield Member(display_name(name), 0, _unreadable(name), problem)
            else:
                yield Member(name, size, functools.partial(_read_file, path))


def _size_problem(source: Path, name: str, size: int) -> str | None:
    """`TOO_LARGE` (logged, naming the source and member) for a file over `MAX_MEMBER_BYTES`, else None."""
    if size <= MAX_MEMBER_BYTES:
        return None
    logger.warning("%s: %s is %d bytes, %s; it is counted as ignored.", source, excerpt(display_name(name)),
                   size, TOO_LARGE)
    return TOO_LARGE


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_MEMBER_BYTES + 1)
    except OSError as error:
        raise _os_error(error, path) from None
    if len(data) > MAX_MEMBER_BYTES:  # it grew since it was listed
        raise DeepFaceError(f"{path} grew past {MAX_MEMBER_BYTES >> 20} MiB while being read: "
                            "leave the source unchanged while a stage reads it.")
    return data


_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)


def _archive_error(path: Path, count: int, error: Exception) -> DeepFaceError:
    return DeepFaceError(
        f"Cannot read archive {path} after {count} members ({type(error).__name__}: {error}): it is "
        "truncated, corrupt or not a tar archive. Copy it again (`deepface fetch` verifies its MD5)."
    )


_DECOMPRESSORS = {  # magic -> reader over an open binary file
    b"\x1f\x8b": lambda handle: gzip.GzipFile(fileobj=handle, mode="rb"),
    b"BZh": bz2.BZ2File,
    b"\xfd7zXZ\x00": lzma.LZMAFile,
}


class _CountingReader:
    """A read-only stream that counts the bytes read through it (tarfile's ``r|`` mode only calls read)."""

    def __init__(self, raw):
        self.raw, self.bytes_read = raw, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.bytes_read += len(data)
        return data


class _HeaderTooLarge(tarfile.ReadError):
    """An extended tar header over `MAX_HEADER_BYTES`."""


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header whose extended headers (PAX records, GNU long names), which tarfile reads whole into
    memory, must not exceed `MAX_HEADER_BYTES`."""

    def _check_extended(self):
        if self.size > MAX_HEADER_BYTES:
            raise _HeaderTooLarge(f"an extended header (PAX or GNU long name) of {self.size} bytes, more "
                                    f"than the {MAX_HEADER_BYTES >> 20} MiB allowed")

    def _proc_gnulong(self, tarfile):
        self._check_extended()
        return super()._proc_gnulong(tarfile)

    def _proc_pax(self, tarfile):
        self._check_extended()
        return super()._proc_pax(tarfile)


@contextlib.contextmanager
def _open_decompressed(path: Path):
    """The archive's tar bytes, through Python's gzip/bz2/lzma readers: unlike tarfile's own stream
    decoder, they check the checksum and length trailer (at the end of the stream). The file is opened
    once and its magic peeked, so a named pipe works too."""
    try:
        opened = open(path, "rb")
    except OSError as error:  # permission denied is not a corrupt archive
        raise _os_error(error, path) from None
    with opened as handle:
        magic = handle.peek(6)[:6]
        decompressor = next((cls for prefix, cls in _DECOMPRESSORS.items() if magic.startswith(prefix)), None)
        if decompressor is None:
            yield handle
        else:
            with decompressor(handle) as stream:
                yield stream


def _archive_members(path: Path) -> Iterator[Member]:
    count = 0
    try:
        with _open_decompressed(path) as raw:
            stream = _CountingReader(raw)
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo) as archive:
                for info in archive:
                    count += 1
                    if info.isdir():
                        continue
                    problem = _name_problem(info.name) or (None if info.isfile() else
                                                           "not a regular file (link or device): never followed")
                    problem = problem or _size_problem(path, info.name, info.size)  # before any byte is read
                    if problem:
                        yield Member(display_name(info.name), 0, _unreadable(info.name), problem)
                        continue
                    name = posixpath.normpath(info.name)
                    yield Member(name, info.size, functools.partial(_read_archive_member, archive, info, path))
                # tarfile stops quietly at a damaged or missing header: read to the true end, so the
                # decompressor checks its trailer, and require the end-of-archive (zero) block.
                while stream.read(1 << 20):
                    pass
                if stream.bytes_read < archive.offset + tarfile.BLOCKSIZE:
                    raise tarfile.ReadError("the archive ends without its end-of-archive marker")
    except _HeaderTooLarge as error:
        raise DeepFaceError(f"Archive {path}, after {count} members: {error}; it is not an image archive "
                            "this pipeline reads (file names are at most a few KiB): check what was copied.") from None
    except _ARCHIVE_ERRORS as error:
        raise _archive_error(path, count, error) from error


def _read_archive_member(archive: tarfile.TarFile, info: tarfile.TarInfo, path: Path) -> bytes:
    try:
        return archive.extractfile(info).read(min(info.size, MAX_MEMBER_BYTES))
    except _ARCHIVE_ERRORS as error:
        raise _archive_error(path, 0, error) from error


def is_image_name(name: str) -> bool:
    """True when a file name looks like an image (by its suffix; hidden files such as ``._x.jpg`` are not)."""
    base = posixpath.basename(name)
    return not base.startswith(".") and posixpath.splitext(base)[1].lower() in IMAGE_SUFFIXES


def identity_of(name: str) -> str | None:
    """The identity of an image: the name of its parent folder (``train/n000002/1.jpg`` -> ``n000002``).

    None when the image has no parent folder.
    """
    parent = posixpath.basename(posixpath.dirname(name))
    return parent or None
