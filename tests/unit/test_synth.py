"""The synthetic dataset: real VGGFace2 / LFW layouts, determinism, identity signal, errors, CLI."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import itertools
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from deepface import synth
from deepface.cli import main
from deepface.errors import DeepFaceError
from deepface.landmarks import BOX_HEADER, LANDMARK_HEADER, read_landmarks
from deepface.pairs import format_pairs

FILES = ["MD5SUMS", "bb_landmark.tar.gz", "lfw.tgz", "lfw_landmarks.csv", "pairs.txt", "test_list.txt",
         "train_list.txt", "vggface2_test.tar.gz", "vggface2_train.tar.gz"]
VGGFACE2_FILE = re.compile(r"^(train|test)/(n\d{6})/(\d{4}_\d{2}\.jpg)$")
VGGFACE2_DIR = re.compile(r"^(train|test)(/n\d{6})?$")
LFW_FILE = re.compile(r"^lfw/([A-Z][a-z]+_[A-Z][a-z]+)/\1_(\d{4})\.jpg$")
LFW_DIR = re.compile(r"^lfw(/[A-Z][a-z]+_[A-Z][a-z]+)?$")
# One row of a bb_landmark CSV as the release writes it: a quoted name, then numbers without quotes.
LANDMARK_ROW = re.compile(r'^"[^",]+/[^",]+"(,-?\d+(\.\d+)?){10}$')
QUOTE = '"'
BOX_ROW = re.compile(r'^"n\d{6}/\d{4}_\d{2}"(,\d+){4}$')
# A dataset small enough to make several times in one test.
TINY = dict(train_identities=2, test_identities=2, lfw_identities=8, images_per_identity=5,
            image_size=48, lfw_image_size=64, workers=1)


def read_archive(path: Path) -> tuple[list[str], dict[str, bytes]]:
    """(every member name in archive order, {file name: bytes})."""
    names, files = [], {}
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            names.append(member.name)
            if member.isfile():
                files[member.name] = archive.extractfile(member).read()
    return names, files


def split_pairs(text: str) -> tuple[int, int, list[list[list[str]]]]:
    """(folds, pairs per fold, [fold][line] -> fields) of View 2 pairs.txt text, checking the line counts."""
    lines = text.splitlines()
    folds, per_fold = map(int, lines[0].split("\t"))
    body = [line.split("\t") for line in lines[1:]]
    assert len(body) == folds * 2 * per_fold
    return folds, per_fold, [body[f * 2 * per_fold:(f + 1) * 2 * per_fold] for f in range(folds)]


def check_pairs(text: str, counts: dict[str, int], *, disjoint: bool) -> int:
    """Check View 2 pairs.txt ``text`` against the LFW people ``counts`` ({name: images}); return the pairs
    per fold.

    Every fold holds its n matched lines, then its n mismatched lines, each run sorted (names, then numbers);
    every number names an image of its person (a matched pair two distinct ones, ascending); no pair repeats
    in the file; with ``disjoint``, no person is in two folds.
    """
    folds, per_fold, blocks = split_pairs(text)
    assert folds == synth.LFW_FOLDS and 1 <= per_fold <= synth.MAX_PAIRS_PER_FOLD
    seen, people = set(), []
    for lines in blocks:
        matched, mismatched = lines[:per_fold], lines[per_fold:]
        for run in (matched, mismatched):
            keys = [[int(field) if field.isdigit() else field for field in fields] for fields in run]
            assert keys == sorted(keys)
        assert all(len(fields) == 3 for fields in matched) and all(len(fields) == 4 for fields in mismatched)
        for name, n1, n2 in matched:
            assert 1 <= int(n1) < int(n2) <= counts[name]
        for name1, n1, name2, n2 in mismatched:
            assert name1 != name2
            assert 1 <= int(n1) <= counts[name1] and 1 <= int(n2) <= counts[name2]
        seen.update(map(tuple, lines))
        people.append({fields[0] for fields in lines} | {fields[2] for fields in mismatched})
    assert len(seen) == folds * 2 * per_fold  # no pair repeats, within or across folds
    if disjoint:
        assert all(not a & b for a, b in itertools.combinations(people, 2))
    return per_fold


def lfw_pairs_text(counts: dict[str, int], seed: int = 0) -> tuple[str, bool]:
    """(pairs.txt text, whether the folds are disjoint) that synth writes for the LFW people ``counts``."""
    pairs, disjoint = synth.make_lfw_pairs(counts, seed=seed)
    return format_pairs(pairs), disjoint


def files_bytes(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def lfw(synth_dir: Path) -> dict[str, int]:
    """Images per person in the fixture's lfw.tgz."""
    _, files = read_archive(synth_dir / "lfw.tgz")
    return collections.Counter(LFW_FILE.match(name).group(1) for name in files)


def test_output_files(synth_dir):
    assert sorted(path.name for path in synth_dir.iterdir()) == FILES  # nothing else, no temporary files


@pytest.mark.parametrize("split", ["train", "test"])
def test_vggface2_archive_matches_layout_and_list(synth_dir, split, synth_params):
    names, files = read_archive(synth_dir / f"vggface2_{split}.tar.gz")
    assert names == sorted(names)  # directories come before their files, everything in sorted order
    assert all(VGGFACE2_FILE.match(name) for name in files), [n for n in files if not VGGFACE2_FILE.match(n)]
    assert all(VGGFACE2_DIR.match(name) for name in set(names) - set(files))
    assert {name.split("/")[0] for name in files} == {split}
    identities = collections.Counter(name.split("/")[1] for name in files)
    expected = synth_params[f"{split}_identities"]
    assert len(identities) == expected
    assert set(identities.values()) == {synth_params["images_per_identity"]}
    listed = (synth_dir / f"{split}_list.txt").read_text().splitlines()
    assert listed == sorted(listed)
    assert listed == sorted(name.split("/", 1)[1] for name in files)


def test_lfw_archive_layout(synth_dir, lfw, synth_params):
    names, files = read_archive(synth_dir / "lfw.tgz")
    assert names == sorted(names)
    assert all(LFW_DIR.match(name) for name in set(names) - set(files))
    assert len(lfw) == synth_params["lfw_identities"]
    for person, count in lfw.items():  # numbered 1..count without gaps
        numbers = sorted(int(LFW_FILE.match(name).group(2)) for name in files if name.startswith(f"lfw/{person}/"))
        assert numbers == list(range(1, count + 1))
    assert max(lfw.values()) <= synth_params["images_per_identity"]
    assert sum(count >= 2 for count in lfw.values()) > len(lfw) / 2
    assert len(set(lfw.values())) > 1  # varied, as in LFW


def test_pairs_follow_view2_format(synth_dir, lfw):
    # 12 people cannot fill 10 disjoint folds: the fixture's folds share people.
    assert check_pairs((synth_dir / "pairs.txt").read_text(), lfw, disjoint=False) >= 1


def test_written_pairs_have_disjoint_folds_when_people_allow(tmp_path):
    summary = synth.make_synthetic_dataset(tmp_path, **{**TINY, "lfw_identities": 30})
    _, files = read_archive(tmp_path / "lfw.tgz")
    counts = collections.Counter(LFW_FILE.match(name).group(1) for name in files)
    per_fold = check_pairs((tmp_path / "pairs.txt").read_text(), counts, disjoint=True)
    assert summary["lfw_pairs"] == {"folds": 10, "pairs_per_fold": per_fold, "disjoint_folds": True}


def test_pairs_folds_are_identity_disjoint_when_people_allow():
    counts = {f"Person_{chr(65 + i // 26)}{chr(97 + i % 26)}": 2 + i % 5 for i in range(40)}
    text, disjoint = lfw_pairs_text(counts)
    assert disjoint
    check_pairs(text, counts, disjoint=True)
    # As many as the poorest fold allows: all the matched (or all the mismatched) pairs of its people are used.
    _, _, blocks = split_pairs(text)
    exhausted = []
    for lines in blocks:
        people = {fields[0] for fields in lines} | {fields[2] for fields in lines if len(fields) == 4}
        every_matched = {(name, str(i), str(j)) for name in people
                         for i, j in itertools.combinations(range(1, counts[name] + 1), 2)}
        every_mismatched = {(a, str(i), b, str(j)) for a, b in itertools.combinations(sorted(people), 2)
                            for i in range(1, counts[a] + 1) for j in range(1, counts[b] + 1)}
        drawn = set(map(tuple, lines))
        exhausted.append(every_matched <= drawn or every_mismatched <= drawn)
    assert any(exhausted)
    assert lfw_pairs_text(counts, seed=0) == (text, disjoint)
    assert lfw_pairs_text(counts, seed=1) != (text, disjoint)


def test_pairs_for_a_real_lfw_sized_set_are_quick():
    """5,749 people (the size of LFW): folds of disjoint people, the real 300 pairs each."""
    counts = synth.lfw_image_counts(0, synth.lfw_names(0, 5749), 24)
    text, disjoint = lfw_pairs_text(counts)
    assert disjoint and text.startswith("10\t300\n")
    assert check_pairs(text, counts, disjoint=True) == 300


def test_pairs_folds_are_balanced_for_the_pipeline_default():
    """24 people (the pipeline's default) fill 10 disjoint folds with many pairs each, not a starved few."""
    counts = synth.lfw_image_counts(0, synth.lfw_names(0, 24), 24)
    text, disjoint = lfw_pairs_text(counts)
    assert disjoint and check_pairs(text, counts, disjoint=True) >= 50


def test_pairs_capped_at_the_real_300_per_fold():
    counts = {f"Person_{chr(65 + i // 26)}{chr(97 + i % 26)}": 30 for i in range(100)}
    text, disjoint = lfw_pairs_text(counts)
    assert disjoint and check_pairs(text, counts, disjoint=True) == synth.MAX_PAIRS_PER_FOLD
    assert text.splitlines()[0] == "10\t300" and len(text.splitlines()) == 1 + 10 * 600


def test_pairs_with_too_few_people_share_them_across_folds():
    counts = {"Ann_Lee": 6, "Bob_Ray": 5, "Cy_Day": 1}
    text, disjoint = lfw_pairs_text(counts)
    assert not disjoint
    per_fold = check_pairs(text, counts, disjoint=False)
    _, _, blocks = split_pairs(text)
    assert all(fields[0] != "Cy_Day" for lines in blocks for fields in lines[:per_fold])


def test_too_few_images_for_pairs_is_a_user_error():
    with pytest.raises(DeepFaceError, match="lfw_identities"):
        synth.make_lfw_pairs({"Ann_Lee": 2, "Bob_Ray": 2, "Cy_Day": 1}, seed=0)


def test_identities_are_disjoint_across_splits(synth_dir, lfw):
    train = {line.split("/")[0] for line in (synth_dir / "train_list.txt").read_text().splitlines()}
    test = {line.split("/")[0] for line in (synth_dir / "test_list.txt").read_text().splitlines()}
    assert not train & test and not (train | test) & set(lfw)
    # The faces differ too: no identity's parameters repeat across splits.
    faces = [synth.draw_identity(synth.jobs._identity_rng(0, split, i))
             for split in ("train", "test", "lfw") for i in range(8)]
    assert len(set(faces)) == len(faces)


def test_images_decode_at_the_stated_sizes(synth_dir, synth_params):
    _, files = read_archive(synth_dir / "vggface2_train.tar.gz")
    sizes = []
    for data in files.values():
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            image.load()
            sizes.append(image.size)
    size = synth_params["image_size"]
    assert all(0.8 * size - 1 <= w <= 1.2 * size + 1 and w < h <= 1.2 * w + 2 for w, h in sizes)
    assert len(set(sizes)) > len(sizes) / 4  # loosely cropped photos of varied sizes
    _, files = read_archive(synth_dir / "lfw.tgz")
    for data in files.values():
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert image.size == (synth_params["lfw_image_size"],) * 2 and image.mode == "RGB"


def test_md5sums_are_correct(synth_dir):
    lines = (synth_dir / "MD5SUMS").read_text().splitlines()
    entries = dict(reversed(line.split("  ", 1)) for line in lines)
    assert sorted(entries) == sorted(set(FILES) - {"MD5SUMS"})
    for name, md5 in entries.items():
        assert hashlib.md5((synth_dir / name).read_bytes()).hexdigest() == md5


def aligned(image: Image.Image, points: np.ndarray, size: int = 24) -> Image.Image:
    """``image`` warped by the similarity that puts the eyes' midpoint at (0.5, 0.35) x size and the
    mouth's at (0.5, 0.75) x size (pixel-centre coordinates), as face alignment would."""
    eyes, mouth = points[:2].mean(0), points[3:].mean(0)
    z = complex(*(mouth - eyes)) / complex(0, 0.4 * size)  # template -> image: rotation and scale
    a, b = z.real, z.imag
    cx, cy = eyes - np.array([a * 0.5 * size - b * 0.35 * size, b * 0.5 * size + a * 0.35 * size])
    # Pillow's AFFINE maps output to input in pixel-edge coordinates (pixel centres at +0.5).
    coefficients = (a, -b, cx + 0.5 - 0.5 * (a - b), b, a, cy + 0.5 - 0.5 * (a + b))
    return image.transform((size, size), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)


def test_same_identity_images_are_closer_than_different_identities(synth_dir):
    """Identity signal exists in the pixels of the faces (aligned by their landmarks, as the pipeline
    does: the loose crops move and scale the face): mean distance within an identity < across identities."""
    _, files = read_archive(synth_dir / "vggface2_train.tar.gz")
    table = read_landmarks(synth_dir / "bb_landmark.tar.gz", split="train")
    by_identity = collections.defaultdict(list)
    for name, data in files.items():
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(aligned(image.convert("RGB"), table.get(name)), np.float32)
        by_identity[name.split("/")[1]].append(pixels.ravel() / 255)
    groups = list(by_identity.values())
    same = [np.abs(a - b).mean() for group in groups for a, b in itertools.combinations(group, 2)]
    different = [np.abs(a - b).mean() for g1, g2 in itertools.combinations(groups, 2) for a in g1 for b in g2]
    assert np.mean(same) < 0.93 * np.mean(different)


def image_sizes(archive: Path) -> dict[str, tuple[int, int]]:
    """{member name: (width, height)} of every image of ``archive``."""
    _, files = read_archive(archive)
    sizes = {}
    for name, data in files.items():
        with Image.open(io.BytesIO(data)) as image:
            sizes[name] = image.size
    return sizes


def landmark_sources(synth_dir: Path) -> dict[str, tuple]:
    """{split: (LandmarkTable, {member name: (width, height)})} of the three archives."""
    return {
        "train": (read_landmarks(synth_dir / "bb_landmark.tar.gz", split="train"),
                  image_sizes(synth_dir / "vggface2_train.tar.gz")),
        "test": (read_landmarks(synth_dir / "bb_landmark.tar.gz", split="test"),
                 image_sizes(synth_dir / "vggface2_test.tar.gz")),
        "lfw": (read_landmarks(synth_dir / "lfw_landmarks.csv"), image_sizes(synth_dir / "lfw.tgz")),
    }


def test_bb_landmark_archive_is_laid_out_as_the_release(synth_dir):
    names, files = read_archive(synth_dir / "bb_landmark.tar.gz")
    assert names == ["bb_landmark", "bb_landmark/loose_bb_test.csv", "bb_landmark/loose_bb_train.csv",
                     "bb_landmark/loose_landmark_test.csv", "bb_landmark/loose_landmark_train.csv"]
    for split in ("train", "test"):
        listed = [line.rsplit(".", 1)[0] for line in (synth_dir / f"{split}_list.txt").read_text().splitlines()]
        for kind, header, row in (("landmark", LANDMARK_HEADER, LANDMARK_ROW), ("bb", BOX_HEADER, BOX_ROW)):
            lines = files[f"bb_landmark/loose_{kind}_{split}.csv"].decode().splitlines()
            assert lines[0] == ",".join(header)
            assert all(row.match(line) for line in lines[1:]), [line for line in lines[1:] if not row.match(line)][:3]
            assert [line.split(",", 1)[0].strip('"') for line in lines[1:]] == listed  # one row per image, list order


def test_lfw_landmarks_have_one_row_per_image_in_archive_order(synth_dir):
    _, files = read_archive(synth_dir / "lfw.tgz")
    lines = (synth_dir / "lfw_landmarks.csv").read_text().splitlines()
    assert lines[0] == ",".join(LANDMARK_HEADER)
    assert all(LANDMARK_ROW.match(line) for line in lines[1:])
    expected = sorted(name[len("lfw/"):-len(".jpg")] for name in files)  # "First_Last/First_Last_0001"
    assert [line.split(",", 1)[0].strip('"') for line in lines[1:]] == expected


@pytest.mark.parametrize("split", ["train", "test", "lfw"])
def test_landmarks_parse_and_are_plausible(synth_dir, split):
    """Every image has its row; eyes left to right above the nose above the mouth, all inside the image
    and inside the face box."""
    table, sizes = landmark_sources(synth_dir)[split]
    assert len(table) == len(sizes)
    assert table.names() == {"/".join(name.rsplit(".", 1)[0].split("/")[-2:]) for name in sizes}
    boxes = {}
    if split != "lfw":
        _, files = read_archive(synth_dir / "bb_landmark.tar.gz")
        rows = files[f"bb_landmark/loose_bb_{split}.csv"].decode().splitlines()[1:]
        boxes = {row.split(",")[0].strip('"'): tuple(map(int, row.split(",")[1:])) for row in rows}
    for name, (width, height) in sizes.items():
        points = table.get(name)
        (x1, y1), (x2, y2), (x3, y3), (x4, y4), (x5, y5) = points
        assert x1 < x2 and x4 < x5, name
        assert max(y1, y2) < y3 < min(y4, y5), name
        assert np.all(points >= 0) and np.all(points <= [width - 1, height - 1]), name
        if boxes:
            x, y, w, h = boxes[name.split("/", 1)[1].rsplit(".", 1)[0]]
            assert x >= 0 and y >= 0 and x + w <= width and y + h <= height, name
            assert np.all(points >= [x - 0.5, y - 0.5]) and np.all(points <= [x + w - 0.5, y + h - 0.5]), name


def test_vggface2_faces_are_loose_crops_of_varied_position_and_scale(synth_dir):
    """Face boxes (forehead to chin) take ~30-55% of the shorter side, their centres spread around the
    frame centre: alignment has real work to do."""
    _, files = read_archive(synth_dir / "bb_landmark.tar.gz")
    sizes = image_sizes(synth_dir / "vggface2_train.tar.gz")
    rows = [row.split(",") for row in files["bb_landmark/loose_bb_train.csv"].decode().splitlines()[1:]]
    fractions, offsets = [], []
    for quoted_name, *box in rows:
        x, y, w, h = map(int, box)
        width, height = sizes[f"train/{quoted_name.strip(QUOTE)}.jpg"]
        fractions.append(h / min(width, height))
        offsets.append(((x + w / 2) / width - 0.5, (y + h / 2) / height - 0.5))
    fractions, offsets = np.array(fractions), np.array(offsets)
    assert 0.25 < fractions.min() < 0.38 and 0.48 < fractions.max() < 0.65
    assert np.all(offsets.std(0) > 0.05) and np.abs(offsets).max() > 0.1
    table = read_landmarks(synth_dir / "bb_landmark.tar.gz", split="train")
    eye_distances = [np.hypot(*np.subtract(*table.get(name)[:2])) / min(size) for name, size in sizes.items()]
    assert max(eye_distances) > 1.5 * min(eye_distances)


def test_lfw_faces_are_centred_and_about_45_percent_of_a_250_frame():
    """LFW's geometry at its real size: face width (eye distance / the mean eye separation) ~ 45% of 250."""
    jobs = synth.plan_identity_jobs(train_identities=1, test_identities=1, lfw_identities=8, images_per_identity=5,
                                    image_size=64, lfw_image_size=250, seed=0)["lfw"]
    photos = [photo for job in jobs for photo in synth.render_identity(job)]
    widths = [np.hypot(*np.subtract(*photo.landmarks[:2])) / np.mean(synth.EYE_SEPARATION) / 250 for photo in photos]
    assert 0.40 < np.median(widths) < 0.50
    centres = np.array([(x + w / 2, y + h / 2) for x, y, w, h in (photo.box for photo in photos)]) / 250
    assert np.all(np.abs(centres - 0.5) < 0.08)
    for photo in photos:
        with Image.open(io.BytesIO(photo.data)) as image:
            assert image.size == (250, 250)


def part_pixels(face, rng_seed, width: int, height: int, framing, change) -> tuple[synth.Photo, np.ndarray]:
    """(the photo of ``face``, mask of the pixels that differ from the same photo — same random state —
    drawn with ``change`` applied: a changed face, or a callable run while drawing the second photo)."""
    photo = synth.render_photo(face, np.random.default_rng(rng_seed), width, height, framing)
    with pytest.MonkeyPatch.context() as patch:
        if callable(change):
            change(patch)
        else:
            face = change
        other = synth.render_photo(face, np.random.default_rng(rng_seed), width, height, framing)
    difference = np.abs(np.asarray(photo.image, np.int16) - np.asarray(other.image, np.int16)).sum(2)
    return photo, difference > 40  # the rest moves by a level or two (the light depends on the mean)


@pytest.mark.parametrize("width, height, framing", [(72, 84, synth.VGGFACE2_FRAMING),  # drawn 2x and reduced
                                                     (250, 250, synth.LFW_FRAMING)])  # drawn at size
def test_landmarks_fall_on_the_drawn_eyes_nose_and_mouth(monkeypatch, width, height, framing):
    """Checked against pixels, not against the generator's own geometry: each part is found as the
    pixels that change when only that part changes (iris colour; mouth or nose left out), the rest of
    the photo drawn from the same random state. Gaze is held straight so that the iris centre is the
    eye centre, and the lid line is left out so that it does not hide the top of the iris."""
    expression = synth.photo.draw_expression
    monkeypatch.setattr(synth.photo, "draw_expression", lambda rng, head: dataclasses.replace(
        expression(rng, head), gaze=np.zeros(2), eye_open=1.0))
    monkeypatch.setattr(synth.drawing.Pen, "arc", lambda *args, **kwargs: None)
    leave_out = {part: (lambda patch, part=part: patch.setattr(synth.drawing, part, lambda *args: None))
                 for part in ("_draw_mouth", "_draw_nose")}
    ys, xs = np.mgrid[:height, :width]
    eye_errors, mouth_offsets, nose_offsets = [], [], []  # pixels; eye distances; eye distances
    for i in range(16):
        face = dataclasses.replace(synth.draw_identity(np.random.default_rng([5, i])), glasses="",
                                   facial_hair="none", lip_colour=(20, 90, 255), nose_style=1, iris=(0, 255, 0))
        photo, iris = part_pixels(face, [6, i], width, height, framing, dataclasses.replace(face, iris=(255, 0, 255)))
        points = photo.landmarks
        eye_distance = np.hypot(*(points[1] - points[0]))
        for eye in points[:2]:
            mask = iris & (np.hypot(xs - eye[0], ys - eye[1]) < eye_distance / 2)
            eye_errors.append((xs[mask].mean() - eye[0], ys[mask].mean() - eye[1]))
            assert np.hypot(*eye_errors[-1]) < 0.06 * eye_distance + 1.25, (i, eye_errors[-1])
        across = (points[4] - points[3]) / np.hypot(*(points[4] - points[3]))  # along the mouth, left to right
        down = np.array([-across[1], across[0]])
        _, mouth = part_pixels(face, [6, i], width, height, framing, leave_out["_draw_mouth"])
        along, below = (np.stack([xs[mouth], ys[mouth]], 1) @ np.stack([across, down], 1)).T
        tolerance = 0.12 * eye_distance + 1  # the mouth line's width and the blur
        assert abs(along.min() - points[3] @ across) < tolerance and abs(along.max() - points[4] @ across) < tolerance
        for corner in points[3:]:  # the lips at the corner are level with it
            beside = np.abs(along - corner @ across) < 0.1 * eye_distance + 1
            mouth_offsets.append((below[beside].mean() - corner @ down) / eye_distance)
            assert abs(mouth_offsets[-1]) * eye_distance < 0.08 * eye_distance + 0.75, (i, corner)
        _, nose = part_pixels(face, [6, i], width, height, framing, leave_out["_draw_nose"])
        if nose.any():  # a dark skin's nose shade may stay under the threshold
            nose_points = np.stack([xs[nose], ys[nose]], 1)
            lowest = (nose_points @ down).max() - points[2] @ down  # the nostrils reach a little below the tip
            assert -0.05 * eye_distance - 0.5 < lowest < 0.1 * eye_distance + 1, (i, lowest)
            nose_offsets.append(lowest / eye_distance)
            assert abs((nose_points @ across).mean() - points[2] @ across) < tolerance
    # No systematic offset (half a pixel, the 2x drawing's quarter pixel): unbiased to a tenth of a pixel.
    assert np.all(np.abs(np.mean(eye_errors, 0)) < 0.15), np.mean(eye_errors, 0)
    # On average the lips beside a corner sit a little below it (they bulge more below the line than
    # above), and the nostrils end a little below the tip: a corner that ignores the smile, or a tip
    # drawn higher up the nose, leaves these ranges.
    assert 0 < np.mean(mouth_offsets) < 0.06 and 0 < np.mean(nose_offsets) < 0.09
    assert len(nose_offsets) >= 12


def test_same_arguments_give_the_same_bytes_whatever_the_workers(synth_dir, tmp_path, synth_params):
    synth.make_synthetic_dataset(tmp_path, **{**synth_params, "workers": 2})
    assert files_bytes(tmp_path) == files_bytes(synth_dir)


def test_a_different_seed_gives_different_data(tmp_path):
    first = synth.make_synthetic_dataset(tmp_path / "a", seed=0, **TINY)
    second = synth.make_synthetic_dataset(tmp_path / "b", seed=1, **TINY)
    assert all(first["md5"][name] != second["md5"][name] for name in first["md5"])
    _, images_a = read_archive(tmp_path / "a" / "lfw.tgz")
    _, images_b = read_archive(tmp_path / "b" / "lfw.tgz")
    assert not set(images_a.values()) & set(images_b.values())


def test_archives_are_reproducible_tarballs(synth_dir):
    with tarfile.open(synth_dir / "vggface2_test.tar.gz", "r:gz") as archive:
        members = archive.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    header = (synth_dir / "vggface2_test.tar.gz").read_bytes()[:10]
    assert header[:3] == b"\x1f\x8b\x08" and header[4:8] == b"\0\0\0\0"  # gzip, no file name, mtime 0


@pytest.mark.parametrize("override, parameter", [
    (dict(train_identities=0), "train_identities"),
    (dict(test_identities=0), "test_identities"),
    (dict(lfw_identities=1), "lfw_identities"),
    (dict(images_per_identity=1), "images_per_identity"),
    (dict(image_size=8), "image_size"),
    (dict(lfw_image_size=4096), "lfw_image_size"),
    (dict(train_identities=2.5), "train_identities"),
    (dict(seed=-1), "seed"),
    (dict(workers=0), "workers"),
    (dict(lfw_identities=3, images_per_identity=2), "lfw_identities"),  # too few images for 10 folds of pairs
])
def test_bad_parameters_are_user_errors(tmp_path, override, parameter):
    with pytest.raises(DeepFaceError, match=parameter):
        synth.make_synthetic_dataset(tmp_path / "out", **{**TINY, **override})
    assert not (tmp_path / "out").exists()  # refused before writing anything


def test_output_must_be_a_local_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DeepFaceError, match="is a file"):
        synth.make_synthetic_dataset(tmp_path / "file", **TINY)
    with pytest.raises(DeepFaceError, match="local directory"):
        synth.make_synthetic_dataset("gs://bucket/synth", **TINY)


def test_an_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    synth.make_synthetic_dataset(tmp_path, **TINY)
    before = files_bytes(tmp_path)
    calls = itertools.count()

    def failing_encode(image, quality):  # the disk fills up while writing the test archive
        if next(calls) == 10:
            raise OSError("No space left on device")
        return encode_jpeg(image, quality)

    encode_jpeg = synth.encode_jpeg
    monkeypatch.setattr(synth.jobs, "encode_jpeg", failing_encode)
    with pytest.raises(OSError):
        synth.make_synthetic_dataset(tmp_path, **{**TINY, "seed": 1})
    after = files_bytes(tmp_path)
    assert "MD5SUMS" not in after  # the old marker is gone: the directory no longer claims to be complete
    assert sorted(after) == sorted(set(before) - {"MD5SUMS"})  # no temporary files left behind
    assert after["vggface2_test.tar.gz"] == before["vggface2_test.tar.gz"]  # never half-overwritten


def test_cli_writes_the_dataset(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, [
        "synth", "--out", str(out), "--train-identities", "2", "--test-identities", "2", "--lfw-identities", "8",
        "--images-per-identity", "5", "--image-size", "48", "--lfw-image-size", "64", "--seed", "0",
        "--workers", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["splits"]["train"] == {"identities": 2, "images": 10}
    assert summary["md5"] == synth.make_synthetic_dataset(tmp_path / "api", seed=0, **TINY)["md5"]
    assert sorted(path.name for path in out.iterdir()) == FILES


def test_cli_reports_bad_parameters_without_traceback(tmp_path):
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "x"), "--train-identities", "0"])
    assert result.exit_code == 2  # a bad option value is a usage error, reported as its flag
    assert "'--train-identities'" in result.output and "Traceback" not in result.output
