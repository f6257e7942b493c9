"""Mixed precision that trains: the tiny preset trained in bfloat16 verifies as well as in float32 (the
evaluate stage's 10-fold accuracy, over eight seeds), and float16 trains under dynamic loss scaling with a
finite loss. Same data, seed and recipe for every precision; the model directory is float32
whatever the training precision, so evaluate loads it as it is.
"""

from __future__ import annotations

import json
import math
import statistics

import keras
import pytest

from deepface.evaluate import evaluate
from deepface.train import train

pytestmark = pytest.mark.slow  # 17 short trainings and 16 evaluations: about four minutes on 2 cores

SETTINGS = dict(preset="tiny", optimizer="adam", learning_rate=0.001, epochs=4, batch_size=8, seed=3,
                checkpoint_steps=0, feature_max_batches=2, strategy="cpu")


# A tiny model's accuracy moves with its seed far more than the fold standard error says (over seeds 3-10 in
# float32: 0.48 to 0.86, standard deviation 0.12, against a fold standard error of about 0.02), and
# bfloat16 rounding sends training down another path: the precisions are compared seed by seed, over eight.
SEEDS = tuple(range(3, 11))


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
    """The mean over `SEEDS` of (bfloat16 accuracy - float32 accuracy), each pair trained from the same seed,
    is within its allowance: twice its standard error over the seeds, or the fold standard error of the
    mean accuracy if that is larger. A bfloat16 path that trains worse (or not at all) moves the mean by
    more than that; the allowance itself must stay small enough to see it."""
    summaries = {key: evaluate(model_dir, synth_dir / "lfw.tgz", synth_dir / "pairs.txt", tmp_path / f"{key}",
                               landmarks=synth_dir / "lfw_landmarks.csv", baseline=False, batch_size=64)["summary"]
                 for key, (_, model_dir) in trained.items()}
    accuracy = {key: summary["accuracy"] for key, summary in summaries.items()}
    differences = [accuracy["bfloat16", seed] - accuracy["float32", seed] for seed in SEEDS]
    mean = statistics.mean(differences)
    fold_sem = max(math.sqrt(sum(summaries[precision, seed]["accuracy_sem"] ** 2 for seed in SEEDS)) / len(SEEDS)
                   for precision in ("float32", "bfloat16"))
    allowed = max(fold_sem, 2 * statistics.stdev(differences) / math.sqrt(len(SEEDS)))
    print(f"over seeds {SEEDS}: float32 {statistics.mean(accuracy['float32', s] for s in SEEDS):.4f}, bfloat16 "
          f"{statistics.mean(accuracy['bfloat16', s] for s in SEEDS):.4f}, mean difference {mean:+.4f}, "
          f"allowed {allowed:.4f}")
    assert 0 < allowed < 0.15, accuracy
    assert abs(mean) <= allowed, accuracy


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
