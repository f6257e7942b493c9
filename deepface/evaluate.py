"""The evaluation stage: face verification of a trained model on LFW-style pairs.

``evaluate(model_dir, images, pairs, out_dir)`` embeds every image the pairs name once (batched, through
`deepface.faces.face_image`, the crop training used, read straight from the tar archive; `deepface.embedding`),
scores each pair with three scores of the L2-normalised features (`deepface.scoring.SCORES`), and measures
each score with the LFW protocol (``deepface.metrics``). It writes, into ``out_dir``:

    metrics.json     per score: 10-fold accuracy +- standard error, AUC, EER, TAR at FAR 1e-3 / 1e-2, best
                     threshold; for the trained model and its untrained baseline; pair and image counts;
                     ``warnings`` (e.g. the trained model scores below its untrained baseline)
    scores.csv       one row per pair: fold, label, names, numbers, the files used, every score (exact
                     float64 text: recomputing the metrics from this file gives the same numbers)
    roc.json         the ROC points (FAR, TAR, threshold) of every score
    threshold.json   the threshold of best accuracy on all pairs, per score, for ``deepface verify``
    report.html      a self-contained page: metrics table, ROC curves, score histograms, training curves
    pairs.txt        only with ``pairs="generate"``: the generated pairs, in LFW format
    manifest.json    inputs, parameters, counts and the sha256 of every output; written last

Decisions:

- Pairs: ``pairs`` is an LFW pairs file (View 2 ``10\\t300``; a View 1 single-set file is split into 10
  folds by position, i-th matched and i-th mismatched pair into fold ``i % 10``) or the word
  ``generate``: pairs are then drawn from the identities of ``images`` (e.g. the VGGFace2 test split)
  by ``deepface.pair_generation.generate_pairs`` with ``folds``, ``pairs_per_fold`` and ``pairs_seed``, and saved
  as ``pairs.txt``. How pairs name VGGFace2 files is described in ``deepface.pairs``.
- Faces: every image becomes the network's input through `deepface.faces.FaceCropper`, the crop the
  training records hold: decoded (EXIF applied), the face aligned from landmarks (``landmarks``, a CSV
  `deepface landmarks` wrote) or from the face detector, unless the model was trained on whole frames
  (its metadata; ``align`` overrides).
- Missing, undecodable or faceless images are an error; with ``allow_missing`` their pairs are skipped,
  counted in metrics.json and listed with the reason (score cells empty) in scores.csv; with
  ``no_face="center-crop"`` a faceless image is used as its centre crop (counted).
- Scores (higher/lower = same): ``cosine`` = inner product of the normalised features (higher; the paper's
  unsupervised score), ``l2`` = Euclidean distance between them (lower; ``sqrt(2 - 2 cosine)``,
  so it ranks pairs as cosine does and differs only in threshold units), ``chi2`` =
  ``sum((f1 - f2)^2 / (f1 + f2))`` (lower; the paper's chi^2 without the SVM-learned weights).
- Flip test-time augmentation: the embedding of an image is the renormalised mean of the embeddings of
  the image and its mirror.
- Baseline: with ``baseline``, a freshly initialised classifier of the same preset (``seed``) is scored
  the same way, its feature maxima taken over the evaluated images themselves, in the same pass over
  the images, so the report shows how much training bought. A trained model less accurate than its
  baseline (primary score) is a WARNING: logged, in metrics.json's ``warnings`` and on the command's line.
- Thresholds for verification stay in the evaluation's ``threshold.json`` (the model directory, an
  immutable artifact, is never modified); ``deepface verify --evaluation DIR`` reads it and checks that
  it was computed for the same ``embedding.keras`` (sha256).

Command line::

    deepface evaluate --model out/model --images lfw.tgz --pairs pairs.txt --out out/eval
    deepface evaluate --model out/model --images vggface2_test.tar.gz --pairs generate --out out/eval-vgg
"""

from __future__ import annotations

import csv
import io as text_io
import logging
import os
from pathlib import Path

import numpy as np

import deepface
from deepface.contracts import LFW_FOLDS, check_model_dir, remove_manifest, write_manifest
from deepface.embedding import baseline_feature_model, embed_images, merge_views, normalize_features
from deepface.errors import DeepFaceError
from deepface.faces import FaceCropper, aligned_for
from deepface.files import hash_file, read_json, write_json, write_text
from deepface.landmarks import read_landmarks
from deepface.outputs import locks_output
from deepface.pair_generation import generate_pairs
from deepface.pairs import ImageCollection, Pair, read_pairs, resolve_pairs, write_pairs
from deepface.scoring import PRIMARY_SCORE, SCORES
from deepface.settings import EvaluateSettings

logger = logging.getLogger(__name__)

GENERATE = "generate"
VARIANTS = ("trained", "baseline")
MAX_LISTED_PROBLEMS = 20  # in metrics.json; scores.csv lists every skipped pair
OUTPUTS = ("pairs.txt", "scores.csv", "roc.json", "threshold.json", "metrics.json", "report.html")


# ------------------------------------------------------------------------------------------- evaluation


def score_pairs(models: dict, images: ImageCollection, files: list, problems: dict[int, str], *,
                cropper: FaceCropper, batch_size: int, flip: bool,
                allow_missing: bool) -> tuple[dict, np.ndarray, int, dict[str, str], dict]:
    """Embed the images of the pairs once, with every model, and score the pairs.

    Args:
        models: ``{"trained": embedding model}``, optionally with ``"baseline"``: a raw F7 model whose
            features are normalised here (`deepface.embedding.normalize_features`).
        images: where the images are.
        files: ``(left, right)`` image paths per pair (from ``deepface.pairs.resolve_pairs``).
        problems: pair index -> why it cannot be scored (missing images); unusable images are added.
        cropper: makes each image the network's input (`deepface.faces.FaceCropper`).
        batch_size, flip: as in :func:`evaluate`.
        allow_missing: False raises on an unusable image (undecodable, refused, no face).

    Returns:
        ``(scores, scored, images embedded, unusable {path: reason}, face counts)``:
        ``scores[variant][name]`` holds the ``[M]`` scores of the ``M`` pairs where ``scored`` ``[N]`` is True.
    """
    paths = sorted({path for k, pair_files in enumerate(files) if k not in problems for path in pair_files})
    logger.info("%d pairs over %d images; embedding at %d px, %s", len(files), len(paths), cropper.size,
                "faces aligned" if cropper.align else "whole frames")
    outputs, unusable, faces = embed_images(list(models.values()), images, paths, cropper=cropper,
                                            batch_size=batch_size, flip=flip)
    if unusable and not allow_missing:
        path, reason = next(iter(sorted(unusable.items())))
        raise DeepFaceError(
            f"{len(unusable)} image(s) of {images.source} cannot be used, e.g. {path}: {reason}; replace them, "
            "fall back to a centre crop where no face is found (no_face='center-crop'), or allow missing "
            "pairs to skip (and count) their pairs (allow_missing)."
        )
    bad = set(unusable)
    problems.update({k: "; ".join(f"{path}: {unusable[path]}" for path in pair_files if path in bad)
                     for k, pair_files in enumerate(files) if bad.intersection(pair_files)})
    scored = np.array([k not in problems for k in range(len(files))])
    if not scored.any():
        raise DeepFaceError("no pair could be scored: every pair lacks an image.")
    row = {path: k for k, path in enumerate(paths)}
    left = np.array([row[a] for (a, _), ok in zip(files, scored) if ok])
    right = np.array([row[b] for (_, b), ok in zip(files, scored) if ok])
    usable = np.array([path not in bad for path in paths])
    scores = {}
    for variant, views in zip(models, outputs):
        embeddings = merge_views(normalize_features(views, usable) if variant == "baseline" else views)
        scores[variant] = {name: function(embeddings[left], embeddings[right])
                           for name, (function, _) in SCORES.items()}
    return scores, scored, len(paths), unusable, faces


def protocol_folds(pairs: list[Pair]) -> tuple[np.ndarray, str]:
    """Fold id per pair: the file's sets, or (one set) matched and mismatched pairs dealt into 10 folds.

    Returns:
        ``(folds [N], how)`` with ``how`` = ``"sets of the pairs file"`` or ``"position (i % 10)"``.
    """
    folds = np.array([pair.fold for pair in pairs])
    if len(set(folds.tolist())) > 1:
        return folds, "sets of the pairs file"
    same = np.array([pair.same for pair in pairs])
    position = np.empty(len(pairs), int)
    position[same] = np.arange(same.sum())
    position[~same] = np.arange((~same).sum())
    return position % LFW_FOLDS, f"position (i % {LFW_FOLDS})"


def _load_pairs(pairs: str, collection: ImageCollection, out_dir: Path, *, folds: int, pairs_per_fold: int,
                pairs_seed: int, max_pairs: int) -> tuple[list[Pair], dict]:
    """The pairs to score and a description of where they came from; at most ``max_pairs`` of them (a
    larger pairs file is refused at its header, in bounded memory: `deepface.pairs.read_pairs`)."""
    if str(pairs) == GENERATE:
        pair_list = generate_pairs(collection, folds=folds, pairs_per_fold=pairs_per_fold, seed=pairs_seed,
                                   max_pairs=max_pairs)
        write_pairs(pair_list, out_dir / "pairs.txt")
        return pair_list, {"generated": True, "folds": folds, "pairs_per_fold": pairs_per_fold,
                           "seed": pairs_seed, "sha256": hash_file(out_dir / "pairs.txt")}
    return read_pairs(pairs, max_pairs=max_pairs), {"generated": False, "path": str(pairs), "sha256": hash_file(pairs)}


def _scores_csv(pairs, files, scores: dict[str, dict[str, np.ndarray]], scored: np.ndarray,
                problems: dict[int, str]) -> str:
    """scores.csv: one row per pair; scores as exact float64 text, empty for skipped pairs."""
    columns = [f"{variant}_{name}" for variant in scores for name in scores[variant]]
    buffer = text_io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["fold", "same", "name1", "number1", "name2", "number2", "file1", "file2", *columns,
                     "problem"])
    row_of_pair = np.cumsum(scored) - 1
    for k, (pair, (file1, file2)) in enumerate(zip(pairs, files)):
        values = ([repr(float(scores[v][n][row_of_pair[k]])) for v in scores for n in scores[v]]
                  if scored[k] else [""] * len(columns))
        writer.writerow([pair.fold, int(pair.same), pair.name1, pair.number1, pair.name2, pair.number2,
                         file1 or "", file2 or "", *values, problems.get(k, "")])
    return buffer.getvalue()


@locks_output("out_dir", "evaluate", EvaluateSettings)  # one writer per output directory (deepface.outputs)
def evaluate(
    model_dir: str | os.PathLike,
    images: str | os.PathLike,
    pairs: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    landmarks: str | os.PathLike | None = None,
    **settings,
) -> dict:
    """Evaluate a model directory on verification pairs; see the module docstring for the outputs.

    Args:
        model_dir: a model directory written by training (``embedding.keras``, ``metadata.json``).
        images: the images the pairs refer to: a tar archive (``lfw.tgz``, ``vggface2_test.tar.gz``) or
            a directory of identity folders.
        pairs: an LFW pairs file, or ``"generate"`` to draw pairs from the identities of ``images``.
        out_dir: the output directory.
        landmarks: the images' landmarks (a ``loose_landmark_*.csv``, e.g. from `deepface landmarks`);
            None: the face detector finds them.
        **settings: fields of `deepface.settings.EvaluateSettings`: batch_size, flip (average each
            embedding with that of the mirrored image), baseline (also score an untrained model of the same
            preset, initialised with seed), allow_missing (skip and count pairs whose image is missing or
            undecodable instead of failing), folds, pairs_per_fold and pairs_seed (``pairs="generate"``
            only), align (None: as the model's training data was, from its metadata), no_face (``skip``:
            the image is unusable, or ``center-crop``), max_pairs (the most pairs read or generated: a
            pairs file promising more is refused at its header, so memory does not grow with the file).

    Returns:
        The content of metrics.json.

    Raises:
        SettingError: a setting unknown or out of its range, named.
        DeepFaceError: a model directory, images or pairs that cannot be used, or pairs of one class only;
            a model directory without the complete manifest of training (`deepface.contracts.check_model_dir`);
            an out_dir that another run is writing (`deepface.outputs.output_lock`).
    """
    from deepface.model import load_embedding_model

    chosen = EvaluateSettings.of(settings)
    batch_size, flip, baseline, seed, allow_missing = (chosen.batch_size, chosen.flip, chosen.baseline, chosen.seed,
                                                       chosen.allow_missing)
    folds, pairs_per_fold, pairs_seed, no_face = chosen.folds, chosen.pairs_per_fold, chosen.pairs_seed, chosen.no_face
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_model_dir(model_dir)  # a complete model only: train's manifest, its files at their sizes
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_manifest(out_dir)  # the directory is incomplete until the end
    model, metadata = load_embedding_model(model_dir)
    model_sha256 = hash_file(model_dir / "embedding.keras")
    image_size = int(model.input_shape[1])
    align = aligned_for(metadata, chosen.align)
    table = read_landmarks(landmarks) if align and landmarks is not None else None
    cropper = FaceCropper(image_size, align=align, landmarks=table, no_face=no_face)
    collection = ImageCollection(images)
    pair_list, pairs_info = _load_pairs(pairs, collection, out_dir, folds=folds, pairs_per_fold=pairs_per_fold,
                                        pairs_seed=pairs_seed, max_pairs=chosen.max_pairs)
    files, problems = resolve_pairs(pair_list, collection, allow_missing=allow_missing)
    pairs_missing_images = len(problems)
    models = {"trained": model}
    if baseline:
        models["baseline"] = baseline_feature_model(metadata, seed)
    scores, scored, embedded, unusable, faces = score_pairs(models, collection, files, problems, cropper=cropper,
                                                           batch_size=batch_size, flip=flip,
                                                           allow_missing=allow_missing)

    fold_ids, folds_from = protocol_folds(pair_list)
    same = np.array([pair.same for pair in pair_list])[scored]
    if same.all() or not same.any():
        raise DeepFaceError("the scored pairs hold only one class (matched or mismatched); metrics need both.")
    fold_ids = fold_ids[scored]
    metrics_by_variant, roc_by_variant = measure(scores, same, fold_ids)

    counts = {
        "pairs": len(pair_list), "pairs_scored": int(scored.sum()), "pairs_skipped": int((~scored).sum()),
        "matched_scored": int(same.sum()), "images": embedded, "pairs_missing_images": pairs_missing_images,
        "images_unusable": len(unusable), "folds": int(np.unique(fold_ids).size),
        "images_several_faces": faces["several_faces"], "images_center_cropped": faces["center_crops"],
    }
    summary = _summary(metrics_by_variant)
    warnings = evaluation_warnings(summary)
    for warning in warnings:
        logger.warning("%s", warning)
    result = {
        "primary_score": PRIMARY_SCORE,
        "summary": summary,
        "warnings": warnings,
        "scores": {name: {"higher_is_same": higher} for name, (_, higher) in SCORES.items()},
        "metrics": metrics_by_variant,
        "counts": counts,
        "problems": [f"pair {k + 1}: {problems[k]}" for k in sorted(problems)[:MAX_LISTED_PROBLEMS]],
        "folds_from": folds_from,
        "flip": flip,
        "image_size": image_size,
        "align": align,
        "faces_from": ("landmarks " + str(landmarks) if table else "face detector") if align else "whole frames",
    }
    context = {
        "model_dir": str(model_dir), "model_sha256": model_sha256, "metadata": metadata,
        "images": str(images), "pairs": pairs_info,
        # the settings as given (EvaluateSettings), align as resolved from the model's metadata
        "parameters": {**chosen.to_dict(), "align": align, "landmarks": str(landmarks) if table else None},
    }
    threshold = {
        "score": PRIMARY_SCORE,
        "thresholds": {
            name: {"threshold": values["best_threshold"], "accuracy": values["best_accuracy"],
                   "same_if": ">=" if values["higher_is_same"] else "<="}
            for name, values in metrics_by_variant["trained"].items()
        },
        "flip": flip,
        "image_size": image_size,
        "align": align,
        "no_face": no_face,
        "model_sha256": model_sha256,
        "model_dir": str(model_dir),
    }

    from deepface.report import render_report

    write_text(out_dir / "scores.csv", _scores_csv(pair_list, files, scores, scored, problems))
    write_json(out_dir / "roc.json", roc_by_variant)
    write_json(out_dir / "threshold.json", threshold)
    write_json(out_dir / "metrics.json", result)
    history = model_dir / "history.json"
    write_text(out_dir / "report.html", render_report(
        result, context, scores, same, roc_by_variant,
        history=read_json(history) if history.exists() else None,
    ))
    write_manifest(out_dir, {
        "stage": "evaluate",
        **context,
        "counts": counts,
        "outputs": {name: {"bytes": (out_dir / name).stat().st_size, "sha256": hash_file(out_dir / name)}
                    for name in OUTPUTS if name != "pairs.txt" or pairs_info["generated"]},
        "versions": deepface.versions(),
    })
    logger.info("%s (%d pairs)", headline(result["summary"]), counts["pairs_scored"])
    return result


def measure(scores: dict[str, dict[str, np.ndarray]], same: np.ndarray, folds: np.ndarray) -> tuple[dict, dict]:
    """The LFW-protocol metrics and the ROC points of every score of every variant.

    Args:
        scores: ``{variant: {score name: [N] scores}}``.
        same: [N] bool labels.
        folds: [N] fold ids.

    Returns:
        ``(metrics, roc)``, both ``{variant: {score name: ...}}`` (see ``deepface.metrics``).
    """
    from deepface.metrics import roc_points, verification_metrics

    metrics = {variant: {name: verification_metrics(values, same, folds, higher_is_same=SCORES[name][1])
                         for name, values in by_name.items()}
               for variant, by_name in scores.items()}
    roc = {variant: {name: roc_points(values, same, higher_is_same=SCORES[name][1])
                     for name, values in by_name.items()}
           for variant, by_name in scores.items()}
    return metrics, roc


def _summary(metrics: dict) -> dict:
    """The headline numbers (primary score of the trained model, and the baseline's accuracy)."""
    primary = metrics["trained"][PRIMARY_SCORE]
    summary = {
        "accuracy": primary["accuracy"], "accuracy_sem": primary["accuracy_sem"], "auc": primary["auc"],
        "eer": primary["eer"],
        **{f"tar_at_far_{far}": value["tar"] for far, value in primary["tar_at_far"].items()},
    }
    if "baseline" in metrics:
        summary["baseline_accuracy"] = metrics["baseline"][PRIMARY_SCORE]["accuracy"]
    return summary


def evaluation_warnings(summary: dict) -> list[str]:
    """One-line warnings about a summary: a trained model less accurate than its untrained baseline."""
    warnings = []
    baseline = summary.get("baseline_accuracy")
    if baseline is not None and summary["accuracy"] < baseline:
        warnings.append(
            f"the trained model's {PRIMARY_SCORE} accuracy {summary['accuracy']:.4f} is below its untrained "
            f"baseline's {baseline:.4f}: training did not help; check that it ran long enough (epochs, "
            "steps_per_epoch), the learning rate (learning_rate, optimizer) and the preset (matching the "
            "data's image size and alignment)."
        )
    return warnings


def headline(summary: dict) -> str:
    """One line: accuracy +- standard error, AUC, EER and the baseline's accuracy."""
    line = (f"{PRIMARY_SCORE} accuracy {summary['accuracy']:.4f} +- {summary['accuracy_sem'] or 0:.4f}, "
            f"AUC {summary['auc']:.4f}, EER {summary['eer']:.4f}")
    if "baseline_accuracy" in summary:
        line += f" (untrained baseline {summary['baseline_accuracy']:.4f})"
    return line
