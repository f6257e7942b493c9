"""Five facial landmarks per image, in the CSV format of VGGFace2's ``bb_landmark`` release.

VGGFace2 ships ``bb_landmark.tar.gz`` holding ``bb_landmark/loose_landmark_{train,test}.csv``::

    NAME_ID,P1X,P1Y,P2X,P2Y,P3X,P3Y,P4X,P4Y,P5X,P5Y
    "n000001/0001_01",75.81253,110.2077,103.1778,104.6074,90.06353,133.3624,85.08184,149.0388,114.0266,144.5742

and ``bb_landmark/loose_bb_{train,test}.csv`` (``NAME_ID,X,Y,W,H``, the loose face box in pixels). A name
is the image's path below its split folder without the extension. The points, in pixels of the upright
image (pixel centres at integers, x to the right, y down), are: P1 the eye on the image's left, P2 the
eye on the image's right, P3 the nose tip, P4 and P5 the mouth corners on the image's left and right.

`deepface landmarks` (`deepface.detect`) writes the same format for any archive or folder with the
bundled detector, so tfrecords and evaluate read one kind of file whatever made it.

Example::

    table = read_landmarks("bb_landmark.tar.gz", split="train")  # or a .csv file, or the folder
    points = table.get("train/n000001/0001_01.jpg")            # float32 [5, 2], or None
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from deepface.errors import DeepFaceError

logger = logging.getLogger(__name__)

LANDMARK_HEADER = ("NAME_ID", "P1X", "P1Y", "P2X", "P2Y", "P3X", "P3Y", "P4X", "P4Y", "P5X", "P5Y")
BOX_HEADER = ("NAME_ID", "X", "Y", "W", "H")
BB_LANDMARK_ARCHIVE = "bb_landmark.tar.gz"
BB_LANDMARK_FOLDER = "bb_landmark"
MAX_EXCERPT = 80  # characters of a bad line quoted in an error


def landmark_file(split: str) -> str:
    """``loose_landmark_<split>.csv``, the release's name for the landmarks of ``split``."""
    return f"loose_landmark_{split}.csv"


def box_file(split: str) -> str:
    """``loose_bb_<split>.csv``, the release's name for the loose boxes of ``split``."""
    return f"loose_bb_{split}.csv"


def name_id(path: str) -> str:
    """The CSV name of an image path: below its split folder, without the extension.

    ``"train/n000001/0001_01.jpg"`` -> ``"n000001/0001_01"``; a path of two parts keeps both
    (``"Aaron_Peirsol/Aaron_Peirsol_0001.jpg"`` -> ``"Aaron_Peirsol/Aaron_Peirsol_0001"``).
    """
    parts = posixpath.splitext(path.strip("/"))[0].split("/")
    return "/".join(parts[-2:])


def _number(value: float) -> str:
    """A coordinate as the release writes it: up to 7 significant digits, no exponent for pixels."""
    text = f"{value:.7g}"
    return text if "e" not in text else f"{value:.4f}"


def format_landmark_rows(rows: Iterable[tuple[str, np.ndarray]]) -> str:
    """The text of a ``loose_landmark_*.csv``: the header, then ``"NAME",x1,y1,...,x5,y5`` per row.

    Args:
        rows: ``(name_id, points [5, 2])`` per image, written in the order given.
    """
    lines = [",".join(LANDMARK_HEADER)]
    for name, points in rows:
        values = np.asarray(points, dtype=np.float64).reshape(10)
        lines.append(f'"{name}",' + ",".join(_number(float(v)) for v in values))
    return "\n".join(lines) + "\n"


def format_box_rows(rows: Iterable[tuple[str, tuple[int, int, int, int]]]) -> str:
    """The text of a ``loose_bb_*.csv``: the header, then ``"NAME",X,Y,W,H`` (integer pixels) per row."""
    lines = [",".join(BOX_HEADER)]
    for name, box in rows:
        lines.append(f'"{name}",' + ",".join(str(int(round(v))) for v in box))
    return "\n".join(lines) + "\n"


class LandmarkTable:
    """The landmarks of a CSV file: ``get(path)`` -> float32 ``[5, 2]`` or None.

    Memory: 40 bytes of coordinates (10 float32) plus one dictionary entry and its name per row, for
    every row of the file (3.1 M in ``loose_landmark_train.csv``).
    """

    def __init__(self, names: list[str], points: np.ndarray, source: str):
        self.source = source
        self._rows = {name: row for row, name in enumerate(names)}
        self._points = points.reshape(-1, 5, 2).astype(np.float32)
        self._names = names
        self._used = np.zeros(len(names), bool)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, path: str) -> bool:
        return name_id(path) in self._rows

    def get(self, path: str, mark_used: bool = False) -> np.ndarray | None:
        """The 5 points (float64 ``[5, 2]``) of the image at ``path`` (an archive path or a CSV name), or
        None; ``mark_used`` records that an image matched the row (see `unused`)."""
        row = self._rows.get(name_id(path))
        if row is None:
            return None
        if mark_used:
            self._used[row] = True
        return self._points[row].astype(np.float64)

    def unused(self, limit: int) -> tuple[int, list[str]]:
        """How many rows no ``get(..., mark_used=True)`` matched, and the first ``limit`` of their names:
        rows naming images the source lacks."""
        rows = np.flatnonzero(~self._used)
        return int(rows.size), [self._names[row] for row in rows[:limit]]

    def names(self) -> set[str]:
        """Every CSV name in the table."""
        return set(self._rows)


def _excerpt(line: str) -> str:
    return line if len(line) <= MAX_EXCERPT else line[:MAX_EXCERPT] + "..."


def parse_landmarks(text: str, source: str) -> LandmarkTable:
    """Parses the text of a ``loose_landmark_*.csv`` (see the module docstring).

    Raises:
        DeepFaceError: a header other than the release's, a row with a missing or extra field, a value
            that is not a finite number, an empty name or a name given twice; each names the file, the
            line and the fix.
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(field.strip() for field in header) != LANDMARK_HEADER:
        raise DeepFaceError(
            f"{source}: the first line must be the header {','.join(LANDMARK_HEADER)} (VGGFace2's "
            f"loose_landmark_*.csv format), not {_excerpt(','.join(header or []))!r}."
        )
    names, values, seen = [], [], {}
    for fields in _rows(reader, source):
        line = reader.line_num
        if not fields or all(not field.strip() for field in fields):
            continue  # blank lines
        where = f"{source} line {line}"
        if len(fields) != len(LANDMARK_HEADER):
            raise DeepFaceError(
                f"{where} has {len(fields)} fields, not {len(LANDMARK_HEADER)} "
                f"(a name and 10 coordinates): {_excerpt(','.join(fields))!r}. Fix or remove that row."
            )
        name = fields[0].strip()
        if not name:
            raise DeepFaceError(f"{where} has an empty NAME_ID: fix or remove that row.")
        if name in seen:
            raise DeepFaceError(
                f"{where} repeats {_excerpt(name)!r} (first on line {seen[name]}): keep one row per image."
            )
        try:
            row = [float(field) for field in fields[1:]]
        except ValueError:
            raise DeepFaceError(
                f"{where}: the coordinates of {_excerpt(name)!r} are not all numbers: "
                f"{_excerpt(','.join(fields[1:]))!r}. Fix or remove that row."
            ) from None
        if not all(math.isfinite(value) for value in row):
            raise DeepFaceError(f"{where}: {_excerpt(name)!r} has a coordinate that is not finite: fix that row.")
        seen[name] = line
        names.append(name)
        values.append(row)
    if not names:
        raise DeepFaceError(f"{source} holds no landmark rows: pass the landmarks of the images.")
    return LandmarkTable(names, np.asarray(values, np.float64), source)


def landmarks_in(folder: str | os.PathLike, name: str) -> Path | None:
    """The landmark file ``name`` of a data folder, or None (logged) when the folder has none, so that the
    caller's stage runs the face detector instead: how the pipeline's steps use their landmark parameters.

    Example: ``landmarks_in(data.path, "bb_landmark.tar.gz")``.
    """
    path = Path(folder) / name if name else None
    if path is None or not path.exists():
        logger.info("no landmark file %r in %s: the face detector finds the faces", name, folder)
        return None
    return path


def _rows(reader, source: str) -> Iterator[list[str]]:
    """The reader's rows; a line the csv module cannot split (a field over its 128 KiB limit, a stray
    quote) is an error naming the line."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise DeepFaceError(
                f"{source} line {reader.line_num} is not a CSV row ({error}): fix or remove it."
            ) from None


def read_landmarks(path: str | os.PathLike, split: str | None = None) -> LandmarkTable:
    """The landmarks of a CSV file, of a ``bb_landmark`` folder or of ``bb_landmark.tar.gz``.

    Args:
        path: a ``.csv`` file in the format above; or a folder / tar archive holding
            ``[bb_landmark/]loose_landmark_<split>.csv``.
        split: which file of a folder or archive (``train``, ``test``); None reads every
            ``loose_landmark_*.csv`` of it as one table (VGGFace2's splits have disjoint names).

    Raises:
        DeepFaceError: the path does not exist, the file is not found in the folder or archive, or
            the CSV is malformed (see `parse_landmarks`).
    """
    path = Path(path)
    if not path.exists():
        raise DeepFaceError(f"Landmark file {path} does not exist: pass a loose_landmark_*.csv, "
                            f"a {BB_LANDMARK_FOLDER} folder or {BB_LANDMARK_ARCHIVE}.")
    if path.is_dir():
        candidates = (
            sorted(path.glob("loose_landmark_*.csv"))
            + sorted(path.glob(f"{BB_LANDMARK_FOLDER}/loose_landmark_*.csv"))
        )
        chosen = _choose([c.name for c in candidates], path, split)
        return _merge([read_landmarks(c) for c in candidates if c.name in chosen], str(path))
    if path.suffix.lower() == ".csv":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DeepFaceError(f"{path} is not UTF-8 text: pass a loose_landmark_*.csv file.") from None
        except OSError as error:
            raise DeepFaceError(f"{path} cannot be read ({error.strerror}): check its permissions.") from None
        return parse_landmarks(text, str(path))
    try:
        with tarfile.open(path) as archive:
            members = {posixpath.basename(m.name): m for m in archive.getmembers()
                       if m.isfile() and posixpath.basename(m.name).startswith("loose_landmark_")}
            chosen = _choose(sorted(members), path, split)
            texts = {name: archive.extractfile(members[name]).read().decode("utf-8") for name in chosen}
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as error:
        raise DeepFaceError(f"{path} is not a readable {BB_LANDMARK_ARCHIVE} ({error}): "
                            "pass the release's archive, its folder or one CSV file.") from None
    return _merge([parse_landmarks(text, f"{path}:{name}") for name, text in texts.items()], str(path))


def _choose(names: list[str], where: Path, split: str | None) -> list[str]:
    """The landmark files to read among ``names``: the split's, or (no split) all of them."""
    if split:
        wanted = landmark_file(split)
        if wanted not in names:
            raise DeepFaceError(f"{where} holds no {wanted} (found: {', '.join(names) or 'none'}): "
                                "pass the landmarks of this split.")
        return [wanted]
    if not names:
        raise DeepFaceError(f"{where} holds no loose_landmark_*.csv: pass VGGFace2's bb_landmark folder or "
                            "archive, or one CSV file.")
    return names


def _merge(tables: list[LandmarkTable], source: str) -> LandmarkTable:
    """One table of several; a name in two of them is an error."""
    if len(tables) == 1:
        return tables[0]
    names, points = [], []
    for table in tables:
        for name in table._names:
            names.append(name)
        points.append(table._points.reshape(-1, 10))
    if len(set(names)) != len(names):
        raise DeepFaceError(f"{source}: an image has rows in two landmark files; pass one split's file.")
    return LandmarkTable(names, np.concatenate(points), source)


def iter_rows(table: LandmarkTable) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, points)`` of every row, sorted by name."""
    for name in sorted(table.names()):
        yield name, table.get(name)
