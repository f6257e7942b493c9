"""Mixed precision that trains: the tiny preset trained in bfloat16 verifies as well as in float32 (the
evaluate stage's 10-fold accuracy, within its fold standard error), and float16 trains under dynamic loss
scaling with a finite loss. Same data, seed and recipe for every precision; the model directory is float32
whatever the training precision, so evaluate loads it as it is.
"""

from __future__ import annotations

import json
import math

import keras
import pytest

from deepface.evaluate import evaluate
from deepface.train import train

pytestmark = pytest.mark.slow  # five short trainings and four evaluations: about two minutes on 2 cores

SETTINGS = dict(preset="tiny", optimizer="adam", learning_rate=0.001, epochs=4, batch_size=8, seed=3,
                checkpoint_steps=0, feature_max_batches=2, strategy="cpu")


SEEDS = (3, 4)  # one tiny model's accuracy moves by a few points with its seed: compare means over two


@pytest.fixture(scope="module")
def trained(train_inputs, tmp_path_factory) -> dict:
    """``{(precision, seed): (manifest, model_dir)}``."""
    root = tmp_path_factory.mktemp("precision")
    return {(precision, seed): (train(*train_inputs, root / f"{precision}-{seed}", precision=precision,
                                      **{**SETTINGS, "seed": seed}), root / f"{precision}-{seed}")
            for precision in ("float32", "bfloat16") for seed in SEEDS}


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_model_directory_is_float32_whatever_the_training_precision(trained, precision):
    manifest, model_dir = trained[precision, SEEDS[0]]
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["strategy"]["precision"] == precision and metadata["optimizer"]["loss_scale"] is None
    for name in ("classifier.keras", "embedding.keras"):
        model = keras.saving.load_model(model_dir / name, compile=False)
        assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}, name
    assert math.isfinite(manifest["final_metrics"]["loss"])


def test_bfloat16_verifies_as_well_as_float32(trained, synth_dir, tmp_path):
    """The mean verification accuracy over `SEEDS` of bfloat16 training is float32's within the fold standard
    error (of the mean over the seeds, the larger of the two precisions')."""
    summaries = {key: evaluate(model_dir, synth_dir / "lfw.tgz", synth_dir / "pairs.txt", tmp_path / f"{key}",
                               landmarks=synth_dir / "lfw_landmarks.csv", baseline=False, batch_size=64)["summary"]
                 for key, (_, model_dir) in trained.items()}
    mean, sem = {}, {}
    for precision in ("float32", "bfloat16"):
        runs = [summaries[precision, seed] for seed in SEEDS]
        mean[precision] = sum(run["accuracy"] for run in runs) / len(runs)
        sem[precision] = math.sqrt(sum(run["accuracy_sem"] ** 2 for run in runs)) / len(runs)
    allowed = max(sem.values())
    assert 0 < allowed < 0.05, summaries
    print(f"verification accuracy over seeds {SEEDS}: float32 {mean['float32']:.4f} +- {sem['float32']:.4f}, "
          f"bfloat16 {mean['bfloat16']:.4f} +- {sem['bfloat16']:.4f}")
    assert abs(mean["float32"] - mean["bfloat16"]) <= allowed, summaries


def test_float16_trains_under_dynamic_loss_scaling(train_inputs, tmp_path):
    """The compiled optimizer of a float16 run is a LossScaleOptimizer (its final scale is recorded), and
    the loss stays finite."""
    # float16 is emulated on CPUs (slow): a few steps show the loss scaling at work
    manifest = train(*train_inputs, tmp_path / "model", precision="float16", **{**SETTINGS, "epochs": 1},
                     steps_per_epoch=3)
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["strategy"]["precision"] == "float16"
    assert metadata["optimizer"]["loss_scale"] is not None and metadata["optimizer"]["loss_scale"] >= 1
    assert math.isfinite(manifest["final_metrics"]["loss"])
    model = keras.saving.load_model(tmp_path / "model" / "classifier.keras", compile=False)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
