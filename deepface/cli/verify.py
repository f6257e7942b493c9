"""``deepface verify``: the command line of `deepface.verify.verify`, with exit codes scripts can use."""

from __future__ import annotations

import click

from deepface.files import dumps_json
from deepface.scoring import PRIMARY_SCORE, SCORES
from deepface.settings import NO_FACE_CHOICES
from deepface.verify import EXIT_DIFFERENT, verify


@click.command("verify")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Model directory written by `deepface train`.")
@click.argument("image1")
@click.argument("image2")
@click.option("--threshold", type=float, default=None,
              help="Decision threshold in score units (default: from --evaluation).")
@click.option("--evaluation", "evaluation_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Output directory of `deepface evaluate` for this model: its threshold.json is used.")
@click.option("--score", type=click.Choice(sorted(SCORES)), default=PRIMARY_SCORE, show_default=True,
              help="cosine similarity, or l2 / chi2 distance of the normalised features.")
@click.option("--flip/--no-flip", default=None,
              help="Flip test-time augmentation (default: as in the evaluation; off without one).")
@click.option("--align/--no-align", default=None,
              help="Find and align the faces  [default: as the model's training data]")
@click.option("--no-face", type=click.Choice(NO_FACE_CHOICES), default="skip", show_default=True,
              help="When an image shows no face: fail (skip), or use its centre crop.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as one JSON object (score, value, threshold, same, flip, align), nothing else.")
def command(model_dir, image1, image2, threshold, evaluation_dir, score, flip, align, no_face, as_json) -> None:
    """Say whether IMAGE1 and IMAGE2 show the same person.

    \b
    Exit codes:
      0  same person
      3  different people
      1  user error: one line "Error: ..." (unreadable image, no face, ...)
      2  usage error (unknown option, missing argument)
    """
    result = verify(model_dir, image1, image2, threshold=threshold, evaluation_dir=evaluation_dir, score=score,
                    flip=flip, align=align, no_face=no_face)
    if as_json:
        click.echo(dumps_json(result), nl=False)
    else:
        relation = (">=" if result["same"] else "<") if SCORES[score][1] else ("<=" if result["same"] else ">")
        verdict = "same person" if result["same"] else "different people"
        click.echo(f"{score} {result['value']:.6f} {relation} threshold {result['threshold']:.6f}: {verdict}")
    if not result["same"]:
        raise click.exceptions.Exit(EXIT_DIFFERENT)
