"""Drawing new verification pairs, in the `deepface.pairs.Pair` form that `deepface.pairs.format_pairs`
writes as an LFW View 2 ``pairs.txt``.

From an image collection (:func:`generate_pairs`, ``deepface evaluate --pairs generate``): identities are
shuffled with the seed and dealt round-robin into ``folds`` folds, so no identity appears in two folds;
each fold gets exactly ``pairs_per_fold`` matched pairs (identity drawn uniformly, then two distinct images)
and as many mismatched pairs (two distinct identities of the fold, one image each), without repeats. The
same images and seed give the same pairs. They name images by the numbers of `deepface.pairs`
(never an ignored file), so `deepface.pairs.resolve_pairs` on the same images finds exactly the drawn files.

From image counts alone (:func:`draw_lfw_folds`, used by the synthetic LFW of ``deepface.synth``):
identity ``name`` holds images ``1..counts[name]``; identities are dealt into folds balanced by their matched
pairs, and each fold gets as many pairs as its poorest fold allows, at most 300 (the real View 2 figure),
every distinct pair equally likely.

Both raise `DeepFaceError` when the identities cannot fill the folds asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from deepface.errors import DeepFaceError
from deepface.lines import excerpt
from deepface.pairs import MAX_PAIRS, ImageCollection, Pair, pair_name_problem


def generate_pairs(
    images: ImageCollection, *, folds: int = 10, pairs_per_fold: int = 300, seed: int = 0,
    max_pairs: int = MAX_PAIRS,
) -> list[Pair]:
    """Draw LFW-style pairs from the identities of ``images`` (see the module docstring).

    Every identity must be writable in a pairs file (`deepface.pairs.pair_name_problem`: no whitespace,
    at most 255 bytes), so that `deepface.pairs.read_pairs` reads the written file back as the same pairs.

    Returns:
        ``folds * 2 * pairs_per_fold`` pairs, fold by fold, matched pairs first in each fold.

    Raises:
        DeepFaceError: more than ``max_pairs`` pairs asked for; an identity folder whose name a pairs file
            cannot hold (``John Smith``: rename it ``John_Smith``, as LFW does), named with a count of the
            others; a fold that cannot hold ``pairs_per_fold`` distinct matched or mismatched pairs.

    Example: ``generate_pairs(ImageCollection("vggface2_test.tar.gz"), folds=10, pairs_per_fold=300)``.
    """
    if folds < 1 or pairs_per_fold < 1:
        raise DeepFaceError(f"folds ({folds}) and pairs per fold ({pairs_per_fold}) must be positive.")
    if 2 * folds * pairs_per_fold > max_pairs:
        raise DeepFaceError(
            f"folds={folds} of pairs_per_fold={pairs_per_fold} make {2 * folds * pairs_per_fold} pairs, more "
            f"than max_pairs={max_pairs}: lower pairs_per_fold, or raise max_pairs where memory allows."
        )
    rng = np.random.default_rng(seed)
    names = sorted(images.identities)
    _check_names(names, images.source)
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


def _check_names(names: list[str], source) -> None:
    """Refuses identity folders that a pairs file cannot name (the first one named, the others counted)."""
    bad = [name for name in names if pair_name_problem(name)]
    if bad:
        others = f" (and {len(bad) - 1} other folder(s))" if len(bad) > 1 else ""
        raise DeepFaceError(
            f"images {source}: identity folder {excerpt(bad[0])} {pair_name_problem(bad[0])}{others}, which a "
            "pairs file (LFW's whitespace-separated pairs.txt) cannot hold: rename it (LFW writes John_Smith)."
        )


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
