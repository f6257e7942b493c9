"""Verify that two face images show the same person, with a trained model.

``deepface verify --model DIR IMG1 IMG2`` finds and aligns the face in both images (`deepface.faces`, the
crop training and evaluation use; EXIF orientation applied), embeds them, prints their score and "same"
or "different" (with ``--json``: the result dict of :func:`verify` as one JSON object, the only thing on
stdout).

Exit codes, for scripts: 0 = same person; 3 (:data:`EXIT_DIFFERENT`) = different people; 1 = a user error
(one line ``Error: ...`` on stderr: unreadable image, no face, no threshold, ...); 2 = a usage error
(click: unknown option, missing argument).

The threshold. Either ``--threshold T`` in the units of the score, or ``--evaluation EVAL_DIR``: the output
directory of ``deepface evaluate`` for this model, whose ``threshold.json`` holds the threshold of best
accuracy on the evaluation pairs for every score, and whether flip test-time augmentation was used (verify
then does the same). The threshold is kept with the evaluation rather than written into the model
directory, which stays as training wrote it; verify refuses a threshold.json computed for a different
``embedding.keras`` (sha256; `deepface.api.load_threshold`), since a threshold means nothing for another
model.

Scores: ``cosine`` (default; same when >= threshold), ``l2`` and ``chi2`` (distances; same when <=), as in
``deepface.scoring.SCORES``.

The images go through the Python API (`deepface.api.load`, `deepface.api.FaceVerifier.verify`), so the
command, the API and the evaluation see the same crops and embeddings.
"""

from __future__ import annotations

import logging
import os

import click

from deepface import files
from deepface.api import load
from deepface.errors import DeepFaceError
from deepface.faces import NO_FACE_CHOICES
from deepface.scoring import PRIMARY_SCORE, SCORES

logger = logging.getLogger(__name__)

# Exit code of `deepface verify` when the images show different people (0: same; 1: user error; 2: usage).
EXIT_DIFFERENT = 3


def verify(
    model_dir: str | os.PathLike,
    image1: str | os.PathLike,
    image2: str | os.PathLike,
    *,
    threshold: float | None = None,
    evaluation_dir: str | os.PathLike | None = None,
    score: str = PRIMARY_SCORE,
    flip: bool | None = None,
    align: bool | None = None,
    no_face: str = "skip",
) -> dict:
    """Score two face images and decide whether they show the same person.

    Args:
        model_dir: a model directory written by training.
        image1, image2: image files (JPEG/PNG; local, file:// or gs://).
        threshold: the decision threshold in ``score`` units; if None, read from ``evaluation_dir``.
        evaluation_dir: an output directory of ``deepface evaluate`` for this model.
        score: ``cosine``, ``l2`` or ``chi2``.
        flip: flip test-time augmentation; None follows the evaluation (off without one).
        align: find and align the faces (`deepface.faces`, as evaluate and training do); None: as the
            model's training data was (its metadata).
        no_face: ``skip`` (an error) or ``center-crop`` when an image shows no face.

    Returns:
        ``{"score", "value", "threshold", "same", "flip", "align"}``.

    Raises:
        DeepFaceError: bad parameters, an unreadable image or one without a face, a threshold.json of
            another model.
    """
    if score not in SCORES:
        raise DeepFaceError(f"unknown score {score!r}; choose one of {sorted(SCORES)}.")
    if threshold is None and evaluation_dir is None:
        raise DeepFaceError(
            "no threshold: pass --threshold T or --evaluation DIR (an output of `deepface evaluate`)."
        )
    verifier = load(model_dir, evaluation_dir if threshold is None else None, threshold=threshold, score=score,
                    flip=flip, align=align, no_face=no_face)
    verifier.no_face_hint = "--no-face center-crop"
    return verifier.verify(image1, image2)


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
        click.echo(files.dumps_json(result), nl=False)
    else:
        relation = (">=" if result["same"] else "<") if SCORES[score][1] else ("<=" if result["same"] else ">")
        verdict = "same person" if result["same"] else "different people"
        click.echo(f"{score} {result['value']:.6f} {relation} threshold {result['threshold']:.6f}: {verdict}")
    if not result["same"]:
        raise click.exceptions.Exit(EXIT_DIFFERENT)
