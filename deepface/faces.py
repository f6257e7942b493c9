"""Faces as the network sees them: one image decoder and one 2D alignment for every stage.

tfrecords, evaluate, verify and the Python entry points all call `face_image`, so a face is cut out
identically for training and for verification:

1. `decode`: any JPEG, PNG, GIF (first frame), BMP, WebP, TIFF or MPO (phone JPEG) file, decoded by
   Pillow to upright 8-bit RGB: the EXIF orientation applied (phones store pixels sideways and say so
   in EXIF), 16-bit grey scaled to 8 bits, CMYK and palette converted, transparency composited on
   black. Large JPEGs are decoded reduced in the DCT (Pillow's draft mode: 1/2, 1/4 or 1/8) when the
   face needs fewer pixels. A decompression bomb (an image over Pillow's MAX_IMAGE_PIXELS whose pixels
   per byte of file no photograph reaches) is refused before decoding; a real 108 MP phone photo is not.
2. 5 landmarks (eye centres, nose tip, mouth corners; `deepface.landmarks`): given (VGGFace2's
   ``bb_landmark`` CSVs, or a file `deepface landmarks` wrote), or found by the bundled detector
   (`deepface.detect`).
3. `align`: the similarity transform (rotation, uniform scale, translation) that maps the 5 points
   onto `template` in the least-squares sense (Umeyama, 1991), applied with one bilinear warp; a large
   face is first box-reduced by an integer factor so that the warp never shrinks by more than 2x
   (no aliasing). Deterministic: the same bytes give the same crop.

The template is the 5-point template of ArcFace (Deng et al., 2019; insightface's ``arcface_dst`` for
112 x 112), scaled to the model's input size. Its crop is the face the way DeepFace's 152 x 152 input
holds it (Taigman et al., Fig. 1): from the brows to the chin, cheek to cheek, the face filling the
frame; the eyes lie at 46% of the height, 31% of the width apart, the mouth at 82%.

Without alignment (``align=False``), the whole frame is fitted into the square keeping its aspect
ratio (`fit_with_pad`), as before alignment existed.

Coordinates are in pixels with pixel centres at integers (x right, y down), as detectors and the
VGGFace2 CSVs give them.

Example::

    from deepface.faces import face_image
    crop = face_image(open("photo.jpg", "rb").read(), 152, detector=FaceDetector())  # PIL RGB 152x152
"""

from __future__ import annotations

import io
import math
import re
import threading
import warnings
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deepface.errors import DeepFaceError
from deepface.settings import NO_FACE_CHOICES

# Formats every stage reads (Pillow's names); MPO is the multi-picture JPEG many phones write.
FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF")
# An image over Pillow's MAX_IMAGE_PIXELS with more pixels per byte of file than this is a decompression
# bomb. Photographs have 2-40 (a 108 MP phone JPEG of 3.2 MB: 34), a uniform-grey JPEG 64; a
# zero-filled RGB PNG 343, a grey one 1,030, a 1-bit one ~8,000.
MAX_PIXELS_PER_BYTE = 200
# Most pixels decoded at once, after any DCT reduction (~1 GB as RGB): larger images are refused.
MAX_DECODED_PIXELS = 4 * 89_478_485
# Detection runs on the photo decoded so that its longer side is at least this (a face of 15% of the
# frame keeps ~100 px, plenty for the detector; MTCNN's time grows with the pixels, see
# benchmarks/bench_detect.py); the face is then cut from a decode as fine as it needs.
DETECT_SIDE = 640

# ArcFace's template for 112 x 112 (insightface arcface_dst), pixel centres at integers.
_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],  # eye on the image's left
    [73.5318, 51.5014],  # eye on the image's right
    [56.0252, 71.7366],  # nose tip
    [41.5493, 92.3655],  # mouth corner, image's left
    [70.7299, 92.2041],  # mouth corner, image's right
])
_pixel_limit_lock = threading.Lock()


class BadImage(Exception):
    """An image that cannot become a face crop; the message is the reason (stored in manifests)."""


class NoFace(BadImage):
    """No face found (or no landmarks known) for an image."""


class Detector(Protocol):
    """What `face_image` needs of a face detector (`deepface.detect.FaceDetector`)."""

    def locate(self, image: Image.Image) -> tuple[np.ndarray, int] | None:
        """``(points [5, 2], faces found)`` of the face a user means in ``image``, or None."""


# ----------------------------------------------------------------------------------------------- decode


def _describe(error: Exception) -> str:
    """``Type: message`` without object addresses, so the reasons in a manifest are reproducible."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(error).__name__}: {error}")


def open_image(data: bytes) -> Image.Image:
    """Opens (does not decode) an image file and refuses what must not be decoded.

    Raises:
        BadImage: empty, not an image, a format outside `FORMATS`, or a decompression bomb.
    """
    if not data:
        raise BadImage("empty file")
    try:
        with _pixel_limit_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # judged below, by pixels per byte
            try:
                image = Image.open(io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except UnidentifiedImageError:
        raise BadImage("not an image, or a corrupt one: Pillow cannot identify its format") from None
    except Exception as error:  # noqa: BLE001 - any decoder failure on user data means: skip this file
        raise BadImage(f"corrupt or truncated image: {_describe(error)}") from None
    if image.format not in FORMATS:
        raise BadImage(f"unsupported format: {image.format} (readable: {', '.join(FORMATS)})")
    width, height = image.size
    pixels = width * height
    if pixels > (limit or 89_478_485) and pixels / len(data) > MAX_PIXELS_PER_BYTE:
        raise BadImage(
            f"decompression bomb: {width}x{height} pixels in {len(data)} bytes "
            f"({pixels / len(data):.0f} pixels per byte; photographs have under {MAX_PIXELS_PER_BYTE})"
        )
    return image


def decode(data: bytes, *, scale: float = 1.0, min_side: int | None = None) -> tuple[Image.Image, float]:
    """Decodes an image file to upright 8-bit RGB, at no less than ``scale`` of its full resolution.

    Args:
        data: the file's bytes.
        scale: the fraction of the full resolution needed (0 < scale <= 1); a JPEG is decoded at the
            smallest of 1, 1/2, 1/4, 1/8 that keeps it.
        min_side: instead of ``scale``: the longer side needed, in pixels (the whole image if smaller).

    Returns:
        ``(image, factor)``: the RGB image, upright (EXIF orientation applied), and the factor from
        full-resolution upright coordinates to its own (1, 0.5, 0.25 or 0.125), see `scale_points`.

    Raises:
        BadImage: see `open_image`; corrupt or truncated data (a JPEG without its end-of-image marker
            too); more than MAX_DECODED_PIXELS to decode.
    """
    image = open_image(data)
    width, height = image.size
    if min_side is not None:
        scale = min(1.0, min_side / max(width, height))
    factor = 1.0
    if scale < 1 and image.format in ("JPEG", "MPO"):
        wanted = (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))
        drafted = image.draft("RGB" if image.mode in ("RGB", "YCbCr") else image.mode, wanted)
        if drafted is not None:
            factor = drafted[1][2] / width  # box of the full image in the reduced one
    if image.size[0] * image.size[1] > MAX_DECODED_PIXELS:
        raise BadImage(f"too large to decode: {width}x{height} pixels (at most {MAX_DECODED_PIXELS}); "
                       "reduce the photo")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            upright = ImageOps.exif_transpose(image)
    except Exception as error:  # noqa: BLE001 - any decoder failure on user data means: skip this file
        raise BadImage(f"corrupt or truncated image: {_describe(error)}") from None
    if image.format in ("JPEG", "MPO") and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise BadImage("corrupt or truncated image: the JPEG data ends before its end-of-image marker")
    return to_rgb(upright), factor


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB: 16/32-bit grey scaled to 8 bits, float grey clipped, CMYK and palette
    converted, transparency (alpha, or a palette's transparent colour) composited on black."""
    if image.mode == "I" or image.mode.startswith("I;16"):  # 16-bit grey (PNG, TIFF)
        pixels = np.asarray(image).astype(np.int64)
        image = Image.fromarray((np.clip(pixels, 0, 65535) >> 8).astype(np.uint8))
    elif image.mode == "F":
        image = image.convert("L")
    if image.mode == "P" and "transparency" in image.info or image.mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        return Image.alpha_composite(Image.new("RGBA", image.size, (0, 0, 0, 255)), image).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def unscale_points(points: np.ndarray, factor: float) -> np.ndarray:
    """The inverse of `scale_points`: coordinates in an image decoded at ``factor`` -> full-resolution
    ones (pixel centres at integers).

    Example: ``unscale_points([[9.5, 4.5]], 0.5)`` -> ``[[19.5, 9.5]]``.
    """
    return (np.asarray(points, np.float64) + 0.5) / factor - 0.5


def scale_points(points: np.ndarray, factor: float) -> np.ndarray:
    """Full-resolution pixel coordinates -> those of the image decoded at ``factor`` (pixel centres at
    integers, so the centre of a reduced pixel is not the corner of the pixels it covers)."""
    return (np.asarray(points, np.float64) + 0.5) * factor - 0.5


# ------------------------------------------------------------------------------------------------ align


def template(size: int) -> np.ndarray:
    """The 5 landmark positions of an aligned ``size x size`` face, float64 ``[5, 2]`` (see the module
    docstring)."""
    return (_TEMPLATE_112 + 0.5) * (size / 112) - 0.5


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The similarity transform (no reflection) mapping ``source`` points onto ``target`` points with the
    least squared error (Umeyama's closed form).

    Args:
        source, target: ``[N, 2]`` points, N >= 2.

    Returns:
        float64 ``[2, 3]`` matrix ``M``: ``target ~ M[:, :2] @ source + M[:, 2]``.

    Raises:
        BadImage: the source points coincide (no scale can be fitted).
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    src, dst = source - source_mean, target - target_mean
    variance = (src**2).sum() / len(src)
    if variance < 1e-6:
        raise BadImage("degenerate landmarks: the 5 points coincide")
    covariance = dst.T @ src / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rotation = u @ np.diag(sign) @ vt
    scale = (singular * sign).sum() / variance
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = target_mean - scale * rotation @ source_mean
    return matrix


def transform_scale(matrix: np.ndarray) -> float:
    """The scale of a similarity matrix (output pixels per input pixel)."""
    return float(math.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def check_points(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """``points`` as float64 ``[5, 2]`` if they lie in the image (with a margin of 10% of its size).

    Raises:
        BadImage: another shape, or a point outside the image.
    """
    points = np.asarray(points, np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise BadImage(f"landmarks must be 5 finite (x, y) points, got shape {points.shape}")
    margin_x, margin_y = 0.1 * width, 0.1 * height
    if ((points[:, 0] < -margin_x) | (points[:, 0] > width - 1 + margin_x)
            | (points[:, 1] < -margin_y) | (points[:, 1] > height - 1 + margin_y)).any():
        raise BadImage(f"landmarks outside the image ({width}x{height}): "
                       + " ".join(f"({x:.0f},{y:.0f})" for x, y in points))
    return points


def align(image: Image.Image, points: np.ndarray, size: int) -> Image.Image:
    """The ``size x size`` RGB face crop of ``image`` whose landmarks ``points`` land on `template`.

    Args:
        image: RGB image.
        points: ``[5, 2]`` landmarks in ``image``'s pixel coordinates.
        size: side of the output.

    Returns:
        RGB ``size x size``; parts of the crop outside ``image`` are black.

    Raises:
        BadImage: degenerate points (see `similarity_transform`).
    """
    points = np.asarray(points, np.float64)
    target = template(size)
    matrix = similarity_transform(points, target)
    shrink = int(1 / transform_scale(matrix))  # integer box reduction first: the warp then shrinks < 2x
    if shrink >= 2:
        inverse = _invert(matrix)
        corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
        mapped = corners @ inverse[:, :2].T + inverse[:, 2]
        left = max(0, math.floor(mapped[:, 0].min()) - shrink)
        top = max(0, math.floor(mapped[:, 1].min()) - shrink)
        right = min(image.width, math.ceil(mapped[:, 0].max()) + shrink)
        bottom = min(image.height, math.ceil(mapped[:, 1].max()) + shrink)
        if right > left and bottom > top:
            image = image.reduce(shrink, box=(left, top, right, bottom))
            points = (points + 0.5 - [left, top]) / shrink - 0.5
            matrix = similarity_transform(points, target)
    inverse = _invert(matrix)
    a, b, c = inverse[0]
    d, e, f = inverse[1]
    # Pillow maps output pixel centres (x + 0.5, y + 0.5) to input coordinates whose pixel centres are at +0.5.
    coefficients = (a, b, c + 0.5 - 0.5 * (a + b), d, e, f + 0.5 - 0.5 * (d + e))
    return image.transform((size, size), Image.Transform.AFFINE, coefficients,
                           resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))


def _invert(matrix: np.ndarray) -> np.ndarray:
    linear_inverse = np.linalg.inv(matrix[:, :2])
    return np.hstack([linear_inverse, -(linear_inverse @ matrix[:, 2])[:, None]])


# ------------------------------------------------------------------------------------- unaligned frames


def pad_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Where a ``width x height`` image goes in a ``size x size`` square, keeping its aspect ratio.

    Returns:
        ``(new_width, new_height, left, top)``: the longer side becomes ``size``, the shorter
        ``floor(shorter * size / longer)`` (at least 1), centred with the offsets rounded down, as in
        tf.image.resize_with_pad. Integer arithmetic, so the longer side is always exactly ``size``
        (TensorFlow's float32 version leaves it one pixel short for some sizes).
    """
    longer = max(width, height)
    new_width = max(1, width * size // longer)
    new_height = max(1, height * size // longer)
    left = (longer - width) * size // (2 * longer)
    top = (longer - height) * size // (2 * longer)
    return new_width, new_height, left, top


def fit_with_pad(image: Image.Image, size: int) -> Image.Image:
    """An RGB ``size x size`` image: ``image`` (RGB) resized keeping its aspect ratio, centred on black."""
    new_width, new_height, left, top = pad_geometry(image.width, image.height, size)
    if image.size != (new_width, new_height):
        image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    if image.size == (size, size):
        return image
    canvas = Image.new("RGB", (size, size))
    canvas.paste(image, (left, top))
    return canvas


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The central square of ``image`` (side: its shorter side) resized to ``size x size``: the fallback
    for a photo without a detected face (``no_face="center-crop"``)."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side),
                        reducing_gap=2.0)


# ------------------------------------------------------------------------------------------- one entry


def face_image(
    data: bytes,
    size: int,
    *,
    align_face: bool = True,
    points: np.ndarray | None = None,
    detector: Detector | None = None,
    no_face: str = "skip",
) -> tuple[Image.Image, dict]:
    """The network's view of one image file: the aligned face, or (``align_face=False``) the whole frame.

    Args:
        data: the image file's bytes (any of `FORMATS`).
        size: side of the square output (the model's input size).
        align_face: align the face from landmarks; False fits the whole frame (`fit_with_pad`).
        points: the face's 5 landmarks in full-resolution upright pixel coordinates; None: find them
            with ``detector``.
        detector: finds the landmarks when ``points`` is None (`deepface.detect.FaceDetector`).
        no_face: when no face is found, ``"skip"`` raises `NoFace`; ``"center-crop"`` returns the
            central square of the frame instead.

    Returns:
        ``(crop, info)``: RGB ``size x size``, and ``{"faces": faces the detector found (None when the
        points were given), "fallback": True if centre-cropped}``.

    Raises:
        BadImage: undecodable, refused (see `decode`), or landmarks outside the image.
        NoFace: no landmarks and no face found, with ``no_face="skip"``.
        ValueError: ``points`` and ``detector`` both None while aligning, or an unknown ``no_face``.
    """
    if no_face not in NO_FACE_CHOICES:
        raise ValueError(f"no_face={no_face!r}: choose one of {', '.join(NO_FACE_CHOICES)}")
    info = {"faces": None, "fallback": False}
    if not align_face:
        image, _ = decode(data, min_side=2 * size)
        return fit_with_pad(image, size), info
    if points is not None:
        needed = transform_scale(similarity_transform(points, template(size)))
        image, factor = decode(data, scale=min(1.0, 2 * needed))  # 2x: the warp's input stays sharp
        face_points = check_points(scale_points(points, factor), image.width, image.height)
        return align(image, face_points, size), info
    if detector is None:
        raise ValueError("face_image needs points or a detector to align a face")
    image, factor = decode(data, min_side=DETECT_SIDE)
    found = detector.locate(image)
    if found is None:
        if no_face == "skip":
            raise NoFace("no face found")
        info.update(faces=0, fallback=True)
        return center_crop(image, size), info
    face_points, info["faces"] = found
    face_points = check_points(face_points, image.width, image.height)
    full_points = unscale_points(face_points, factor)
    needed = transform_scale(similarity_transform(full_points, template(size)))
    if factor < min(1.0, 2 * needed):  # the face needs a finer decode than the detector's
        crop, _ = face_image(data, size, points=full_points)
        return crop, info
    return align(image, face_points, size), info


def aligned_for(metadata: dict, align: bool | None = None) -> bool:
    """Whether to align faces for a model: ``align`` when given, else as its training data was (the model
    metadata's ``aligned``; models from before alignment existed were trained on whole frames)."""
    return bool(metadata.get("aligned", False)) if align is None else bool(align)


def user_error(name: str, error: BadImage, no_face_hint: str) -> DeepFaceError:
    """The one-line user error for an image that cannot become a face crop, naming it; ``no_face_hint``
    says how this entry point falls back to a centre crop (a CLI flag, a keyword)."""
    if isinstance(error, NoFace):
        return DeepFaceError(f"{name}: no face found; pass a photo with a face, or fall back to a centre crop "
                             f"({no_face_hint}).")
    return DeepFaceError(f"{name} cannot be used: {error}. Pass a face image.")


class FaceCropper:
    """`face_image` with one set of options for many files, e.g. every image of an evaluation.

    Args:
        size: side of the crops.
        align: align faces; False fits whole frames.
        landmarks: a `deepface.landmarks.LandmarkTable`: a file without a row raises `NoFace`; None: the
            detector finds the landmarks (a `deepface.detect.FaceDetector`, made on first use).
        no_face: ``skip`` or ``center-crop`` (see `face_image`).

    Calling it with ``(path, data)`` returns the uint8 crop ``[size, size, 3]`` and `face_image`'s info.
    """

    def __init__(self, size: int, *, align: bool = True, landmarks=None, no_face: str = "skip",
                 detector: Detector | None = None):
        self.size, self.align, self.landmarks, self.no_face = size, align, landmarks, no_face
        self.detector = detector

    def _detector(self) -> Detector:
        if self.detector is None:
            from deepface.detect import FaceDetector

            self.detector = FaceDetector()
        return self.detector

    def __call__(self, path: str, data: bytes) -> tuple[np.ndarray, dict]:
        points = detector = None
        if self.align and self.landmarks is not None:
            points = self.landmarks.get(path)
            if points is None:
                raise NoFace(f"no landmarks: {path} has no row in {self.landmarks.source}")
        elif self.align:
            detector = self._detector()
        crop, info = face_image(data, self.size, align_face=self.align, points=points, detector=detector,
                                no_face=self.no_face)
        return np.asarray(crop, dtype=np.uint8), info


def face_array(data: bytes, size: int, **options) -> np.ndarray:
    """`face_image` as a uint8 array ``[size, size, 3]`` (the info dropped)."""
    return np.asarray(face_image(data, size, **options)[0], dtype=np.uint8)


def landmark_distance(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """The largest distance between corresponding points of two ``[5, 2]`` landmark sets, in pixels."""
    return float(np.max(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=1)))
