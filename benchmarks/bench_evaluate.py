"""Benchmark of the evaluation stage, side by side with the alternatives, in one run.

1. Embedding throughput: ``deepface.evaluate.embed_images`` (reads the JPEGs from the tar.gz archive,
   decodes and preprocesses them in tf.data, runs the model) against ``model.predict`` on the same images
   already decoded into one in-memory tensor (the model's own inference rate). Goal: ratio ~1 where the
   input pipeline has spare cores (on a CPU-only machine decoding competes with the model for the same
   cores: the "input pipeline alone" row shows that share).
2. Metrics for 6,000 pairs (LFW View 2 size): ``deepface.metrics.verification_metrics`` (exact, every
   distinct threshold, ties handled) against the usual grid-search evaluator (facenet style: accuracy at
   400 fixed thresholds per fold, TAR@FAR by a 400-point grid). Goal: well under a second.

Both embed the faces as evaluate does on the synthetic LFW: aligned from its ``lfw_landmarks.csv``
(`deepface.faces.FaceCropper`); ``model.predict`` gets the same crops, made beforehand.

Usage: ``python benchmarks/bench_evaluate.py [--preset small] [--identities 40] [--repeats 3]``.
Prints a table of medians and ratios (the machine is noisy: compare the ratio, not the seconds).
``--smoke`` runs every row on a few images, once (options given still win): a check that the benchmark
runs, its figures meaningless.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from _common import parse_args

# --smoke: the tiny preset on the fewest LFW identities that make pairs, every row timed once.
SMOKE = {"preset": "tiny", "identities": 4, "batch_size": 16, "repeats": 1}


def median_seconds(functions: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each ``functions[name]()`` over ``repeats`` rounds, after one warm-up call each.

    The functions take turns within each round, so a slow spell of the (shared, noisy) machine hits them
    alike instead of one of them.
    """
    times = {name: [] for name in functions}
    for function in functions.values():
        function()
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def grid_search_metrics(distance: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    """The common LFW evaluator: 400 fixed thresholds, best accuracy on the training folds, applied to the
    test fold; TAR at FAR 1e-3 from the same grid. Returns (mean accuracy, mean TAR)."""
    thresholds = np.arange(0, 4, 0.01)
    accuracy, tar = [], []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        train_accuracy = [np.mean((distance[train] < t) == same[train]) for t in thresholds]
        best = thresholds[int(np.argmax(train_accuracy))]
        accuracy.append(np.mean((distance[test] < best) == same[test]))
        far = np.array([np.mean(distance[train][~same[train]] < t) for t in thresholds])
        at_far = thresholds[np.flatnonzero(far <= 1e-3)[-1]] if (far <= 1e-3).any() else 0.0
        tar.append(np.mean(distance[test][same[test]] < at_far))
    return float(np.mean(accuracy)), float(np.mean(tar))


def bench_metrics(repeats: int) -> list[tuple[str, float]]:
    from deepface.metrics import verification_metrics

    rng = np.random.default_rng(0)
    same = np.tile(np.r_[np.ones(300, bool), np.zeros(300, bool)], 10)
    folds = np.repeat(np.arange(10), 600)
    distance = np.clip(rng.normal(np.where(same, 0.9, 1.3), 0.2), 0, 2)
    seconds = median_seconds({
        "metrics, 6,000 pairs: deepface.metrics (exact)":
            lambda: verification_metrics(distance, same, folds, higher_is_same=False),
        "metrics, 6,000 pairs: 400-threshold grid search": lambda: grid_search_metrics(distance, same, folds),
    }, repeats)
    return list(seconds.items())


def bench_embedding(preset: str, identities: int, batch_size: int, repeats: int) -> list[tuple[str, float, int]]:
    from deepface.embedding import embed_images
    from deepface.faces import FaceCropper
    from deepface.landmarks import read_landmarks
    from deepface.model import PRESETS, build_classifier, build_embedding_model
    from deepface.pairs import ImageCollection
    from deepface.synth import LFW_ARCHIVE, LFW_LANDMARKS, make_synthetic_dataset

    with tempfile.TemporaryDirectory() as work:
        make_synthetic_dataset(work, train_identities=2, test_identities=2, lfw_identities=identities,
                               images_per_identity=10, image_size=64, lfw_image_size=250, seed=0)
        images = ImageCollection(Path(work) / LFW_ARCHIVE)
        paths = sorted(path for numbers in images.identities.values() for path in numbers.values())
        size = PRESETS[preset].image_size
        cropper = FaceCropper(size, align=True, landmarks=read_landmarks(Path(work) / LFW_LANDMARKS))
        model = build_embedding_model(build_classifier(preset, 100, seed=0))
        tensor = np.stack([cropper(path, data)[0] for path, data in images.read(paths)]).astype(np.float32) / 255

        def embed(models: list, flip: bool):
            outputs, unusable, _ = embed_images(models, images, paths, cropper=cropper, batch_size=batch_size,
                                                flip=flip)
            if unusable:  # every image was measured, or the rate is wrong
                raise SystemExit(f"{len(unusable)} image(s) not embedded, e.g. {next(iter(unusable.items()))}")
            return outputs

        count = len(paths)
        seconds = median_seconds({
            f"embed {count} imgs ({preset}): evaluate from tar.gz": lambda: embed([model], flip=False),
            f"embed {count} imgs ({preset}): model.predict, in-memory tensor":
                lambda: model.predict(tensor, batch_size=batch_size, verbose=0),
            f"embed {count} imgs ({preset}): evaluate from tar.gz, flip TTA": lambda: embed([model], flip=True),
            f"embed {count} imgs: evaluate's input pipeline alone (no model)": lambda: embed([], flip=False),
        }, repeats)
    return [(name, value, count) for name, value in seconds.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help="model preset (tiny, small, paper)")
    parser.add_argument("--identities", type=int, default=40, help="synthetic LFW identities (10 images each)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parse_args(parser, SMOKE)

    embedding = bench_embedding(args.preset, args.identities, args.batch_size, args.repeats)
    metrics = bench_metrics(max(args.repeats, 5))
    print(f"\n{'measurement':66s} {'median s':>9s} {'img/s':>8s} {'ratio':>7s}")
    reference = embedding[1][1]
    for name, seconds, count in embedding:
        print(f"{name:66s} {seconds:9.3f} {count / seconds:8.1f} {reference / seconds:7.2f}")
    print("  (ratio: evaluate's img/s over model.predict's; 1.00 = the model's inference rate)")
    for name, seconds in metrics:
        print(f"{name:66s} {seconds:9.4f} {'':>8s} {metrics[0][1] / seconds:7.2f}")
    print("  (ratio: time of deepface.metrics over this row's time)")


if __name__ == "__main__":
    main()
