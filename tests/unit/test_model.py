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


# README's table of presets: weights without F8, and F8's per class.
README_PARAMETERS = {"tiny": (521_792, 129), "small": (4_461_600, 513)}


def weights_by_hand(config) -> tuple[int, int]:
    """The weights of the paper's topology with ``config``'s sizes, layer by layer, from the layer formulas
    (a convolution: k*k*in*out + out; a locally connected layer: that at each output position, biases
    too; a dense layer: in*out + out); the spatial chain worked out here, not by `spatial_sizes`.
    Returns (weights without F8, F8's weights per class)."""
    c1 = config.image_size - 11 + 1  # 11x11 valid
    m2 = (c1 + 1) // 2  # 3x3 max-pool, stride 2, 'same'
    c3 = m2 - 9 + 1
    l4 = c3 - 9 + 1
    l5 = (l4 - 7) // 2 + 1  # 7x7, stride 2
    l6 = l5 - 5 + 1
    weights = (
        11 * 11 * 3 * config.c1_filters + config.c1_filters
        + 9 * 9 * config.c1_filters * config.c3_filters + config.c3_filters
        + l4 * l4 * (9 * 9 * config.c3_filters * config.l4_filters + config.l4_filters)
        + l5 * l5 * (7 * 7 * config.l4_filters * config.l5_filters + config.l5_filters)
        + l6 * l6 * (5 * 5 * config.l5_filters * config.l6_filters + config.l6_filters)
        + l6 * l6 * config.l6_filters * config.f7_units + config.f7_units
    )
    return weights, config.f7_units + 1


@pytest.mark.parametrize("preset", sorted(README_PARAMETERS))
def test_readme_parameter_counts_hold_layer_by_layer(preset):
    assert weights_by_hand(df_model.PRESETS[preset]) == README_PARAMETERS[preset]
    without_f8, per_class = README_PARAMETERS[preset]
    assert df_model.build_classifier(preset, 7, seed=0).count_params() == without_f8 + 7 * per_class


def test_model_cli_prints_parameter_count():
    result = CliRunner().invoke(main, ["model", "--preset", "tiny", "--num-classes", "10", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    without_f8, per_class = README_PARAMETERS["tiny"]
    assert info["parameters"] == without_f8 + 10 * per_class
    assert info["parameters_without_f8"] == without_f8
