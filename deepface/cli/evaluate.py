"""``deepface evaluate``: the command line of `deepface.evaluate.evaluate`."""

from __future__ import annotations

from pathlib import Path

import click

from deepface.settings import EvaluateSettings, click_options


@click.command("evaluate")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Model directory written by `deepface train`.")
@click.option("--images", required=True, type=click.Path(exists=True),
              help="Images the pairs refer to: lfw.tgz, vggface2_test.tar.gz, or a folder of identity folders.")
@click.option("--pairs", required=True, metavar="FILE|generate",
              help="LFW pairs.txt, or 'generate' to draw pairs from the identities of --images.")
@click.option("--out", "out_dir", required=True, help="Output directory.")
@click.option("--landmarks", type=click.Path(exists=True, dir_okay=False), default=None,
              help="loose_landmark_*.csv of the images (e.g. from `deepface landmarks`)  "
                   "[default: run the face detector]")
@click_options(EvaluateSettings)
def command(model_dir: str, images: str, pairs: str, out_dir: str, **settings) -> None:
    """Measure face verification of a trained model on LFW-style pairs; write metrics and a report to OUT."""
    from deepface.evaluate import evaluate, headline

    result = evaluate(model_dir, images, pairs, out_dir, **settings)
    warnings = "".join(f"; WARNING: {warning}" for warning in result["warnings"])
    click.echo(f"{headline(result['summary'])}; report: {Path(out_dir) / 'report.html'}{warnings}")
