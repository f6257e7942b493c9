"""Benchmark: verification accuracy with face alignment versus the same pipeline without it.

The demo's pipeline, stage by stage in this process, on the synthetic data (loosely cropped VGGFace2
faces, LFW faces ~45% of a 250-pixel frame): labels -> tfrecords -> train -> evaluate on LFW pairs, once
with faces aligned from their 5 landmarks (``bb_landmark.tar.gz`` for training, ``lfw_landmarks.csv``
for evaluation) and once with whole frames (``align=False``), everything else equal (data, seeds,
preset, epochs). Prints both accuracies (10-fold mean +- standard error), AUC and the untrained
baselines, side by side.

    .venv/bin/python benchmarks/bench_alignment.py [--identities 24] [--images 24] [--epochs 15] [--preset tiny]

``--smoke`` runs the same steps on a few images for two training steps (options given still win): a check
that the benchmark runs, its accuracies meaningless.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _common import parse_args

# --smoke: the fewest images that make LFW pairs (4 identities) and a training of two steps.
SMOKE = {"identities": 4, "images": 4, "epochs": 1, "batch_size": 8, "steps_per_epoch": 2}


def run(root: Path, data: Path, *, align: bool, preset: str, epochs: int, seed: int, batch_size: int = 32,
        steps_per_epoch: int | None = None) -> dict:
    """One pipeline run; its evaluation summary."""
    from deepface.config import get_config
    from deepface.evaluate import evaluate
    from deepface.labels import build_labels
    from deepface.tfrecords import build_tfrecords
    from deepface.train import train

    out = root / ("aligned" if align else "whole-frame")
    build_labels(data / "vggface2_train.tar.gz", out / "labels")
    build_tfrecords(data / "vggface2_train.tar.gz", out / "labels", out / "tfrecords",
                    image_size=get_config(preset).image_size, align=align,
                    landmarks=data / "bb_landmark.tar.gz" if align else None)
    train(out / "tfrecords", out / "labels", out / "model", preset=preset, epochs=epochs, batch_size=batch_size,
          steps_per_epoch=steps_per_epoch, learning_rate=0.001, optimizer="adam", seed=seed, strategy="cpu")
    result = evaluate(out / "model", data / "lfw.tgz", data / "pairs.txt", out / "evaluation",
                      landmarks=data / "lfw_landmarks.csv" if align else None)
    return result["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, default=24, help="synthetic identities per split (the demo's)")
    parser.add_argument("--images", type=int, default=24, help="images per identity (the demo's)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="default: every record once")
    args = parse_args(parser, SMOKE)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from deepface.synth import make_synthetic_dataset

    with tempfile.TemporaryDirectory(prefix="bench_alignment_") as temporary:
        root = Path(temporary)
        make_synthetic_dataset(root / "data", train_identities=args.identities, test_identities=args.identities,
                               lfw_identities=args.identities, images_per_identity=args.images, seed=args.seed)
        summaries = {align: run(root, root / "data", align=align, preset=args.preset, epochs=args.epochs,
                                seed=args.seed, batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch)
                     for align in (True, False)}

    print(f"\nalignment benchmark: {args.identities} identities x {args.images} images, preset {args.preset}, "
          f"{args.epochs} epochs, seed {args.seed}; LFW-protocol pairs of the synthetic LFW")
    print(f"{'faces':<14}{'accuracy':>10}{'+- sem':>8}{'AUC':>8}{'baseline':>10}")
    for align, summary in summaries.items():
        print(f"{'aligned' if align else 'whole frame':<14}{summary['accuracy']:>10.4f}"
              f"{summary['accuracy_sem'] or 0:>8.4f}{summary['auc']:>8.4f}{summary['baseline_accuracy']:>10.4f}")
    gain = summaries[True]["accuracy"] - summaries[False]["accuracy"]
    print(f"alignment: {gain:+.4f} accuracy")


if __name__ == "__main__":
    main()
