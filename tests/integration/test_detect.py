"""The landmarks stage (deepface.detect.detect_landmarks): the real MTCNN detector on real photographs.

Synthetic faces (deepface.synth) are not found by the real detector, so the archive is made of
matplotlib's sample photo of Grace Hopper (512 x 600, one face; eyes at about (220, 190) and (308, 186)).
TensorFlow loads once in this process and once in the pool process of the 2-worker run.
"""

from __future__ import annotations

import io
import json
import logging
import os

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_tar
from PIL import Image, ImageOps

from deepface import detect, landmark_parts
from deepface.cli.landmarks import command as landmarks_command
from deepface.errors import DeepFaceError
from deepface.faces import DETECT_SIDE, decode, scale_points, unscale_points
from deepface.landmarks import read_landmarks
from deepface.settings import MIN_FACE

# The face's 5 points in the photo (P1..P5: eye on the image's left, eye on its right, nose tip, mouth
# corners left and right), as MTCNN finds them; the tests allow a few pixels either way.
HOPPER_POINTS = np.array([[220.4, 190.2], [308.2, 186.0], [268.3, 237.4], [231.7, 277.0], [303.6, 272.9]])
HOPPER_SIZE = (512, 600)
TOLERANCE = 4.0  # pixels at the photo's own resolution
BIG = 4  # the enlarged copy: 2048 x 2400, which the detector sees reduced by the JPEG decoder


def _hopper() -> bytes:
    from matplotlib import cbook

    with open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "rb") as handle:
        return handle.read()


def _jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **options)
    return buffer.getvalue()


def _rotated_by_exif(photo: Image.Image) -> bytes:
    """The photo stored sideways with EXIF orientation 6 ("rotate 90 clockwise to display"): upright, it
    is the photo itself."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg(photo.transpose(Image.Transpose.ROTATE_90), exif=exif)


def _two_faces(photo: Image.Image) -> bytes:
    """The photo at the left of a wider grey canvas, a copy at 0.6x on its right: the larger face is meant."""
    canvas = Image.new("RGB", (1100, 600), (128, 128, 128))
    canvas.paste(photo, (0, 0))
    canvas.paste(photo.resize((307, 360), Image.Resampling.BILINEAR), (730, 120))
    return _jpeg(canvas)


def _mirrored(points: np.ndarray, width: int) -> np.ndarray:
    """The points of the mirrored photo: x flipped, the left and right points swapped."""
    flipped = np.column_stack([width - 1 - points[:, 0], points[:, 1]])
    return flipped[[1, 0, 2, 4, 3]]


@pytest.fixture(scope="module")
def photo_archive(tmp_path_factory: pytest.TempPathFactory):
    """A .tar.gz of identity folders holding the photo in several forms, a blank image, a corrupt one,
    a repeated name and a file that is not an image."""
    data = _hopper()
    photo = Image.open(io.BytesIO(data)).convert("RGB")
    assert photo.size == HOPPER_SIZE
    grey = _jpeg(Image.new("RGB", (400, 300), (128, 128, 128)))
    big = _jpeg(photo.resize((512 * BIG, 600 * BIG), Image.Resampling.BICUBIC))
    assert decode(big, scale=min(1.0, DETECT_SIDE / (600 * BIG)))[1] < 1  # detected at a reduced size
    members = [
        ("images/hopper/plain.jpg", data),
        ("images/hopper/mirrored.jpg", _jpeg(ImageOps.mirror(photo))),
        ("images/hopper/rotated.jpg", _rotated_by_exif(photo)),
        ("images/enlarged/big.jpg", big),
        ("images/group/two.jpg", _two_faces(photo)),
        ("images/nobody/grey.jpg", grey),
        ("images/nobody/corrupt.jpg", b"\xff\xd8\xff\xe0 this is not a JPEG"),
        ("images/nobody/README.txt", b"not an image"),
        ("images/hopper/plain.png", grey),  # same NAME_ID as plain.jpg: skipped as a duplicate
    ]
    return write_tar(tmp_path_factory.mktemp("photos") / "photos.tar.gz", members)


@pytest.fixture(scope="module")
def one_worker(photo_archive, tmp_path_factory: pytest.TempPathFactory):
    """The stage's output over ``photo_archive`` with one worker: (out_dir, manifest)."""
    out = tmp_path_factory.mktemp("landmarks1")
    return out, detect.detect_landmarks(photo_archive, out, workers=1, split="test")


def _outputs(out) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


def test_points_in_full_resolution_upright_coordinates(one_worker):
    out, _ = one_worker
    table = read_landmarks(out, split="test")
    assert len(table) == 5
    np.testing.assert_allclose(table.get("images/hopper/plain.jpg"), HOPPER_POINTS, atol=TOLERANCE)
    np.testing.assert_allclose(table.get("hopper/mirrored"), _mirrored(HOPPER_POINTS, HOPPER_SIZE[0]),
                               atol=TOLERANCE)
    # the copy stored sideways: its row is in upright coordinates, those of the plain photo
    np.testing.assert_allclose(table.get("hopper/rotated"), table.get("hopper/plain"), atol=3.0)
    # detected on a reduced decode of 2048 x 2400: mapped back to the full resolution
    big = scale_points(HOPPER_POINTS, BIG)  # the photo's points, 4x larger (pixel centres at integers)
    np.testing.assert_allclose(table.get("enlarged/big"), big, atol=TOLERANCE * BIG)
    # two faces: the larger one, at the left
    np.testing.assert_allclose(table.get("group/two"), HOPPER_POINTS, atol=TOLERANCE)
    assert table.get("nobody/grey") is None and table.get("nobody/corrupt") is None


def test_rows_in_source_order_with_boxes(one_worker):
    out, _ = one_worker
    landmark_rows = (out / "loose_landmark_test.csv").read_text().splitlines()
    box_rows = (out / "loose_bb_test.csv").read_text().splitlines()
    names = ['"hopper/plain"', '"hopper/mirrored"', '"hopper/rotated"', '"enlarged/big"', '"group/two"']
    assert landmark_rows[0] == "NAME_ID,P1X,P1Y,P2X,P2Y,P3X,P3Y,P4X,P4Y,P5X,P5Y"
    assert box_rows[0] == "NAME_ID,X,Y,W,H"
    assert [row.split(",")[0] for row in landmark_rows[1:]] == names
    assert [row.split(",")[0] for row in box_rows[1:]] == names
    boxes = {row.split(",")[0]: [int(v) for v in row.split(",")[1:]] for row in box_rows[1:]}
    for name in ('"hopper/plain"', '"hopper/rotated"', '"group/two"'):
        x, y, w, h = boxes[name]
        # MTCNN's box of this face: about (178, 110) to (351, 330); the eyes lie inside it
        assert abs(x - 178) <= 6 and abs(y - 110) <= 6 and abs(w - 173) <= 8 and abs(h - 220) <= 8, boxes[name]
    x, y, w, h = boxes['"enlarged/big"']
    assert abs(x - 178 * BIG) <= 6 * BIG and abs(w - 173 * BIG) <= 8 * BIG


def test_manifest_counts_and_lists(one_worker, photo_archive):
    out, manifest = one_worker
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["images"] == 8
    assert manifest["faces_found"] == 5
    assert manifest["no_face"] == {"count": 1, "images": ["images/nobody/grey.jpg"]}
    assert manifest["several_faces"] == {"count": 1, "examples": ["images/group/two.jpg"]}
    assert manifest["undecodable"]["count"] == 1
    assert [entry["file"] for entry in manifest["undecodable"]["images"]] == ["images/nobody/corrupt.jpg"]
    assert manifest["undecodable"]["images"][0]["reason"]
    assert manifest["duplicates"] == {"count": 1, "examples": ["images/hopper/plain.png"]}
    assert manifest["ignored_files"] == {"count": 1, "examples": ["images/nobody/README.txt"]}
    settings = manifest["settings"]
    assert settings["source"] == str(photo_archive) and settings["min_face"] == MIN_FACE
    assert settings["detector"] == "mtcnn" and settings["detector_version"]
    assert sorted(path.name for path in out.iterdir()) == ["loose_bb_test.csv", "loose_landmark_test.csv",
                                                           "manifest.json"]


def test_two_workers_give_the_same_bytes(one_worker, photo_archive, tmp_path, monkeypatch):
    """Through the CLI command, tasks of one image so that both processes detect."""
    monkeypatch.setattr(detect, "TASK_IMAGES", 1)
    out = tmp_path / "landmarks2"
    result = CliRunner().invoke(landmarks_command, ["--source", str(photo_archive), "--out", str(out),
                                                 "--workers", "2", "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "5 of 8 images have a face" in result.output
    assert _outputs(out) == _outputs(one_worker[0])


def test_complete_output_returns_at_once(one_worker, photo_archive, monkeypatch):
    out, manifest = one_worker
    before = _outputs(out)
    monkeypatch.setattr(detect, "find_face", _refuse)
    assert detect.detect_landmarks(photo_archive, out, workers=1, split="test") == manifest
    with pytest.raises(DeepFaceError, match=r"other settings \(min_face: 20 -> 40\)"):
        detect.detect_landmarks(photo_archive, out, workers=1, split="test", min_face=40)
    assert _outputs(out) == before


def _refuse(data, detector):
    raise AssertionError("no image should be detected again")


class _Interrupt(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way catches it."""


def test_resume_reuses_parts_and_gives_the_same_bytes(one_worker, photo_archive, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(detect, "PART_IMAGES", 2)
    monkeypatch.setattr(detect, "TASK_IMAGES", 1)
    real_find_face, calls = detect.find_face, []

    def interrupted(data, detector):
        if len(calls) == 5:
            raise _Interrupt()
        calls.append(data)
        return real_find_face(data, detector)

    out = tmp_path / "resumed"
    monkeypatch.setattr(detect, "find_face", interrupted)
    with pytest.raises(_Interrupt):
        detect.detect_landmarks(photo_archive, out, workers=1, split="test")
    parts = sorted((out / landmark_parts.PARTS_DIR).glob("part-*.json"))
    assert [part.name for part in parts] == ["part-00000.json", "part-00001.json"]  # images 0-3 of 8
    assert not (out / "manifest.json").exists()
    (out / landmark_parts.PARTS_DIR / ".part-00002.json.x.tmp").write_text("left by a kill")

    with pytest.raises(DeepFaceError, match=r"unfinished landmarks run with other settings \(min_face: 20 -> 30"):
        detect.detect_landmarks(photo_archive, out, workers=1, split="test", min_face=30)

    calls.clear()

    def counted(data, detector):
        calls.append(data)
        return real_find_face(data, detector)

    monkeypatch.setattr(detect, "find_face", counted)
    with caplog.at_level(logging.INFO, logger="deepface.detect"):
        detect.detect_landmarks(photo_archive, out, workers=1, split="test")
    assert "resuming: 2 complete parts (4 images)" in caplog.text
    assert "img/s" in caplog.text
    assert len(calls) == 3  # images 4-7 but the duplicate: the parts' images are not detected again
    assert _outputs(out) == _outputs(one_worker[0])


def test_changed_source_under_unfinished_run(photo_archive, tmp_path):
    """State naming images the source does not hold at those places: refused, naming the fix."""
    out = tmp_path / "out"
    out.mkdir()
    settings = detect._settings(photo_archive, MIN_FACE, "test")
    (out / landmark_parts.PARTS_DIR).mkdir()
    (out / landmark_parts.PARTS_DIR / "part-00000.json").write_text("{}")
    part = {"file": "part-00000.json", "images": 2, "bytes": 2, "first": "images/x/a.jpg",
            "last": "images/x/b.jpg"}
    (out / landmark_parts.STATE_FILE).write_text(json.dumps({"settings": settings, "parts": [part]}))
    with pytest.raises(DeepFaceError, match=r"not the source the unfinished run read .*image 0 is 'images/hopper/"):
        detect.detect_landmarks(photo_archive, out, workers=1, split="test")


# ------------------------------------------------------------------------------------------ fast tests


def test_unscale_points_inverts_scale_points():
    points = np.array([[0.0, 0.0], [220.4, 190.2], [511.0, 599.0]])
    for factor in (1.0, 0.5, 0.25, 0.125):
        np.testing.assert_allclose(unscale_points(scale_points(points, factor), factor), points)
    np.testing.assert_allclose(unscale_points([[9.5, 4.5]], 0.5), [[19.5, 9.5]])


@pytest.mark.parametrize("options, message", [
    (dict(workers=0), "workers=0"),
    (dict(min_face=0), "min_face=0"),
    (dict(split="a/b"), "split='a/b'"),
])
def test_bad_parameters(photo_archive, tmp_path, options, message):
    with pytest.raises(DeepFaceError, match=message):
        detect.detect_landmarks(photo_archive, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_bad_sources(tmp_path):
    listing = tmp_path / "train_list.txt"
    listing.write_text("n000001/0001_01.jpg\n")
    with pytest.raises(DeepFaceError, match="is an image list"):
        detect.detect_landmarks(listing, tmp_path / "out", workers=1)
    with pytest.raises(DeepFaceError, match="does not exist"):
        detect.detect_landmarks(tmp_path / "missing.tar.gz", tmp_path / "out", workers=1)
    folder = tmp_path / "folder"
    (folder / "n1").mkdir(parents=True)
    (folder / "n1" / "notes.txt").write_text("no images")
    with pytest.raises(DeepFaceError, match="holds no image files"):
        detect.detect_landmarks(folder, tmp_path / "out", workers=1)
    with pytest.raises(DeepFaceError, match="inside the source directory"):
        detect.detect_landmarks(folder, folder / "out", workers=1)


def test_folder_source_without_faces(tmp_path, monkeypatch):
    """A folder of identity folders, read in sorted order; no face found anywhere: empty CSVs (header
    only) and every image listed. The detector is stubbed: this checks the bookkeeping only."""
    folder = tmp_path / "folder"
    for name in ("n2/b.png", "n1/a.jpg", "n1/c.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (100, 100, 100)).save(folder / name)

    class NoFaces:
        min_face = MIN_FACE

        def find(self, image):
            return None, 0

    monkeypatch.setattr(detect, "_detector", NoFaces())
    manifest = detect.detect_landmarks(folder, tmp_path / "out", workers=1)
    assert manifest["no_face"] == {"count": 3, "images": ["n1/a.jpg", "n1/c.jpg", "n2/b.png"]}
    assert (tmp_path / "out" / "loose_landmark_images.csv").read_text() == \
        "NAME_ID,P1X,P1Y,P2X,P2Y,P3X,P3Y,P4X,P4Y,P5X,P5Y\n"
    assert os.listdir(tmp_path / "out") and not (tmp_path / "out" / landmark_parts.STATE_FILE).exists()
