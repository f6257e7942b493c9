"""How a synthetic person is drawn in one photo: pen, head geometry, features and expression.

Faces are drawn in canvas units (a 1 x 1 canvas, the face centred on `CANVAS_CENTRE`). A `Pen` maps
every point through a 3x3 homography (`apply_homography`) into the image as it draws, so that a
posed face is drawn directly rather than drawn and then warped. A `Head` places the parts of one
`deepface.synth.identity.FaceIdentity` on the canvas under a yaw, and gives its 5 landmarks and face
outline in canvas units. `draw_expression(rng, head)` draws the per-photo clothes, expression and
gaze; `draw_face(pen, head, expression)` draws the person back to front. Same generator state, same
drawing.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from deepface.synth.identity import NOSE_START_H, FaceIdentity, mix

# Faces are drawn in canvas units (a 1 x 1 canvas) around this face centre.
CANVAS_CENTRE = (0.5, 0.46)


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


def apply_homography(matrix: np.ndarray, points) -> np.ndarray:
    """``points`` [n, 2] mapped through the 3x3 homography ``matrix``, as float64 [n, 2]."""
    mapped = np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return mapped[:, :2] / mapped[:, 2:]


class Pen:
    """ImageDraw in face coordinates: every point goes through a 3x3 homography into the image.

    Shapes are drawn already posed, instead of drawing a canvas and warping it. Widths are in face
    units and scale with the face.
    """

    def __init__(self, image: Image.Image, matrix: np.ndarray):
        self.draw = ImageDraw.Draw(image)
        self.matrix = matrix
        self.scale = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))

    def _map(self, points) -> list:
        return list(map(tuple, apply_homography(self.matrix, points).tolist()))

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
class Head:
    """Where the parts of one person's head are in one photo, in canvas units (a 1 x 1 canvas, face
    centre at ``CANVAS_CENTRE``). ``yaw`` in [-1, 1] moves the inner features sideways; the pen's
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
        return CANVAS_CENTRE[1] - self.height / 2

    def x(self, offset_w: float, depth: float) -> float:
        """Canvas x of a point ``offset_w`` face widths right of the centre line, ``depth`` of the way
        from the ears (0) to the nose tip (~0.5): nearer points move further with yaw."""
        return CANVAS_CENTRE[0] + offset_w * self.width - self.yaw * depth * self.width / 2

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
        return _face_outline(self.x(0, 0.05), CANVAS_CENTRE[1], self.width / 2, self.height / 2,
                             face.face_roundness, face.jaw)

    def nose_tip(self) -> tuple[float, float]:
        """Canvas point at the bottom of the nose, on its centre line."""
        face = self.face
        return self.x(0, 0.45), self.y(face.eye_y_h + NOSE_START_H + face.nose_len_h)

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


def _draw_behind_face(pen: Pen, head: Head, clothes: tuple) -> None:
    """Hair behind the head and over the temples, ears, neck and shoulders."""
    face, a, fh = head.face, head.width / 2, head.height
    cx, top, volume, hair = CANVAS_CENTRE[0], head.top, face.hair_volume, face.hair_colour
    if face.hair_style == "long":
        pen.rounded_rectangle((cx - a - volume, top - volume, cx + a + volume, head.y(1 + 0.5 * face.hair_length)),
                              radius=a, fill=hair)
    elif face.hair_style == "curly":
        pen.ellipse((cx - a - 2 * volume, top - 2 * volume, cx + a + 2 * volume, head.y(0.65)), fill=hair)
    ear_y, ear_h = head.y(face.eye_y_h), face.ear_h * fh
    if face.hair_style != "bald":
        pen.rounded_rectangle((cx - a - 0.5 * volume, top - volume, cx + a + 0.5 * volume, ear_y + 0.1 * fh),
                              radius=0.8 * a, fill=hair)
    shade = mix(face.skin, (40, 20, 10), 0.25)
    for side in (-1, 1):
        ex = head.x(side * 0.485, 0.15)
        pen.ellipse((ex - 0.32 * ear_h, ear_y - 0.25 * ear_h, ex + 0.32 * ear_h, ear_y + 0.75 * ear_h), fill=shade)
    neck_half = face.neck_w * a
    pen.rectangle((cx - neck_half, head.y(0.5), cx + neck_half, head.y(1.45)), fill=shade)
    shoulder_y = head.y(1.3)
    pen.ellipse((cx - 2.6 * a, shoulder_y, cx + 2.6 * a, shoulder_y + 3.0 * fh), fill=clothes)
    pen.polygon([(cx - neck_half, shoulder_y), (cx, shoulder_y + 0.25 * fh), (cx + neck_half, shoulder_y)], fill=shade)


def _draw_skin(pen: Pen, head: Head) -> None:
    """The face itself, facial hair and a mole."""
    face, fw, fh = head.face, head.width, head.height
    outline = head.outline()
    pen.polygon(outline, fill=face.skin)
    mouth_x, mouth_y = head.x(0, 0.3), head.y(face.mouth_y_h)
    if face.facial_hair in ("stubble", "beard"):
        colour = face.hair_colour if face.facial_hair == "beard" else mix(face.skin, face.hair_colour, 0.35)
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
        pen.ellipse((x - r, y - r, x + r, y + r), fill=mix(face.skin, (50, 30, 20), 0.6))


def _draw_nose(pen: Pen, head: Head) -> None:
    face = head.face
    shade, dark = mix(face.skin, (40, 20, 10), 0.25), mix(face.skin, (40, 20, 10), 0.45)
    x, bottom = head.nose_tip()
    top = head.y(face.eye_y_h + NOSE_START_H)
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


def _draw_mouth(pen: Pen, head: Head, smile: float, opening: float) -> None:
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


def _draw_eyes(pen: Pen, head: Head, openness: float, gaze: np.ndarray, brow_raise: float) -> None:
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


def _draw_top_hair(pen: Pen, head: Head) -> None:
    """Hair over the forehead, cut at the hairline in the identity's style."""
    face, a, fh = head.face, head.width / 2, head.height
    cx, top, volume, hair = CANVAS_CENTRE[0], head.top, face.hair_volume, face.hair_colour
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


def _draw_glasses(pen: Pen, head: Head) -> None:
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
class Expression:
    """What changes in a face from one photo to the next (besides pose and light)."""

    clothes: tuple
    smile: float  # lifts the mouth corners
    mouth_open: float  # canvas units
    eye_open: float  # fraction of the eye's height
    brow_raise: float  # fraction of the face height
    gaze: np.ndarray  # [2] in [-1, 1]


def draw_expression(rng: np.random.Generator, head: Head) -> Expression:
    """Per-image clothes, expression and gaze of ``head``'s person."""
    clothes = tuple(int(v) for v in rng.integers(0, 256, 3))
    smile = head.face.smile + rng.uniform(-0.35, 0.35)
    mouth_open = rng.uniform(0.0, 0.05) * head.height if rng.uniform() < 0.25 else 0.0
    eye_open = 0.12 if rng.uniform() < 0.05 else rng.uniform(0.7, 1.1)  # sometimes a blink
    return Expression(clothes, smile, mouth_open, eye_open, rng.uniform(-0.02, 0.03), rng.uniform(-0.25, 0.25, 2))


def draw_face(pen: Pen, head: Head, expression: Expression) -> None:
    """Draw one person, back to front, through ``pen``."""
    _draw_behind_face(pen, head, expression.clothes)
    _draw_skin(pen, head)
    _draw_nose(pen, head)
    _draw_mouth(pen, head, expression.smile, expression.mouth_open)
    _draw_eyes(pen, head, expression.eye_open, expression.gaze, expression.brow_raise)
    _draw_top_hair(pen, head)
    if head.face.glasses:
        _draw_glasses(pen, head)
