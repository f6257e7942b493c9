"""Stage 3: the class map, from an image list, a tar archive or a directory of identity folders.

Output directory:

    classes.txt        sorted identity ids, one per line; the line index (from 0) is the class id
    class_counts.tsv   header ``identity<TAB>count``, then one line per identity, in the same order
    manifest.json      source, source kind, num_classes, num_images, sha256 of classes.txt, duplicates
                       and ignored files; written last

The identity of an image is the name of its parent folder: ``n000002/0001_01.jpg`` in a list,
``train/n000002/0001_01.jpg`` in an archive or directory. Archives are read as a stream of member
names (nothing is extracted, and the image bytes are never read; see `deepface.archives`). The same input
gives the same bytes.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import logging
import os
import posixpath
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from deepface.archives import (
    MAX_EXAMPLES,
    NO_IDENTITY_FOLDER,
    NOT_AN_IMAGE,
    Member,
    check_source,
    display_name,
    identity_of,
    identity_problem,
    is_image_name,
    iter_members,
)
from deepface.contracts import remove_manifest, write_manifest
from deepface.errors import DeepFaceError
from deepface.files import hash_file, local_path, write_text
from deepface.lines import excerpt, read_lines
from deepface.outputs import output_lock

logger = logging.getLogger(__name__)

CLASSES_FILE = "classes.txt"
COUNTS_FILE = "class_counts.tsv"

# --------------------------------------------------------------------------------------------------
# Collecting the images of each identity
# --------------------------------------------------------------------------------------------------


def _check_identity(identity: str, where: str) -> None:
    """Raises when ``identity`` cannot be a line of classes.txt (`deepface.archives.identity_problem`: not
    UTF-8, over 255 bytes, a tab, a line break or surrounding spaces), naming ``where`` it was met."""
    problem = identity_problem(identity)
    if problem:
        raise DeepFaceError(
            f"{display_name(where)}: identity folder {excerpt(display_name(identity))} {problem}, "
            "which classes.txt cannot hold: rename the folder."
        )


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
    """Reads an image list such as train_list.txt (``n000002/0001_01.jpg`` per line; blank lines skipped),
    one line at a time (at most 4 KiB each: `deepface.lines.read_lines`)."""
    index = ImageIndex()
    malformed, count = [], 0  # the first MAX_EXAMPLES malformed lines, and how many there are
    for number, line in read_lines(path, "Image list", "pass a list such as train_list.txt"):
        name = line.strip()
        if not name:
            continue
        name = posixpath.normpath(name)
        identity = identity_of(name)
        reason = NO_IDENTITY_FOLDER if identity is None else None if is_image_name(name) else NOT_AN_IMAGE
        if reason:
            count += 1
            if len(malformed) < MAX_EXAMPLES:
                malformed.append(f"line {number}: {excerpt(line)} ({reason})")
        else:
            _check_identity(identity, f"{path} line {number}")
            index.add(name, identity)
    if malformed:
        shown = "; ".join(malformed)
        more = f" and {count - MAX_EXAMPLES} more" if count > MAX_EXAMPLES else ""
        raise DeepFaceError(
            f"Image list {path} has {count} malformed lines ({shown}{more}): each line must be "
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
            _check_identity(identity, f"{source} member {excerpt(member.name)}")
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
            numbers), identity names that classes.txt cannot hold, or no images at all; out_dir being written
            by another run (`deepface.outputs.output_lock`).
    """
    path, kind = check_source(source)
    index = _index_list(path) if kind == "list" else _index_members(iter_members(path), str(source))
    if not index.images:
        raise DeepFaceError(
            f"No images found in {source} ({kind}): expected IDENTITY/IMAGE.jpg entries, e.g. n000002/0001_01.jpg."
        )
    identities = sorted(index.images)
    out = local_path(out_dir)
    with output_lock(out, "labels"):  # one writer per directory (deepface.outputs)
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
            blank line, a line over 4 KiB, an identity that is not one (`deepface.archives.identity_problem`:
            surrounding spaces, over 255 bytes...), a repeated identity or an identity out of sorted order.
            The file is read one line at a time; memory grows with the identities only.

    Example: ``load_classes("out/labels")`` -> ``["n000002", "n000003", ...]``.
    """
    path = local_path(labels_dir)
    if path.is_dir() or not path.name.endswith(".txt"):
        path = path / CLASSES_FILE
    rebuild = "rebuild it with `deepface labels`"
    if not path.exists():
        raise DeepFaceError(f"{path} does not exist: pass the output directory of `deepface labels`.")
    lines: list[str] = []
    for number, identity in read_lines(path, "class map", rebuild):
        where = f"{path} line {number}"
        if not identity.strip():
            raise DeepFaceError(f"{where} is blank: every line must be one identity id; {rebuild}.")
        problem = identity_problem(identity)
        if problem:
            raise DeepFaceError(f"{where} ({excerpt(identity)}) {problem}; {rebuild}.")
        earlier = bisect.bisect_left(lines, identity)  # the lines so far are sorted (checked below)
        if earlier < len(lines) and lines[earlier] == identity:
            raise DeepFaceError(f"{where}: identity {excerpt(identity)} repeats line {earlier + 1}; {rebuild}.")
        if lines and identity < lines[-1]:
            raise DeepFaceError(
                f"{where}: {excerpt(identity)} sorts before {excerpt(lines[-1])} on the line above; classes must be "
                f"sorted (class id = line index): {rebuild}."
            )
        lines.append(identity)
    if not lines:
        raise DeepFaceError(f"{path} is empty: {rebuild}.")
    return lines
