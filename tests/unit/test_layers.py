"""LocallyConnected2D equals tf.keras's LocallyConnected2D (implementation=1), saves, loads, and runs under
mixed precision and XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import deepface.layers
from deepface.layers import FeatureNormalization, LocallyConnected2D

SHAPES = {
    # name: (input rows, cols, channels), filters, kernel, strides
    "L4": ((63, 63, 16), 16, 9, 1),
    "L5": ((55, 55, 16), 16, 7, 2),
    "L6": ((25, 25, 16), 16, 5, 1),
    "stride3_nonsquare_1channel": ((11, 17, 1), 3, 4, 3),
    "rect_kernel_rect_stride": ((12, 9, 2), 5, (3, 2), (2, 1)),
    "stride_larger_than_kernel": ((10, 11, 2), 3, 2, 3),  # input rows no patch covers: zero gradient
}


def _pair_of_layers(shape, filters, kernel, strides):
    reference = tf_keras.layers.LocallyConnected2D(
        filters, kernel, strides=strides, implementation=1,
        kernel_initializer="random_normal", bias_initializer="random_normal")
    reference.build((None, *shape))
    ours = LocallyConnected2D(filters, kernel, strides=strides)
    ours.build((None, *shape))
    ours.set_weights(reference.get_weights())  # same layout: weights transfer as they are
    return reference, ours


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("block", ["default", "one row"])
def test_matches_tf_keras_outputs_and_gradients(name, block, monkeypatch):
    """Forward and every gradient, with the layer's blocks of output rows (one for the small shapes, one
    row for L4, three and seven rows for L5 and L6) and with one row per block."""
    if block == "one row":
        monkeypatch.setattr(deepface.layers, "BLOCK_PATCH_ELEMENTS", 1)
    shape, filters, kernel, strides = SHAPES[name]
    reference, ours = _pair_of_layers(shape, filters, kernel, strides)
    # the same layout: kernel [positions, receptive field, filters], bias [rows, cols, filters] (tf_keras's)
    assert [w.shape for w in ours.get_weights()] == [tuple(w.shape) for w in reference.get_weights()]
    assert tuple(ours.bias.shape) == tuple(reference.bias.shape) == reference.compute_output_shape((None, *shape))[1:]
    x = tf.constant(np.random.default_rng(1).standard_normal((3, *shape)), tf.float32)
    upstream = None
    results = []
    for layer, kernel_var, bias_var in ((reference, reference.kernel, reference.bias),
                                        (ours, ours.kernel.value, ours.bias.value)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            if upstream is None:
                upstream = tf.constant(np.random.default_rng(2).standard_normal(y.shape), tf.float32)
            loss = tf.reduce_sum(y * upstream)
        results.append((y, *tape.gradient(loss, [x, kernel_var, bias_var])))
    # outputs, then the gradients of the input, the kernel and the bias (position by position)
    for what, expected, actual in zip(("output", "input grad", "kernel grad", "bias grad"), results[0], results[1]):
        assert actual.shape == expected.shape, what
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5, err_msg=what)
    # a bias gradient is the upstream gradient summed over the batch at its own position and filter
    np.testing.assert_allclose(results[1][3].numpy(), upstream.numpy().sum(axis=0), atol=1e-5, rtol=1e-5)


def test_output_shape_and_errors():
    layer = LocallyConnected2D(4, 3, strides=2)
    assert layer.compute_output_shape((None, 9, 7, 2)) == (None, 4, 3, 4)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        LocallyConnected2D(4, 5).build((None, 4, 4, 1))
    with pytest.raises(ValueError, match="kernel_size"):
        LocallyConnected2D(4, 0)


def test_saves_and_loads_in_keras_file(tmp_path):
    inputs = keras.Input((12, 10, 3))
    outputs = LocallyConnected2D(5, 3, strides=(2, 1), activation="relu", name="local")(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).random((2, 12, 10, 3)).astype("float32")
    path = tmp_path / "local.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: the layer is registered
    np.testing.assert_array_equal(loaded(x), model(x))
    config = loaded.get_layer("local").get_config()
    assert config["kernel_size"] == (3, 3) and config["strides"] == (2, 1) and config["filters"] == 5


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision(policy):
    layer = LocallyConnected2D(4, 3, dtype=policy)
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    y = layer(x)
    assert layer.kernel.dtype == "float32"  # variables stay float32
    assert y.dtype == policy.split("_")[1]
    reference = LocallyConnected2D(4, 3)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(y, np.float32), reference(x), atol=0.05)


def test_bfloat16_input_gradient_matches_float32():
    """The input's gradient under mixed_bfloat16 (bfloat16 matmuls, summed in float32) agrees with float32's."""
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 13, 12, 3)), tf.float32)
    layers = [LocallyConnected2D(4, 5, strides=2, dtype=policy) for policy in ("float32", "mixed_bfloat16")]
    for layer in layers:
        layer.build(x.shape)
    layers[1].set_weights(layers[0].get_weights())
    grads = []
    for layer in layers:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layer(x), tf.float32) ** 2)
        grads.append(tape.gradient(loss, x))
    assert grads[1].dtype == tf.float32
    scale = float(tf.reduce_max(tf.abs(grads[0])))
    np.testing.assert_allclose(grads[1].numpy() / scale, grads[0].numpy() / scale, atol=0.03)


def test_xla_compiles_and_matches_eager():
    layer = LocallyConnected2D(6, 5, strides=2)
    x = tf.constant(np.random.default_rng(0).random((4, 21, 21, 3)), tf.float32)
    layer.build(x.shape)

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, [x, layer.kernel.value])

    eager = step(x)
    compiled = tf.function(step, jit_compile=True)(x)
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-5)


def test_feature_normalization():
    layer = FeatureNormalization()
    x = np.array([[1.0, 2.0, 0.0], [4.0, 0.0, 0.0]], np.float32)
    layer.build(x.shape)
    layer.set_feature_max(np.array([4.0, 2.0, 0.0]))  # a dead unit (max 0) is left undivided
    y = np.asarray(layer(x))
    expected = np.array([[0.25, 1.0, 0.0], [1.0, 0.0, 0.0]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-6)
