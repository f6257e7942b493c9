"""A real photograph through tfrecords, evaluate and verify as an aligned face, in every EXIF orientation.

matplotlib ships a real photograph (``grace_hopper.jpg``, 512 x 600). It is stored as phones store it:
the pixels turned for each of the 8 EXIF orientations, with the tag saying how to show them (PNG, so the
upright pixels are exactly the photo's). Every stage must find the same face, aligned the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_model
from helpers.corpus import stored_for_orientation
from PIL import Image

from deepface.cli import main
from deepface.data import make_dataset
from deepface.labels import build_labels
from deepface.tfrecords import build_tfrecords

ORIENTATIONS = range(1, 9)
SIZE = 80  # the tiny preset's input


def photo_file(path: Path, orientation: int, upright: np.ndarray, mirrored: bool = False) -> Path:
    pixels = upright[:, ::-1] if mirrored else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(stored_for_orientation(pixels, orientation))).save(
        path, format="PNG", exif=exif.tobytes())
    return path


@pytest.fixture(scope="module")
def upright() -> np.ndarray:
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def photos(upright, tmp_path_factory) -> Path:
    """``lfw/Grace_Hopper/Grace_Hopper_000k.png`` in orientation k, and ``lfw/Mirror/Mirror_000k.png``: the
    mirrored photo (another "person" for mismatched pairs)."""
    root = tmp_path_factory.mktemp("photos")
    for k in ORIENTATIONS:
        photo_file(root / "lfw" / "Grace_Hopper" / f"Grace_Hopper_{k:04d}.png", k, upright)
        photo_file(root / "lfw" / "Mirror" / f"Mirror_{k:04d}.png", k, upright, mirrored=True)
    return root / "lfw"


@pytest.fixture(scope="module")
def model_dir(synth_dir, tmp_path_factory) -> Path:
    """A tiny model trained for two steps on aligned synthetic faces (its metadata: aligned)."""
    root = tiny_model(synth_dir, tmp_path_factory.mktemp("model"), aligned=True)
    assert json.loads((root / "model" / "metadata.json").read_text())["aligned"] is True
    return root / "model"


def test_tfrecords_stores_the_same_aligned_face_for_every_orientation(photos, tmp_path):
    build_labels(photos, tmp_path / "labels")
    manifest = build_tfrecords(photos, tmp_path / "labels", tmp_path / "records", image_size=SIZE, workers=2)
    assert manifest["alignment"] == "detector" and manifest["num_records"] == 16 and manifest["num_skipped"] == 0
    images, labels = next(iter(make_dataset(tmp_path / "records", batch_size=16, image_size=SIZE, training=False)))
    grace = images.numpy()[labels.numpy() == 0]
    assert len(grace) == 8
    for crop in grace[1:]:  # identical JPEGs of identical crops
        np.testing.assert_array_equal(crop, grace[0])
    # The face fills the crop (not a 512 x 600 frame fitted into 80 px): skin-coloured centre, no black bars.
    assert grace[0][:, :4].mean() > 0.15 and grace[0][:, -4:].mean() > 0.15


def test_evaluate_scores_every_orientation_of_the_same_face_as_the_same(photos, model_dir, tmp_path):
    matched = [f"Grace_Hopper\t1\t{k}" for k in range(2, 9)] + [f"Mirror\t1\t{k}" for k in range(2, 9)]
    mismatched = [f"Grace_Hopper\t{k}\tMirror\t{k}" for k in ORIENTATIONS] + ["Grace_Hopper\t2\tMirror\t5"] * 6
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("14\n" + "\n".join(matched + mismatched) + "\n")
    result = CliRunner().invoke(main, ["evaluate", "--model", str(model_dir), "--images", str(photos), "--pairs",
                                       str(pairs), "--out", str(tmp_path / "eval"), "--no-baseline"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["align"] is True and metrics["faces_from"] == "face detector"
    assert metrics["counts"]["images_unusable"] == 0
    rows = (tmp_path / "eval" / "scores.csv").read_text().splitlines()
    header = rows[0].split(",")
    cosine = [float(row.split(",")[header.index("trained_cosine")]) for row in rows[1:15]]
    assert min(cosine) > 0.9999  # every orientation of one face: the same crop, the same embedding


def test_verify_says_same_person_across_orientations(photos, model_dir, upright, tmp_path):
    result = CliRunner().invoke(main, ["verify", "--model", str(model_dir), "--threshold", "0.999",
                                       str(photos / "Grace_Hopper" / "Grace_Hopper_0001.png"),
                                       str(photos / "Grace_Hopper" / "Grace_Hopper_0006.png")])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("same person"), result.output
    value = float(result.output.split()[1])
    assert value > 0.9999

    # The same photo as a JPEG stored sideways (EXIF 6): still the same face.
    sideways = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored_for_orientation(upright, 6))).save(sideways, quality=95,
                                                                                   exif=exif.tobytes())
    from deepface.verify import verify

    upright_png = photos / "Grace_Hopper" / "Grace_Hopper_0001.png"
    turned = verify(model_dir, upright_png, sideways, threshold=0.0)["value"]
    mirrored = verify(model_dir, upright_png, photos / "Mirror" / "Mirror_0001.png", threshold=0.0)["value"]
    print(f"cosine upright vs sideways JPEG {turned:.5f}, vs mirrored photo {mirrored:.5f}")
    # JPEG re-encoding moves the detected landmarks by ~1 px; the sideways copy stays closer to the photo
    # than the photo's own mirror image (which a sideways-ignoring reader would be far from).
    assert turned > mirrored and turned > 0.95
