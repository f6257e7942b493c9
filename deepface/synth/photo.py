"""One synthetic photo: a person drawn under per-photo nuisance, framed as a release crops its photos.

`render_photo(face, rng, width, height, framing)` returns a `Photo`: the RGB image, the face's 5
landmarks and its box in pixels of that image. Nuisance: expression, pose (a slight yaw, in-plane
roll), framing, clothes, background clutter, light, colour cast, blur, sensor noise, sometimes
greyscale. `Framing` says how large the face is and how far off the frame centre: VGGFace2's loose
crops (`VGGFACE2_FRAMING`: the face 30-55% of the frame's shorter side, its centre up to 15% of the
frame off the middle) or LFW's frames around a detector box (`LFW_FRAMING`: the face about 45% of
the frame wide, centred with small jitter). Same generator state, same photo. `encode_jpeg` gives
an image's JPEG bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from deepface.synth.drawing import CANVAS_CENTRE, Head, Pen, apply_homography, draw_expression, draw_face
from deepface.synth.identity import FaceIdentity

_SMOOTH_BELOW = 160  # frames smaller than this are drawn at twice the size and reduced, to smooth edges
_MAX_ROLL_DEGREES = 16  # in-plane rotation of the head, either way


@dataclasses.dataclass(frozen=True)
class Framing:
    """How a release crops its photos: how large the face is and how far from the frame centre.

    ``measure`` "height": the face's height (forehead to chin) is a fraction in ``size`` of the frame's
    shorter side; "width": the face's width (cheek to cheek) is a fraction in ``size`` of the frame width.
    The face centre lies up to ``offset`` of the frame's width (in x) and height (in y) from its centre.
    """

    measure: str
    size: tuple[float, float]
    offset: float

    def scale(self, rng: np.random.Generator, head: Head, width: int, height: int) -> float:
        """Pixels per canvas unit for one photo of ``head`` in a ``width`` x ``height`` frame."""
        if self.measure == "width":
            return rng.uniform(*self.size) * width / head.width
        return rng.uniform(*self.size) * min(width, height) / head.height


# VGGFace2's loose crops: the face 30-55% of the shorter side, anywhere near the centre.
VGGFACE2_FRAMING = Framing("height", (0.30, 0.55), 0.15)
# LFW's 250 x 250 frames around a detector box: the face ~117 px (45%) wide, centred with small jitter.
LFW_FRAMING = Framing("width", (0.42, 0.48), 0.03)


def _pose(width: int, height: int, rng: np.random.Generator, head: Head, framing: Framing) -> np.ndarray:
    """3x3 homography from canvas units to drawing coordinates of a ``width`` x ``height`` frame
    (Pillow's: pixel ``i`` spans [i, i + 1)).

    Moves the face centre to the origin, squashes one side (yaw), rotates, scales the face to the
    framing's size and moves it to the frame centre plus the framing's offset.
    """
    scale = framing.scale(rng, head, width, height)
    angle = math.radians(rng.uniform(-_MAX_ROLL_DEGREES, _MAX_ROLL_DEGREES))
    tx = width / 2 + rng.uniform(-framing.offset, framing.offset) * width
    ty = height / 2 + rng.uniform(-framing.offset, framing.offset) * height
    to_origin = np.array([[1, 0, -CANVAS_CENTRE[0]], [0, 1, -CANVAS_CENTRE[1]], [0, 0, 1]])
    squash = np.array([[1, 0, 0], [0, 1, 0], [2.2 * head.yaw, 0, 1]])  # x = +-0.1 (the cheeks): depth 1 -+ 0.22 yaw
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    place = np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]])
    return place @ squash @ to_origin


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth, muted random-colour field with a few soft shapes (a room, foliage, other people...).

    Drawn at a quarter of the size and enlarged, which blurs it for free.
    """
    small = (max(2, width // 4), max(2, height // 4))
    grey = rng.uniform(40, 220)
    grid = grey + (
        rng.uniform(0, 255, (int(rng.integers(2, 5)), int(rng.integers(2, 5)), 3)) - grey
    ) * rng.uniform(0.2, 0.8)
    image = Image.fromarray(grid.astype(np.uint8), "RGB").resize(small, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):
        x0, y0 = rng.uniform(-0.2, 1.0) * small[0], rng.uniform(-0.2, 1.0) * small[1]
        x1, y1 = x0 + rng.uniform(0.1, 0.6) * small[0], y0 + rng.uniform(0.1, 0.6) * small[1]
        colour = tuple(int(v) for v in grey + (rng.uniform(0, 255, 3) - grey) * 0.6)
        (draw.rectangle if rng.uniform() < 0.5 else draw.ellipse)((x0, y0, x1, y1), fill=colour)
    return image.filter(ImageFilter.BoxBlur(1)).resize((width, height), Image.Resampling.BILINEAR)


@functools.lru_cache(maxsize=8)
def _noise_bank(side: int) -> np.ndarray:
    """A fixed field of standard normal noise, ``side`` x ``side`` x 3; images take shifted windows of it
    (drawing fresh Gaussian noise would be the slowest step of a photo)."""
    return np.random.default_rng(0).standard_normal((side, side, 3), dtype=np.float32)


def _photometric(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Light (brightness, contrast, a directional gradient), colour cast, sensor noise, sometimes greyscale."""
    pixels = np.asarray(image, np.float32)
    height, width = pixels.shape[:2]
    mean = pixels.mean()
    pixels = (pixels - mean) * rng.uniform(0.65, 1.2) + mean * rng.uniform(0.65, 1.3)
    direction = rng.uniform(0, 2 * math.pi)
    ramp_x = np.linspace(-1, 1, width, dtype=np.float32) * math.cos(direction)
    ramp_y = np.linspace(-1, 1, height, dtype=np.float32) * math.sin(direction)
    gradient = 1 + rng.uniform(0, 0.45) * (ramp_y[:, None] + ramp_x[None, :])
    pixels *= gradient[:, :, None] * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    bank = _noise_bank(64 * (max(width, height) // 64 + 2))
    x, y = rng.integers(0, bank.shape[1] - width), rng.integers(0, bank.shape[0] - height)
    pixels += bank[y:y + height, x:x + width] * np.float32(rng.uniform(0, 7))
    result = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if rng.uniform() < 0.05:
        result = result.convert("L").convert("RGB")
    return result


def _to_pixels(pose: np.ndarray, points, factor: int) -> np.ndarray:
    """Canvas ``points`` [n, 2] as float pixel coordinates of the final image (pixel centres at integers)
    when drawn through ``pose`` on a frame ``factor`` times larger, then reduced ``factor`` times.

    Pillow's drawing pixel ``i`` spans [i, i + 1) (a polygon fills the pixels whose centre i + 0.5 it
    covers), and ``Image.reduce`` makes pixel ``j`` the mean of the drawn pixels ``factor * j`` ..
    ``factor * j + factor - 1``: it spans [factor * j, factor * (j + 1)) of the drawing, centre
    factor * (j + 0.5). Hence j = drawing / factor - 0.5.
    """
    return apply_homography(pose, points) / factor - 0.5


def _face_box(outline: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """(X, Y, W, H): the smallest block of whole pixels holding every ``outline`` point [n, 2] (pixel
    coordinates, centres at integers), clipped to the ``width`` x ``height`` frame."""
    x0, y0 = np.maximum(np.floor(outline.min(0) + 0.5), 0).astype(int).tolist()
    x1, y1 = np.minimum(np.floor(outline.max(0) + 0.5), [width - 1, height - 1]).astype(int).tolist()
    return x0, y0, max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)


class Photo(NamedTuple):
    """One rendered photo with where its face is.

    landmarks: float64 [5, 2] in pixels of ``image`` (pixel centres at integers, x right, y down): the
        eye centres on the image's left and right, the nose tip, the mouth corners on the left and right.
    box: (X, Y, W, H) integer pixels covering the face from the forehead to the chin, inside the image.
    """

    image: Image.Image
    landmarks: np.ndarray
    box: tuple[int, int, int, int]


def render_photo(face: FaceIdentity, rng: np.random.Generator, width: int, height: int,
                 framing: Framing = VGGFACE2_FRAMING) -> Photo:
    """One RGB photo of ``face``, ``width`` x ``height``, cropped as ``framing`` says, under random
    nuisance, with its landmarks and face box (see `Photo`). Same ``rng`` state, same photo."""
    factor = 2 if min(width, height) < _SMOOTH_BELOW else 1
    head = Head(face, rng.uniform(-1, 1) * 0.6)
    pose = _pose(width * factor, height * factor, rng, head, framing)
    image = _background(rng, width, height).resize((width * factor, height * factor), Image.Resampling.NEAREST)
    expression = draw_expression(rng, head)
    draw_face(Pen(image, pose), head, expression)
    image = image.reduce(factor)
    if rng.uniform() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * min(width, height) / 112))
    landmarks = _to_pixels(pose, head.landmarks(expression.smile), factor)
    box = _face_box(_to_pixels(pose, head.outline(), factor), width, height)
    return Photo(_photometric(image, rng), landmarks, box)


def render_face(face: FaceIdentity, rng: np.random.Generator, width: int, height: int,
                framing: Framing = VGGFACE2_FRAMING) -> Image.Image:
    """The image of `render_photo`: one RGB photo of ``face``, ``width`` x ``height``."""
    return render_photo(face, rng, width, height, framing).image


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """The JPEG bytes of ``image`` at ``quality`` (1-95)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
