"""Stage 3: the class map, from an image list, a tar archive or a directory of identity folders.

Output directory:

    classes.txt        sorted identity ids, one per line; the line index (from 0) is the class id
    class_counts.tsv   header ``identity<TAB>count``, then one line per identity, in the same order
    manifest.json      source, source kind, num_classes, num_images, sha256 of classes.txt, duplicates
                       and ignored files; written last

The identity of an image is the name of its parent folder: ``n000002/0001_01.jpg`` in a list,
``train/n000002/0001_01.jpg`` in an archive or directory. Archives are read as a stream of member
names (nothing is extracted, and the image bytes are never read). The same input gives the same bytes.

This module also holds what the tfrecords stage shares with it: `iter_members`, one way to walk the
files of an archive or directory in a fixed order, and the rules that name an image and its identity.
"""

from __future__ import annotations

import bz2
import collections
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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import click
from tqdm import tqdm

from deepface.contracts import remove_manifest, write_manifest
from deepface.errors import DeepFaceError
from deepface.files import hash_file, is_remote, local_path, write_text

logger = logging.getLogger(__name__)

CLASSES_FILE = "classes.txt"
COUNTS_FILE = "class_counts.tsv"

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
ARCHIVE_NAME = re.compile(r"\.(tar|tar\.gz|tgz|tar\.bz2|tbz2?|tar\.xz|txz)$", re.IGNORECASE)
# Characters an identity id cannot hold: classes.txt is one id per line, class_counts.tsv is tab-separated.
_FORBIDDEN_IN_IDENTITY = re.compile(r"[\t\n\r]")
MAX_EXAMPLES = 10  # example names kept in manifests and error messages

# Why a file of an archive or directory does not count as an image of an identity.
NOT_AN_IMAGE = "not an image file name"
NO_IDENTITY_FOLDER = "no identity folder"


# --------------------------------------------------------------------------------------------------
# Walking a source (shared with deepface.tfrecords)
# --------------------------------------------------------------------------------------------------


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
    if not path.exists():
        raise DeepFaceError(f"Source {source} does not exist: pass an image list, a tar archive or a directory.")
    if path.is_dir():
        return path, "directory"
    if ARCHIVE_NAME.search(path.name) or (path.is_file() and tarfile.is_tarfile(path)):
        return path, "archive"
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


def _directory_members(root: Path) -> Iterator[Member]:
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        for file_name in sorted(files):
            path = os.path.join(directory, file_name)
            if not os.path.isfile(path):
                continue
            name = os.path.relpath(path, root).replace(os.sep, "/")
            problem = _name_problem(name)
            if problem:
                yield Member(display_name(name), 0, _unreadable(name), problem)
            else:
                yield Member(name, os.path.getsize(path), functools.partial(_read_file, path))


def _read_file(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


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


@contextlib.contextmanager
def _open_decompressed(path: Path):
    """The archive's tar bytes, through Python's gzip/bz2/lzma readers: unlike tarfile's own stream
    decoder, they check the checksum and length trailer (at the end of the stream). The file is opened
    once and its magic peeked, so a named pipe works too."""
    with open(path, "rb") as handle:
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
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for info in archive:
                    count += 1
                    if info.isdir():
                        continue
                    problem = _name_problem(info.name) or (None if info.isfile() else
                                                           "not a regular file (link or device): never followed")
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
    except _ARCHIVE_ERRORS as error:
        raise _archive_error(path, count, error) from error


def _read_archive_member(archive: tarfile.TarFile, info: tarfile.TarInfo, path: Path) -> bytes:
    try:
        return archive.extractfile(info).read()
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


def _check_identity(identity: str, where: str) -> None:
    try:
        identity.encode("utf-8")
    except UnicodeEncodeError:
        raise DeepFaceError(
            f"{display_name(where)}: identity folder {display_name(identity)!r} is not UTF-8, which classes.txt "
            "cannot hold: rename the folder."
        ) from None
    if identity != identity.strip() or _FORBIDDEN_IN_IDENTITY.search(identity):
        raise DeepFaceError(
            f"{where}: identity folder {identity!r} has a tab, a line break or surrounding spaces, which "
            "classes.txt cannot hold: rename the folder."
        )


# --------------------------------------------------------------------------------------------------
# Collecting the images of each identity
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ImageIndex:
    """Image names per identity, gathered from a list, archive or directory.

    Attributes:
        images: identity -> number of distinct images.
        duplicates: names met more than once (each counted once in ``images``), in order of meeting.
        ignored: reason -> number of files left out (archives and directories only).
        ignored_examples: the first few files left out, as ``"name (reason)"``.
    """

    images: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    duplicates: list = dataclasses.field(default_factory=list)
    ignored: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    ignored_examples: list = dataclasses.field(default_factory=list)
    _seen: set = dataclasses.field(default_factory=set, repr=False)

    def add(self, name: str, identity: str) -> None:
        if name in self._seen:
            self.duplicates.append(name)
            return
        self._seen.add(name)
        self.images[identity] += 1

    def ignore(self, name: str, reason: str) -> None:
        self.ignored[reason] += 1
        if len(self.ignored_examples) < MAX_EXAMPLES:
            self.ignored_examples.append(f"{name} ({reason})")


def _index_list(path: Path) -> ImageIndex:
    """Reads an image list such as train_list.txt (``n000002/0001_01.jpg`` per line; blank lines skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DeepFaceError(
            f"Image list {path} is not UTF-8 text ({error}): pass a list such as train_list.txt.") from None
    index = ImageIndex()
    malformed = []
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            continue
        name = posixpath.normpath(name)
        identity = identity_of(name)
        if identity is None:
            malformed.append(f"line {number}: {line!r} ({NO_IDENTITY_FOLDER})")
        elif not is_image_name(name):
            malformed.append(f"line {number}: {line!r} ({NOT_AN_IMAGE})")
        else:
            _check_identity(identity, f"{path} line {number}")
            index.add(name, identity)
    if malformed:
        shown = "; ".join(malformed[:MAX_EXAMPLES])
        more = f" and {len(malformed) - MAX_EXAMPLES} more" if len(malformed) > MAX_EXAMPLES else ""
        raise DeepFaceError(
            f"Image list {path} has {len(malformed)} malformed lines ({shown}{more}): each line must be "
            "IDENTITY/IMAGE, e.g. n000002/0001_01.jpg. Fix or remove those lines."
        )
    return index


def _index_members(members: Iterable[Member], source: str) -> ImageIndex:
    index = ImageIndex()
    for member in tqdm(members, desc="labels: reading names", unit="file", disable=None):
        identity = identity_of(member.name)
        if member.problem:
            index.ignore(member.name, member.problem)
        elif not is_image_name(member.name):
            index.ignore(member.name, NOT_AN_IMAGE)
        elif identity is None:
            index.ignore(member.name, NO_IDENTITY_FOLDER)
        else:
            _check_identity(identity, f"{source} member {member.name}")
            index.add(member.name, identity)
    return index


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def build_labels(source: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Writes the class map of ``source`` into ``out_dir``.

    Args:
        source: an image list (``train_list.txt``: ``n000002/0001_01.jpg`` per line), a tar archive
            (``train/n000002/0001_01.jpg`` members; read as a stream, nothing extracted) or a directory
            of identity folders.
        out_dir: output directory (created if needed).

    Returns:
        The manifest (also written to ``out_dir/manifest.json``, last).

    Raises:
        DeepFaceError: missing or unreadable source, malformed list lines (all reported with their line
            numbers), identity names that classes.txt cannot hold, or no images at all.
    """
    path, kind = check_source(source)
    index = _index_list(path) if kind == "list" else _index_members(iter_members(path), str(source))
    if not index.images:
        raise DeepFaceError(
            f"No images found in {source} ({kind}): expected IDENTITY/IMAGE.jpg entries, e.g. n000002/0001_01.jpg."
        )
    identities = sorted(index.images)
    out = local_path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_manifest(out)  # a stale manifest must not vouch for new files
    write_text(out / CLASSES_FILE, "".join(f"{identity}\n" for identity in identities))
    write_text(
        out / COUNTS_FILE,
        "identity\tcount\n" + "".join(f"{identity}\t{index.images[identity]}\n" for identity in identities),
    )
    manifest = {
        "source": str(source),
        "source_kind": kind,
        "num_classes": len(identities),
        "num_images": sum(index.images.values()),
        "classes_sha256": hash_file(out / CLASSES_FILE),
        "duplicates": {"count": len(index.duplicates), "examples": index.duplicates[:MAX_EXAMPLES]},
        "ignored": {"count": sum(index.ignored.values()), "by_reason": dict(index.ignored),
                    "examples": index.ignored_examples},
    }
    write_manifest(out, manifest)  # last: the output is complete
    logger.info("%d classes, %d images from %s (%s) -> %s", manifest["num_classes"], manifest["num_images"],
                source, kind, out)
    if index.duplicates:
        logger.warning("%d duplicated entries counted once, e.g. %s", len(index.duplicates),
                       ", ".join(index.duplicates[:3]))
    if index.ignored:
        logger.info("ignored %d files: %s", sum(index.ignored.values()), dict(index.ignored))
    return manifest


def load_classes(labels_dir: str | os.PathLike) -> list[str]:
    """The identity ids of a class map, in class-id order, after checking ``classes.txt``.

    Args:
        labels_dir: output directory of `build_labels` (or the classes.txt file itself).

    Raises:
        DeepFaceError: naming the file and line, when the file is missing, empty, not UTF-8, or has a
            blank line, surrounding spaces, a repeated identity or an identity out of sorted order.
    """
    path = local_path(labels_dir)
    if path.is_dir() or not path.name.endswith(".txt"):
        path = path / CLASSES_FILE
    rebuild = "rebuild it with `deepface labels`"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeepFaceError(f"{path} does not exist: pass the output directory of `deepface labels`.") from None
    except UnicodeDecodeError as error:
        raise DeepFaceError(f"{path} is not UTF-8 text ({error}): {rebuild}.") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    if not lines:
        raise DeepFaceError(f"{path} is empty: {rebuild}.")
    first_line = {}
    for number, identity in enumerate(lines, start=1):
        where = f"{path} line {number}"
        if not identity.strip():
            raise DeepFaceError(f"{where} is blank: every line must be one identity id; {rebuild}.")
        if identity != identity.strip():
            raise DeepFaceError(f"{where} ({identity!r}) has surrounding spaces; {rebuild}.")
        if identity in first_line:
            raise DeepFaceError(f"{where}: identity {identity!r} repeats line {first_line[identity]}; {rebuild}.")
        if number > 1 and identity < lines[number - 2]:
            raise DeepFaceError(
                f"{where}: {identity!r} sorts before {lines[number - 2]!r} on the line above; classes must be "
                f"sorted (class id = line index): {rebuild}."
            )
        first_line[identity] = number
    return lines


@click.command("labels")
@click.option("--source", required=True,
              help="Image list (train_list.txt), tar archive (vggface2_train.tar.gz) or directory of identity folders.")
@click.option("--out", "out_dir", required=True, help="Output directory: classes.txt, class_counts.tsv, manifest.json.")
def command(source: str, out_dir: str) -> None:
    """Build the class map: sorted identity ids (class id = line index) and images per identity."""
    manifest = build_labels(source, out_dir)
    click.echo(f"{manifest['num_classes']} classes, {manifest['num_images']} images -> {out_dir}")
