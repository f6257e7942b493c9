"""A synthetic face dataset laid out exactly like the real VGGFace2 and LFW releases.

Every identity is a set of face parameters (face shape, skin, hair, eyes, brows, nose, mouth, ears,
glasses, facial hair, marks) drawn once from the seed; every image of it is drawn with Pillow under
per-image nuisance (expression, pose with a slight yaw, framing, clothes, background clutter, light,
colour cast, blur, sensor noise, JPEG quality). Faces are framed as in the real releases, so that face
alignment has work to do: VGGFace2 images are loose crops, the face 30-55% of the frame's shorter side and
its centre up to 15% of the frame off the middle; LFW images are 250 x 250 (lfw_image_size) around a
detector box, the face about 45% of the frame wide, centred with small jitter. The generator knows where
it drew every face: its 5 landmarks and a loose face box are written as VGGFace2's ``bb_landmark``
release has them (see `deepface.landmarks`).

The output directory holds, byte for byte the same for the same arguments:

    vggface2_train.tar.gz   train/nXXXXXX/NNNN_NN.jpg (varied, non-square sizes around image_size)
    vggface2_test.tar.gz    test/nXXXXXX/NNNN_NN.jpg  (identities disjoint from train)
    train_list.txt          nXXXXXX/NNNN_NN.jpg, one per line, sorted
    test_list.txt
    lfw.tgz                 lfw/First_Last/First_Last_NNNN.jpg (lfw_image_size square)
    pairs.txt               LFW View 2 format: "folds<TAB>pairs_per_fold", then per fold the matched
                            lines "name<TAB>n1<TAB>n2" and the mismatched lines "name1<TAB>n1<TAB>name2<TAB>n2"
    bb_landmark.tar.gz      bb_landmark/loose_bb_{train,test}.csv ("NAME_ID,X,Y,W,H", the face from the
                            forehead to the chin in integer pixels) and bb_landmark/loose_landmark_{train,test}.csv
                            ("NAME_ID,P1X,P1Y,...,P5Y": eye centres on the image's left and right, nose tip,
                            mouth corners on the left and right, float pixels with pixel centres at integers);
                            names like "n000002/0001_01", rows in the order of the split's list
    lfw_landmarks.csv       the landmarks of every LFW image in that format ("First_Last/First_Last_0001",
                            sorted): what `deepface landmarks` would write for lfw.tgz (real LFW ships
                            none, and a real face detector misses most of these drawn faces)
    MD5SUMS                 md5sum format, written last: its presence means the dataset is complete

Randomness comes from numpy generators keyed on (seed, split, identity, image), so the bytes do not
depend on the number of worker processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import io
import logging
import math
import multiprocessing
import os
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import click
import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from deepface.errors import DeepFaceError
from deepface.files import atomic_open, dumps_json, is_remote, local_path, md5_file, write_text
from deepface.landmarks import (
    BB_LANDMARK_ARCHIVE,
    BB_LANDMARK_FOLDER,
    box_file,
    format_box_rows,
    format_landmark_rows,
    landmark_file,
    name_id,
)
from deepface.pairs import Pair, draw_lfw_folds, format_pairs

logger = logging.getLogger(__name__)

TRAIN_ARCHIVE = "vggface2_train.tar.gz"
TEST_ARCHIVE = "vggface2_test.tar.gz"
TRAIN_LIST = "train_list.txt"
TEST_LIST = "test_list.txt"
LFW_ARCHIVE = "lfw.tgz"
LFW_PAIRS = "pairs.txt"
LFW_LANDMARKS = "lfw_landmarks.csv"  # what `deepface landmarks` would write for lfw.tgz (real LFW has none)
MD5SUMS = "MD5SUMS"

LFW_FOLDS = 10
MAX_PAIRS_PER_FOLD = 300  # the real View 2 figure
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 1024
MAX_VGGFACE2_IDENTITIES = 200_000  # identity numbers are drawn from n000001..n999999

# Namespaces of the random streams: numpy generators seeded with [seed, namespace, ...].
_SPLIT_CODES = {"train": 1, "test": 2, "lfw": 3}
_VGGFACE2_IDS_STREAM = 10
_LFW_NAMES_STREAM = 11
_LFW_PAIRS_STREAM = 12

# Faces are drawn in canvas units (a 1 x 1 canvas) around this face centre.
_CANVAS_CENTRE = (0.5, 0.46)
_SMOOTH_BELOW = 160  # frames smaller than this are drawn at twice the size and reduced, to smooth edges
_MAX_ROLL_DEGREES = 16  # in-plane rotation of the head, either way
# Identity ranges that other parts (and tests) reason about: eye centre distance over face width.
EYE_SEPARATION = (0.36, 0.50)
_NOSE_START_H = 0.04  # the nose starts this far (face heights) below the eyes
_NOSE_TO_MOUTH_H = 0.10  # and ends at least this far above the mouth

_SKIN_LIGHT = np.array([250, 222, 196], np.float32)
_SKIN_DARK = np.array([84, 52, 34], np.float32)
_HAIR_COLOURS = [
    (20, 17, 15), (45, 30, 20), (85, 55, 35), (120, 80, 45), (180, 140, 80),
    (225, 195, 130), (150, 60, 30), (140, 135, 130), (215, 215, 210),
]
_IRIS_COLOURS = [(60, 35, 20), (95, 60, 30), (70, 110, 160), (80, 120, 80), (110, 115, 120), (30, 25, 25)]
_HAIR_STYLES = ("bald", "crop", "long", "bangs", "side_part", "curly", "bun")
_FACIAL_HAIR = ("none", "stubble", "moustache", "goatee", "beard")

# Building blocks of generated LFW names (ASCII letters only, as directory names).
_ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "br", "ch", "cl", "dr", "fr", "gr", "kr", "pr", "sh", "st", "th", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ia", "io", "ou"]
_CODAS = ["", "", "", "n", "r", "s", "l", "m", "nd", "rt", "ck", "ll", "th"]


# --------------------------------------------------------------------------------------------------
# Identities and their images
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FaceIdentity:
    """Parameters of one synthetic person, fixed across all of their images.

    Lengths are fractions: face size of the drawing canvas, features of the face width (``_w``) or
    height (``_h``). Colours are RGB tuples.
    """

    face_w: float
    face_aspect: float  # face height / face width
    face_roundness: float  # superellipse exponent: 2 = ellipse, higher = squarer
    jaw: float  # width of the chin relative to the cheeks
    skin: tuple
    hair_colour: tuple
    hair_style: str
    hairline_h: float
    hair_volume: float
    hair_length: float
    eye_y_h: float
    eye_sep_w: float
    eye_w: float
    eye_aspect: float
    iris: tuple
    brow_thickness_h: float
    brow_gap_h: float
    brow_tilt: float
    brow_colour: tuple
    nose_len_h: float
    nose_w: float
    nose_style: int
    mouth_y_h: float
    mouth_w: float
    lip_h: float
    lip_colour: tuple
    smile: float
    ear_h: float
    neck_w: float
    glasses: str  # "", "round", "square" or "sun"
    glasses_colour: tuple
    facial_hair: str
    mark: tuple | None  # (x_w, y_h, radius_h) of a mole, or None


def _jitter_colour(rng: np.random.Generator, colour: Sequence[float], amount: float) -> tuple:
    values = np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3)
    return tuple(int(v) for v in np.clip(values, 0, 255))


def _mix(a: Sequence[float], b: Sequence[float], t: float) -> tuple:
    """Colour ``a`` moved a fraction ``t`` towards ``b``."""
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def draw_identity(rng: np.random.Generator) -> FaceIdentity:
    """Draw the parameters of one person."""
    skin = _jitter_colour(rng, _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * rng.uniform(0, 1), 12)
    hair = _jitter_colour(rng, _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))], 12)
    brow = _mix(hair, (25, 20, 15), rng.uniform(0.1, 0.5))
    glasses = ""
    if rng.uniform() < 0.25:
        glasses = ["round", "square", "square", "sun"][rng.integers(4)]
    facial_hair = "none"
    if rng.uniform() < 0.4:
        facial_hair = _FACIAL_HAIR[1 + rng.integers(len(_FACIAL_HAIR) - 1)]
    mark = None
    if rng.uniform() < 0.3:
        mark = (rng.uniform(-0.35, 0.35), rng.uniform(0.5, 0.8), rng.uniform(0.012, 0.025))
    face = FaceIdentity(
        face_w=rng.uniform(0.19, 0.24),
        face_aspect=rng.uniform(1.15, 1.45),
        face_roundness=rng.uniform(2.0, 3.2),
        jaw=rng.uniform(0.45, 0.95),
        skin=skin,
        hair_colour=hair,
        hair_style=_HAIR_STYLES[rng.integers(len(_HAIR_STYLES))],
        hairline_h=rng.uniform(0.14, 0.32),
        hair_volume=rng.uniform(0.02, 0.10),
        hair_length=rng.uniform(0.3, 1.1),
        eye_y_h=rng.uniform(0.38, 0.48),
        eye_sep_w=rng.uniform(*EYE_SEPARATION),
        eye_w=rng.uniform(0.15, 0.23),
        eye_aspect=rng.uniform(0.38, 0.65),
        iris=_jitter_colour(rng, _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))], 10),
        brow_thickness_h=rng.uniform(0.022, 0.055),
        brow_gap_h=rng.uniform(0.05, 0.11),
        brow_tilt=rng.uniform(-0.05, 0.06),
        brow_colour=brow,
        nose_len_h=rng.uniform(0.15, 0.26),
        nose_w=rng.uniform(0.16, 0.30),
        nose_style=int(rng.integers(3)),
        mouth_y_h=rng.uniform(0.72, 0.82),
        mouth_w=rng.uniform(0.30, 0.50),
        lip_h=rng.uniform(0.025, 0.065),
        lip_colour=_mix(skin, (170, 60, 70), rng.uniform(0.25, 0.65)),
        smile=rng.uniform(-0.4, 0.8),
        ear_h=rng.uniform(0.18, 0.28),
        neck_w=rng.uniform(0.45, 0.62),
        glasses=glasses,
        glasses_colour=_jitter_colour(rng, [(20, 20, 20), (120, 80, 40), (160, 160, 170)][rng.integers(3)], 15),
        facial_hair=facial_hair,
        mark=mark,
    )
    # The nose ends above the lips whatever the smile, so that the eyes, nose and mouth keep their order.
    longest_nose = face.mouth_y_h - face.eye_y_h - _NOSE_START_H - _NOSE_TO_MOUTH_H
    return dataclasses.replace(face, nose_len_h=min(face.nose_len_h, longest_nose))


@functools.lru_cache(maxsize=64)
def _unit_arc(start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin along an arc from ``start`` to ``end`` degrees, about 28 points per full turn."""
    angles = np.radians(np.linspace(start, end, max(4, round(28 * (end - start) / 360)) + 1))
    return np.cos(angles), np.sin(angles)


def _arc_points(box: Sequence[float], start: int = 0, end: int = 360) -> np.ndarray:
    """Points [n, 2] along the ellipse inscribed in ``box`` from angle ``start`` to ``end`` (degrees,
    clockwise from 3 o'clock, as in ImageDraw)."""
    x0, y0, x1, y1 = box
    cos, sin = _unit_arc(start, end)
    return np.stack([(x0 + x1) / 2 + (x1 - x0) / 2 * cos, (y0 + y1) / 2 + (y1 - y0) / 2 * sin], 1)


def _apply(matrix: np.ndarray, points) -> np.ndarray:
    """``points`` [n, 2] mapped through the 3x3 homography ``matrix``, as float64 [n, 2]."""
    mapped = np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return mapped[:, :2] / mapped[:, 2:]


class _Pen:
    """ImageDraw in face coordinates: every point goes through a 3x3 homography into the image.

    Drawing the shapes already posed (instead of drawing a canvas and warping it) keeps a photo to a
    few hundred microseconds. Widths are in face units and scale with the face.
    """

    def __init__(self, image: Image.Image, matrix: np.ndarray):
        self.draw = ImageDraw.Draw(image)
        self.matrix = matrix
        self.scale = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))

    def _map(self, points) -> list:
        return list(map(tuple, _apply(self.matrix, points).tolist()))

    def _width(self, width: float) -> int:
        return max(1, round(width * self.scale))

    def polygon(self, points, fill=None, outline=None, width: float = 0.0) -> None:
        self.draw.polygon(self._map(points), fill=fill, outline=outline, width=self._width(width))

    def line(self, points, fill, width: float) -> None:
        self.draw.line(self._map(points), fill=fill, width=self._width(width), joint="curve")

    def ellipse(self, box, fill=None, outline=None, width: float = 0.0) -> None:
        self.polygon(_arc_points(box)[:-1], fill, outline, width)

    def chord(self, box, start: int, end: int, fill) -> None:
        self.polygon(_arc_points(box, start, end), fill)

    def arc(self, box, start: int, end: int, fill, width: float) -> None:
        self.line(_arc_points(box, start, end), fill, width)

    def rectangle(self, box, fill) -> None:
        x0, y0, x1, y1 = box
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill)

    def rounded_rectangle(self, box, radius: float, fill=None, outline=None, width: float = 0.0) -> None:
        x0, y0, x1, y1 = box
        r = min(radius, (x1 - x0) / 2, (y1 - y0) / 2)
        corners = [(x1 - 2 * r, y0, x1, y0 + 2 * r, 270), (x1 - 2 * r, y1 - 2 * r, x1, y1, 0),
                   (x0, y1 - 2 * r, x0 + 2 * r, y1, 90), (x0, y0, x0 + 2 * r, y0 + 2 * r, 180)]
        points = np.concatenate([_arc_points(corner[:4], corner[4], corner[4] + 90) for corner in corners])
        self.polygon(points, fill, outline, width)


def _face_outline(cx: float, cy: float, a: float, b: float, roundness: float, jaw: float) -> np.ndarray:
    """Polygon of a superellipse with half-axes (a, b) whose lower half narrows to ``jaw`` at the chin."""
    t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = a * np.sign(c) * np.abs(c) ** (2 / roundness)
    y = b * np.sign(s) * np.abs(s) ** (2 / roundness)
    x = np.where(y > 0, x * (1 - (1 - jaw) * (np.maximum(y, 0) / b) ** 2), x)  # narrow towards the chin
    return np.stack([cx + x, cy + y], 1)


@dataclasses.dataclass(frozen=True)
class _Head:
    """Where the parts of one person's head are in one photo, in canvas units (a 1 x 1 canvas, face
    centre at ``_CANVAS_CENTRE``). ``yaw`` in [-1, 1] moves the inner features sideways; the pen's
    homography squashes the far side."""

    face: FaceIdentity
    yaw: float

    @property
    def width(self) -> float:
        return self.face.face_w

    @property
    def height(self) -> float:
        return self.face.face_w * self.face.face_aspect

    @property
    def top(self) -> float:
        return _CANVAS_CENTRE[1] - self.height / 2

    def x(self, offset_w: float, depth: float) -> float:
        """Canvas x of a point ``offset_w`` face widths right of the centre line, ``depth`` of the way
        from the ears (0) to the nose tip (~0.5): nearer points move further with yaw."""
        return _CANVAS_CENTRE[0] + offset_w * self.width - self.yaw * depth * self.width / 2

    def y(self, fraction_h: float) -> float:
        """Canvas y ``fraction_h`` face heights below the top of the face."""
        return self.top + fraction_h * self.height

    @property
    def eye_xs(self) -> tuple[float, float]:
        return tuple(self.x(side * self.face.eye_sep_w / 2, 0.3) for side in (-1, 1))

    @property
    def eye_half_width(self) -> float:
        return self.face.eye_w * self.width / 2

    @property
    def eye_y(self) -> float:
        """Canvas y of both eye centres."""
        return self.y(self.face.eye_y_h)

    def outline(self) -> np.ndarray:
        """Polygon [n, 2] of the face's skin, forehead to chin (ears and hair not included)."""
        face = self.face
        return _face_outline(self.x(0, 0.05), _CANVAS_CENTRE[1], self.width / 2, self.height / 2,
                             face.face_roundness, face.jaw)

    def nose_tip(self) -> tuple[float, float]:
        """Canvas point at the bottom of the nose, on its centre line."""
        face = self.face
        return self.x(0, 0.45), self.y(face.eye_y_h + _NOSE_START_H + face.nose_len_h)

    def mouth_line(self, smile: float, xs: np.ndarray) -> np.ndarray:
        """Points [n, 2] on the line between the lips at ``xs`` in [-1, 1] (the corners at -1 and 1);
        the corners rise with ``smile``."""
        x, y, half = self.x(0, 0.3), self.y(self.face.mouth_y_h), self.face.mouth_w * self.width / 2
        return np.stack([x + half * xs, y - smile * 0.04 * self.height * xs**2], 1)

    def landmarks(self, smile: float) -> np.ndarray:
        """The 5 points [5, 2] of the release's order in canvas units: the eye centres (canvas left,
        then right), the nose tip, the mouth corners (left, then right)."""
        eyes = [(x, self.eye_y) for x in self.eye_xs]
        return np.array([*eyes, self.nose_tip(), *self.mouth_line(smile, np.array([-1.0, 1.0]))], np.float64)


def _draw_behind_face(pen: _Pen, head: _Head, clothes: tuple) -> None:
    """Hair behind the head and over the temples, ears, neck and shoulders."""
    face, a, fh = head.face, head.width / 2, head.height
    cx, top, volume, hair = _CANVAS_CENTRE[0], head.top, face.hair_volume, face.hair_colour
    if face.hair_style == "long":
        pen.rounded_rectangle((cx - a - volume, top - volume, cx + a + volume, head.y(1 + 0.5 * face.hair_length)),
                              radius=a, fill=hair)
    elif face.hair_style == "curly":
        pen.ellipse((cx - a - 2 * volume, top - 2 * volume, cx + a + 2 * volume, head.y(0.65)), fill=hair)
    ear_y, ear_h = head.y(face.eye_y_h), face.ear_h * fh
    if face.hair_style != "bald":
        pen.rounded_rectangle((cx - a - 0.5 * volume, top - volume, cx + a + 0.5 * volume, ear_y + 0.1 * fh),
                              radius=0.8 * a, fill=hair)
    shade = _mix(face.skin, (40, 20, 10), 0.25)
    for side in (-1, 1):
        ex = head.x(side * 0.485, 0.15)
        pen.ellipse((ex - 0.32 * ear_h, ear_y - 0.25 * ear_h, ex + 0.32 * ear_h, ear_y + 0.75 * ear_h), fill=shade)
    neck_half = face.neck_w * a
    pen.rectangle((cx - neck_half, head.y(0.5), cx + neck_half, head.y(1.45)), fill=shade)
    shoulder_y = head.y(1.3)
    pen.ellipse((cx - 2.6 * a, shoulder_y, cx + 2.6 * a, shoulder_y + 3.0 * fh), fill=clothes)
    pen.polygon([(cx - neck_half, shoulder_y), (cx, shoulder_y + 0.25 * fh), (cx + neck_half, shoulder_y)], fill=shade)


def _draw_skin(pen: _Pen, head: _Head) -> None:
    """The face itself, facial hair and a mole."""
    face, fw, fh = head.face, head.width, head.height
    outline = head.outline()
    pen.polygon(outline, fill=face.skin)
    mouth_x, mouth_y = head.x(0, 0.3), head.y(face.mouth_y_h)
    if face.facial_hair in ("stubble", "beard"):
        colour = face.hair_colour if face.facial_hair == "beard" else _mix(face.skin, face.hair_colour, 0.35)
        jaw = outline[outline[:, 1] > head.y(0.55)]
        jaw = jaw[np.argsort(-jaw[:, 0])]  # right to left along the jaw, then back along the upper lip
        lip = [(mouth_x - 0.35 * fw, mouth_y - 0.06 * fh), (mouth_x + 0.35 * fw, mouth_y - 0.06 * fh)]
        pen.polygon(np.concatenate([jaw, lip]), fill=colour)
    if face.facial_hair == "goatee":
        pen.ellipse(
            (mouth_x - 0.14 * fw, mouth_y + 0.02 * fh, mouth_x + 0.14 * fw, head.y(1.01)), fill=face.hair_colour
        )
    if face.facial_hair in ("moustache", "goatee"):
        half = face.mouth_w * fw * 0.55
        pen.polygon([(mouth_x - half, mouth_y), (mouth_x, mouth_y - 0.075 * fh), (mouth_x + half, mouth_y),
                     (mouth_x, mouth_y - 0.03 * fh)], fill=face.hair_colour)
    if face.mark is not None:
        x_w, y_h, radius_h = face.mark
        x, y, r = head.x(x_w, 0.2), head.y(y_h), radius_h * fh
        pen.ellipse((x - r, y - r, x + r, y + r), fill=_mix(face.skin, (50, 30, 20), 0.6))


def _draw_nose(pen: _Pen, head: _Head) -> None:
    face = head.face
    shade, dark = _mix(face.skin, (40, 20, 10), 0.25), _mix(face.skin, (40, 20, 10), 0.45)
    x, bottom = head.nose_tip()
    top = head.y(face.eye_y_h + _NOSE_START_H)
    half = face.nose_w * head.width / 2
    if face.nose_style == 0:  # a bridge leaning down to the tip
        pen.line([(x - 0.3 * half, top), (x, bottom)], fill=dark, width=0.015 * head.height)
    elif face.nose_style == 1:
        pen.polygon([(x, top), (x - half, bottom), (x + half, bottom)], fill=shade)
    else:
        pen.ellipse((x - 0.6 * half, bottom - 0.7 * half, x + 0.6 * half, bottom + 0.3 * half), fill=shade)
    for side in (-1, 1):
        nostril, r = x + side * 0.55 * half, 0.22 * half
        pen.ellipse((nostril - r, bottom - r, nostril + r, bottom + 0.6 * r), fill=dark)


def _draw_mouth(pen: _Pen, head: _Head, smile: float, opening: float) -> None:
    """Lips around a centre line whose corners rise with ``smile``; a dark gap ``opening`` high when open."""
    face, fh = head.face, head.height
    x = head.x(0, 0.3)
    xs = np.linspace(-1, 1, 11)
    line = head.mouth_line(smile, xs)
    bulge = (face.lip_h * fh * (1 - xs**2))[:, None] * np.array([0.0, 1.0])
    gap = np.array([0.0, opening / 2])
    pen.polygon(np.concatenate([line - 0.6 * bulge - gap, (line + bulge + gap)[::-1]]), fill=face.lip_colour)
    if opening > 0:
        inner = line * np.array([0.9, 1.0]) + np.array([0.1 * x, 0.0])
        pen.polygon(np.concatenate([inner - gap, (inner + gap)[::-1]]), fill=(60, 20, 25))
    pen.line(line, fill=(90, 35, 40), width=0.012 * fh)


def _draw_eyes(pen: _Pen, head: _Head, openness: float, gaze: np.ndarray, brow_raise: float) -> None:
    """Eyes (sclera, iris, pupil, upper lid) looking towards ``gaze`` in [-1, 1]^2, and brows."""
    face, fh = head.face, head.height
    y, half_w = head.eye_y, head.eye_half_width
    half_h = half_w * face.eye_aspect * openness
    for side, x in zip((-1, 1), head.eye_xs):
        eye = (x - half_w, y - half_h, x + half_w, y + half_h)
        pen.ellipse(eye, fill=(240, 238, 232))
        iris = min(half_h, 0.55 * half_w)
        ix, iy = x + gaze[0] * (half_w - iris), y + gaze[1] * 0.3 * half_h
        pen.ellipse((ix - iris, iy - iris, ix + iris, iy + iris), fill=face.iris)
        pupil = 0.45 * iris
        pen.ellipse((ix - pupil, iy - pupil, ix + pupil, iy + pupil), fill=(10, 10, 10))
        pen.arc(eye, 190, 350, fill=(40, 25, 20), width=0.012 * fh)
        brow_y = y - half_w * face.eye_aspect - (face.brow_gap_h + brow_raise) * fh
        inner, outer = x - side * 0.9 * half_w, x + side * 1.15 * half_w
        pen.line([(inner, brow_y + face.brow_tilt * fh), (x, brow_y - 0.02 * fh), (outer, brow_y)],
                 fill=face.brow_colour, width=face.brow_thickness_h * fh)


def _draw_top_hair(pen: _Pen, head: _Head) -> None:
    """Hair over the forehead, cut at the hairline in the identity's style."""
    face, a, fh = head.face, head.width / 2, head.height
    cx, top, volume, hair = _CANVAS_CENTRE[0], head.top, face.hair_volume, face.hair_colour
    hairline = head.y(face.hairline_h)
    cap = (cx - a - volume * 0.5, top - volume, cx + a + volume * 0.5, 2 * hairline - top + volume)
    if face.hair_style == "bald":  # a fringe above the ears
        for side in (-1, 1):
            pen.chord((cx + side * a - 0.25 * a, head.y(0.2), cx + side * a + 0.25 * a, head.y(0.5)),
                      90 - side * 90, 270 - side * 90, fill=hair)
    elif face.hair_style == "bangs":
        pen.chord((cap[0], cap[1], cap[2], cap[3] + 0.12 * fh), 180, 360, fill=hair)
    else:
        pen.chord(cap, 180, 360, fill=hair)
    if face.hair_style == "side_part":
        pen.polygon([(cap[0], hairline), (cx - 0.2 * a, head.y(0.02)), (cx + a * 0.9, hairline + 0.08 * fh),
                     (cap[2], hairline)], fill=hair)
    elif face.hair_style == "bun":
        r = 0.35 * a
        pen.ellipse((cx - r, top - volume - 1.6 * r, cx + r, top - volume + 0.4 * r), fill=hair)


def _draw_glasses(pen: _Pen, head: _Head) -> None:
    face = head.face
    y, width = head.y(face.eye_y_h), 0.018 * head.height
    lens_w, lens_h = head.eye_half_width * 1.5, head.eye_half_width * 1.15
    fill = (25, 25, 30) if face.glasses == "sun" else None
    for x in head.eye_xs:
        box = (x - lens_w, y - lens_h, x + lens_w, y + lens_h)
        if face.glasses == "round":
            pen.ellipse(box, fill=fill, outline=face.glasses_colour, width=width)
        else:
            pen.rounded_rectangle(box, radius=lens_h * 0.4, fill=fill, outline=face.glasses_colour, width=width)
    left, right = head.eye_xs
    pen.line([(left + lens_w, y), (right - lens_w, y)], fill=face.glasses_colour, width=width)


@dataclasses.dataclass(frozen=True)
class _Expression:
    """What changes in a face from one photo to the next (besides pose and light)."""

    clothes: tuple
    smile: float  # lifts the mouth corners
    mouth_open: float  # canvas units
    eye_open: float  # fraction of the eye's height
    brow_raise: float  # fraction of the face height
    gaze: np.ndarray  # [2] in [-1, 1]


def _draw_expression(rng: np.random.Generator, head: _Head) -> _Expression:
    """Per-image clothes, expression and gaze of ``head``'s person."""
    clothes = tuple(int(v) for v in rng.integers(0, 256, 3))
    smile = head.face.smile + rng.uniform(-0.35, 0.35)
    mouth_open = rng.uniform(0.0, 0.05) * head.height if rng.uniform() < 0.25 else 0.0
    eye_open = 0.12 if rng.uniform() < 0.05 else rng.uniform(0.7, 1.1)  # sometimes a blink
    return _Expression(clothes, smile, mouth_open, eye_open, rng.uniform(-0.02, 0.03), rng.uniform(-0.25, 0.25, 2))


def _draw_face(pen: _Pen, head: _Head, expression: _Expression) -> None:
    """Draw one person, back to front, through ``pen``."""
    _draw_behind_face(pen, head, expression.clothes)
    _draw_skin(pen, head)
    _draw_nose(pen, head)
    _draw_mouth(pen, head, expression.smile, expression.mouth_open)
    _draw_eyes(pen, head, expression.eye_open, expression.gaze, expression.brow_raise)
    _draw_top_hair(pen, head)
    if head.face.glasses:
        _draw_glasses(pen, head)


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

    def scale(self, rng: np.random.Generator, head: _Head, width: int, height: int) -> float:
        """Pixels per canvas unit for one photo of ``head`` in a ``width`` x ``height`` frame."""
        if self.measure == "width":
            return rng.uniform(*self.size) * width / head.width
        return rng.uniform(*self.size) * min(width, height) / head.height


# VGGFace2's loose crops: the face 30-55% of the shorter side, anywhere near the centre.
VGGFACE2_FRAMING = Framing("height", (0.30, 0.55), 0.15)
# LFW's 250 x 250 frames around a detector box: the face ~117 px (45%) wide, centred with small jitter.
LFW_FRAMING = Framing("width", (0.42, 0.48), 0.03)


def _pose(width: int, height: int, rng: np.random.Generator, head: _Head, framing: Framing) -> np.ndarray:
    """3x3 homography from canvas units to drawing coordinates of a ``width`` x ``height`` frame
    (Pillow's: pixel ``i`` spans [i, i + 1)).

    Moves the face centre to the origin, squashes one side (yaw), rotates, scales the face to the
    framing's size and moves it to the frame centre plus the framing's offset.
    """
    scale = framing.scale(rng, head, width, height)
    angle = math.radians(rng.uniform(-_MAX_ROLL_DEGREES, _MAX_ROLL_DEGREES))
    tx = width / 2 + rng.uniform(-framing.offset, framing.offset) * width
    ty = height / 2 + rng.uniform(-framing.offset, framing.offset) * height
    to_origin = np.array([[1, 0, -_CANVAS_CENTRE[0]], [0, 1, -_CANVAS_CENTRE[1]], [0, 0, 1]])
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
    return _apply(pose, points) / factor - 0.5


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
    head = _Head(face, rng.uniform(-1, 1) * 0.6)
    pose = _pose(width * factor, height * factor, rng, head, framing)
    image = _background(rng, width, height).resize((width * factor, height * factor), Image.Resampling.NEAREST)
    expression = _draw_expression(rng, head)
    _draw_face(_Pen(image, pose), head, expression)
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
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# Dataset layout: identity names, image names, archives, pairs
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IdentityJob:
    """Everything a worker needs to render the images of one identity."""

    seed: int
    split: str  # "train", "test" or "lfw"
    index: int  # position of the identity within its split
    prefix: str  # folder inside the archive, e.g. "train/n000002"
    names: tuple  # file names inside the folder
    sizes: tuple  # (width, height) per image


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _identity_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return _rng(seed, _SPLIT_CODES[split], index, 0)


def _image_rng(seed: int, split: str, index: int, image: int) -> np.random.Generator:
    return _rng(seed, _SPLIT_CODES[split], index, 1, image + 1)


class RenderedImage(NamedTuple):
    """One image of an archive: member name, JPEG bytes, and its `Photo` landmarks [5, 2] and box."""

    name: str
    data: bytes
    landmarks: np.ndarray
    box: tuple[int, int, int, int]


_FRAMINGS = {"train": VGGFACE2_FRAMING, "test": VGGFACE2_FRAMING, "lfw": LFW_FRAMING}


def render_identity(job: IdentityJob) -> list[RenderedImage]:
    """Every image of one identity, in the job's order, framed as its split's release; same job, same bytes."""
    face = draw_identity(_identity_rng(job.seed, job.split, job.index))
    members = []
    for number, (name, (width, height)) in enumerate(zip(job.names, job.sizes)):
        rng = _image_rng(job.seed, job.split, job.index, number)
        photo = render_photo(face, rng, width, height, _FRAMINGS[job.split])
        data = encode_jpeg(photo.image, int(rng.integers(60, 96)))
        members.append(RenderedImage(f"{job.prefix}/{name}", data, photo.landmarks, photo.box))
    return members


def vggface2_identity_ids(seed: int, train: int, test: int) -> tuple[list[str], list[str]]:
    """Distinct VGGFace2-style ids (n000002...), split into sorted train and test lists."""
    population = max(9_300, 4 * (train + test))
    numbers = _rng(seed, _VGGFACE2_IDS_STREAM).choice(np.arange(1, population + 1), train + test, replace=False)
    names = [f"n{number:06d}" for number in numbers]
    return sorted(names[:train]), sorted(names[train:])


def _vggface2_job(seed: int, split: str, index: int, identity: str, count: int, image_size: int) -> IdentityJob:
    """Image names like 0001_01.jpg (source photo, face in photo) and varied non-square sizes."""
    rng = _rng(seed, _SPLIT_CODES[split], index, 2)
    photos = np.sort(rng.choice(np.arange(1, max(600, 3 * count) + 1), count, replace=False))
    names = tuple(f"{photo:04d}_{1 + int(rng.uniform() < 0.1):02d}.jpg" for photo in photos)
    sizes = []
    for _ in range(count):
        width = max(MIN_IMAGE_SIZE // 2, round(image_size * rng.uniform(0.8, 1.2)))
        height = round(width * rng.uniform(1.0, 1.2))
        sizes.append((width, height + (height == width)))
    return IdentityJob(seed, split, index, f"{split}/{identity}", names, tuple(sizes))


def _syllable(rng: np.random.Generator) -> str:
    return _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] + _CODAS[rng.integers(len(_CODAS))]


def lfw_names(seed: int, count: int) -> list[str]:
    """``count`` distinct, sorted names like Braila_Thornd (First_Last, ASCII letters)."""
    rng = _rng(seed, _LFW_NAMES_STREAM)
    names: set[str] = set()
    while len(names) < count:
        first = "".join(_syllable(rng) for _ in range(int(rng.integers(1, 3))))
        last = "".join(_syllable(rng) for _ in range(int(rng.integers(1, 3))))
        names.add(f"{first.capitalize()}_{last.capitalize()}")
    return sorted(names)


def lfw_image_counts(seed: int, names: Sequence[str], images_per_identity: int) -> dict[str, int]:
    """Images per person: 2..images_per_identity for most, 1 for about one person in ten (as in LFW)."""
    counts = {}
    for index, name in enumerate(names):
        rng = _rng(seed, _SPLIT_CODES["lfw"], index, 2)
        single = rng.uniform() < 0.1
        counts[name] = 1 if single else int(rng.integers(2, images_per_identity + 1))
    return counts


def make_lfw_pairs(counts: dict[str, int], seed: int, folds: int = LFW_FOLDS,
                   max_pairs_per_fold: int = MAX_PAIRS_PER_FOLD) -> tuple[list[Pair], bool]:
    """The pairs.txt pairs of the LFW people ``counts`` ({name: images}): `deepface.pairs.draw_lfw_folds`
    on this module's pairs stream of ``seed``. Returns (pairs, whether the folds' people are disjoint).

    Raises:
        DeepFaceError: naming lfw_identities when the people allow fewer than ``folds`` pairs of a kind.
    """
    try:
        return draw_lfw_folds(counts, folds=folds, max_pairs_per_fold=max_pairs_per_fold,
                              seed=[seed, _LFW_PAIRS_STREAM])
    except DeepFaceError as error:
        raise DeepFaceError(
            f"lfw_identities={len(counts)}: {error} Raise lfw_identities or images_per_identity.") from None


def _tar_info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    """A member header with fixed owner, mode and time, so the archive bytes depend only on content."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar_gz(path: Path, top: str, members: Iterable[tuple[str, bytes]]) -> int:
    """Write ``members`` (name, bytes), already in sorted order, into a deterministic .tar.gz at ``path``.

    Directory entries (``top/`` and each ``top/<identity>/``) are added once, before their files, as
    tar does. Returns the number of files written.
    """
    written = 0
    with atomic_open(path, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as archive:
        archive.addfile(_tar_info(top, directory=True))
        folder = top
        for name, data in members:
            parent = name.rsplit("/", 1)[0]
            if parent != folder:
                archive.addfile(_tar_info(parent, directory=True))
                folder = parent
            archive.addfile(_tar_info(name, len(data)), io.BytesIO(data))
            written += 1
    return written


@contextlib.contextmanager
def _renderer(workers: int) -> Iterator:
    """A ``map`` that renders identity jobs in order: in this process, or in a pool of ``workers``."""
    if workers <= 1:
        yield map
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        yield pool.map


def _render_split(jobs: Sequence[IdentityJob], render_map, description: str,
                  faces: dict[str, tuple[np.ndarray, tuple]]) -> Iterator[tuple[str, bytes]]:
    """Stream (member name, JPEG bytes) of the images of ``jobs`` in job order, with a progress bar;
    record each image's (landmarks, box) in ``faces`` under its member name."""
    total = sum(len(job.names) for job in jobs)
    with tqdm(total=total, desc=description, unit="img", disable=None) as progress:
        for members in render_map(render_identity, jobs):
            for member in members:
                faces[member.name] = (member.landmarks, member.box)
                yield member.name, member.data
            progress.update(len(members))


def _check_count(name: str, value: int, minimum: int, reason: str) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise DeepFaceError(f"{name}={value!r}: must be an integer >= {minimum} ({reason})")


def _validate(train_identities, test_identities, lfw_identities, images_per_identity, image_size,
              lfw_image_size, seed, workers) -> None:
    _check_count("train_identities", train_identities, 1, "the training archive needs identities")
    _check_count("test_identities", test_identities, 1, "the test archive needs identities")
    _check_count("lfw_identities", lfw_identities, 2, "mismatched pairs need two people")
    _check_count("images_per_identity", images_per_identity, 2, "matched pairs need two images of a person")
    _check_count("image_size", image_size, MIN_IMAGE_SIZE, "smaller faces cannot be drawn")
    _check_count("lfw_image_size", lfw_image_size, MIN_IMAGE_SIZE, "smaller faces cannot be drawn")
    _check_count("seed", seed, 0, "numpy seeds are non-negative")
    if workers is not None:
        _check_count("workers", workers, 1, "or leave it unset for one per CPU")
    for name, value in (("image_size", image_size), ("lfw_image_size", lfw_image_size)):
        if value > MAX_IMAGE_SIZE:
            raise DeepFaceError(f"{name}={value}: must be <= {MAX_IMAGE_SIZE}")
    if train_identities + test_identities > MAX_VGGFACE2_IDENTITIES:
        raise DeepFaceError(
            f"train_identities + test_identities = {train_identities + test_identities}: must be <= "
            f"{MAX_VGGFACE2_IDENTITIES} (six-digit VGGFace2 ids)")


def _output_directory(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a local Path, refusing remote URIs and existing files."""
    if is_remote(out_dir):
        raise DeepFaceError(f"out_dir={str(out_dir)!r}: must be a local directory (on Vertex AI use the /gcs/ "
                            f"mount of the bucket, or copy the files afterwards)")
    out = local_path(out_dir)
    if out.exists() and not out.is_dir():
        raise DeepFaceError(f"out_dir={str(out_dir)!r} is a file: give a directory")
    return out


def plan_identity_jobs(*, train_identities: int, test_identities: int, lfw_identities: int,
                       images_per_identity: int, image_size: int, lfw_image_size: int,
                       seed: int) -> dict[str, list[IdentityJob]]:
    """The identities of each split ("train", "test", "lfw") with their image names and sizes, in archive order."""
    train_ids, test_ids = vggface2_identity_ids(seed, train_identities, test_identities)
    jobs = {
        split: [_vggface2_job(seed, split, i, identity, images_per_identity, image_size)
                for i, identity in enumerate(ids)]
        for split, ids in (("train", train_ids), ("test", test_ids))
    }
    names = lfw_names(seed, lfw_identities)
    counts = lfw_image_counts(seed, names, images_per_identity)
    jobs["lfw"] = [
        IdentityJob(seed, "lfw", i, f"lfw/{name}", tuple(f"{name}_{n:04d}.jpg" for n in range(1, counts[name] + 1)),
                    ((lfw_image_size, lfw_image_size),) * counts[name])
        for i, name in enumerate(names)
    ]
    return jobs


_ARCHIVES = {"train": TRAIN_ARCHIVE, "test": TEST_ARCHIVE, "lfw": LFW_ARCHIVE}
_LISTS = {"train": TRAIN_LIST, "test": TEST_LIST}


def _write_archives(out: Path, jobs: dict[str, list[IdentityJob]], workers: int,
                    faces: dict[str, tuple[np.ndarray, tuple]]) -> dict[str, int]:
    """Render every split into its archive, recording each image's (landmarks, box) in ``faces`` under
    its member name; returns the number of images per split."""
    images = {}
    with _renderer(min(workers, max(map(len, jobs.values())))) as render_map:
        for split, split_jobs in jobs.items():
            started = time.perf_counter()
            images[split] = write_tar_gz(out / _ARCHIVES[split], split,
                                         _render_split(split_jobs, render_map, _ARCHIVES[split], faces))
            seconds = time.perf_counter() - started
            logger.info("%s: %d identities, %d images in %.1f s (%.0f images/s)", _ARCHIVES[split],
                        len(split_jobs), images[split], seconds, images[split] / max(seconds, 1e-9))
    return images


def _split_list(jobs: Sequence[IdentityJob]) -> list[str]:
    """The lines of a VGGFace2 list file: ``nXXXXXX/NNNN_NN.jpg`` of every image of ``jobs``, sorted."""
    return sorted(f"{job.prefix.split('/', 1)[1]}/{name}" for job in jobs for name in job.names)


def _member_paths(jobs: Sequence[IdentityJob]) -> list[str]:
    """Archive member names of every image of ``jobs``, sorted."""
    return sorted(f"{job.prefix}/{name}" for job in jobs for name in job.names)


def _landmark_text(paths: Sequence[str], faces: dict[str, tuple[np.ndarray, tuple]]) -> str:
    """A ``loose_landmark_*.csv``: one row per archive path of ``paths``, in that order."""
    return format_landmark_rows((name_id(path), faces[path][0]) for path in paths)


def _box_text(paths: Sequence[str], faces: dict[str, tuple[np.ndarray, tuple]]) -> str:
    """A ``loose_bb_*.csv``: one row per archive path of ``paths``, in that order."""
    return format_box_rows((name_id(path), faces[path][1]) for path in paths)


def _write_bb_landmark(path: Path, jobs: dict[str, list[IdentityJob]],
                       faces: dict[str, tuple[np.ndarray, tuple]]) -> None:
    """VGGFace2's ``bb_landmark.tar.gz``: the loose boxes and landmarks of the train and test images,
    rows in the order of the split's list."""
    members = {}
    for split in _LISTS:
        paths = [f"{split}/{line}" for line in _split_list(jobs[split])]
        members[f"{BB_LANDMARK_FOLDER}/{box_file(split)}"] = _box_text(paths, faces).encode()
        members[f"{BB_LANDMARK_FOLDER}/{landmark_file(split)}"] = _landmark_text(paths, faces).encode()
    write_tar_gz(path, BB_LANDMARK_FOLDER, sorted(members.items()))


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    *,
    train_identities: int = 40,
    test_identities: int = 20,  # at least 2 per fold of `evaluate --pairs generate` (10 folds)
    lfw_identities: int = 40,
    images_per_identity: int = 24,
    image_size: int = 112,
    lfw_image_size: int = 250,
    seed: int = 0,
    workers: int | None = None,
) -> dict:
    """Write a synthetic VGGFace2 (train/test archives, lists, bb_landmark) and LFW (archive, pairs.txt,
    landmarks) to ``out_dir``, laid out as in the module docstring.

    Args:
        out_dir: local directory; created if missing. Files already there with the same names are replaced.
        train_identities, test_identities: VGGFace2 identities per archive (disjoint ids and faces).
        lfw_identities: LFW people; each has 1..images_per_identity images (most at least 2).
        images_per_identity: images of each VGGFace2 identity; the largest LFW count.
        image_size: nominal VGGFace2 image side; images are 0.8-1.2x wide and 1.0-1.2x taller.
        lfw_image_size: side of the square LFW images.
        seed: the same seed and arguments give the same bytes.
        workers: processes rendering identities (default: one per CPU); does not change the output.

    Returns:
        A summary: the arguments, per split identity and image counts, the LFW fold structure and
        the MD5 of every file written.
    """
    _validate(train_identities, test_identities, lfw_identities, images_per_identity, image_size,
              lfw_image_size, seed, workers)
    out = _output_directory(out_dir)
    workers = workers or os.cpu_count() or 1
    # The whole layout first: it is cheap and fails early (too few people for pairs) before any file changes.
    jobs = plan_identity_jobs(train_identities=train_identities, test_identities=test_identities,
                              lfw_identities=lfw_identities, images_per_identity=images_per_identity,
                              image_size=image_size, lfw_image_size=lfw_image_size, seed=seed)
    pairs, disjoint = make_lfw_pairs({job.prefix.split("/")[1]: len(job.names) for job in jobs["lfw"]}, seed)

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / MD5SUMS).unlink(missing_ok=True)  # the completion marker goes first and comes back last
    faces: dict[str, tuple[np.ndarray, tuple]] = {}
    images = _write_archives(out, jobs, workers, faces)
    for split, list_name in _LISTS.items():
        write_text(out / list_name, "".join(f"{line}\n" for line in _split_list(jobs[split])))
    _write_bb_landmark(out / BB_LANDMARK_ARCHIVE, jobs, faces)
    write_text(out / LFW_LANDMARKS, _landmark_text(_member_paths(jobs["lfw"]), faces))
    write_text(out / LFW_PAIRS, format_pairs(pairs))
    md5s = {name: md5_file(out / name)
            for name in sorted([*_ARCHIVES.values(), *_LISTS.values(), BB_LANDMARK_ARCHIVE, LFW_LANDMARKS, LFW_PAIRS])}
    write_text(out / MD5SUMS, "".join(f"{md5}  {name}\n" for name, md5 in md5s.items()))

    seconds = time.perf_counter() - started
    total = sum(images.values())
    per_fold = len(pairs) // (2 * LFW_FOLDS)
    logger.info("wrote %d images to %s in %.1f s (%.0f images/s, %d workers); pairs.txt: %d folds x %d "
                "matched + %d mismatched pairs (%s)", total, out, seconds, total / max(seconds, 1e-9), workers,
                LFW_FOLDS, per_fold, per_fold, "people disjoint across folds" if disjoint else "folds share people")
    return {
        "out_dir": str(out),
        "seed": seed,
        "image_size": image_size,
        "lfw_image_size": lfw_image_size,
        "images_per_identity": images_per_identity,
        "splits": {split: {"identities": len(jobs[split]), "images": images[split]} for split in jobs},
        "lfw_pairs": {"folds": LFW_FOLDS, "pairs_per_fold": per_fold, "disjoint_folds": disjoint},
        "md5": md5s,
    }


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


@click.command("synth")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--train-identities", default=40, show_default=True, help="VGGFace2 training identities.")
@click.option("--test-identities", default=20, show_default=True,
              help="VGGFace2 test identities (disjoint; 20 fill the 10 folds of `evaluate --pairs generate`).")
@click.option("--lfw-identities", default=40, show_default=True, help="LFW people.")
@click.option("--images-per-identity", default=24, show_default=True,
              help="Images per VGGFace2 identity; the most per LFW person.")
@click.option("--image-size", default=112, show_default=True, help="Nominal VGGFace2 image side (sizes vary).")
@click.option("--lfw-image-size", default=250, show_default=True, help="Side of the square LFW images.")
@click.option("--seed", default=0, show_default=True, help="Random seed: same seed, same bytes.")
@click.option("--workers", default=None, type=int, help="Processes (default: one per CPU); output unchanged.")
def command(out_dir: str, **options) -> None:
    """Write a synthetic face dataset laid out like VGGFace2 (tar.gz, lists, bb_landmark) and LFW (lfw.tgz, pairs)."""
    click.echo(dumps_json(make_synthetic_dataset(out_dir, **options)), nl=False)


__all__ = ["make_synthetic_dataset", "render_face", "render_photo", "Photo", "Framing", "draw_identity",
           "make_lfw_pairs", "command"]
