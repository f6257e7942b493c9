"""Verification pairs: read LFW ``pairs.txt`` files, find their images, and generate such files from
held-out identities or from image counts.

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

So a file written by :func:`generate_pairs` for VGGFace2 needs no side table, and the evaluation writes
the file names it resolved for every pair into ``scores.csv``, so a changed archive cannot go unnoticed.

Generated pairs (:func:`generate_pairs`): identities are shuffled with the seed and dealt round-robin into
``folds`` folds, so no identity appears in two folds; each fold gets exactly ``pairs_per_fold`` matched
pairs (identity drawn uniformly, then two distinct images) and as many mismatched pairs (two distinct
identities of the fold, one image each), without repeats. The same images and seed give the same file.
They name images by the numbers above (never an ignored file), so :func:`resolve_pairs` on the same
images finds exactly the drawn files.

Pairs from image counts alone (:func:`draw_lfw_folds`, used by the synthetic LFW of ``deepface.synth``):
identity ``name`` holds images ``1..counts[name]``; identities are dealt into folds balanced by their matched
pairs, and each fold gets as many pairs as its poorest fold allows, at most 300 (the real View 2 figure),
every distinct pair equally likely. Both generators write through :func:`format_pairs`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from deepface.errors import DeepFaceError
from deepface.files import local_path, write_text
from deepface.labels import identity_of, is_image_name, iter_members

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


# -------------------------------------------------------------------------------------------- generation


def generate_pairs(
    images: ImageCollection, *, folds: int = 10, pairs_per_fold: int = 300, seed: int = 0
) -> list[Pair]:
    """Draw LFW-style pairs from the identities of ``images`` (see the module docstring).

    Returns:
        ``folds * 2 * pairs_per_fold`` pairs, fold by fold, matched pairs first in each fold.

    Raises:
        DeepFaceError: if a fold cannot hold ``pairs_per_fold`` distinct matched or mismatched pairs.
    """
    if folds < 1 or pairs_per_fold < 1:
        raise DeepFaceError(f"folds ({folds}) and pairs per fold ({pairs_per_fold}) must be positive.")
    rng = np.random.default_rng(seed)
    names = sorted(images.identities)
    if len(names) < 2 * folds:
        raise DeepFaceError(
            f"images {images.source}: {len(names)} identities cannot fill {folds} folds of at least 2 "
            "disjoint identities each; use fewer folds or more identities."
        )
    shuffled = [names[i] for i in rng.permutation(len(names))]
    pairs = []
    for fold in range(folds):
        members = {name: sorted(images.identities[name]) for name in shuffled[fold::folds]}
        pairs += _draw_matched(members, pairs_per_fold, fold, rng)
        pairs += _draw_mismatched(members, pairs_per_fold, fold, rng)
    return pairs


def _draw_matched(members: dict[str, list[int]], count: int, fold: int, rng) -> list[Pair]:
    eligible = [name for name, numbers in members.items() if len(numbers) >= 2]
    available = _capacity(len(members[name]) for name in eligible)[0]

    def draw() -> Pair:
        name = eligible[rng.integers(len(eligible))]
        first, second = sorted(rng.choice(members[name], size=2, replace=False).tolist())
        return Pair(name, first, name, second, fold)

    return _draw_distinct(draw, count, available, f"fold {fold + 1}: matched")


def _draw_mismatched(members: dict[str, list[int]], count: int, fold: int, rng) -> list[Pair]:
    names = list(members)
    available = _capacity(len(members[name]) for name in names)[1]

    def draw() -> Pair:
        first, second = sorted(rng.choice(len(names), size=2, replace=False).tolist())
        return Pair(names[first], int(rng.choice(members[names[first]])),
                    names[second], int(rng.choice(members[names[second]])), fold)

    return _draw_distinct(draw, count, available, f"fold {fold + 1}: mismatched")


def _draw_distinct(draw, count: int, available: int, what: str) -> list[Pair]:
    """Call ``draw`` until it has given ``count`` distinct pairs (in first-drawn order)."""
    if available < count:
        raise DeepFaceError(
            f"{what}: only {available} distinct pairs exist among this fold's identities, {count} "
            "requested; lower pairs per fold or use fewer folds."
        )
    drawn: dict[Pair, None] = {}
    for _ in range(100 * count + 10_000):
        drawn.setdefault(draw(), None)
        if len(drawn) == count:
            return list(drawn)
    raise DeepFaceError(f"{what}: could not draw {count} distinct pairs; lower pairs per fold.")


def _capacity(sizes: Iterable[int]) -> tuple[int, int]:
    """How many distinct ``(matched, mismatched)`` pairs identities holding ``sizes`` images allow."""
    counts = np.array(list(sizes), np.int64)
    matched = int((counts * (counts - 1) // 2).sum())
    mismatched = int((counts.sum() ** 2 - (counts ** 2).sum()) // 2)
    return matched, mismatched


def draw_lfw_folds(
    counts: Mapping[str, int], *, folds: int = 10, max_pairs_per_fold: int = 300, seed=0
) -> tuple[list[Pair], bool]:
    """Draw View 2 folds from image counts alone: identity ``name`` holds images ``1..counts[name]``.

    Unlike :func:`generate_pairs`, each fold gets as many pairs as the identities allow (at most
    ``max_pairs_per_fold``), every distinct pair of a fold equally likely. Identities are dealt into
    ``folds`` disjoint groups balanced by their matched pairs (:func:`_deal_balanced`) when every group can
    then hold a matched and a mismatched pair; otherwise every fold draws from all identities (pairs still
    never repeat across folds). The same counts and seed give the same pairs.

    Args:
        counts: images per identity (>= 1).
        folds, max_pairs_per_fold: the fold structure (LFW: 10 and 300).
        seed: anything ``numpy.random.default_rng`` takes.

    Returns:
        ``(pairs, disjoint)``: ``pairs`` fold by fold, each fold its ``n`` matched then its ``n`` mismatched
        pairs, each run sorted by ``(name1, number1, name2, number2)``; ``disjoint`` tells whether the
        folds' identities are disjoint.

    Raises:
        DeepFaceError: if even all identities together allow fewer than ``folds`` matched or mismatched pairs.
    """
    if folds < 1 or max_pairs_per_fold < 1:
        raise DeepFaceError(f"folds ({folds}) and pairs per fold ({max_pairs_per_fold}) must be positive.")
    rng = np.random.default_rng(seed)
    groups = _deal_balanced(counts, folds, rng)
    per_fold = min(min(_capacity(group.values())) for group in groups)
    if per_fold >= 1:
        per_fold = min(per_fold, max_pairs_per_fold)
        return [pair for fold, group in enumerate(groups)
                for pair in _fold_pairs(fold, *_sample_pairs(group, per_fold, rng))], True
    return _draw_shared_folds(counts, folds, max_pairs_per_fold, rng), False


def _deal_balanced(counts: Mapping[str, int], folds: int, rng: np.random.Generator) -> list[dict[str, int]]:
    """Split the identities of ``counts`` into ``folds`` disjoint groups ``{name: count}`` (sorted by name).

    Identities in random order, those with the most images first, each join a group of fewer than two
    identities if there is one (mismatched pairs need two), else the group with the fewest matched pairs
    so far; identities with one image join the group with the fewest identities.
    """
    people = sorted(counts.items())
    shuffled = [people[i] for i in rng.permutation(len(people))]
    groups: list[list[tuple[str, int]]] = [[] for _ in range(folds)]
    matched = [0] * folds
    for name, count in sorted(shuffled, key=lambda person: -person[1]):  # stable: ties keep the shuffle
        if count >= 2:
            fold = min(range(folds), key=lambda f: (min(len(groups[f]), 2), matched[f], len(groups[f])))
        else:
            fold = min(range(folds), key=lambda f: (len(groups[f]), matched[f]))
        groups[fold].append((name, count))
        matched[fold] += count * (count - 1) // 2
    return [dict(sorted(group)) for group in groups]


def _draw_shared_folds(counts: Mapping[str, int], folds: int, max_pairs_per_fold: int,
                       rng: np.random.Generator) -> list[Pair]:
    """Folds of equal size drawn from all identities at once, no pair in two folds (see :func:`draw_lfw_folds`)."""
    everyone = dict(sorted(counts.items()))
    per_fold = min(min(_capacity(everyone.values())) // folds, max_pairs_per_fold)
    if per_fold < 1:
        raise DeepFaceError(
            f"{len(counts)} identities with these image counts allow fewer than {folds} matched or mismatched "
            f"pairs, so {folds} folds cannot each hold one."
        )
    matched, mismatched = _sample_pairs(everyone, per_fold * folds, rng)
    pairs = []
    for fold in range(folds):
        window = slice(fold * per_fold, (fold + 1) * per_fold)
        pairs += _fold_pairs(fold, matched[window], mismatched[window])
    return pairs


def _fold_pairs(fold: int, matched: list[tuple], mismatched: list[tuple]) -> list[Pair]:
    """The :class:`Pair` objects of one fold: the sorted ``(name, i, j)`` then the sorted ``(name1, i, name2, j)``."""
    return ([Pair(name, first, name, second, fold) for name, first, second in sorted(matched)]
            + [Pair(*pair, fold) for pair in sorted(mismatched)])


def _sample_pairs(group: Mapping[str, int], count: int, rng: np.random.Generator) -> tuple[list, list]:
    """``count`` distinct matched and ``count`` distinct mismatched pairs of ``group`` ({name: images}),
    uniformly without replacement: ``([(name, i, j)], [(name1, i, name2, j)])`` in drawing order."""
    people = list(group.items())
    matched_total, mismatched_total = _capacity(group.values())
    return (_decode_matched(people, rng.choice(matched_total, count, replace=False)),
            _decode_mismatched(people, rng.choice(mismatched_total, count, replace=False)))


def _decode_matched(people: Sequence[tuple[str, int]], indices: np.ndarray) -> list[tuple]:
    """(name, n1, n2) pairs, n1 < n2 (1-based), of the given positions in the list of every matched pair
    of ``people`` (name, image count), person by person."""
    counts = np.array([count for _, count in people], np.int64)
    ends = np.cumsum(counts * (counts - 1) // 2)
    owners = np.searchsorted(ends, indices, side="right")
    pairs = []
    for owner, index in zip(
        owners.tolist(), (indices - (ends[owners] - counts[owners] * (counts[owners] - 1) // 2)).tolist()
    ):
        name, count = people[owner]
        first = 1
        while index >= count - first:  # row ``first`` holds the pairs (first, first+1..count)
            index -= count - first
            first += 1
        pairs.append((name, first, first + 1 + index))
    return pairs


def _decode_mismatched(people: Sequence[tuple[str, int]], indices: np.ndarray) -> list[tuple]:
    """(name1, n1, name2, n2) pairs of the given positions in the list of every mismatched pair of
    ``people`` (name, image count): each image of person i against every image of the people after i."""
    counts = np.array([count for _, count in people], np.int64)
    image_ends = np.cumsum(counts)  # images numbered person by person
    later = image_ends[-1] - image_ends  # images of the people after each person
    ends = np.cumsum(counts * later)
    first = np.searchsorted(ends, indices, side="right")
    offset = indices - (ends[first] - counts[first] * later[first])
    image1, partner_image = offset // later[first], image_ends[first] + offset % later[first]
    second = np.searchsorted(image_ends, partner_image, side="right")
    image2 = partner_image - (image_ends[second] - counts[second])
    return [(people[i][0], n1 + 1, people[j][0], n2 + 1)
            for i, n1, j, n2 in zip(first.tolist(), image1.tolist(), second.tolist(), image2.tolist())]


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


__all__ = [
    "ImageCollection", "Pair", "draw_lfw_folds", "format_pairs", "generate_pairs", "parse_pairs",
    "read_pairs", "resolve_pairs", "write_pairs",
]
