"""The optimizer choice: Adam makes the real `tiny` preset learn within a test's budget (the demo's recipe)."""

import json

import numpy as np
import pytest

from deepface.errors import DeepFaceError
from deepface.labels import build_labels
from deepface.tfrecords import build_tfrecords
from deepface.train import train


@pytest.fixture(scope="module")
def tiny_data(synth_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adam")
    build_labels(synth_dir / "train_list.txt", root / "labels")
    build_tfrecords(synth_dir / "vggface2_train.tar.gz", root / "labels", root / "tfrecords", image_size=80,
                    landmarks=synth_dir / "bb_landmark.tar.gz", workers=1)
    return root


@pytest.mark.slow
def test_adam_trains_the_tiny_preset(tiny_data):
    manifest = train(tiny_data / "tfrecords", tiny_data / "labels", tiny_data / "model", preset="tiny",
                     optimizer="adam", learning_rate=1e-3, epochs=16, batch_size=8, seed=0, checkpoint_steps=0)
    assert manifest
    model_dir = tiny_data / "model"
    losses = json.loads((model_dir / "history.json").read_text())["metrics"]["loss"]
    assert losses[0] > 0.9 * np.log(8)  # starts at chance for 8 identities
    assert losses[-1] < 0.8 * losses[0], losses
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["optimizer"]["name"] == "adam"
    assert metadata["learning_rate"]["initial"] == pytest.approx(1e-3)  # Adam: used as given, not scaled


def test_unknown_optimizer_is_refused_before_training(tiny_data):
    with pytest.raises(DeepFaceError, match="optimizer=.rmsprop.: must be one of sgd, adam"):
        train(tiny_data / "tfrecords", tiny_data / "labels", tiny_data / "bad", preset="tiny", optimizer="rmsprop")
