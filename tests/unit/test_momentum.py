"""MomentumSGD (one fused op per weight) trains to bitwise the weights of Keras' SGD, on one device and
under two replicas, and takes Keras' own update where the fused op does not apply."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from deepface.model import build_classifier
from deepface.train.momentum import MomentumSGD

# Trains the tiny classifier a few steps with each optimizer (under `strategy`) and prints the weights'
# largest absolute difference and whether every weight moved.
COMPARE = """
import json, sys
import numpy as np
import tensorflow as tf
if sys.argv[1] == "two":
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from deepface.model import build_classifier
from deepface.train.momentum import MomentumSGD

options = json.loads(sys.argv[2])
two = sys.argv[1] == "two"
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if two else tf.distribute.get_strategy()
rng = np.random.default_rng(0)
images = rng.random((16, 80, 80, 3)).astype("float32")
labels = rng.integers(0, 4, 16)
weights = {}
for name, optimizer in (("keras", keras.optimizers.SGD), ("fused", MomentumSGD)):
    with strategy.scope():
        model = build_classifier("tiny", 4, seed=0, dtype_policy=options["policy"])
        model.compile(optimizer=optimizer(**options["optimizer"]), loss="sparse_categorical_crossentropy")
    start = [w.copy() for w in model.get_weights()]
    model.fit(images, labels, batch_size=8, epochs=3, shuffle=False, verbose=0)
    weights[name] = model.get_weights()
moved = all(not np.array_equal(a, b) for a, b in zip(start, weights["keras"]) if a.size > 4)
print(json.dumps({"max_difference": max(float(np.abs(a - b).max()) for a, b in zip(*weights.values())),
                  "moved": moved}))
"""


def trained_difference(devices: str, policy: str = "float32", **optimizer) -> dict:
    options = {"policy": policy, "optimizer": {"learning_rate": 0.05, "momentum": 0.9, **optimizer}}
    completed = subprocess.run(
        [sys.executable, "-c", COMPARE, devices, json.dumps(options)], capture_output=True, text=True, timeout=600,
        # oneDNN's graph rewrites wire a replica's convolution wrongly with logical CPU devices (TensorFlow 2.21)
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("devices", ["one", "two"])
def test_fused_momentum_trains_to_bitwise_the_weights_of_keras_sgd(devices):
    result = trained_difference(devices, weight_decay=0.01)
    assert result["moved"], result  # the comparison is not of untrained weights
    assert result["max_difference"] == 0.0, result


def test_fused_momentum_is_bitwise_keras_sgd_under_mixed_precision():
    result = trained_difference("one", policy="mixed_bfloat16")
    assert result["moved"] and result["max_difference"] == 0.0, result


@pytest.mark.parametrize("options", [{"momentum": 0.0}, {"nesterov": True}])
def test_updates_the_fused_op_does_not_cover_are_keras_own(options):
    """Nesterov and momentum 0 fall back to Keras' update (same weights as keras.optimizers.SGD)."""
    images = np.random.default_rng(1).random((8, 80, 80, 3)).astype("float32")
    trained = []
    for optimizer in (keras.optimizers.SGD, MomentumSGD):
        model = build_classifier("tiny", 4, seed=0)
        model.compile(optimizer=optimizer(learning_rate=0.05, **options), loss="sparse_categorical_crossentropy")
        model.fit(images, np.arange(8) % 4, batch_size=4, epochs=1, shuffle=False, verbose=0)
        trained.append(model.get_weights())
    for a, b in zip(*trained):
        np.testing.assert_array_equal(a, b)


def test_it_is_keras_sgd_to_a_checkpoint_and_a_config():
    optimizer = MomentumSGD(learning_rate=0.01, momentum=0.9)
    assert isinstance(optimizer, keras.optimizers.SGD)
    config = keras.optimizers.serialize(optimizer)
    assert keras.optimizers.deserialize(config).get_config() == optimizer.get_config()


@pytest.mark.parametrize("optimizer, fused", [(MomentumSGD(0.01, momentum=0.9), True),
                                              (MomentumSGD(0.01, momentum=0.9, nesterov=True), False),
                                              (keras.optimizers.SGD(0.01, momentum=0.9), False)])
def test_the_update_is_one_fused_op_per_weight(optimizer, fused):
    import tensorflow as tf

    weights = [keras.Variable(np.ones((3, 2), "float32")), keras.Variable(np.ones((2,), "float32"))]
    optimizer.build(weights)
    step = tf.function(lambda *grads: optimizer.apply_gradients(zip(grads, weights)))
    graph = step.get_concrete_function(*(tf.TensorSpec(w.shape, "float32") for w in weights)).graph
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("ResourceApplyKerasMomentum") == (2 if fused else 0), sorted(set(ops))
