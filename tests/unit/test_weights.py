"""Importing the seed's tf.keras HDF5 weights: the seed's own model (built with tf_keras, as the seed did)
saves random weights, the importer reads them with h5py into the Keras 3 model, and both models must
compute the same outputs."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import tf_keras
from click.testing import CliRunner

from deepface.cli import main
from deepface.errors import DeepFaceError
from deepface.files import md5_file
from deepface.model import PRESETS, load_embedding_model
from deepface.weights import _read_string_list, import_seed_weights, read_seed_weights

PRESET = "tiny"
NUM_CLASSES = 7


def build_seed_model(config, num_classes: int, *, seed: int = 0, l4_filters: int | None = None):
    """The seed's tf.keras Sequential (swghosh/DeepFace) with a preset's sizes.

    Kernels are drawn N(0, 0.1) and biases N(0.05, 0.05), so no weight keeps its default value
    (the seed's biases are all 0.5) and ReLUs stay mostly alive.
    """
    layers = tf_keras.layers

    def init(offset: int) -> dict:
        return dict(kernel_initializer=tf_keras.initializers.RandomNormal(0.0, 0.1, seed=seed + offset),
                    bias_initializer=tf_keras.initializers.RandomNormal(0.05, 0.05, seed=seed + 100 + offset))

    s = config.image_size
    return tf_keras.Sequential([
        layers.Conv2D(config.c1_filters, 11, activation="relu", name="C1", input_shape=(s, s, 3), **init(1)),
        layers.MaxPooling2D(3, strides=2, padding="same", name="M2"),
        layers.Conv2D(config.c3_filters, 9, activation="relu", name="C3", **init(2)),
        layers.LocallyConnected2D(l4_filters or config.l4_filters, 9, activation="relu", name="L4",
                                  implementation=1, **init(3)),
        layers.LocallyConnected2D(config.l5_filters, 7, strides=2, activation="relu", name="L5",
                                  implementation=1, **init(4)),
        layers.LocallyConnected2D(config.l6_filters, 5, activation="relu", name="L6", implementation=1, **init(5)),
        layers.Flatten(name="F0"),
        layers.Dense(config.f7_units, activation="relu", name="F7", **init(6)),
        layers.Dropout(0.5, name="D0"),
        layers.Dense(num_classes, activation="softmax", name="F8", **init(7)),
    ], name="DeepFace")


def f7_of(model, images: np.ndarray) -> np.ndarray:
    """F7 activations of a tf_keras or Keras 3 DeepFace model (both name the layer F7)."""
    import keras

    extractor_class = tf_keras.Model if isinstance(model, tf_keras.Model) else keras.Model
    extractor = extractor_class(model.input, model.get_layer("F7").output)
    return np.asarray(extractor(images, training=False))


@pytest.fixture(scope="module")
def seed_model():
    return build_seed_model(PRESETS[PRESET], NUM_CLASSES)


@pytest.fixture(scope="module")
def seed_h5(seed_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("seed") / "seed_weights.h5"
    seed_model.save_weights(str(path))  # the seed's format: tf.keras HDF5 weights
    return path


@pytest.fixture(scope="module")
def images():
    size = PRESETS[PRESET].image_size
    return np.random.default_rng(0).uniform(0, 1, (4, size, size, 3)).astype("float32")


def test_imported_model_computes_the_seed_outputs(seed_model, seed_h5, images, tmp_path):
    out = import_seed_weights(seed_h5, tmp_path / "model", preset=PRESET)

    import keras

    classifier = keras.saving.load_model(out / "classifier.keras", compile=False)
    seed_features, features = f7_of(seed_model, images), f7_of(classifier, images)
    assert (seed_features > 0).mean() > 0.2, "test weights must keep most F7 units alive"
    assert np.ptp(seed_features, axis=0).max() > 0.1, "F7 must differ between the random images"
    assert np.abs(features - seed_features).max() <= 1e-4 * max(1.0, np.abs(seed_features).max())
    probabilities = np.asarray(classifier(images, training=False))
    assert np.abs(probabilities - seed_model(images, training=False).numpy()).max() <= 1e-4
    assert probabilities.shape == (len(images), NUM_CLASSES)


def test_model_directory_has_metadata_and_loads(seed_h5, images, tmp_path):
    out = import_seed_weights(seed_h5, tmp_path / "model", preset=PRESET)

    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["preset"] == PRESET
    assert metadata["image_size"] == PRESETS[PRESET].image_size
    assert metadata["num_classes"] == NUM_CLASSES  # taken from the file's F8 kernel
    assert metadata["source"]["md5"] == md5_file(seed_h5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert all((out / name).is_file() for name in manifest["files"])

    embedding, loaded_metadata = load_embedding_model(out)
    assert loaded_metadata == metadata
    vectors = np.asarray(embedding(images, training=False))
    assert vectors.shape == (len(images), PRESETS[PRESET].f7_units)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_whole_model_h5_file_is_read_too(seed_model, seed_h5, tmp_path):
    model_file = tmp_path / "seed_model.h5"
    seed_model.save(str(model_file), save_format="h5")  # weights under /model_weights
    from_model, from_weights = read_seed_weights(model_file), read_seed_weights(seed_h5)
    assert list(from_model) == list(from_weights) == ["C1", "C3", "L4", "L5", "L6", "F7", "F8"]
    for layer, weights in from_weights.items():
        for name, array in weights.items():
            np.testing.assert_array_equal(from_model[layer][name], array)


def test_layer_shapes_follow_tf_keras_locally_connected_layout(seed_h5):
    config = PRESETS[PRESET]
    layers = read_seed_weights(seed_h5)
    # tiny: C3 output 27x27 -> L4 19x19 (9x9 kernels); implementation=1 kernel (positions, k*k*C_in, filters)
    assert layers["L4"]["kernel"].shape == (19 * 19, 9 * 9 * config.c3_filters, config.l4_filters)
    assert layers["L4"]["bias"].shape == (19, 19, config.l4_filters)
    assert layers["F8"]["kernel"].shape == (config.f7_units, NUM_CLASSES)


def test_missing_layer_is_named(seed_h5, tmp_path):
    broken = tmp_path / "missing_l5.h5"
    shutil.copy(seed_h5, broken)
    with h5py.File(broken, "r+") as h5:
        names = [name for name in _read_string_list(h5, "layer_names") if name != "L5"]
        del h5["L5"]
        h5.attrs["layer_names"] = [name.encode() for name in names]
    with pytest.raises(DeepFaceError, match=r"layer L5 \(kernel \(49, 196, 4\)\) not found.*C1 \(11, 11, 3, 8\)"):
        import_seed_weights(broken, tmp_path / "out", preset=PRESET)
    assert not (tmp_path / "out").exists()


def test_extra_layer_is_named(seed_h5, tmp_path):
    broken = tmp_path / "extra_layer.h5"
    shutil.copy(seed_h5, broken)
    with h5py.File(broken, "r+") as h5:
        h5.copy("F7", "F9")
        h5.attrs["layer_names"] = [name.encode() for name in [*_read_string_list(h5, "layer_names"), "F9"]]
    with pytest.raises(DeepFaceError, match=r"unexpected layer 'F9' with weights"):
        import_seed_weights(broken, tmp_path / "out", preset=PRESET)


def test_other_layer_names_are_matched_by_order(seed_model, seed_h5, images, tmp_path, caplog):
    """Like tf.keras load_weights, a file whose layers are named otherwise is read in layer order."""
    renamed = tmp_path / "renamed.h5"
    shutil.copy(seed_h5, renamed)
    with h5py.File(renamed, "r+") as h5:
        names = _read_string_list(h5, "layer_names")
        for name in names:
            h5.move(name, f"seed_{name.lower()}")
        h5.attrs["layer_names"] = [f"seed_{name.lower()}".encode() for name in names]
    with caplog.at_level("WARNING", logger="deepface.weights"):
        out = import_seed_weights(renamed, tmp_path / "model", preset=PRESET)
    assert "matching them by order" in caplog.text

    import keras

    classifier = keras.saving.load_model(out / "classifier.keras", compile=False)
    np.testing.assert_allclose(f7_of(classifier, images), f7_of(seed_model, images), atol=1e-5)


def test_wrong_shape_names_layer_and_shapes(tmp_path):
    config = PRESETS[PRESET]
    path = tmp_path / "wide_l4.h5"
    build_seed_model(config, NUM_CLASSES, l4_filters=5).save_weights(str(path))
    with pytest.raises(DeepFaceError, match=r"layer L4 kernel has shape \(361, 324, 5\), expected \(361, 324, 4\)"):
        import_seed_weights(path, tmp_path / "out", preset=PRESET)


def test_file_of_another_preset_is_refused(seed_h5, tmp_path):
    with pytest.raises(DeepFaceError, match=r"layer C1 kernel has shape \(11, 11, 3, 8\), expected \(11, 11, 3, 16\) "
                                            r"for the 'small' preset"):
        import_seed_weights(seed_h5, tmp_path / "out", preset="small")


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"not hdf5")
    with pytest.raises(DeepFaceError, match="is not an HDF5 file"):
        read_seed_weights(path)
    with pytest.raises(DeepFaceError, match="not found"):
        read_seed_weights(tmp_path / "absent.h5")


def test_truncated_file_gets_a_clear_error(seed_h5, tmp_path):
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(seed_h5.read_bytes()[: seed_h5.stat().st_size // 2])
    with pytest.raises(DeepFaceError, match="truncated or corrupt"):
        import_seed_weights(truncated, tmp_path / "out", preset=PRESET)


def test_chunked_layer_names_attribute(tmp_path):
    """tf_keras splits attributes above 64 KB into name0, name1, ...; the reader joins them back."""
    from tf_keras.src.saving.legacy.hdf5_format import save_attributes_to_hdf5_group

    names = [f"layer_{i:05d}_{'x' * 40}" for i in range(3000)]
    with h5py.File(tmp_path / "chunked.h5", "w") as h5:
        save_attributes_to_hdf5_group(h5, "layer_names", [name.encode() for name in names])
        assert "layer_names" not in h5.attrs and "layer_names1" in h5.attrs
        assert _read_string_list(h5, "layer_names") == names


def test_cli_imports_and_reports_errors_in_one_line(seed_h5, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["import-weights", str(seed_h5), "--out", str(tmp_path / "model"),
                                  "--preset", PRESET])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model_dir"] == str(tmp_path / "model")
    assert (tmp_path / "model" / "classifier.keras").is_file()

    result = runner.invoke(main, ["import-weights", str(seed_h5), "--out", str(tmp_path / "other"),
                                  "--preset", "small"])
    assert result.exit_code == 1
    assert "Error:" in result.output and "layer C1 kernel" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_paper_size_seed_model_imports_exactly(tmp_path):
    """The exact seed model (paper sizes, 8631 classes, LocallyConnected2D implementation=1): its file has
    the seed's shapes and the imported model computes the same F7 features. The seed's model runs
    eagerly here: its L4 is 3025 kernel slices, whose graph (tf.function / predict) takes minutes to
    build on 2 cores, while one eager forward pass takes seconds (~40 s build, ~5 s forward, measured)."""
    config = PRESETS["paper"]
    seed = build_seed_model(config, 8631)
    assert seed.count_params() == 137_774_071
    path = tmp_path / "paper.h5"
    seed.save_weights(str(path))
    layers = read_seed_weights(path)
    assert {name: tuple(w["kernel"].shape) for name, w in layers.items()} == {
        "C1": (11, 11, 3, 32), "C3": (9, 9, 32, 16), "L4": (3025, 1296, 16), "L5": (625, 784, 16),
        "L6": (441, 400, 16), "F7": (7056, 4096), "F8": (4096, 8631)}
    del layers

    out = import_seed_weights(path, tmp_path / "model", preset="paper")
    assert json.loads((out / "metadata.json").read_text())["num_classes"] == 8631
    import keras

    classifier = keras.saving.load_model(out / "classifier.keras", compile=False)
    images = np.random.default_rng(1).uniform(0, 1, (2, 152, 152, 3)).astype("float32")
    seed_features, features = f7_of(seed, images), f7_of(classifier, images)
    assert (seed_features > 0).mean() > 0.2 and np.ptp(seed_features, axis=0).max() > 0.1
    assert np.abs(features - seed_features).max() <= 1e-4 * max(1.0, np.abs(seed_features).max())
