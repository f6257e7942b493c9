"""What the synthetic dataset holds, and the rendering of it, one identity at a time.

`plan_identity_jobs` lays out every split ("train", "test", "lfw") as `IdentityJob`s in archive order:
VGGFace2-style ids (`vggface2_identity_ids`) with image names like ``0001_01.jpg`` and varied sizes,
LFW-style people (`lfw_names`, ``First_Last``) with 1..images_per_identity images each
(`lfw_image_counts`). `render_identity(job)` renders one job's images as `RenderedImage`s (JPEG bytes,
landmarks, face box); it is the function the worker processes run. `make_lfw_pairs` draws pairs.txt
with `deepface.pairs.draw_lfw_folds`, and raises `DeepFaceError` when the people allow too few pairs.

Randomness comes from numpy generators keyed on (seed, split, identity, image), so a job renders to
the same bytes in any process and in any order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from deepface.contracts import LFW_FOLDS
from deepface.errors import DeepFaceError
from deepface.pair_generation import draw_lfw_folds
from deepface.pairs import Pair
from deepface.settings import MIN_DRAWN_SIDE
from deepface.synth.identity import draw_identity
from deepface.synth.photo import LFW_FRAMING, VGGFACE2_FRAMING, encode_jpeg, render_photo

MAX_PAIRS_PER_FOLD = 300  # the real View 2 figure

# Namespaces of the random streams: numpy generators seeded with [seed, namespace, ...].
_SPLIT_CODES = {"train": 1, "test": 2, "lfw": 3}
_VGGFACE2_IDS_STREAM = 10
_LFW_NAMES_STREAM = 11
_LFW_PAIRS_STREAM = 12

# Building blocks of generated LFW names (ASCII letters only, as directory names).
_ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "br", "ch", "cl", "dr", "fr", "gr", "kr", "pr", "sh", "st", "th", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ia", "io", "ou"]
_CODAS = ["", "", "", "n", "r", "s", "l", "m", "nd", "rt", "ck", "ll", "th"]


@dataclasses.dataclass(frozen=True)
class IdentityJob:
    """Everything a worker needs to render the images of one identity."""

    seed: int
    split: str  # "train", "test" or "lfw"
    index: int  # position of the identity within its split
    prefix: str  # folder inside the archive, e.g. "train/n000002"
    names: tuple  # file names inside the folder
    sizes: tuple  # (width, height) per image


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _identity_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return _rng(seed, _SPLIT_CODES[split], index, 0)


def _image_rng(seed: int, split: str, index: int, image: int) -> np.random.Generator:
    return _rng(seed, _SPLIT_CODES[split], index, 1, image + 1)


class RenderedImage(NamedTuple):
    """One image of an archive: member name, JPEG bytes, and its `Photo` landmarks [5, 2] and box."""

    name: str
    data: bytes
    landmarks: np.ndarray
    box: tuple[int, int, int, int]


_FRAMINGS = {"train": VGGFACE2_FRAMING, "test": VGGFACE2_FRAMING, "lfw": LFW_FRAMING}


def render_identity(job: IdentityJob) -> list[RenderedImage]:
    """Every image of one identity, in the job's order, framed as its split's release; same job, same bytes."""
    face = draw_identity(_identity_rng(job.seed, job.split, job.index))
    members = []
    for number, (name, (width, height)) in enumerate(zip(job.names, job.sizes)):
        rng = _image_rng(job.seed, job.split, job.index, number)
        photo = render_photo(face, rng, width, height, _FRAMINGS[job.split])
        data = encode_jpeg(photo.image, int(rng.integers(60, 96)))
        members.append(RenderedImage(f"{job.prefix}/{name}", data, photo.landmarks, photo.box))
    return members


def vggface2_identity_ids(seed: int, train: int, test: int) -> tuple[list[str], list[str]]:
    """Distinct VGGFace2-style ids (n000002...), split into sorted train and test lists."""
    population = max(9_300, 4 * (train + test))
    numbers = _rng(seed, _VGGFACE2_IDS_STREAM).choice(np.arange(1, population + 1), train + test, replace=False)
    names = [f"n{number:06d}" for number in numbers]
    return sorted(names[:train]), sorted(names[train:])


def _vggface2_job(seed: int, split: str, index: int, identity: str, count: int, image_size: int) -> IdentityJob:
    """Image names like 0001_01.jpg (source photo, face in photo) and varied non-square sizes."""
    rng = _rng(seed, _SPLIT_CODES[split], index, 2)
    photos = np.sort(rng.choice(np.arange(1, max(600, 3 * count) + 1), count, replace=False))
    names = tuple(f"{photo:04d}_{1 + int(rng.uniform() < 0.1):02d}.jpg" for photo in photos)
    sizes = []
    for _ in range(count):
        width = max(MIN_DRAWN_SIDE // 2, round(image_size * rng.uniform(0.8, 1.2)))
        height = round(width * rng.uniform(1.0, 1.2))
        sizes.append((width, height + (height == width)))
    return IdentityJob(seed, split, index, f"{split}/{identity}", names, tuple(sizes))


def _syllable(rng: np.random.Generator) -> str:
    return _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] + _CODAS[rng.integers(len(_CODAS))]


def lfw_names(seed: int, count: int) -> list[str]:
    """``count`` distinct, sorted names like Braila_Thornd (First_Last, ASCII letters)."""
    rng = _rng(seed, _LFW_NAMES_STREAM)
    names: set[str] = set()
    while len(names) < count:
        first = "".join(_syllable(rng) for _ in range(int(rng.integers(1, 3))))
        last = "".join(_syllable(rng) for _ in range(int(rng.integers(1, 3))))
        names.add(f"{first.capitalize()}_{last.capitalize()}")
    return sorted(names)


def lfw_image_counts(seed: int, names: Sequence[str], images_per_identity: int) -> dict[str, int]:
    """Images per person: 2..images_per_identity for most, 1 for about one person in ten (as in LFW)."""
    counts = {}
    for index, name in enumerate(names):
        rng = _rng(seed, _SPLIT_CODES["lfw"], index, 2)
        single = rng.uniform() < 0.1
        counts[name] = 1 if single else int(rng.integers(2, images_per_identity + 1))
    return counts


def make_lfw_pairs(counts: dict[str, int], seed: int, folds: int = LFW_FOLDS,
                   max_pairs_per_fold: int = MAX_PAIRS_PER_FOLD) -> tuple[list[Pair], bool]:
    """The pairs.txt pairs of the LFW people ``counts`` ({name: images}): `deepface.pairs.draw_lfw_folds`
    on this module's pairs stream of ``seed``. Returns (pairs, whether the folds' people are disjoint).

    Raises:
        DeepFaceError: naming lfw_identities when the people allow fewer than ``folds`` pairs of a kind.
    """
    try:
        return draw_lfw_folds(counts, folds=folds, max_pairs_per_fold=max_pairs_per_fold,
                              seed=[seed, _LFW_PAIRS_STREAM])
    except DeepFaceError as error:
        raise DeepFaceError(
            f"lfw_identities={len(counts)}: {error} Raise lfw_identities or images_per_identity.") from None


def plan_identity_jobs(*, train_identities: int, test_identities: int, lfw_identities: int,
                       images_per_identity: int, image_size: int, lfw_image_size: int,
                       seed: int) -> dict[str, list[IdentityJob]]:
    """The identities of each split ("train", "test", "lfw") with their image names and sizes, in archive order."""
    train_ids, test_ids = vggface2_identity_ids(seed, train_identities, test_identities)
    jobs = {
        split: [_vggface2_job(seed, split, i, identity, images_per_identity, image_size)
                for i, identity in enumerate(ids)]
        for split, ids in (("train", train_ids), ("test", test_ids))
    }
    names = lfw_names(seed, lfw_identities)
    counts = lfw_image_counts(seed, names, images_per_identity)
    jobs["lfw"] = [
        IdentityJob(seed, "lfw", i, f"lfw/{name}", tuple(f"{name}_{n:04d}.jpg" for n in range(1, counts[name] + 1)),
                    ((lfw_image_size, lfw_image_size),) * counts[name])
        for i, name in enumerate(names)
    ]
    return jobs
