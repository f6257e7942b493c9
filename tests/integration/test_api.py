"""The Python API (`deepface.load`, `deepface.api.FaceVerifier`) and ``import deepface`` making saved models
loadable by plain Keras, without importing TensorFlow or Keras itself.

A tiny model trained for two steps on aligned synthetic faces (its metadata: aligned) and its evaluation
(flip on, so the API must follow it) are made once; the faces come from a real photograph (matplotlib's
``grace_hopper.jpg``), found and aligned by the detector.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
from conftest import tiny_model
from helpers.corpus import stored_for_orientation
from PIL import Image

import deepface
from deepface import files
from deepface.errors import DeepFaceError

SIZE = 80  # the tiny preset's input
REPO = Path(__file__).resolve().parents[2]



def readme_example() -> str:
    """The Python block of README.md's "Python API" section, run verbatim by test_readme_example (in a folder
    holding out/model, out/eval and the two photos)."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def hopper_path() -> str:
    return matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """``upright``: grace_hopper.jpg; ``sideways``: the same photo stored turned, with EXIF orientation 6."""
    root = tmp_path_factory.mktemp("photos")
    upright = np.asarray(Image.open(hopper_path()).convert("RGB"))
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = root / "hopper_sideways.jpg"
    Image.fromarray(np.ascontiguousarray(stored_for_orientation(upright, 6))).save(sideways, quality=95,
                                                                                   exif=exif.tobytes())
    shutil.copyfile(hopper_path(), root / "hopper.jpg")
    return {"upright": root / "hopper.jpg", "sideways": sideways}


@pytest.fixture(scope="module")
def model_dir(synth_dir, tmp_path_factory) -> Path:
    """A tiny model trained for two steps on aligned synthetic faces (its metadata: aligned)."""
    root = tiny_model(synth_dir, tmp_path_factory.mktemp("model"), aligned=True)
    assert json.loads((root / "model" / "metadata.json").read_text())["aligned"] is True
    return root / "model"


@pytest.fixture(scope="module")
def evaluation_dir(model_dir, synth_dir, tmp_path_factory) -> Path:
    """``deepface evaluate`` of the model on the synthetic LFW, with flip test-time augmentation."""
    from deepface.evaluate import evaluate

    out = tmp_path_factory.mktemp("eval")
    evaluate(model_dir, synth_dir / "lfw.tgz", synth_dir / "pairs.txt", out, baseline=False, flip=True,
             landmarks=synth_dir / "lfw_landmarks.csv")
    assert json.loads((out / "threshold.json").read_text())["flip"] is True
    return out


@pytest.fixture(scope="module")
def verifier(model_dir, evaluation_dir):
    return deepface.load(model_dir, evaluation_dir)


def run_python(code: str, cwd: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-c", code], cwd=cwd or REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


# ------------------------------------------------------------------------------------------ import deepface


def test_import_deepface_imports_neither_tensorflow_nor_keras():
    process = run_python("import deepface, sys; "
                         "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
                         "assert 'deepface.layers' not in sys.modules and 'deepface.api' not in sys.modules; "
                         "assert callable(deepface.load)")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output


LOAD = """
model = keras.saving.load_model({path!r}, compile=False)
assert model.get_layer("L4").__class__.__module__ == "deepface.layers"
assert sum(getattr(finder, "_deepface_import_hook", None) == "keras" for finder in sys.meta_path) <= 1
assert type(keras.__loader__).__name__ == "SourceFileLoader" and keras.__spec__.loader is keras.__loader__
print("loaded", model.output_shape)
"""
ORDERS = {
    "deepface, then keras": "import sys\nimport deepface\nimport keras\n",
    "keras, then deepface": "import sys\nimport keras\nimport deepface\n",
    "deepface, then tensorflow (which loads keras)": "import sys\nimport deepface\nimport tensorflow\nimport keras\n",
}


def test_saved_model_loads_after_import_deepface_in_any_order(model_dir):
    path = str(model_dir / "embedding.keras")
    # In parallel: each interpreter spends most of its time importing TensorFlow.
    processes = {order: run_python(imports + LOAD.format(path=path)) for order, imports in ORDERS.items()}
    for order, process in processes.items():
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0 and "loaded" in output, f"{order}:\n{output}"


def test_keras_needs_the_registration(model_dir):
    """The control of the test above: with the layers unregistered, Keras cannot load the model."""
    import keras

    registered = keras.saving.get_custom_objects()
    names = [name for name in registered if name.startswith("deepface>")]
    assert sorted(names) == ["deepface>FeatureNormalization", "deepface>LocallyConnected2D", "deepface>MomentumSGD"]
    saved = {name: registered.pop(name) for name in names}
    try:
        with pytest.raises(TypeError, match="Could not locate class 'LocallyConnected2D'"):
            keras.saving.load_model(model_dir / "embedding.keras", compile=False)
    finally:
        registered.update(saved)
    keras.saving.load_model(model_dir / "embedding.keras", compile=False)


# ------------------------------------------------------------------------------------------------- the API


def test_embed_gives_one_embedding_for_a_path_bytes_a_pil_image_and_an_array(verifier):
    path = hopper_path()
    pil = Image.open(path)
    pixels = np.asarray(pil.convert("RGB"))
    images = [path, Path(path).read_bytes(), pil, pixels]
    embeddings = verifier.embed(images)
    assert embeddings.dtype == np.float32 and embeddings.shape == (4, verifier.model.output_shape[-1])
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-6)
    for row in embeddings[1:]:
        np.testing.assert_allclose(row, embeddings[0], atol=1e-6)
    crops = [verifier.crop(image) for image in images]
    for crop in crops[1:]:  # the same face, cut the same way
        np.testing.assert_array_equal(crop, crops[0])
    assert crops[0].shape == (SIZE, SIZE, 3) and crops[0].dtype == np.uint8
    # The face fills the crop (aligned, not the 512 x 600 frame fitted into 80 px).
    assert crops[0][:, :4].mean() > 0.15 * 255 and crops[0][:, -4:].mean() > 0.15 * 255
    # One image, or a batch as a 4-D array, and batches smaller than the images.
    np.testing.assert_allclose(verifier.embed(path), embeddings[:1], atol=1e-6)
    np.testing.assert_allclose(verifier.embed(np.stack([pixels, pixels])), embeddings[:2], atol=1e-6)
    small = deepface.load(verifier.model_dir, verifier.evaluation_dir, batch_size=3)
    np.testing.assert_allclose(small.embed(images), embeddings, atol=1e-6)


def test_load_follows_the_model_and_its_evaluation(verifier, model_dir, evaluation_dir):
    saved = json.loads((evaluation_dir / "threshold.json").read_text())
    assert isinstance(verifier, deepface.FaceVerifier)
    assert verifier.align is True and verifier.flip is True and verifier.score == "cosine"
    assert verifier.threshold == saved["thresholds"]["cosine"]["threshold"]
    assert deepface.load(model_dir).threshold is None and deepface.load(model_dir).flip is False
    assert deepface.load(model_dir, evaluation_dir, threshold=0.5, score="l2").threshold == 0.5


@pytest.mark.parametrize("options", [{"evaluation_dir": "eval"}, {"threshold": 0.4, "score": "l2"},
                                     {"evaluation_dir": "eval", "score": "chi2"}], ids=["cosine", "l2", "chi2"])
def test_verify_gives_what_deepface_verify_gives(verifier, model_dir, evaluation_dir, photos, options):
    from deepface.verify import verify

    options = {**options, **({"evaluation_dir": evaluation_dir} if "evaluation_dir" in options else {})}
    expected = verify(model_dir, photos["upright"], photos["sideways"], **options)
    api = deepface.load(model_dir, options.get("evaluation_dir"), threshold=options.get("threshold"),
                        score=options.get("score"))
    result = api.verify(photos["upright"], photos["sideways"])
    assert result["value"] == pytest.approx(expected["value"], abs=1e-6)
    assert {k: v for k, v in result.items() if k != "value"} == {k: v for k, v in expected.items() if k != "value"}
    if expected["score"] == "cosine":
        assert api.similarity(photos["upright"], photos["sideways"]) == pytest.approx(expected["value"], abs=1e-6)
    # The same pair as bytes and as a PIL image: the same value.
    again = api.verify(photos["upright"].read_bytes(), Image.open(photos["sideways"]))
    assert again["value"] == pytest.approx(expected["value"], abs=1e-6)


def test_errors_name_the_problem(verifier, model_dir, evaluation_dir, photos, tmp_path):
    with pytest.raises(DeepFaceError, match="no threshold"):
        deepface.load(model_dir).verify(photos["upright"], photos["upright"])
    assert deepface.load(model_dir).verify(photos["upright"], photos["upright"], threshold=0.9)["same"]

    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank)
    with pytest.raises(DeepFaceError, match=f"{blank}: no face found"):
        verifier.embed([photos["upright"], blank])
    with pytest.raises(DeepFaceError, match=r"array 200x200x3: no face found"):
        verifier.embed(np.full((200, 200, 3), 128, np.uint8))
    centred = deepface.load(model_dir, no_face="center-crop").embed([blank])
    assert centred.shape == (1, verifier.model.output_shape[-1])

    with pytest.raises(DeepFaceError, match="does not exist"):
        verifier.embed([tmp_path / "missing.jpg"])
    with pytest.raises(DeepFaceError, match="cannot be used"):
        verifier.embed([b"not an image"])
    with pytest.raises(DeepFaceError, match="uint8"):
        verifier.embed(np.zeros((80, 80, 3), np.float32))
    with pytest.raises(DeepFaceError, match="cannot read an image from a int"):
        verifier.embed([3])

    other = tmp_path / "other-eval"
    other.mkdir()
    saved = json.loads((evaluation_dir / "threshold.json").read_text())
    files.write_json(other / "threshold.json", {**saved, "model_sha256": "0" * 64})
    with pytest.raises(DeepFaceError, match="another model"):
        deepface.load(model_dir, other)
    with pytest.raises(DeepFaceError, match="unknown score"):
        deepface.load(model_dir, score="cos")
    with pytest.raises(DeepFaceError, match="has no manifest.json: it is not a complete model directory"):
        deepface.load(tmp_path)


def test_readme_example(model_dir, evaluation_dir, photos, tmp_path, monkeypatch, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model").symlink_to(model_dir)
    (tmp_path / "out" / "eval").symlink_to(evaluation_dir)
    for photo in photos.values():
        shutil.copyfile(photo, tmp_path / photo.name)
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md example", "exec"), {"__name__": "__example__"})
    first, second = capsys.readouterr().out.splitlines()
    score, value, same = first.split()
    assert score == "cosine" and same in ("True", "False") and -1 <= float(value) <= 1
    assert second.startswith(f"(2, {deepface.load(model_dir).model.output_shape[-1]}) float32 ")
    assert float(second.split()[-1]) == pytest.approx(float(value), abs=1e-4)

