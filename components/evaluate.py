"""Component: face verification of the trained model, logged as KFP metrics, ROC and HTML report."""

from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.launcher import stage_component
from components.parameters import takes_settings
from deepface.settings import EvaluateSettings, PipelineSettings


@stage_component
@takes_settings(EvaluateSettings, PipelineSettings, defaults={"align": True}, renamed={
    "images": (PipelineSettings, "verification_images"), "pairs": (PipelineSettings, "verification_pairs"),
    "landmarks": (PipelineSettings, "verification_landmarks")})
def evaluate(
    model: Input[Model],
    data: Input[Dataset],
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    report: Output[HTML],
    images: str,
    pairs: str,
    landmarks: str,
    batch_size: int,
    flip: bool,
    baseline: bool,
    seed: int,
    allow_missing: bool,
    folds: int,
    pairs_per_fold: int,
    pairs_seed: int,
    align: bool,
    no_face: str,
    max_pairs: int,
    roc_points: int = 100,
):
    """Score verification pairs with the LFW 10-fold protocol and publish the results. The parameters are
    those of `deepface.settings.EvaluateSettings`, except align, which the pipeline states (True: as the
    training records are made by default), and the data folder's files.

    Args:
        model: the trained model directory.
        data: the fetched data folder.
        roc_points: most points of the logged ROC curve (evenly spaced along it; roc.json has all).

    Returns:
        evaluation: folder with metrics.json, scores.csv, roc.json, threshold.json, report.html, manifest.json.
        metrics: accuracy, its standard error over the folds, AUC, EER and TAR at FAR 1e-3 / 1e-2
            (also written to the artifact's file as JSON).
        roc: ROC curve of the trained model's primary score (also written to the artifact's file as JSON).
        report: the self-contained HTML report (metrics, ROC, score histograms, training curves).
    """
    import json
    import os
    import shutil

    from deepface.evaluate import evaluate
    from deepface.landmarks import landmarks_in

    pairs_path = pairs if pairs == "generate" else os.path.join(data.path, pairs)
    result = evaluate(
        model.path, os.path.join(data.path, images), pairs_path, evaluation.path,
        landmarks=landmarks_in(data.path, landmarks) if align else None, batch_size=batch_size, flip=flip,
        baseline=baseline, seed=seed, allow_missing=allow_missing, folds=folds, pairs_per_fold=pairs_per_fold,
        pairs_seed=pairs_seed, align=align, no_face=no_face, max_pairs=max_pairs,
    )
    for name, value in sorted(result["summary"].items()):
        if value is not None:  # e.g. no standard error with a single fold
            metrics.log_metric(name, value)
    with open(os.path.join(evaluation.path, "roc.json"), encoding="utf-8") as handle:
        curve = json.load(handle)["trained"][result["primary_score"]]
    count = len(curve["far"])
    keep = sorted({round(k * (count - 1) / max(roc_points - 1, 1)) for k in range(min(roc_points, count))})
    roc.log_roc_curve([curve["far"][k] for k in keep], [curve["tar"][k] for k in keep],
                      [curve["thresholds"][k] for k in keep])
    shutil.copyfile(os.path.join(evaluation.path, "report.html"), report.path)
    # The logged values also as files: kfp.local's cache only reuses outputs that exist on disk.
    for logged in (metrics, roc):
        with open(logged.path, "w", encoding="utf-8") as handle:
            json.dump(logged.metadata, handle, indent=1, sort_keys=True)
