"""The resumable output of ``deepface landmarks`` (`deepface.detect.detect_landmarks`): part files, the
state that lists them, and the final CSV files and manifest merged from them.

While a run works, its output directory holds part files ``parts/part-00000.json``, ... (each
``{"entries": [...]}``, one entry per image of the source in source order: ``name`` and the result of
`deepface.detect.find_face`, ``points``, ``box``, ``faces``, ``error``) and ``.landmarks_state.json``
(``{"settings", "parts"}``: the settings the run was started with and a record per complete part).

- `load_state(out, settings)` -> the complete parts of an unfinished run with these settings (temporaries
  and unlisted part files removed); `read_images(source, parts, ignored)` -> the source's images past them.
- `write_part(out, parts, entries)` and `save_state(out, settings, parts)` add a part.
- `finish(out, settings, parts, ignored)` merges the parts into ``loose_landmark_<split>.csv`` and
  ``loose_bb_<split>.csv``, writes ``manifest.json`` last, removes the parts and state, and returns the
  manifest; `complete_manifest(out, settings)` returns that of a finished output (None if there is none).

Raises `DeepFaceError` when ``out`` holds a run (finished or not) with other settings, naming the
differences, and when the source is not the one the parts were read from.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from deepface.archives import MAX_EXAMPLES, is_image_name, iter_members
from deepface.contracts import other_settings, read_manifest, write_manifest
from deepface.errors import DeepFaceError
from deepface.files import atomic_open, read_json, remove_temporaries, write_json, write_text
from deepface.landmarks import box_file, format_box_rows, format_landmark_rows, landmark_file, name_id
from deepface.lines import excerpt

logger = logging.getLogger(__name__)

STATE_FILE = ".landmarks_state.json"
PARTS_DIR = "parts"
MAX_LISTED = 1000  # names of images without a face / undecodable ones kept in the manifest
DUPLICATE = "duplicate: an earlier image of the source has the same NAME_ID"


# --------------------------------------------------------------------------------------------------
# Reading the source past the complete parts
# --------------------------------------------------------------------------------------------------


class SourceImage(NamedTuple):
    """One image file of the source: its index among the source's images, path, bytes (None: not to
    detect) and why it is not detected (None: detect it)."""

    ordinal: int
    name: str
    data: bytes | None
    error: str | None


@dataclasses.dataclass
class IgnoredFiles:
    """Files of the source that are not images (by name), or must not be read (links, unsafe names)."""

    count: int = 0
    examples: list = dataclasses.field(default_factory=list)

    def add(self, name: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(name)


def read_images(source: Path, parts: list[dict], ignored: IgnoredFiles) -> Iterator[SourceImage]:
    """The source's image files past those the ``parts`` hold, in source order; ignored files are
    counted in ``ignored``. Bytes are read only for images to detect.

    Raises:
        DeepFaceError: the source's images are not those the ``parts`` were made from.
    """
    done = sum(part["images"] for part in parts)
    expected = _part_bounds(parts)
    seen, ordinal = set(), 0
    for member in iter_members(source):
        if member.problem or not is_image_name(member.name):
            ignored.add(member.name)
            continue
        key = name_id(member.name)
        duplicate = key in seen
        seen.add(key)
        if ordinal < done:
            _check_bound(source, expected, ordinal, member.name)
        elif duplicate:
            yield SourceImage(ordinal, member.name, None, DUPLICATE)
        else:
            yield SourceImage(ordinal, member.name, member.read(), None)
        ordinal += 1
    if ordinal < done:
        raise _changed_source(source, f"it holds {ordinal} images, the parts {done}")


def _part_bounds(parts: list[dict]) -> dict[int, str]:
    """Image index -> name of the first and last image of each part."""
    bounds, start = {}, 0
    for part in parts:
        bounds[start], bounds[start + part["images"] - 1] = part["first"], part["last"]
        start += part["images"]
    return bounds


def _check_bound(source: Path, expected: dict[int, str], ordinal: int, name: str) -> None:
    if ordinal in expected and expected[ordinal] != name:
        raise _changed_source(source, f"image {ordinal} is {excerpt(name)}, was {excerpt(expected[ordinal])}")


def _changed_source(source: Path, detail: str) -> DeepFaceError:
    return DeepFaceError(f"{source} is not the source the unfinished run read ({detail}): delete the "
                         f"{STATE_FILE} and {PARTS_DIR}/ of the output directory, or choose another output directory.")

# --------------------------------------------------------------------------------------------------
# Part files and the state that lists them
# --------------------------------------------------------------------------------------------------


def write_part(out: Path, parts: list[dict], entries: list[dict]) -> None:
    """Writes ``entries`` as the next part file (atomically) and appends its record to ``parts`` (the
    caller saves the state)."""
    file = f"part-{len(parts):05d}.json"
    text = json.dumps({"entries": entries}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    write_text(out / PARTS_DIR / file, text)
    parts.append({"file": file, "images": len(entries), "bytes": (out / PARTS_DIR / file).stat().st_size,
                  "first": entries[0]["name"], "last": entries[-1]["name"]})


def load_state(out: Path, settings: dict) -> list[dict]:
    """The complete parts of an unfinished run with these settings; removes temporaries and part files
    the state does not vouch for.

    Raises:
        DeepFaceError: ``out`` holds an unfinished run with other settings.
    """
    parts, state_path = [], out / STATE_FILE
    if state_path.exists():
        state = read_json(state_path)
        if state["settings"] != settings:
            raise other_settings(out, "landmarks run", state["settings"], settings, finished=False)
        for part in state["parts"]:
            path = out / PARTS_DIR / part["file"]
            if not (path.is_file() and path.stat().st_size == part["bytes"]):
                logger.warning("part %s of the unfinished run is missing or damaged: detecting again from it", path)
                break
            parts.append(part)
    remove_temporaries(out)
    if (out / PARTS_DIR).is_dir():
        remove_temporaries(out / PARTS_DIR)
        vouched = {part["file"] for part in parts}
        for leftover in (out / PARTS_DIR).glob("part-*.json"):
            if leftover.name not in vouched:
                leftover.unlink()
    return parts


def save_state(out: Path, settings: dict, parts: list[dict]) -> None:
    write_json(out / STATE_FILE, {"settings": settings, "parts": parts})


def complete_manifest(out: Path, settings: dict) -> dict | None:
    """The manifest of a complete output with these settings, or None when there is none.

    Raises:
        DeepFaceError: ``out`` holds a complete output with other settings.
    """
    manifest = read_manifest(out)
    if manifest is None:
        return None
    if manifest.get("settings") != settings:
        raise other_settings(out, "landmarks run", manifest.get("settings") or {}, settings, finished=True)
    return manifest

# --------------------------------------------------------------------------------------------------
# The final files
# --------------------------------------------------------------------------------------------------


def finish(out: Path, settings: dict, parts: list[dict], ignored: IgnoredFiles) -> dict:
    """Merges the parts into the CSV files, writes the manifest (last), removes the parts and state."""
    tally = _merge_parts(out, settings["split"], parts)
    manifest = {
        "settings": settings,
        "files": {"landmarks": landmark_file(settings["split"]), "boxes": box_file(settings["split"])},
        "images": tally.images,
        "faces_found": tally.faces_found,
        "no_face": {"count": tally.no_face_count, "images": tally.no_face},
        "several_faces": {"count": tally.several_count, "examples": tally.several},
        "undecodable": {"count": tally.undecodable_count, "by_reason": dict(sorted(tally.by_reason.items())),
                        "images": tally.undecodable},
        "duplicates": {"count": tally.duplicate_count, "examples": tally.duplicates},
        "ignored_files": {"count": ignored.count, "examples": ignored.examples},
    }
    write_manifest(out, manifest)  # last: the output is complete
    (out / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
    return manifest


@dataclasses.dataclass
class _Tally:
    """What the manifest counts, gathered while the part files are merged."""

    images: int = 0
    faces_found: int = 0
    no_face: list = dataclasses.field(default_factory=list)
    no_face_count: int = 0
    several: list = dataclasses.field(default_factory=list)
    several_count: int = 0
    undecodable: list = dataclasses.field(default_factory=list)
    undecodable_count: int = 0
    by_reason: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    duplicates: list = dataclasses.field(default_factory=list)
    duplicate_count: int = 0

    def add(self, entry: dict) -> None:
        self.images += 1
        name, error = entry["name"], entry["error"]
        if error == DUPLICATE:
            self.duplicate_count += 1
            _keep(self.duplicates, name, MAX_EXAMPLES)
        elif error is not None:
            self.undecodable_count += 1
            self.by_reason[error.split(":")[0]] += 1
            _keep(self.undecodable, {"file": name, "reason": error}, MAX_LISTED)
        elif entry["points"] is None:
            self.no_face_count += 1
            _keep(self.no_face, name, MAX_LISTED)
        else:
            self.faces_found += 1
        if (entry["faces"] or 0) > 1:
            self.several_count += 1
            _keep(self.several, name, MAX_EXAMPLES)


def _keep(listed: list, value, limit: int) -> None:
    if len(listed) < limit:
        listed.append(value)


def _merge_parts(out: Path, split: str, parts: list[dict]) -> _Tally:
    """Writes the two CSV files from the part files, rows in source order, part by part (atomically).
    Returns the counts for the manifest."""
    tally = _Tally()
    with atomic_open(out / landmark_file(split), "wb") as points_file, \
            atomic_open(out / box_file(split), "wb") as boxes_file:
        for index, part in enumerate(parts):
            entries = read_json(out / PARTS_DIR / part["file"])["entries"]
            for entry in entries:
                tally.add(entry)
            found = [entry for entry in entries if entry["points"] is not None]
            points = format_landmark_rows((name_id(e["name"]), e["points"]) for e in found)
            boxes = format_box_rows((name_id(e["name"]), _xywh(e["box"])) for e in found)
            points_file.write((points if index == 0 else points.split("\n", 1)[1]).encode("utf-8"))
            boxes_file.write((boxes if index == 0 else boxes.split("\n", 1)[1]).encode("utf-8"))
    return tally


def _xywh(box: list[float]) -> tuple[float, float, float, float]:
    """(x1, y1, x2, y2) -> (X, Y, W, H), as the loose_bb CSVs give boxes."""
    return box[0], box[1], box[2] - box[0], box[3] - box[1]
