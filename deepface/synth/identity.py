"""Who a synthetic person is: `FaceIdentity`, the face parameters fixed across all their photos.

`draw_identity(rng)` draws one person from a numpy generator (same generator state, same person):
face shape, skin, hair, eyes, brows, nose, mouth, ears, glasses, facial hair, a mark. Lengths are
fractions of the face (see `FaceIdentity`); the eyes, nose and mouth always keep their top-to-bottom
order. How a person is drawn in one photo is `deepface.synth.drawing`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

# Identity ranges that other parts (and tests) reason about: eye centre distance over face width.
EYE_SEPARATION = (0.36, 0.50)
NOSE_START_H = 0.04  # the nose starts this far (face heights) below the eyes
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


def mix(a: Sequence[float], b: Sequence[float], t: float) -> tuple:
    """Colour ``a`` moved a fraction ``t`` towards ``b``."""
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def draw_identity(rng: np.random.Generator) -> FaceIdentity:
    """Draw the parameters of one person."""
    skin = _jitter_colour(rng, _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * rng.uniform(0, 1), 12)
    hair = _jitter_colour(rng, _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))], 12)
    brow = mix(hair, (25, 20, 15), rng.uniform(0.1, 0.5))
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
        lip_colour=mix(skin, (170, 60, 70), rng.uniform(0.25, 0.65)),
        smile=rng.uniform(-0.4, 0.8),
        ear_h=rng.uniform(0.18, 0.28),
        neck_w=rng.uniform(0.45, 0.62),
        glasses=glasses,
        glasses_colour=_jitter_colour(rng, [(20, 20, 20), (120, 80, 40), (160, 160, 170)][rng.integers(3)], 15),
        facial_hair=facial_hair,
        mark=mark,
    )
    # The nose ends above the lips whatever the smile, so that the eyes, nose and mouth keep their order.
    longest_nose = face.mouth_y_h - face.eye_y_h - NOSE_START_H - _NOSE_TO_MOUTH_H
    return dataclasses.replace(face, nose_len_h=min(face.nose_len_h, longest_nose))
