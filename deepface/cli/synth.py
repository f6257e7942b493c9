"""``deepface synth``: the command line of `deepface.synth.make_synthetic_dataset`."""

from __future__ import annotations

import click

from deepface.files import dumps_json
from deepface.settings import SynthSettings, click_options


@click.command("synth")
@click.option("--out", "out_dir", required=True, help="Output directory.")
@click_options(SynthSettings)
def command(out_dir: str, **settings) -> None:
    """Write a synthetic face dataset laid out like VGGFace2 (tar.gz, lists, bb_landmark) and LFW (lfw.tgz, pairs)."""
    from deepface.synth import make_synthetic_dataset

    click.echo(dumps_json(make_synthetic_dataset(out_dir, **settings)), nl=False)
