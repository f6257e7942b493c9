"""``deepface train``: the command line of `deepface.train.train`, without TensorFlow until it runs.

Its options map one to one onto `train`'s parameters; their defaults and choices come from
`deepface.config` (``deepface train --help`` imports no TensorFlow).
"""

from __future__ import annotations

import logging
import os

import click

from deepface.config import (
    DEFAULT_EPOCHS,
    OPTIMIZERS,
    PRECISIONS,
    PRESETS,
    STRATEGIES,
    recipe_help,
)
from deepface.files import dumps_json


@click.command("train")
@click.option("--tfrecords", "tfrecords_dir", required=True,
              help="TFRecord directory from `deepface tfrecords` (local or gs://).")
@click.option("--labels", "labels_dir", required=True,
              help="Labels directory from `deepface labels` (its classes.txt).")
@click.option("--out", "out_dir", default=None, help="Model directory to write  [default: $AIP_MODEL_DIR]")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="paper", show_default=True,
              help="Model preset; its input size must match the records. It sets the defaults of --optimizer, "
                   f"--batch-size and --learning-rate ({recipe_help()}).")
@click.option("--epochs", type=int, default=DEFAULT_EPOCHS, show_default=True, help="Training epochs.")
@click.option("--batch-size", type=int, default=None,
              help="Global batch size (over all replicas)  [default: the preset's]")
@click.option("--learning-rate", type=float, default=None,
              help="Initial learning rate; sgd: for a batch of 128, scaled linearly; adam: as given  "
                   "[default: the preset's; with another --optimizer, its usual rate: sgd 0.01, adam 0.001]")
@click.option("--min-learning-rate", type=float, default=1e-4, show_default=True,
              help="Floor of the plateau reductions, for a batch of 128.")
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None,
              help="sgd (the paper; rates scale with the batch) or adam (rates as given)  [default: the preset's]")
@click.option("--lr-factor", type=float, default=0.1, show_default=True, help="Learning-rate factor on a plateau.")
@click.option("--lr-patience", type=int, default=1, show_default=True,
              help="Epochs without improvement before the learning rate drops.")
@click.option("--weight-decay", type=float, default=0.0, show_default=True, help="Decoupled weight decay (0: none).")
@click.option("--label-smoothing", type=float, default=0.0, show_default=True, help="Label smoothing (0: none).")
@click.option("--validation-fraction", type=float, default=0.0, show_default=True,
              help="Share of the shards held out for validation.")
@click.option("--validation-tfrecords", default=None, help="Separate validation TFRecord directory.")
@click.option("--steps-per-epoch", type=int, default=None, help="Steps per epoch  [default: each training record once]")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of weights, dropout, data order and augmentation.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="auto", show_default=True,
              help="Distribution strategy.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto: bfloat16 on TPU, else float32.")
@click.option("--jit-compile/--no-jit-compile", default=False, show_default=True,
              help="Compile the training step with XLA.")
@click.option("--steps-per-execution", type=int, default=1, show_default=True,
              help="Steps per compiled call (TPU throughput).")
@click.option("--shuffle-buffer", type=int, default=10_000, show_default=True, help="Records in the shuffle buffer.")
@click.option("--augment/--no-augment", default=False, show_default=True, help="Random flips and shifts.")
@click.option("--checkpoint-steps", type=int, default=500, show_default=True,
              help="Checkpoint every N steps (0: each epoch only).")
@click.option("--keep-checkpoints", is_flag=True, help="Keep the checkpoints once the model directory is complete.")
@click.option("--feature-max-batches", type=int, default=None,
              help="Batches for the F7 maxima  [default: all training data]")
@click.option("--overwrite", is_flag=True, help="Train again from scratch even if --out holds a complete model.")
def command(**options) -> None:
    """Train DeepFace on TFRecords; a restarted run resumes from its last checkpoint."""
    from deepface.train import train

    logging.getLogger("absl").setLevel(logging.WARNING)  # TF's checkpoint chatter
    manifest = train(**options)
    if manifest:
        click.echo(dumps_json({"model_dir": options["out_dir"] or os.environ.get("AIP_MODEL_DIR"),
                               "final_metrics": manifest["final_metrics"]}), nl=False)
