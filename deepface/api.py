"""The Python API: embed and verify face images with a trained model, as ``deepface verify`` does.

``deepface.load(model_dir, evaluation_dir=None)`` (this module's `load`) returns a `FaceVerifier`. Every
image goes through exactly the steps of ``deepface evaluate`` and ``deepface verify``:
`deepface.faces.FaceCropper` (decoded with its EXIF orientation; the face found by the detector and aligned
when the model was trained on aligned faces, its metadata's ``aligned``, else the whole frame), ``/ 255``
(`deepface.data.scale_image`: ``float32(v) * float32(1 / 255)``), the embedding model, and the flip
test-time augmentation of the evaluation (`deepface.embedding.model_views` / ``merge_views``). The scores
are those of `deepface.scoring.SCORES` and the threshold that of the evaluation's threshold.json
(`load_threshold`); ``deepface verify`` (`deepface.verify.verify`) is this API on two files.

Images may be given as a file path (local, ``file://`` or ``gs://``), the file's bytes, a PIL image or a
uint8 array ``[H, W, 3]`` (RGB) or ``[H, W]`` (grey). Bytes and paths are decoded as files are (the EXIF
orientation applied, large JPEGs decoded reduced when the face needs fewer pixels); a PIL image is turned
upright by its EXIF orientation tag if it still has one and used at full resolution; an array is taken as
upright pixels.

Example::

    import deepface

    verifier = deepface.load("out/model", evaluation_dir="out/eval")
    verifier.verify("a.jpg", "b.jpg")   # {"score": "cosine", "value": 0.93, "threshold": 0.71, "same": True, ...}
    verifier.embed(["a.jpg", "b.jpg"])  # float32 [2, D], unit rows
"""

from __future__ import annotations

import io as bytes_io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from deepface import files
from deepface.contracts import check_model_dir
from deepface.embedding import merge_views, model_views
from deepface.errors import DeepFaceError
from deepface.faces import NO_FACE_CHOICES, BadImage, FaceCropper, aligned_for, to_rgb, user_error
from deepface.scoring import PRIMARY_SCORE, SCORES, cosine_similarity, decide

# What the API takes as one image (see the module docstring).
ImageInput = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray

DEFAULT_BATCH_SIZE = 32


def load(
    model_dir: str | os.PathLike,
    evaluation_dir: str | os.PathLike | None = None,
    *,
    threshold: float | None = None,
    score: str | None = None,
    flip: bool | None = None,
    align: bool | None = None,
    no_face: str = "skip",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> FaceVerifier:
    """Load a model directory (and optionally its evaluation) as a `FaceVerifier`.

    Args:
        model_dir: a model directory written by ``deepface train`` (``embedding.keras``, ``metadata.json``).
        evaluation_dir: an output directory of ``deepface evaluate`` for this model; its threshold.json
            (read by `load_threshold`, which checks the sha256 of ``embedding.keras``) gives
            the threshold of ``score`` and whether to flip.
        threshold: the decision threshold in ``score`` units; overrides the evaluation's. Without it and
            without ``evaluation_dir``, `FaceVerifier.verify` needs ``threshold=``; embeddings need none.
        score: ``cosine`` (the default), ``l2`` or ``chi2`` (`deepface.scoring.SCORES`).
        flip: flip test-time augmentation; None: as the evaluation did (off without one).
        align: find and align faces; None: as the model's training data was (metadata ``aligned``).
        no_face: when an image shows no face: ``skip`` (a `DeepFaceError` naming the image) or
            ``center-crop`` (its central square).
        batch_size: images per forward pass in `FaceVerifier.embed`.

    Returns:
        A `FaceVerifier`.

    Raises:
        DeepFaceError: ``model_dir`` without the complete manifest of training
            (`deepface.contracts.check_model_dir`); threshold.json missing, without the score, or
            computed for another model; an unknown ``score`` or ``no_face``; a bad ``batch_size``.

    Example::

        verifier = load("out/model", "out/eval")
        verifier.threshold, verifier.flip, verifier.align  # (0.71, False, True)
    """
    from deepface.model import load_embedding_model

    score = PRIMARY_SCORE if score is None else score
    if score not in SCORES:
        raise DeepFaceError(f"unknown score {score!r}; choose one of {sorted(SCORES)}.")
    if no_face not in NO_FACE_CHOICES:
        raise DeepFaceError(f"no_face={no_face!r}: choose one of {', '.join(NO_FACE_CHOICES)}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DeepFaceError(f"batch_size={batch_size!r} must be a positive integer.")
    check_model_dir(model_dir)  # never a half-written model directory: train's manifest, its files' sizes
    model, metadata = load_embedding_model(model_dir)
    evaluated_threshold = evaluated_flip = None
    if evaluation_dir is not None:
        evaluated_threshold, evaluated_flip = load_threshold(
            evaluation_dir, score, files.hash_file(Path(model_dir) / "embedding.keras"))
    return FaceVerifier(
        model, metadata,
        threshold=float(threshold) if threshold is not None else evaluated_threshold,
        score=score,
        flip=bool(evaluated_flip) if flip is None else bool(flip),
        align=aligned_for(metadata, align),
        no_face=no_face, batch_size=int(batch_size),
        model_dir=model_dir, evaluation_dir=evaluation_dir,
    )


def load_threshold(evaluation_dir: str | os.PathLike, score: str, model_sha256: str) -> tuple[float, bool]:
    """The threshold of ``score`` and the flip setting saved by ``deepface evaluate`` in ``evaluation_dir``.

    Raises:
        DeepFaceError: if threshold.json is absent, lacks the score, or belongs to another model.
    """
    path = Path(evaluation_dir) / "threshold.json"
    if not path.exists():
        raise DeepFaceError(f"{path} not found: evaluation_dir must be an output directory of `deepface evaluate`.")
    saved = files.read_json(path)
    if saved.get("model_sha256") != model_sha256:
        raise DeepFaceError(
            f"{path} was computed for another model (embedding.keras sha256 {saved.get('model_sha256')}); "
            "evaluate this model, or pass --threshold."
        )
    if score not in saved.get("thresholds", {}):
        raise DeepFaceError(f"{path} has no threshold for score {score!r}; pass a threshold.")
    return float(saved["thresholds"][score]["threshold"]), bool(saved.get("flip", False))


class FaceVerifier:
    """A loaded embedding model with the preprocessing, flip setting, score and threshold to use it.

    Made by `load` (``deepface.load``); the attributes are read-only by convention: ``model`` (the Keras
    embedding model), ``metadata`` (the model's metadata.json), ``image_size``, ``align``, ``flip``,
    ``score``, ``threshold`` (None without an evaluation or an explicit one), ``no_face``, ``batch_size``,
    ``model_dir``, ``evaluation_dir``. Not safe to share between threads (the detector and the model are
    not); make one per thread.

    ``no_face_hint`` says, in the error for an image without a face, how to fall back to a centre crop:
    this API's keyword by default; ``deepface verify`` sets its command-line flag.
    """

    no_face_hint = "load with no_face='center-crop'"

    def __init__(self, model, metadata: dict, *, threshold: float | None, score: str, flip: bool, align: bool,
                 no_face: str, batch_size: int, model_dir=None, evaluation_dir=None):
        self.model = model
        self.metadata = dict(metadata)
        self.image_size = int(model.input_shape[1])
        self.threshold = threshold
        self.score = score
        self.flip = flip
        self.align = align
        self.no_face = no_face
        self.batch_size = batch_size
        self.model_dir = model_dir
        self.evaluation_dir = evaluation_dir
        self._cropper = FaceCropper(self.image_size, align=align, no_face=no_face)  # detector on first use

    def __repr__(self) -> str:
        return (f"FaceVerifier(model_dir={str(self.model_dir)!r}, image_size={self.image_size}, "
                f"align={self.align}, flip={self.flip}, score={self.score!r}, threshold={self.threshold})")

    # ------------------------------------------------------------------------------------------ faces

    def crop(self, image: ImageInput) -> np.ndarray:
        """The network's view of one image, before scaling: the aligned face (or the whole frame when the
        verifier does not align), as training records and ``deepface evaluate`` hold it.

        Args:
            image: a path, the file's bytes, a PIL image or a uint8 array (see the module docstring).

        Returns:
            uint8 ``[image_size, image_size, 3]`` RGB.

        Raises:
            DeepFaceError: naming the image: a missing file, an undecodable or refused image, an input of
                another type, no face found (with ``no_face="skip"``).

        Example::

            Image.fromarray(verifier.crop("photo.jpg")).save("face.png")
        """
        name, data = _image_bytes(image)
        try:
            pixels, _ = self._cropper(name, data)
        except BadImage as error:
            raise user_error(name, error, self.no_face_hint) from None
        return pixels

    # ------------------------------------------------------------------------------------- embeddings

    def _embed(self, images: Sequence[ImageInput]) -> np.ndarray:
        """float64 unit rows ``[N, D]`` (`deepface.embedding.merge_views`), the input of the scores."""
        rows = []
        for start in range(0, len(images), self.batch_size):
            crops = np.stack([self.crop(image) for image in images[start:start + self.batch_size]])
            batch = crops.astype(np.float32) * np.float32(1 / 255)  # deepface.data.scale_image, bit for bit
            rows.append(merge_views(model_views(self.model, batch, self.flip)))
        if not rows:
            return np.zeros((0, int(self.model.output_shape[-1])), np.float64)
        return np.concatenate(rows)

    def embed(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """The embeddings of face images: the model's normalised features (averaged with those of the
        mirror image when the verifier flips), renormalised to unit length.

        Args:
            images: a list (or tuple) of images, or one image, each a path, the file's bytes, a PIL image
                or a uint8 array ``[H, W, 3]``; a uint8 array ``[N, H, W, 3]`` is N images.

        Returns:
            float32 ``[N, D]``, unit rows, in the order given (one image: ``[1, D]``).

        Raises:
            DeepFaceError: naming the image, see `crop`.

        Example::

            a, b = verifier.embed(["a.jpg", "b.jpg"])
            float(a @ b)  # the cosine similarity
        """
        return self._embed(_as_list(images)).astype(np.float32)

    def similarity(self, a: ImageInput, b: ImageInput) -> float:
        """The cosine similarity of the embeddings of two face images (1: the same embedding), computed as
        ``deepface evaluate``'s ``cosine`` score.

        Example::

            verifier.similarity("a.jpg", "b.jpg")  # 0.93
        """
        left, right = self._embed([a, b])
        return float(cosine_similarity(left[None], right[None])[0])

    def verify(self, a: ImageInput, b: ImageInput, *, threshold: float | None = None) -> dict[str, Any]:
        """Whether two face images show the same person: `deepface.verify.verify`'s decision.

        Args:
            a, b: the images (path, bytes, PIL image or uint8 array).
            threshold: the threshold in ``score`` units for this call; None: the verifier's (from its
                evaluation, or given to `load`).

        Returns:
            ``{"score", "value", "threshold", "same", "flip", "align"}``: the score's name, its value
            for the pair, the threshold, whether the value is on the "same" side of it (``>=`` for
            cosine, ``<=`` for the distances), and the settings used.

        Raises:
            DeepFaceError: no threshold (load with an evaluation, or pass ``threshold=``); an image that
                cannot be used (see `crop`).

        Example::

            verifier.verify("a.jpg", "b.jpg")["same"]  # True
        """
        threshold = self.threshold if threshold is None else float(threshold)
        if threshold is None:
            raise DeepFaceError("no threshold: load with evaluation_dir= (an output of `deepface evaluate` "
                                "for this model) or pass threshold=.")
        left, right = self._embed([a, b])
        value, same = decide(self.score, left, right, threshold)
        return {"score": self.score, "value": value, "threshold": float(threshold), "same": bool(same),
                "flip": self.flip, "align": self.align}


# ------------------------------------------------------------------------------------------ the inputs


def _as_list(images) -> list:
    """``images`` as a list of single images (see `FaceVerifier.embed`)."""
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)):
        return [images]
    if isinstance(images, (list, tuple)):
        return list(images)
    raise DeepFaceError(f"images must be a list of images or one image, not {type(images).__name__}.")


def _image_bytes(image: ImageInput) -> tuple[str, bytes]:
    """``(a name for messages, image file bytes)`` for `deepface.faces.face_image`.

    Paths are read as files; bytes are the file. PIL images and arrays are stored as uncompressed PNG (a
    lossless round trip, about 3 bytes per pixel, so the decoder's bomb check never refuses them), upright.
    """
    if isinstance(image, (str, os.PathLike)):
        return files.tf_path(image), files.read_image_file(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"image bytes ({len(image)} bytes)", bytes(image)
    if isinstance(image, Image.Image):
        return f"PIL image {image.width}x{image.height}", _png(ImageOps.exif_transpose(image))
    if isinstance(image, np.ndarray):
        name = f"array {'x'.join(map(str, image.shape))}"
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.ndim == 3 and image.shape[2] not in (3, 4):
            raise DeepFaceError(f"{name} of {image.dtype}: pass uint8 pixels [H, W, 3] (RGB) or [H, W] (grey).")
        return name, _png(Image.fromarray(np.ascontiguousarray(image)))
    raise DeepFaceError(f"cannot read an image from a {type(image).__name__}: pass a path, bytes, a PIL image "
                        "or a uint8 array.")


def _png(image: Image.Image) -> bytes:
    buffer = bytes_io.BytesIO()
    to_rgb(image).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()
