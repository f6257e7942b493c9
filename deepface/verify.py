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

from deepface.api import load
from deepface.contracts import check_model_dir
from deepface.errors import DeepFaceError
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
        model_dir: a complete model directory written by training (its manifest.json, every file it lists
            at its size: `deepface.contracts.check_model_dir`).
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
        DeepFaceError: bad parameters, an incomplete model directory (no manifest: an interrupted or
            running training), an unreadable image or one without a face, a threshold.json of another model.
    """
    if score not in SCORES:
        raise DeepFaceError(f"unknown score {score!r}; choose one of {sorted(SCORES)}.")
    if threshold is None and evaluation_dir is None:
        raise DeepFaceError(
            "no threshold: pass --threshold T or --evaluation DIR (an output of `deepface evaluate`)."
        )
    check_model_dir(model_dir)  # never a half-written model directory
    verifier = load(model_dir, evaluation_dir if threshold is None else None, threshold=threshold, score=score,
                    flip=flip, align=align, no_face=no_face)
    verifier.no_face_hint = "--no-face center-crop"
    return verifier.verify(image1, image2)
