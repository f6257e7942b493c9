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

Names and sizes. An identity name holds no whitespace (the fields are whitespace separated; LFW writes
``John_Smith``) and at most 255 bytes: generation and writing refuse other names, so every written file
reads back as the same pairs. Reading holds at most ``max_pairs`` pairs (`MAX_PAIRS`, 100,000 by default:
`deepface.settings.EvaluateSettings.max_pairs`), one line of at most 4 KiB at a time; the header is checked
first and reading stops at the first line past those it promises, so a file of 10 M lines fails at once.
Errors quote at most 80 characters of a bad line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator

from deepface.archives import identity_of, identity_problem, is_image_name, iter_members
from deepface.errors import DeepFaceError
from deepface.files import write_text
from deepface.lines import excerpt, read_lines

logger = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True, slots=True)
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

MAX_PAIRS = 100_000  # default cap on the pairs of one file (LFW View 2: 6,000); EvaluateSettings.max_pairs
_PAIRS_FIX = "pass the path of LFW pairs.txt"


def pair_name_problem(name: str) -> str | None:
    """Why identity ``name`` cannot be written in a pairs file, or None.

    The format is LFW's: fields split by whitespace, so a name holds none (LFW writes ``John_Smith``);
    and as every identity id (`deepface.archives.identity_problem`) it is UTF-8 and at most 255 bytes.

    Example: ``pair_name_problem("John Smith")`` says it holds whitespace; ``pair_name_problem("John_Smith")``
    is None.
    """
    problem = identity_problem(name)
    if problem is None and len(name.split()) != 1:
        problem = "holds whitespace"
    return problem


def parse_pairs(text: str, source: str = "pairs.txt", *, max_pairs: int = MAX_PAIRS) -> list[Pair]:
    """Parse the text of an LFW View 1 or View 2 pairs file.

    Args:
        text: the file's contents.
        source: the file's name, for error messages.
        max_pairs: the most pairs the header may promise (see :func:`read_pairs`).

    Returns:
        The pairs in file order; ``fold`` is the 0-based set (always 0 for View 1).

    Raises:
        DeepFaceError: naming the line of a malformed header or pair (quoting at most 80 characters of it),
            a header promising more than ``max_pairs`` pairs, a set without exactly ``n`` matched and ``n``
            mismatched pairs, or a pair count that differs from the header's.

    Example: ``parse_pairs("1\nA_B\t1\t2\nA_B\t1\tC_D\t1\n")`` -> two pairs of fold 0.
    """
    return _parse_lines(enumerate(text.splitlines(), start=1), source, max_pairs)


def read_pairs(path: str | os.PathLike, *, max_pairs: int = MAX_PAIRS) -> list[Pair]:
    """Read an LFW pairs file (View 1 or View 2); see :func:`parse_pairs`.

    Memory is bounded by ``max_pairs``, not by the file: the file is read one line at a time (at most
    4 KiB each, `deepface.lines.read_lines`), the header is checked first (a header promising more than
    ``max_pairs`` pairs is refused before any pair is read) and reading stops at the first line beyond
    those the header promises. Each pair kept costs about 0.2 KiB.

    Raises:
        DeepFaceError: as :func:`parse_pairs`; also a missing, unreadable (e.g. permission denied) or
            directory path, a line that is not UTF-8 or longer than 4 KiB.
    """
    return _parse_lines(read_lines(path, "pairs file", _PAIRS_FIX), str(path), max_pairs)


def _parse_lines(lines: Iterable[tuple[int, str]], source: str, max_pairs: int) -> list[Pair]:
    """The pairs of numbered ``lines`` (see :func:`parse_pairs`), reading no line past the first extra one."""
    lines = iter(lines)
    sets, per_set = _parse_header(lines, source, max_pairs)
    expected, block = 2 * per_set * sets, 2 * per_set
    pairs: list[Pair] = []
    for number, line in lines:
        if len(pairs) == expected:
            if line.strip():
                raise DeepFaceError(
                    f"{source}:{number}: the header promises {sets} set(s) of {per_set} matched + {per_set} "
                    f"mismatched pairs ({expected} lines) but more lines follow them; the file is not an LFW "
                    "pairs file or its header is wrong."
                )
            continue  # blank lines at the end
        pairs.append(_parse_pair_line(line, number, len(pairs) // block, source))
        if len(pairs) % block == 0:
            _check_set(pairs[-block:], per_set, number, source)
    if len(pairs) != expected:
        raise DeepFaceError(
            f"{source}: the header promises {sets} set(s) of {per_set} matched + {per_set} mismatched "
            f"pairs ({expected} lines) but {len(pairs)} lines follow it; the file is truncated or "
            "not an LFW pairs file."
        )
    return pairs


def _parse_header(lines: Iterator[tuple[int, str]], source: str, max_pairs: int) -> tuple[int, int]:
    """``(sets, pairs per set)`` from the first line; blank files are an empty-file error."""
    _, header = next(lines, (1, ""))
    while not header.strip():
        following = next(lines, None)
        if following is None:
            raise DeepFaceError(f"{source}: empty pairs file; expected an LFW header such as '10\\t300'.")
        if following[1].strip():
            break
    fields = header.split()
    if len(fields) not in (1, 2) or not all(field.isdigit() and int(field) > 0 for field in fields):
        raise DeepFaceError(
            f"{source}:1: bad header {excerpt(header)}; expected '<sets>\\t<pairs per set>' (View 2, e.g. "
            "'10\\t300') or '<pairs>' (View 1)."
        )
    sets, per_set = (1, int(fields[0])) if len(fields) == 1 else (int(fields[0]), int(fields[1]))
    if 2 * per_set * sets > max_pairs:
        raise DeepFaceError(
            f"{source}:1: the header {excerpt(header)} promises {2 * per_set * sets} pairs, more than "
            f"max_pairs={max_pairs} (LFW View 2 holds 6,000); pass a smaller pairs file, or raise max_pairs "
            "(--max-pairs) where memory allows (about 0.2 KiB per pair)."
        )
    return sets, per_set


def _check_set(block: list[Pair], per_set: int, last_line: int, source: str) -> None:
    """A set (fold) must hold ``per_set`` matched and ``per_set`` mismatched pairs."""
    matched = sum(pair.same for pair in block)
    if matched != per_set:
        raise DeepFaceError(
            f"{source}:{last_line - len(block) + 1}-{last_line}: set {block[0].fold + 1} holds {matched} "
            f"matched pairs; the header says each set holds {per_set} matched and {per_set} mismatched."
        )


def _parse_pair_line(line: str, line_number: int, fold: int, source: str) -> Pair:
    fields = line.split()
    where = f"{source}:{line_number}"
    if len(fields) == 3:
        name1, number1, number2 = fields
        name2 = name1
    elif len(fields) == 4:
        name1, number1, name2, number2 = fields
        if name1 == name2:
            raise DeepFaceError(f"{where}: mismatched pair names one identity twice: {excerpt(line)}.")
    else:
        raise DeepFaceError(
            f"{where}: expected 'name i j' (matched) or 'name1 i name2 j' (mismatched), got {excerpt(line)}."
        )
    for name in dict.fromkeys((name1, name2)):
        problem = identity_problem(name)
        if problem:
            raise DeepFaceError(f"{where}: identity {excerpt(name)} {problem}; fix that line.")
    for number in (number1, number2):
        if not (number.isdigit() and len(number) <= _MAX_DIGITS and int(number) > 0):
            raise DeepFaceError(
                f"{where}: image number {excerpt(number)} is not a positive integer in {excerpt(line)}."
            )
    return Pair(sys.intern(name1), int(number1), sys.intern(name2), int(number2), fold)


_MAX_DIGITS = 9  # image numbers: LFW's have 4 digits


def format_pairs(pairs: list[Pair]) -> str:
    """The text of a View 2 pairs file for ``pairs``: per fold, the matched then the mismatched pairs.

    Raises:
        ValueError: if the folds differ in size or do not hold as many matched as mismatched pairs.
        DeepFaceError: if an identity name cannot be written in a pairs file (:func:`pair_name_problem`:
            whitespace, more than 255 bytes), naming it: the file could not be read back.
    """
    for name in dict.fromkeys(name for pair in pairs for name in (pair.name1, pair.name2)):
        problem = pair_name_problem(name)
        if problem:
            raise DeepFaceError(
                f"identity {excerpt(name)} {problem}, which a pairs file (LFW's whitespace-separated "
                "pairs.txt) cannot hold: rename its folder (LFW writes John_Smith for 'John Smith')."
            )
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
                f"identity {excerpt(name)} has images in two folders, {excerpt(parents[name])}/ and "
                f"{excerpt(parent)}/; "
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


__all__ = ["MAX_PAIRS", "ImageCollection", "Pair", "format_pairs", "pair_name_problem", "parse_pairs", "read_pairs",
           "resolve_pairs", "write_pairs"]
