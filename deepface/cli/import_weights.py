"""``deepface import-weights``: the command line of `deepface.weights.import_seed_weights`."""

from __future__ import annotations

from pathlib import Path

import click

from deepface.files import dumps_json


@click.command("import-weights")
@click.argument("h5_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Model directory to write (classifier.keras, embedding.keras, metadata.json).")
@click.option("--preset", default="paper", show_default=True,
              help="Model preset whose sizes the file has (paper for the released seed weights).")
def command(h5_file: Path, out_dir: Path, preset: str) -> None:
    """Import the seed project's tf.keras HDF5 weights (e.g. VGGFace2_DeepFace_weights_val-0.9034.h5)."""
    from deepface.weights import import_seed_weights

    out = import_seed_weights(h5_file, out_dir, preset=preset)
    click.echo(dumps_json({"model_dir": str(out)}), nl=False)
