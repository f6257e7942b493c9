"""Face-verification metrics under the LFW protocol, in vectorised numpy.

Every function takes ``similarity``: a score per pair where higher means "same identity". Distances
(lower = same) enter negated; :func:`verification_metrics` does this from ``higher_is_same`` and gives
thresholds back in the score's own units. A pair is predicted "same" when ``similarity >= threshold``.

Ties: all pairs with the same score always get the same prediction. The candidate operating points
("cuts") accept the ``k`` highest *distinct* scores, ``k = 0 .. U``; the ROC has one point per cut, so tied
scores give a diagonal segment, and the AUC equals the Mann-Whitney probability with ties counted half.
A cut's threshold is the midpoint between the lowest accepted and the highest rejected score (so a score
between the two, unseen while choosing, is split evenly), just above the top score for ``k = 0``, and the
lowest score for ``k = U``; all finite.

Protocol (LFW, Huang et al. 2007): for each fold, the threshold of best accuracy on the other folds is
applied to it; accuracy is reported as the mean over folds and its standard error
``std(ddof=1) / sqrt(folds)``. TAR at a target FAR likewise takes, on the other folds, the lowest threshold
whose FAR is at most the target and applies it to the held-out fold. AUC and EER come from the ROC of all
pairs. Folds are given per pair; a fold may hold only one class.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FAR_TARGETS = (1e-3, 1e-2)


@dataclasses.dataclass(frozen=True)
class Cuts:
    """The operating points of a set of scores: cut ``k`` accepts the ``k`` highest distinct scores.

    All arrays have ``U + 1`` entries for ``U`` distinct scores: ``thresholds`` (decreasing), ``tp`` and
    ``fp`` (matched and mismatched pairs accepted), and the class totals ``positives`` and ``negatives``.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    negatives: int

    @property
    def tar(self) -> np.ndarray:
        """True accept rate per cut (NaN without matched pairs)."""
        return self.tp / self.positives if self.positives else np.full(self.tp.shape, np.nan)

    @property
    def far(self) -> np.ndarray:
        """False accept rate per cut (NaN without mismatched pairs)."""
        return self.fp / self.negatives if self.negatives else np.full(self.fp.shape, np.nan)

    @property
    def accuracy(self) -> np.ndarray:
        """Fraction of pairs classified right per cut."""
        return (self.tp + self.negatives - self.fp) / (self.positives + self.negatives)

    def best(self) -> tuple[float, float]:
        """The threshold of highest accuracy (the highest one among equals) and that accuracy."""
        best = int(np.argmax(self.accuracy))
        return float(self.thresholds[best]), float(self.accuracy[best])

    def at_far(self, far: float) -> float:
        """The lowest threshold whose false accept rate is at most ``far`` (NaN without mismatched pairs)."""
        if not self.negatives:
            return float("nan")
        return float(self.thresholds[np.flatnonzero(self.far <= far)[-1]])


def cuts(similarity: np.ndarray, same: np.ndarray) -> Cuts:
    """Every distinct operating point of ``similarity`` [N] for the labels ``same`` [N] (bool)."""
    similarity = np.asarray(similarity, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if similarity.ndim != 1 or similarity.shape != same.shape or similarity.size == 0:
        raise ValueError(f"need equal-length 1-D scores and labels, got {similarity.shape}, {same.shape}")
    if not np.isfinite(similarity).all():
        raise ValueError("scores must be finite")
    order = np.argsort(-similarity, kind="stable")
    ordered, labels = similarity[order], same[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]
    values = ordered[last_of_value]  # distinct scores, decreasing
    tp = np.r_[0, np.cumsum(labels)[last_of_value]]
    fp = np.r_[0, np.cumsum(~labels)[last_of_value]]
    midpoints = (values[:-1] + values[1:]) / 2
    interior = np.where(midpoints > values[1:], midpoints, values[:-1])  # guard float rounding
    thresholds = np.r_[np.nextafter(values[0], np.inf), interior, values[-1]]
    return Cuts(thresholds, tp, fp, int(same.sum()), int((~same).sum()))


def roc(points: Cuts) -> dict[str, np.ndarray]:
    """The ROC of the pairs of ``points``: ``far``, ``tar`` and ``thresholds`` per cut, ``auc``, ``eer``.

    The EER is where the FAR meets the false reject rate ``1 - TAR``, interpolated linearly between the two
    cuts around the crossing; ``eer_threshold`` is the threshold of the first cut at or past it.
    """
    if not (points.positives and points.negatives):
        raise ValueError("the ROC needs both matched and mismatched pairs")
    far, tar = points.far, points.tar
    gap = far - (1 - tar)  # increasing from -1 at cut 0 to +1 at the last cut
    after = int(np.argmax(gap >= 0))
    before = max(after - 1, 0)
    weight = 0.0 if gap[after] == gap[before] else gap[before] / (gap[before] - gap[after])
    eer = far[before] + weight * (far[after] - far[before])
    return {
        "far": far,
        "tar": tar,
        "thresholds": points.thresholds,
        "auc": float(np.trapezoid(tar, far)),
        "eer": float(eer),
        "eer_threshold": float(points.thresholds[after]),
    }


def _mean_and_sem(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean over folds, ignoring NaN folds (NaN if none/one is left)."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    sem = values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else float("nan")
    return float(values.mean()), float(sem)


def cross_validate(
    similarity: np.ndarray, same: np.ndarray, folds: np.ndarray, far_targets=FAR_TARGETS
) -> dict:
    """The LFW protocol: choose each threshold on the other folds and apply it to the held-out fold.

    Args:
        similarity: [N] scores, higher = same.
        same: [N] bool labels.
        folds: [N] fold id of each pair; at least two distinct folds.
        far_targets: target false accept rates for TAR@FAR.

    Returns:
        ``accuracy`` and ``accuracy_sem`` (mean and standard error over folds), ``fold_ids``,
        ``fold_accuracy`` and ``fold_threshold`` (per fold, thresholds in similarity units), and
        ``tar_at_far``: {target: {"tar", "tar_sem", "far", "fold_threshold"}} (means over the folds whose
        training folds hold mismatched pairs and whose held-out fold holds each class it is measured on).
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    same, folds = np.asarray(same, dtype=bool), np.asarray(folds)
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise ValueError("cross-validation needs at least two folds")
    accuracy, thresholds = [], []
    tar = {target: [] for target in far_targets}
    for fold in fold_ids:
        test, train = folds == fold, folds != fold
        training_cuts = cuts(similarity[train], same[train])
        threshold, _ = training_cuts.best()
        accept = similarity[test] >= threshold
        accuracy.append(np.mean(accept == same[test]))
        thresholds.append(threshold)
        for target in far_targets:
            at_far = training_cuts.at_far(target)
            accept = similarity[test] >= at_far
            tar[target].append((
                at_far,
                np.mean(accept[same[test]]) if same[test].any() else np.nan,
                np.mean(accept[~same[test]]) if (~same[test]).any() else np.nan,
            ))
    accuracy = np.array(accuracy)
    mean, sem = _mean_and_sem(accuracy)
    result = {
        "accuracy": mean,
        "accuracy_sem": sem,
        "fold_ids": fold_ids,
        "fold_accuracy": accuracy,
        "fold_threshold": np.array(thresholds),
        "tar_at_far": {},
    }
    for target, rows in tar.items():
        fold_threshold, fold_tar, fold_far = (np.array(column, dtype=np.float64) for column in zip(*rows))
        tar_mean, tar_sem = _mean_and_sem(np.where(np.isnan(fold_threshold), np.nan, fold_tar))
        far_mean, _ = _mean_and_sem(np.where(np.isnan(fold_threshold), np.nan, fold_far))
        result["tar_at_far"][target] = {
            "tar": tar_mean, "tar_sem": tar_sem, "far": far_mean, "fold_threshold": fold_threshold,
        }
    return result


def verification_metrics(
    scores: np.ndarray, same: np.ndarray, folds: np.ndarray, *, higher_is_same: bool,
    far_targets=FAR_TARGETS,
) -> dict:
    """Every metric of one score under the LFW protocol, as plain JSON-ready values.

    Args:
        scores: [N] per-pair scores (a similarity or a distance).
        same: [N] bool, True for matched pairs.
        folds: [N] fold ids (two or more distinct values).
        higher_is_same: True for similarities, False for distances; thresholds are given back in the
            units of ``scores`` and pairs count as same when ``score >= t`` (similarity) or
            ``score <= t`` (distance).

    Returns:
        A dict: ``accuracy``, ``accuracy_sem``, ``fold_accuracy``, ``fold_threshold``, ``auc``, ``eer``,
        ``eer_threshold``, ``tar_at_far`` ({"0.001": {...}}), ``best_threshold`` and ``best_accuracy``
        (chosen on all pairs: the threshold to deploy), ``higher_is_same``, ``pairs``, ``matched``; NaN
        (undefined) values as None.
    """
    sign = 1.0 if higher_is_same else -1.0
    similarity = sign * np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    validated = cross_validate(similarity, same, folds, far_targets)
    points = cuts(similarity, same)
    curve = roc(points)
    threshold, accuracy = points.best()
    result = {
        "higher_is_same": higher_is_same,
        "pairs": int(same.size),
        "matched": int(same.sum()),
        "folds": int(validated["fold_ids"].size),
        "accuracy": validated["accuracy"],
        "accuracy_sem": validated["accuracy_sem"],
        "fold_accuracy": validated["fold_accuracy"].tolist(),
        "fold_threshold": (sign * validated["fold_threshold"]).tolist(),
        "auc": curve["auc"],
        "eer": curve["eer"],
        "eer_threshold": sign * curve["eer_threshold"],
        "best_threshold": sign * threshold,
        "best_accuracy": accuracy,
        "tar_at_far": {
            format_far(target): {
                "tar": values["tar"], "tar_sem": values["tar_sem"], "far": values["far"],
                "fold_threshold": (sign * values["fold_threshold"]).tolist(),
            }
            for target, values in validated["tar_at_far"].items()
        },
    }
    return _nan_to_none(result)


def roc_points(scores: np.ndarray, same: np.ndarray, *, higher_is_same: bool) -> dict[str, list]:
    """The ROC of all pairs as JSON-ready lists: ``far``, ``tar``, ``thresholds`` in score units."""
    sign = 1.0 if higher_is_same else -1.0
    curve = roc(cuts(sign * np.asarray(scores, dtype=np.float64), same))
    return {
        "far": curve["far"].tolist(),
        "tar": curve["tar"].tolist(),
        "thresholds": (sign * curve["thresholds"]).tolist(),
    }


def format_far(target: float) -> str:
    """The JSON key of a FAR target: ``0.001``."""
    return f"{target:g}"


def _nan_to_none(value):
    """Replace NaN (not valid JSON) by None, recursively; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    return value
