"""Component: face verification of the trained model, logged as KFP metrics, ROC and HTML report."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_model(
    model: Input[Model],
    data: Input[Dataset],
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    report: Output[HTML],
    images: str = "lfw.tgz",
    pairs: str = "pairs.txt",
    batch_size: int = 64,
    flip: bool = False,
    baseline: bool = True,
    allow_missing: bool = False,
    seed: int = 0,
    pairs_seed: int = 0,
    roc_points: int = 100,
    align: bool = True,
    landmarks: str = "lfw_landmarks.csv",
    no_face: str = "skip",
):
    """Score verification pairs with the LFW 10-fold protocol and publish the results.

    Args:
        model: the trained model directory.
        data: the fetched data folder.
        images: archive of the data folder holding the pair images (lfw.tgz, or vggface2_test.tar.gz).
        pairs: pairs file of the data folder (LFW pairs.txt format), or "generate" to draw pairs from
            the identities of images (e.g. the held-out VGGFace2 test identities).
        batch_size: images per forward pass.
        flip: average each embedding with that of the mirrored image.
        baseline: also score an untrained model of the same preset, to show what training bought.
        allow_missing: skip (and count) pairs whose image is missing instead of failing.
        seed: initialisation seed of the untrained baseline.
        pairs_seed: seed of the generated pairs (pairs "generate" only).
        roc_points: most points of the logged ROC curve (evenly spaced along it; roc.json has all).
        align: align the faces from 5 landmarks, as the training records were made.
        landmarks: landmark CSV of the pair images in the data folder (what `deepface landmarks` writes);
            when the folder has no such file, the face detector finds the faces.
        no_face: when no face is found: skip (the pair fails unless allow_missing) or center-crop.

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
        model.path, os.path.join(data.path, images), pairs_path, evaluation.path, batch_size=batch_size,
        flip=flip, baseline=baseline, seed=seed, allow_missing=allow_missing, pairs_seed=pairs_seed,
        align=align, landmarks=landmarks_in(data.path, landmarks) if align else None, no_face=no_face,
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
