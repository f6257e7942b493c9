"""Verification pairs: read and write LFW ``pairs.txt`` files, and find their images.

The format (LFW, Huang et al. 2007). A header line, then one pair per line, fields split by tabs or spaces:

- View 2 (``pairs.txt``): header ``"<sets>\\t<n>"`` (``10\\t300``); then ``sets`` blocks of ``2 n`` lines,
  each holding ``n`` matched pairs ``name  i  j`` and ``n`` mismatched pairs ``name1  i  name2  j``
  (LFW writes the matched ones first). Each block is one fold of the 10-fold protocol.
- View 1 (``pairsDevTrain.txt``, ``pairsDevTest.txt``): header ``"<n>"``; ``n`` matched then ``n``
  mismatched lines, all in one set.

How a pair names an image. Image ``i`` of identity ``name`` is looked up in an :class:`ImageCollection`
(a tar archive, read in place, or a directory), where an identity is the folder holding its images:

- LFW folders: a file called ``<name>_<NNNN>.<ext>`` (the folder's name, ``_``, exactly four digits
  for a number from 1, an extension: the LFW layout ``lfw/<name>/<name>_0001.jpg``) is image ``NNNN``,
  always. Once a folder holds one such name, its other files (other names, another identity's prefix,
  a number already taken by the same name with another extension: the first in sorted order keeps it)
  are ignored, so a stray ``<name>_0001 (1).jpg`` can never renumber the folder. All ignored files of a
  collection are counted and named (a few examples) in one logged warning.
- Folders holding no such name at all (VGGFace2 ``test/n000001/0001_01.jpg``): ``i`` is the 1-based
  position of the file among the folder's image files sorted by name. Here an added or removed file does
  shift the numbers after it; the file names in ``scores.csv`` (below) show it.

So a file written by `deepface.pair_generation.generate_pairs` for VGGFace2 needs no side table, and the
evaluation writes the file names it resolved for every pair into ``scores.csv``, so a changed archive cannot
go unnoticed.

New pairs files are drawn by `deepface.pair_generation` (from an image collection or from image counts)
and written by :func:`format_pairs` / :func:`write_pairs`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Iterator

from deepface.archives import identity_of, is_image_name, iter_members
from deepface.errors import DeepFaceError
from deepface.files import local_path, write_text

logger = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class Pair:
    """One verification pair: image ``number1`` of ``name1`` against image ``number2`` of ``name2``."""

    name1: str
    number1: int
    name2: str
    number2: int
    fold: int

    @property
    def same(self) -> bool:
        """True for a matched pair (both images of one identity)."""
        return self.name1 == self.name2

    def line(self) -> str:
        """The pair as a line of pairs.txt (LFW format, tab separated)."""
        if self.same:
            return f"{self.name1}\t{self.number1}\t{self.number2}"
        return f"{self.name1}\t{self.number1}\t{self.name2}\t{self.number2}"


# ------------------------------------------------------------------------------------------- parsing


def parse_pairs(text: str, source: str = "pairs.txt") -> list[Pair]:
    """Parse the text of an LFW View 1 or View 2 pairs file.

    Args:
        text: the file's contents.
        source: the file's name, for error messages.

    Returns:
        The pairs in file order; ``fold`` is the 0-based set (always 0 for View 1).

    Raises:
        DeepFaceError: naming the line of a malformed header or pair, a set without exactly ``n`` matched
            and ``n`` mismatched pairs, or a pair count that differs from the header's.
    """
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DeepFaceError(f"{source}: empty pairs file; expected an LFW header such as '10\\t300'.")
    header = lines[0].split()
    if len(header) not in (1, 2) or not all(field.isdigit() and int(field) > 0 for field in header):
        raise DeepFaceError(
            f"{source}:1: bad header {lines[0]!r}; expected '<sets>\\t<pairs per set>' (View 2, e.g. "
            "'10\\t300') or '<pairs>' (View 1)."
        )
    sets, per_set = (1, int(header[0])) if len(header) == 1 else (int(header[0]), int(header[1]))
    expected = 2 * per_set * sets
    if len(lines) - 1 != expected:
        raise DeepFaceError(
            f"{source}: the header promises {sets} set(s) of {per_set} matched + {per_set} mismatched "
            f"pairs ({expected} lines) but {len(lines) - 1} lines follow it; the file is truncated or "
            "not an LFW pairs file."
        )
    pairs = [_parse_pair_line(line, number, index // (2 * per_set), source)
             for index, (number, line) in enumerate(enumerate(lines[1:], start=2))]
    for fold in range(sets):
        matched = sum(pair.same for pair in pairs[fold * 2 * per_set:(fold + 1) * 2 * per_set])
        if matched != per_set:
            first_line = 2 + fold * 2 * per_set
            raise DeepFaceError(
                f"{source}:{first_line}-{first_line + 2 * per_set - 1}: set {fold + 1} holds {matched} "
                f"matched pairs; the header says each set holds {per_set} matched and {per_set} mismatched."
            )
    return pairs


def _parse_pair_line(line: str, line_number: int, fold: int, source: str) -> Pair:
    fields = line.split()
    where = f"{source}:{line_number}"
    if len(fields) == 3:
        name1, number1, number2 = fields
        name2 = name1
    elif len(fields) == 4:
        name1, number1, name2, number2 = fields
        if name1 == name2:
            raise DeepFaceError(f"{where}: mismatched pair names one identity twice: {line!r}.")
    else:
        raise DeepFaceError(
            f"{where}: expected 'name i j' (matched) or 'name1 i name2 j' (mismatched), got {line!r}."
        )
    for number in (number1, number2):
        if not (number.isdigit() and int(number) > 0):
            raise DeepFaceError(f"{where}: image number {number!r} is not a positive integer in {line!r}.")
    return Pair(name1, int(number1), name2, int(number2), fold)


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """Read an LFW pairs file (View 1 or View 2); see :func:`parse_pairs`."""
    try:
        text = local_path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeepFaceError(f"pairs file {path} does not exist; pass the path of LFW pairs.txt.") from None
    except IsADirectoryError:
        raise DeepFaceError(f"pairs file {path} is a directory; pass the path of LFW pairs.txt itself.") from None
    except UnicodeDecodeError as error:
        raise DeepFaceError(
            f"pairs file {path} is not UTF-8 text (byte {error.start}); pass an LFW pairs.txt."
        ) from None
    except OSError as error:
        raise DeepFaceError(f"pairs file {path} cannot be read: {error.strerror}.") from None
    return parse_pairs(text, source=str(path))


def format_pairs(pairs: list[Pair]) -> str:
    """The text of a View 2 pairs file for ``pairs``: per fold, the matched then the mismatched pairs.

    Raises:
        ValueError: if the folds differ in size or do not hold as many matched as mismatched pairs.
    """
    folds = sorted({pair.fold for pair in pairs})
    per_fold = [[pair for pair in pairs if pair.fold == fold] for fold in folds]
    sizes = {len(block) for block in per_fold}
    if folds != list(range(len(folds))) or len(sizes) != 1 or any(
        2 * sum(pair.same for pair in block) != len(block) for block in per_fold
    ):
        raise ValueError("every fold must hold the same number of matched and mismatched pairs")
    per_set = sizes.pop() // 2
    lines = [f"{len(folds)}\t{per_set}"]
    for block in per_fold:
        lines += [pair.line() for pair in block if pair.same]
        lines += [pair.line() for pair in block if not pair.same]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- images


class ImageCollection:
    """The images of a tar archive (read in place, never extracted) or of a directory, by identity.

    ``identities[name][number]`` is the path of an image inside the archive or directory (``/``
    separated); numbers follow the rule in the module docstring. ``ignored`` lists (sorted) the image
    paths of LFW-named folders that no number names; one warning is logged for them. Files are walked and
    named as the labels stage does it (``deepface.labels.iter_members``): an image is a file with an
    image suffix whose identity is its parent folder.
    """

    def __init__(self, source: str | os.PathLike):
        self.source = source
        paths = sorted(member.name for member in iter_members(source)
                       if not member.problem and is_image_name(member.name) and identity_of(member.name))
        if not paths:
            raise DeepFaceError(f"images {source}: holds no image files in identity folders.")
        self.identities, self.ignored = _number_images(paths)
        _warn_ignored(source, self.ignored)
        logger.info("%s: %d images of %d identities", source, len(paths) - len(self.ignored),
                    len(self.identities))

    def path(self, name: str, number: int) -> str | None:
        """The path of image ``number`` of ``name``, or None if there is none."""
        return self.identities.get(name, {}).get(number)

    def read(self, paths: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """Yield ``(path, encoded bytes)`` for each of ``paths``, in storage order (one pass)."""
        wanted = set(paths)
        for member in iter_members(self.source):
            if member.name in wanted and not member.problem:
                yield member.name, member.read()


def _number_images(paths: Iterable[str]) -> tuple[dict[str, dict[int, str]], list[str]]:
    """Group image paths by identity (parent folder) and number them (see the module docstring).

    Returns:
        ``(identities, ignored)``: ``identities[name][number]`` is a path; ``ignored`` lists, sorted, the
        paths of LFW folders that are not ``<name>_<NNNN>.<ext>`` or repeat a number (no number names them).

    Raises:
        DeepFaceError: if one identity has images in two folders.
    """
    numbered, ignored = {}, []
    for name, files in sorted(_group_by_identity(paths).items()):
        numbered[name], skipped = _number_folder(name, sorted(files))
        ignored += skipped
    return numbered, sorted(ignored)


def _group_by_identity(paths: Iterable[str]) -> dict[str, list[str]]:
    """The paths of each identity (parent folder name), in input order.

    Raises:
        DeepFaceError: if two folders of one name hold images (say ``train/n1/`` and ``test/n1/``).
    """
    folders: dict[str, list[str]] = {}
    parents: dict[str, str] = {}
    for path in paths:
        parent, name = path.rpartition("/")[0], identity_of(path)
        if parents.setdefault(name, parent) != parent:
            raise DeepFaceError(
                f"identity {name!r} has images in two folders, {parents[name]}/ and {parent}/; "
                "point the images option at one split only."
            )
        folders.setdefault(name, []).append(path)
    return folders


def _number_folder(name: str, files: list[str]) -> tuple[dict[int, str], list[str]]:
    """Number the sorted image ``files`` of identity ``name``: ``({number: path}, ignored paths)``.

    By their LFW numbers (:func:`_lfw_number`) when at least one file has one; the others, and later
    files repeating a number, are ignored. Otherwise by 1-based position, ignoring nothing.
    """
    numbers = [_lfw_number(name, file.rsplit("/", 1)[-1]) for file in files]
    if not any(numbers):
        return dict(enumerate(files, start=1)), []
    numbered: dict[int, str] = {}
    ignored = []
    for number, file in zip(numbers, files):
        if number and number not in numbered:
            numbered[number] = file
        else:
            ignored.append(file)
    return numbered, ignored


_LFW_NAME = re.compile(r"(?P<name>.+)_(?P<number>[0-9]{4})\.[A-Za-z]+")


def _lfw_number(name: str, base: str) -> int | None:
    """The image number of file name ``base`` if it is ``<name>_<NNNN>.<ext>`` with NNNN >= 1, else None."""
    match = _LFW_NAME.fullmatch(base)
    if match is None or match["name"] != name or int(match["number"]) < 1:
        return None
    return int(match["number"])


_IGNORED_EXAMPLES = 5


def _warn_ignored(source, ignored: list[str]) -> None:
    """Log one warning naming a few of the ``ignored`` paths of ``source`` and their count (none if empty)."""
    if not ignored:
        return
    examples = ", ".join(ignored[:_IGNORED_EXAMPLES]) + (", ..." if len(ignored) > _IGNORED_EXAMPLES else "")
    logger.warning(
        "%s: ignored %d image file(s) in LFW identity folders that are not named <identity>_<NNNN>.<ext> "
        "or repeat a number, so no pair can name them: %s; rename or remove them if they are faces.",
        source, len(ignored), examples,
    )


def write_pairs(pairs: list[Pair], path: str | os.PathLike) -> None:
    """Write ``pairs`` as a View 2 pairs file (atomically)."""
    write_text(path, format_pairs(pairs))


def resolve_pairs(
    pairs: list[Pair], images: ImageCollection, *, allow_missing: bool = False
) -> tuple[list[tuple[str | None, str | None]], dict[int, str]]:
    """The image paths of each pair.

    Returns:
        ``(files, problems)``: ``files[k]`` is the ``(left, right)`` paths of ``pairs[k]`` (None for a
        missing image); ``problems`` maps the index of each pair with a missing image to a description.

    Raises:
        DeepFaceError: if an image is missing and ``allow_missing`` is False.
    """
    files, problems = [], {}
    for k, pair in enumerate(pairs):
        sides = ((pair.name1, pair.number1), (pair.name2, pair.number2))
        paths = tuple(images.path(name, number) for name, number in sides)
        absent = [f"image {number} of {name}" for (name, number), path in zip(sides, paths) if path is None]
        if absent:
            problems[k] = f"{' and '.join(absent)} not in {images.source}"
        files.append(paths)
    if problems and not allow_missing:
        first = min(problems)
        raise DeepFaceError(
            f"{len(problems)} pair(s) name images that are missing, e.g. pair {first + 1}: {problems[first]}; "
            "pass the images the pairs file was made for, or allow missing pairs to skip (and count) them."
        )
    return files, problems


__all__ = ["ImageCollection", "Pair", "format_pairs", "parse_pairs", "read_pairs", "resolve_pairs", "write_pairs"]
