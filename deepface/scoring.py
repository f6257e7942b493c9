"""The verification scores of two face embeddings, shared by ``deepface evaluate``, ``deepface verify`` and
the Python API (`deepface.api`).

Every score takes two float64 arrays of unit rows ``[N, D]`` (one embedding per image, from
`deepface.embedding.merge_views`) and returns ``[N]`` float64, one score per pair of rows:

- ``cosine`` (:func:`cosine_similarity`): inner product; higher = same. The primary score.
- ``l2`` (:func:`l2_distance`): Euclidean distance; lower = same. ``sqrt(2 - 2 cosine)``, so it ranks
  pairs as cosine does and differs only in threshold units.
- ``chi2`` (:func:`chi2_distance`): ``sum((l - r)^2 / (l + r))``; lower = same. The paper's chi^2
  distance without its SVM-learned weights.

:data:`SCORES` maps each name to its function and direction; :func:`decide` compares one pair's score
with a threshold. Nothing here raises for well-shaped input (a zero row stays zero in :func:`unit_rows`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PRIMARY_SCORE = "cosine"


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Rows of ``features`` ``[N, D]`` renormalised to unit L2 norm in float64 (zero rows stay zero).

    The embeddings are already unit vectors in float32; renormalising them in float64 keeps the scores
    of nearly parallel embeddings (as untrained networks give) above rounding noise.
    """
    features = np.asarray(features, dtype=np.float64)
    norm = np.linalg.norm(features, axis=1, keepdims=True)
    return np.divide(features, norm, out=np.zeros_like(features), where=norm > 0)


def l2_distance(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Euclidean distance of unit rows (from `deepface.embedding.merge_views`): ``[N, D]`` x ``[N, D]`` ->
    ``[N]`` (lower = same)."""
    return np.linalg.norm(left - right, axis=1)


def cosine_similarity(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Inner product of unit rows, ``[N, D]`` x ``[N, D]`` -> ``[N]`` (higher = same).

    Computed as ``1 - l2^2 / 2`` (equal for unit vectors), which stays exact for nearly parallel vectors
    where the inner product itself rounds to 1; it ranks pairs exactly as :func:`l2_distance` does.
    """
    return 1.0 - l2_distance(left, right) ** 2 / 2


def chi2_distance(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The paper's chi^2 distance of unit rows of non-negative features, unweighted:
    ``sum (l - r)^2 / (l + r)`` over dimensions where ``l + r > 0``; ``[N, D]`` x ``[N, D]`` -> ``[N]``
    (lower = same)."""
    total = left + right
    ratio = np.divide((left - right) ** 2, total, out=np.zeros_like(total), where=total > 0)
    return ratio.sum(axis=1)


# name -> (function, higher_is_same)
SCORES: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], bool]] = {
    "cosine": (cosine_similarity, True),
    "l2": (l2_distance, False),
    "chi2": (chi2_distance, False),
}


def decide(score: str, left: np.ndarray, right: np.ndarray, threshold: float) -> tuple[float, bool]:
    """One pair's ``score`` (a name in `SCORES`) from two unit embeddings ``[D]`` (rows of
    `deepface.embedding.merge_views`), and whether it is on the "same" side of ``threshold`` (``>=`` for
    cosine, ``<=`` for the distances): the decision of ``deepface verify`` and
    `deepface.api.FaceVerifier.verify`."""
    function, higher_is_same = SCORES[score]
    value = float(function(left[None], right[None])[0])
    return value, bool(value >= threshold if higher_is_same else value <= threshold)
