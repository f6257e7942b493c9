"""``deepface train``: the command line of `deepface.train.train`, without TensorFlow until it runs
(``deepface train --help`` imports none). Its options are the fields of `deepface.settings.TrainSettings`.

Exit status: 0 (trained, or the model directory already held this model), 1 (a user error, one line),
2 (a bad option), 143 (SIGTERM: a checkpoint was saved at the next step; a rerun resumes from it).
"""

from __future__ import annotations

import logging
import os

import click

from deepface.files import dumps_json
from deepface.settings import TrainSettings, click_options


@click.command("train")
@click.option("--tfrecords", "tfrecords_dir", required=True,
              help="TFRecord directory from `deepface tfrecords` (local or gs://).")
@click.option("--labels", "labels_dir", required=True,
              help="Labels directory from `deepface labels` (its classes.txt).")
@click.option("--out", "out_dir", default=None, help="Model directory to write  [default: $AIP_MODEL_DIR]")
@click.option("--validation-tfrecords", default=None, help="Separate validation TFRecord directory.")
@click_options(TrainSettings)
def command(tfrecords_dir: str, labels_dir: str, out_dir: str | None, validation_tfrecords: str | None,
            **settings) -> None:
    """Train DeepFace on TFRecords; a restarted run resumes from its last checkpoint, and SIGTERM saves one
    and exits with status 143."""
    from deepface.train import TrainingInterrupted, train

    logging.getLogger("absl").setLevel(logging.WARNING)  # TF's checkpoint chatter
    try:
        manifest = train(tfrecords_dir, labels_dir, out_dir, validation_tfrecords=validation_tfrecords, **settings)
    except TrainingInterrupted as stopped:  # logged by training; the status of a process ended by the signal
        raise SystemExit(stopped.code) from None
    if manifest:
        click.echo(dumps_json({"model_dir": out_dir or os.environ.get("AIP_MODEL_DIR"),
                               "final_metrics": manifest["final_metrics"]}), nl=False)
