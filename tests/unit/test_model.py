"""The DeepFace network: names, parameter counts, initialisation, presets, embedding model, CLI."""

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from deepface import model as df_model
from deepface.cli import main
from deepface.errors import DeepFaceError

SEED_LAYER_NAMES = ["C1", "M2", "C3", "L4", "L5", "L6", "F0", "F7", "D0", "F8"]


def test_paper_preset_has_exactly_the_seed_parameter_count():
    model = df_model.build_classifier("paper", 8631, seed=0)
    assert model.count_params() == 137_774_071
    assert model.count_params() - model.get_layer("F8").count_params() == 102_412_864
    assert [layer.name for layer in model.layers[1:]] == SEED_LAYER_NAMES
    assert model.get_layer("L4").kernel.shape == (3025, 1296, 16)
    assert model.get_layer("L5").kernel.shape == (625, 784, 16)
    assert model.get_layer("L6").kernel.shape == (441, 400, 16)
    assert model.get_layer("L4").bias.shape == (55, 55, 16)
    assert model.input_shape == (None, 152, 152, 3)
    assert df_model.spatial_sizes("paper") == {"C1": 142, "M2": 71, "C3": 63, "L4": 55, "L5": 25, "L6": 21}
    kernel, bias = model.get_layer("L6").get_weights()  # the paper's initialisation
    assert abs(kernel.std() - 0.01) < 0.0005 and abs(kernel.mean()) < 0.0005
    assert np.all(bias == 0.5)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_small_presets_keep_the_topology(preset):
    model = df_model.build_classifier(preset, 10, seed=0)
    assert [layer.name for layer in model.layers[1:]] == SEED_LAYER_NAMES
    size = df_model.PRESETS[preset].image_size
    x = np.random.default_rng(0).random((2, size, size, 3)).astype("float32")
    probabilities = np.asarray(model(x))
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_initialisation_and_seed():
    a = df_model.build_classifier("tiny", 5, seed=3)
    b = df_model.build_classifier("tiny", 5, seed=3)
    c = df_model.build_classifier("tiny", 5, seed=4)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_layer("L4").get_weights()[0], c.get_layer("L4").get_weights()[0])
    kernel, bias = a.get_layer("L4").get_weights()  # small presets: He normal, zero bias
    fan_in = kernel.shape[1]
    assert abs(kernel.std() - np.sqrt(2 / fan_in)) < 0.1 * np.sqrt(2 / fan_in)
    assert np.all(bias == 0.0)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(DeepFaceError, match="unknown model preset 'huge'"):
        df_model.build_classifier("huge", 10)


def test_embedding_model_normalises_and_round_trips(tmp_path):
    classifier = df_model.build_classifier("tiny", 6, seed=0)
    images = np.random.default_rng(0).random((8, 80, 80, 3)).astype("float32")
    feature_max = df_model.compute_feature_max(classifier, images)
    raw = np.asarray(df_model.feature_extractor(classifier)(images))
    np.testing.assert_allclose(feature_max, raw.max(axis=0), rtol=1e-6)
    embedding = df_model.build_embedding_model(classifier, feature_max)
    features = np.asarray(embedding(images))
    expected = raw / np.where(feature_max > 0, feature_max, 1.0)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-6)
    path = tmp_path / "embedding.keras"
    embedding.save(path)
    (tmp_path / "metadata.json").write_text(json.dumps({"preset": "tiny"}))
    loaded, metadata = df_model.load_embedding_model(tmp_path)
    assert metadata["preset"] == "tiny"
    np.testing.assert_allclose(np.asarray(loaded(images)), features, rtol=1e-6)
    with pytest.raises(DeepFaceError, match="embedding.keras"):
        df_model.load_embedding_model(tmp_path / "missing")


def test_mixed_precision_model_trains_one_step():
    model = df_model.build_classifier("tiny", 4, seed=0, dtype_policy="mixed_bfloat16")
    assert model.get_layer("L4").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy",
                  jit_compile=True)
    x = np.random.default_rng(0).random((4, 80, 80, 3)).astype("float32")
    history = model.fit(x, np.arange(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_model_cli_prints_parameter_count():
    result = CliRunner().invoke(main, ["model", "--preset", "tiny", "--num-classes", "10", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["parameters"] == df_model.count_params("tiny", 10)
    assert info["parameters"] - info["parameters_without_f8"] == 129 * 10
