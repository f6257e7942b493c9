"""The train stage: strategy choice, learning, outputs, Vertex variables, reruns of a complete training,
resume after a SIGKILL, bad input. (SIGTERM: tests/faults/test_train_sigterm.py.)

Training runs use the synthetic dataset (8 identities x 10 images) as 80-pixel TFRecords, the input
size of the ``tiny`` preset, in 5 shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from deepface.cli import main
from deepface.data import make_dataset
from deepface.errors import DeepFaceError
from deepface.labels import build_labels
from deepface.model import PRESETS, build_classifier, load_embedding_model
from deepface.settings import TrainSettings
from deepface.tfrecords import build_tfrecords
from deepface.train import train
from deepface.train.callbacks import ResumableReduceLROnPlateau
from deepface.train.export import resolve_output_dirs
from deepface.train.fit import compile_classifier, epoch_seed, scaled_learning_rate, sparse_crossentropy
from deepface.train.inputs import check_batch_size, split_validation_shards
from deepface.train.strategy import choose_precision, choose_strategy, is_chief_task, tf_config_from_cluster_spec

IMAGE_SIZE = PRESETS["tiny"].image_size
SHARD_BYTES = 40_000  # 5 shards of ~17 records



@pytest.fixture(scope="module")
def data(synth_dir, tmp_path_factory) -> dict:
    """``tfrecords`` and ``labels`` directories of the synthetic training identities."""
    root = tmp_path_factory.mktemp("train_data")
    archive = synth_dir / "vggface2_train.tar.gz"
    build_labels(archive, root / "labels")
    build_tfrecords(archive, root / "labels", root / "tfrecords", image_size=IMAGE_SIZE, shard_mb=SHARD_BYTES / 2**20,
                    landmarks=synth_dir / "bb_landmark.tar.gz", workers=1)
    return {"tfrecords": root / "tfrecords", "labels": root / "labels"}


def copy_tfrecords(data: dict, target: Path) -> Path:
    shutil.copytree(data["tfrecords"], target)
    return target


def dataset_loss(model: keras.Model, tfrecords: Path) -> float:
    """Mean cross-entropy of a classifier over every record (inference mode: no dropout)."""
    losses = []
    for images, labels in make_dataset(tfrecords, batch_size=32, image_size=IMAGE_SIZE, training=False):
        probabilities = model(images, training=False).numpy()
        losses.append(-np.log(probabilities[np.arange(len(labels)), labels.numpy()] + 1e-12))
    return float(np.concatenate(losses).mean())


# --------------------------------------------------------------------------------------------------
# Pure functions: strategy, precision, directories, learning rate, validation split
# --------------------------------------------------------------------------------------------------

GPU = "/physical_device:GPU:0"
TWO_WORKERS = {"cluster": {"worker": ["w0:2222", "w1:2222"]}, "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize(
    "env, gpus, has_tpu, kind",
    [
        ({}, [], False, "cpu"),
        ({}, [GPU], False, "gpu"),
        ({}, [GPU, GPU], False, "multi-gpu"),
        ({}, [GPU], True, "tpu"),
        ({"TF_CONFIG": json.dumps(TWO_WORKERS)}, [GPU, GPU], True, "multi-worker"),
        # A cluster of one machine is not multi-worker training.
        ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["c:1"]}, "task": {"type": "chief", "index": 0}})},
         [GPU], False, "gpu"),
        ({"TF_CONFIG": json.dumps({"task": {"type": "worker", "index": 0}})}, [], False, "cpu"),
    ],
)
def test_auto_strategy_follows_the_hardware(env, gpus, has_tpu, kind):
    plan = choose_strategy("auto", env=env, gpus=gpus, has_tpu=has_tpu)
    assert plan.kind == kind
    assert plan.reason


def test_cluster_spec_of_vertex_becomes_tf_config():
    cluster_spec = {
        "cluster": {"workerpool0": ["primary:2222"], "workerpool1": ["w1:2222", "w2:2222"]},
        "environment": "cloud",
        "task": {"type": "workerpool1", "index": 1, "trial": ""},
        "job": "{}",
    }
    assert tf_config_from_cluster_spec(cluster_spec) == {
        "cluster": {"chief": ["primary:2222"], "worker": ["w1:2222", "w2:2222"]},
        "task": {"type": "worker", "index": 1},
        "environment": "cloud",
    }
    plan = choose_strategy("auto", env={"CLUSTER_SPEC": json.dumps(cluster_spec)}, gpus=[], has_tpu=False)
    assert plan.kind == "multi-worker" and not plan.is_chief
    assert plan.tf_config["cluster"]["chief"] == ["primary:2222"]
    primary = {**cluster_spec, "task": {"type": "workerpool0", "index": 0}}
    assert choose_strategy("auto", env={"CLUSTER_SPEC": json.dumps(primary)}, gpus=[], has_tpu=False).is_chief
    # TF_CONFIG, when set, wins over CLUSTER_SPEC.
    env = {"TF_CONFIG": json.dumps(TWO_WORKERS), "CLUSTER_SPEC": json.dumps(primary)}
    assert choose_strategy("auto", env=env, gpus=[], has_tpu=False).tf_config == TWO_WORKERS


def test_chief_is_the_chief_task_or_worker_zero():
    assert is_chief_task(None)
    assert is_chief_task({"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 0}})
    assert not is_chief_task(TWO_WORKERS)
    with_chief = {"cluster": {"chief": ["c"], "worker": ["a"]}, "task": {"type": "worker", "index": 0}}
    assert not is_chief_task(with_chief)
    assert is_chief_task({**with_chief, "task": {"type": "chief", "index": 0}})


@pytest.mark.parametrize(
    "requested, env, gpus, message",
    [
        ("gpu", {}, [], "no GPU"),
        ("multi-gpu", {}, [GPU], "at least 2 GPUs"),
        ("multi-worker", {}, [GPU], "TF_CONFIG or CLUSTER_SPEC"),
        ("auto", {"TF_CONFIG": "{not json"}, [], "TF_CONFIG is not valid JSON"),
        ("auto", {"CLUSTER_SPEC": json.dumps({"cluster": {"pool9": ["x"]}, "task": {}})}, [], "CLUSTER_SPEC"),
        ("quantum", {}, [], "strategy='quantum'"),
    ],
)
def test_impossible_strategy_is_a_clear_error(requested, env, gpus, message):
    with pytest.raises(DeepFaceError, match=message):
        choose_strategy(requested, env=env, gpus=gpus, has_tpu=False)


def test_explicit_strategy_is_kept():
    assert choose_strategy("cpu", env={}, gpus=[GPU, GPU], has_tpu=True).kind == "cpu"
    assert choose_strategy("tpu", env={}, gpus=[], has_tpu=False).kind == "tpu"


def test_precision_auto_is_bfloat16_on_tpu_only():
    assert choose_precision("auto", "tpu") == "bfloat16"
    assert choose_precision("auto", "gpu") == "float32"
    assert choose_precision("float16", "gpu") == "float16"
    with pytest.raises(DeepFaceError, match="precision=.int8."):
        choose_precision("int8", "cpu")


def test_output_dirs_honour_vertex_variables():
    plain = resolve_output_dirs("/out/model", {})
    assert (plain.model_dir, plain.checkpoint_dir, plain.tensorboard_dir) == (
        "/out/model", "/out/model/checkpoints", "/out/model/logs")
    env = {"AIP_MODEL_DIR": "gs://b/job/model/", "AIP_CHECKPOINT_DIR": "gs://b/job/checkpoints/",
           "AIP_TENSORBOARD_LOG_DIR": "gs://b/job/logs/"}
    vertex = resolve_output_dirs(None, env)
    assert (vertex.model_dir, vertex.checkpoint_dir, vertex.tensorboard_dir) == (
        "gs://b/job/model", "gs://b/job/checkpoints/", "gs://b/job/logs/")
    assert resolve_output_dirs("/explicit", env).model_dir == "/explicit"
    with pytest.raises(DeepFaceError, match="give out_dir"):
        resolve_output_dirs(None, {})


def test_learning_rate_scales_linearly_from_batch_128():
    assert scaled_learning_rate(0.01, 128) == pytest.approx(0.01)
    assert scaled_learning_rate(0.01, 1024) == pytest.approx(0.08)  # the seed's TPU run
    assert scaled_learning_rate(0.01, 8) == pytest.approx(0.000625)  # the seed's GPU script


def test_validation_shards_are_chosen_by_name():
    shards = [f"gs://b/train-{i:05d}-of-00010.tfrecord" for i in range(10)]
    train_part, validation = split_validation_shards(list(reversed(shards)), 0.2)
    assert (train_part, validation) == split_validation_shards(shards, 0.2)
    assert len(validation) == 2 and sorted(train_part + validation) == shards
    assert split_validation_shards(shards, 0.0) == (shards, [])
    with pytest.raises(DeepFaceError, match="leaving none to train"):
        split_validation_shards(shards[:1], 0.1)


def test_epoch_seeds_differ():
    seeds = {epoch_seed(0, epoch) for epoch in range(100)}
    assert len(seeds) == 100 and epoch_seed(0, 3) == epoch_seed(0, 3) != epoch_seed(1, 3)


@pytest.mark.parametrize("batch_size, replicas, message", [
    (0, 1, "positive"), (-8, 1, "positive"), (10, 4, "multiple of 4"), (81, 1, "larger than the 80")])
def test_impossible_batch_size(batch_size, replicas, message):
    with pytest.raises(DeepFaceError, match=message):
        check_batch_size(batch_size, replicas, 80)
    check_batch_size(16, 4, 80)


def test_plateau_counters_survive_a_new_fit():
    plateau = ResumableReduceLROnPlateau(monitor="loss", patience=2)
    plateau.set_state({"best": 1.5, "wait": 1, "cooldown_counter": 0})
    plateau.on_train_begin()  # Keras' own callback would forget best and wait here
    assert plateau.get_state() == {"best": 1.5, "wait": 1, "cooldown_counter": 0}


def test_label_smoothing_is_the_categorical_one_on_integer_labels():
    labels = np.array([0, 2, 1])
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]], np.float32)
    smoothed = sparse_crossentropy(0.1)(labels, probabilities)
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(3)[labels], probabilities)
    assert float(smoothed) == pytest.approx(float(expected), rel=1e-6)
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    assert float(sparse_crossentropy(0.0)(labels, probabilities)) == pytest.approx(float(plain))
    assert float(smoothed) > float(plain)  # smoothing penalises the confident right answers


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_keeps_float32_weights_and_trains(precision):
    model = compile_classifier(
        PRESETS["tiny"], 4, precision=precision, learning_rate=0.01, momentum=0.9, weight_decay=1e-4,
        label_smoothing=0.1, jit_compile=False, steps_per_execution=1, seed=0,
    )
    assert model.get_layer("C1").compute_dtype == precision and model.get_layer("C1").kernel.dtype == "float32"
    assert model.output.dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "float16")
    images = np.random.default_rng(0).uniform(size=(4, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    logs = model.train_on_batch(images, np.arange(4), return_dict=True)
    assert np.isfinite(logs["loss"])


# --------------------------------------------------------------------------------------------------
# A real training run, with Vertex AI's variables
# --------------------------------------------------------------------------------------------------

EPOCHS = 8
VERTEX_SETTINGS = dict(preset="tiny", optimizer="adam", epochs=EPOCHS, batch_size=8, learning_rate=0.001, seed=3,
                       checkpoint_steps=4, keep_checkpoints=True)


@pytest.fixture(scope="module")
def vertex_run(data, tmp_path_factory) -> dict:
    """Trains with AIP_MODEL_DIR / AIP_CHECKPOINT_DIR / AIP_TENSORBOARD_LOG_DIR set and no --out."""
    root = tmp_path_factory.mktemp("vertex")
    env = {"AIP_MODEL_DIR": str(root / "model"), "AIP_CHECKPOINT_DIR": str(root / "checkpoints"),
           "AIP_TENSORBOARD_LOG_DIR": str(root / "tensorboard")}
    manifest = train(data["tfrecords"], data["labels"], None, env=env, **VERTEX_SETTINGS)
    return {"root": root, "model": root / "model", "manifest": manifest, "env": env}


def test_training_lowers_the_loss_clearly(vertex_run, data):
    history = json.loads((vertex_run["model"] / "history.json").read_text())
    assert len(history["metrics"]["loss"]) == EPOCHS
    assert history["metrics"]["loss"][-1] < history["metrics"]["loss"][0]
    classifier = keras.saving.load_model(vertex_run["model"] / "classifier.keras")
    initial = build_classifier("tiny", 8, seed=3)  # the weights training started from
    before, after = dataset_loss(initial, data["tfrecords"]), dataset_loss(classifier, data["tfrecords"])
    assert before > 0.95 * np.log(8)  # chance level for 8 identities
    assert after < 0.85 * before, (before, after)


def test_model_directory_is_complete_and_consistent(vertex_run, data):
    model_dir = vertex_run["model"]
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest == vertex_run["manifest"]
    expected = {"classifier.keras", "embedding.keras", "classes.txt", "metadata.json", "history.json",
                "training_curves.png"}
    assert expected <= set(manifest["files"])
    for name, entry in manifest["files"].items():  # the manifest vouches for every file, as written
        content = (model_dir / name).read_bytes()
        assert entry == {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}, name
    assert (model_dir / "classes.txt").read_bytes() == (data["labels"] / "classes.txt").read_bytes()
    assert (model_dir / "training_curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["preset"]["name"] == "tiny" and metadata["image_size"] == IMAGE_SIZE
    assert metadata["num_classes"] == 8 and metadata["seed"] == 3
    assert metadata["settings"] == TrainSettings(**VERTEX_SETTINGS).to_dict()  # every setting, as given
    assert metadata["strategy"] == {"kind": "cpu", "replicas": 1, "precision": "float32", "jit_compile": False}
    assert metadata["batch_size"] == {"global": 8, "per_replica": 8}
    assert metadata["learning_rate"]["initial"] == pytest.approx(0.001)  # Adam: as given
    assert metadata["optimizer"]["name"] == "adam"
    tfrecords_manifest = (data["tfrecords"] / "manifest.json").read_bytes()
    assert metadata["data"]["tfrecords_manifest_sha256"] == hashlib.sha256(tfrecords_manifest).hexdigest()
    assert metadata["data"]["train_records"] == 80 and metadata["steps_per_epoch"] == 10
    assert set(metadata["versions"]) >= {"tensorflow", "keras", "deepface"}

    history = json.loads((model_dir / "history.json").read_text())
    assert history["runs"] == [{"start_epoch": 0, "start_step": 0, "steps": EPOCHS * 10}]
    assert history["optimizer_steps"] == EPOCHS * 10


def test_saved_models_predict(vertex_run, data):
    images, _ = next(iter(make_dataset(data["tfrecords"], batch_size=6, image_size=IMAGE_SIZE, training=False)))
    classifier = keras.saving.load_model(vertex_run["model"] / "classifier.keras")
    probabilities = classifier.predict(images, verbose=0)
    assert probabilities.shape == (6, 8) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    embedding, metadata = load_embedding_model(vertex_run["model"])
    features = embedding.predict(images, verbose=0)
    assert features.shape == (6, PRESETS["tiny"].f7_units) and np.all(np.isfinite(features))
    assert np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-5)
    assert metadata["num_classes"] == 8
    # The F7 maxima come from the training data: no normalised training feature exceeds 1 before L2.
    feature_max = embedding.get_layer("F7_normalized").feature_max.numpy()
    f7 = keras.Model(classifier.inputs, classifier.get_layer("F7").output).predict(images, verbose=0)
    assert np.all(f7 <= feature_max + 1e-5) and np.any(feature_max != 1)


def test_vertex_directories_are_used(vertex_run):
    root = vertex_run["root"]
    # Checkpoints went to AIP_CHECKPOINT_DIR (kept here with keep_checkpoints), the last one at the end.
    checkpoints = root / "checkpoints"
    assert latest_checkpoint_number(checkpoints) == EPOCHS * 10
    assert (checkpoints / "run_config.json").exists() and not (root / "model" / "checkpoints").exists()
    # TensorBoard wrote to AIP_TENSORBOARD_LOG_DIR; the model directory holds a copy.
    for logs in (root / "tensorboard", root / "model" / "logs"):
        events = sorted((logs / "train").glob("events.out.tfevents.*"))
        assert events, logs
        tags = {value.tag for event in tf.data.TFRecordDataset([str(e) for e in events])
                for value in tf.compat.v1.Event.FromString(event.numpy()).summary.value}
        assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= tags


def file_states(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime in ns) of every file under ``roots``: a rewrite (atomic: a new inode) or an
    append shows."""
    return {str(path): (path.stat().st_ino, path.stat().st_size, path.stat().st_mtime_ns)
            for root in roots for path in sorted(root.rglob("*")) if path.is_file()}


def test_a_rerun_of_a_complete_training_returns_its_manifest_without_training(vertex_run, data, tmp_path, caplog):
    """A retried step (same settings, same data) reports success at once: the manifest of the model
    already there, one log line, nothing built, read or written (not even a checkpoint directory)."""
    caplog.set_level(logging.INFO, logger="deepface")
    roots = [vertex_run["root"] / name for name in ("model", "checkpoints", "tensorboard")]
    before = file_states(*roots)
    # The same records in another directory are the same data (the manifest's bytes); keep_checkpoints
    # is machine-local: it does not make another model.
    tfrecords = copy_tfrecords(data, tmp_path / "tfrecords")
    settings = {**VERTEX_SETTINGS, "keep_checkpoints": False}
    again = train(tfrecords, data["labels"], None, env=vertex_run["env"], **settings)
    assert again == vertex_run["manifest"] == json.loads((vertex_run["model"] / "manifest.json").read_text())
    assert file_states(*roots) == before
    messages = [record.getMessage() for record in caplog.records if record.name.startswith("deepface")]
    assert messages == [f"{vertex_run['model']} already holds the model of these settings and data "
                        "(its manifest.json): nothing to train"]  # no strategy, no model, no input pipeline

    # The command line: exit 0 and its usual result, the directory as it was (here by --out, no AIP_*).
    result = CliRunner().invoke(main, ["train", "--tfrecords", str(data["tfrecords"]), "--labels",
                                       str(data["labels"]), "--out", str(vertex_run["model"]),
                                       *cli_args({**VERTEX_SETTINGS, "keep_checkpoints": None})])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["final_metrics"] == vertex_run["manifest"]["final_metrics"]
    assert file_states(*roots) == before


def test_a_complete_model_of_other_settings_or_data_is_refused(vertex_run, data, tmp_path):
    """Another model in a complete directory is an error naming each difference and the fix; nothing moves."""
    roots = [vertex_run["root"] / name for name in ("model", "checkpoints", "tensorboard")]
    before = file_states(*roots)
    model, env = vertex_run["model"], vertex_run["env"]
    fix = "choose another output directory, or set overwrite to train again from scratch"
    with pytest.raises(DeepFaceError, match=rf"^{re.escape(str(model))} already holds a complete trained model made "
                       rf"from other settings or data \(epochs: 8 -> 9\): {fix}\.$"):
        train(data["tfrecords"], data["labels"], None, env=env, **{**VERTEX_SETTINGS, "epochs": 9})
    several = r"\(learning_rate: 0.001 -> None; optimizer: 'adam' -> 'sgd'; seed: 3 -> 4\)"  # in the fields' order
    with pytest.raises(DeepFaceError, match=several):
        train(data["tfrecords"], data["labels"], model,
              **{**VERTEX_SETTINGS, "learning_rate": None, "optimizer": "sgd", "seed": 4})

    # Other data: the same records under a manifest of other bytes; another class map.
    tfrecords = copy_tfrecords(data, tmp_path / "tfrecords")
    manifest = json.loads((tfrecords / "manifest.json").read_text())
    (tfrecords / "manifest.json").write_text(json.dumps(manifest, indent=1))
    with pytest.raises(DeepFaceError, match=r"\(tfrecords_manifest_sha256: [0-9a-f]{12}\.\.\. -> [0-9a-f]{12}\.\.\.\)"):
        train(tfrecords, data["labels"], model, **VERTEX_SETTINGS)
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "classes.txt").write_text("".join(f"other{i}\n" for i in range(8)))
    with pytest.raises(DeepFaceError, match=r"\(classes_sha256: [0-9a-f]{12}\.\.\. -> [0-9a-f]{12}\.\.\.\)"):
        train(data["tfrecords"], labels, model, **VERTEX_SETTINGS)
    # A separate validation set the model was not made with.
    with pytest.raises(DeepFaceError, match=r"\(validation_tfrecords_manifest_sha256: None -> [0-9a-f]{12}\.\.\.\)"):
        train(data["tfrecords"], data["labels"], model, validation_tfrecords=data["tfrecords"], **VERTEX_SETTINGS)
    assert file_states(*roots) == before

    # A complete model whose metadata cannot say what it was made from is refused too.
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    (copy / "metadata.json").write_text("{")
    with pytest.raises(DeepFaceError, match=rf"{re.escape(str(copy))} already holds a complete trained model "
                       rf"\(manifest.json exists\) but its metadata.json cannot tell .*: {fix}"):
        train(data["tfrecords"], data["labels"], copy, **VERTEX_SETTINGS)


def test_overwrite_trains_again_and_fitting_leaves_the_sigterm_handler_as_it_was(data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="deepface")
    options = dict(preset="tiny", epochs=1, batch_size=8, steps_per_epoch=2, checkpoint_steps=0, feature_max_batches=1,
                   seed=4)
    out = tmp_path / "model"
    handler = signal.getsignal(signal.SIGTERM)
    first = train(data["tfrecords"], data["labels"], out, **options)
    assert signal.getsignal(signal.SIGTERM) is handler  # SIGTERM is caught only while fitting
    manifest_inode = (out / "manifest.json").stat().st_ino
    caplog.clear()
    again = train(data["tfrecords"], data["labels"], out, **options, overwrite=True)
    assert any(record.getMessage().startswith("Training done: 1 epochs of 2 steps; this run trained 2 steps")
               for record in caplog.records)
    assert (out / "manifest.json").stat().st_ino != manifest_inode  # written anew
    assert json.loads((out / "metadata.json").read_text())["settings"]["overwrite"] is True
    assert again["final_metrics"] == first["final_metrics"]  # same settings, same seed: the same training
    assert not (out / "checkpoints").exists()


# --------------------------------------------------------------------------------------------------
# Resume after a real SIGKILL
# --------------------------------------------------------------------------------------------------

RESUME_ARGS = dict(preset="tiny", optimizer="sgd", epochs=3, batch_size=8, validation_fraction=0.2, checkpoint_steps=3,
                   learning_rate=0.1, lr_patience=0, seed=1)


def cli_args(options: dict) -> list[str]:
    """Command-line options of settings; None: left out."""
    return [arg for name, value in options.items() if value is not None
            for arg in (f"--{name.replace('_', '-')}", str(value))]


def latest_checkpoint_number(checkpoint_dir: Path) -> int | None:
    """The global step of the newest complete checkpoint (TF writes the ``checkpoint`` file last)."""
    try:
        text = (checkpoint_dir / "checkpoint").read_text()
    except FileNotFoundError:
        return None
    match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', text, re.MULTILINE)
    return int(match.group(1)) if match else None


def test_killed_training_resumes_where_it_stopped(data, tmp_path):
    """A `deepface train` process killed (SIGKILL) after a checkpoint past the first epoch is restarted:
    it continues from that epoch and step (LR and plateau counters included) and ends exactly where an
    uninterrupted run ends."""
    reference = train(data["tfrecords"], data["labels"], tmp_path / "reference", **RESUME_ARGS)
    reference_history = json.loads((tmp_path / "reference" / "history.json").read_text())
    steps_per_epoch = reference_history["steps_per_epoch"]
    # The plateau must have cut the learning rate, so that resuming has a state to get right.
    assert len(set(reference_history["metrics"]["learning_rate"])) > 1
    assert reference

    out = tmp_path / "resumed"
    command = [sys.executable, "-m", "deepface.cli", "train", "--tfrecords", str(data["tfrecords"]),
               "--labels", str(data["labels"]), "--out", str(out), *cli_args(RESUME_ARGS)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = tmp_path / "first.log"  # a file, not a pipe: a full pipe would stall the process
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    # Wait for a checkpoint inside the second epoch or later (after a plateau decision), then kill.
    while (latest_checkpoint_number(out / "checkpoints") or 0) <= steps_per_epoch:
        with contextlib.suppress(subprocess.TimeoutExpired):  # poll every 50 ms without spinning a core
            first.wait(timeout=0.05)
            pytest.fail(f"training ended before it could be killed: {log.read_text()[-2000:]}")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    killed_at = latest_checkpoint_number(out / "checkpoints")
    half_written = out / ".classifier.keras.k1ll3d.tmp"  # what a kill inside an atomic write leaves
    half_written.write_bytes(b"PK\x03\x04 half a zip")

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    epoch, step = divmod(killed_at, steps_per_epoch)
    assert f"Resuming from {out / 'checkpoints' / f'ckpt-{killed_at}'} at epoch {epoch}, step {step}" in second.stderr

    history = json.loads((out / "history.json").read_text())
    assert history["runs"] == [
        {"start_epoch": 0, "start_step": 0, "steps": killed_at},
        {"start_epoch": epoch, "start_step": step, "steps": RESUME_ARGS["epochs"] * steps_per_epoch - killed_at},
    ]
    assert history["optimizer_steps"] == reference_history["optimizer_steps"] == RESUME_ARGS["epochs"] * steps_per_epoch
    # Same learning-rate schedule (the LR and the plateau counters survived) and the same metrics.
    assert history["metrics"]["learning_rate"] == reference_history["metrics"]["learning_rate"]
    for name, values in reference_history["metrics"].items():
        np.testing.assert_allclose(history["metrics"][name], values, rtol=1e-4, err_msg=name)

    resumed = keras.saving.load_model(out / "classifier.keras")
    uninterrupted = keras.saving.load_model(tmp_path / "reference" / "classifier.keras")
    for mine, theirs in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)
    images, _ = next(iter(make_dataset(data["tfrecords"], batch_size=4, image_size=IMAGE_SIZE, training=False)))
    assert np.all(np.isfinite(resumed.predict(images, verbose=0)))
    assert not (out / "checkpoints").exists() and not half_written.exists()


@pytest.mark.parametrize("precision, augment", [("bfloat16", True), ("float16", False)])
def test_mixed_precision_and_augmented_training_runs_and_saves_a_reloadable_model(data, tmp_path, precision,
                                                                                  augment):
    """A whole `train` (tiny preset, one epoch of two steps) in bfloat16 with augmentation, and in float16
    (with its loss scaling): a finite loss, a complete model directory whose float32 models reload and give
    finite outputs, and the metadata says the precision and augmentation it ran with."""
    from deepface.model import load_embedding_model

    out = tmp_path / "model"
    manifest = train(data["tfrecords"], data["labels"], out, preset="tiny", epochs=1, batch_size=8,
                     steps_per_epoch=2, checkpoint_steps=0, feature_max_batches=1, strategy="cpu",
                     precision=precision, augment=augment)
    assert manifest and (out / "manifest.json").exists()
    history = json.loads((out / "history.json").read_text())
    assert len(history["metrics"]["loss"]) == 1 and np.isfinite(history["metrics"]["loss"][0])
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["strategy"]["precision"] == precision
    assert ('"augment": true' in json.dumps(metadata)) == augment
    classifier = keras.saving.load_model(out / "classifier.keras")
    embedding, _ = load_embedding_model(out)
    images, _ = next(iter(make_dataset(data["tfrecords"], batch_size=4, image_size=IMAGE_SIZE, training=False)))
    probabilities = classifier.predict(images, verbose=0)
    assert probabilities.dtype == np.float32 and np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    features = embedding.predict(images, verbose=0)
    assert np.all(np.isfinite(features)) and np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-4)


# Two replicas on the CPU (two logical devices, set before TensorFlow starts, hence a subprocess).
# oneDNN's graph rewrites are off: with logical CPU devices they wire a replica's convolution to the
# wrong input (TensorFlow 2.21).
TWO_REPLICAS = """
import json, sys
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
unobserved = TensorFlowTrainer.train_step

def observed_train_step(self, data):  # prints, from inside each replica's step, the batch that replica got
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    tf.print("OBSERVED replica", replica, "images", tf.shape(data[0])[0], "labels", tf.shape(data[1])[0],
             output_stream=sys.stdout)
    return unobserved(self, data)

TensorFlowTrainer.train_step = observed_train_step
from deepface.train import train
manifest = train(sys.argv[1], sys.argv[2], sys.argv[3],
                 distribution=tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), **json.loads(sys.argv[4]))
"""


def test_two_replicas_split_each_global_batch(data, tmp_path):
    """Under a strategy with two replicas, every step feeds each replica its half of the global batch, and
    an epoch runs all its steps, with the same learning-rate scaling as on one device."""
    options = dict(preset="tiny", optimizer="sgd", epochs=2, batch_size=8, checkpoint_steps=0, feature_max_batches=1,
                   seed=1)  # sgd: its learning rate scales with the batch
    out = tmp_path / "model"
    completed = subprocess.run(
        [sys.executable, "-c", TWO_REPLICAS, str(data["tfrecords"]), str(data["labels"]), str(out),
         json.dumps(options)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"},
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    # Seen inside the steps (not what the product writes about itself): each of the 2 x 10 steps ran once
    # on each replica, each with 4 images and 4 labels.
    observed = re.findall(r"^OBSERVED replica (\d+) images (\d+) labels (\d+)$", completed.stdout, re.M)
    assert sorted(observed) == sorted([("0", "4", "4"), ("1", "4", "4")] * 20), completed.stdout[-3000:]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["strategy"]["replicas"] == 2 and metadata["strategy"]["kind"] == "MirroredStrategy"
    assert metadata["batch_size"] == {"global": 8, "per_replica": 4}
    assert metadata["learning_rate"]["initial"] == pytest.approx(0.01 * 8 / 128)
    history = json.loads((out / "history.json").read_text())
    assert history["steps_per_epoch"] == 10  # 80 records / 8
    assert history["optimizer_steps"] == 2 * 10 and history["runs"][0]["steps"] == 2 * 10
    assert "ran out of data" not in completed.stderr


def test_checkpoints_of_other_settings_are_refused(data, tmp_path):
    out = tmp_path / "model"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "run_config.json").write_text(json.dumps({"batch_size": 64}))
    with pytest.raises(DeepFaceError, match="belong to a run with other settings.*batch_size: 64 -> 8"):
        train(data["tfrecords"], data["labels"], out, preset="tiny", epochs=1, batch_size=8)


# --------------------------------------------------------------------------------------------------
# Bad input: a clear DeepFaceError before any training
# --------------------------------------------------------------------------------------------------


def break_missing_shard(data, tmp_path):
    tfrecords = copy_tfrecords(data, tmp_path / "tfrecords")
    next(tfrecords.glob("*-00001-of-*.tfrecord")).unlink()
    return tfrecords, data["labels"], {}


def break_empty_shard(data, tmp_path):
    tfrecords = copy_tfrecords(data, tmp_path / "tfrecords")
    next(tfrecords.glob("*-00002-of-*.tfrecord")).write_bytes(b"")
    return tfrecords, data["labels"], {}


def break_truncated_shard(data, tmp_path):
    tfrecords = copy_tfrecords(data, tmp_path / "tfrecords")
    shard = next(tfrecords.glob("*-00003-of-*.tfrecord"))
    shard.write_bytes(shard.read_bytes()[:-100])
    return tfrecords, data["labels"], {}


def break_manifest_json(data, tmp_path):
    tfrecords = copy_tfrecords(data, tmp_path / "tfrecords")
    (tfrecords / "manifest.json").write_text('{"shards": [')
    return tfrecords, data["labels"], {}


def break_manifest(data, tmp_path):
    tfrecords = copy_tfrecords(data, tmp_path / "tfrecords")
    (tfrecords / "manifest.json").unlink()  # an unfinished build
    return tfrecords, data["labels"], {}


def break_no_shards(data, tmp_path):
    return tmp_path / "nowhere", data["labels"], {}


def break_class_count(data, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    lines = (data["labels"] / "classes.txt").read_text().splitlines()
    (labels / "classes.txt").write_text("".join(f"{line}\n" for line in lines[:-1]))
    return data["tfrecords"], labels, {}


def break_class_names(data, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    lines = (data["labels"] / "classes.txt").read_text().splitlines()
    (labels / "classes.txt").write_text("".join(f"{line}\n" for line in [*lines[:-1], "n999999"]))
    return data["tfrecords"], labels, {}


def break_missing_labels(data, tmp_path):
    return data["tfrecords"], tmp_path / "no_labels", {}


def break_image_size(data, tmp_path):
    return data["tfrecords"], data["labels"], {"preset": "small"}  # 96-pixel input, 80-pixel records


def break_batch_zero(data, tmp_path):
    return data["tfrecords"], data["labels"], {"batch_size": 0}


def break_batch_too_large(data, tmp_path):
    return data["tfrecords"], data["labels"], {"batch_size": 81}


def break_learning_rate(data, tmp_path):
    return data["tfrecords"], data["labels"], {"learning_rate": -0.1}


@pytest.mark.parametrize("breaker, message", [
    (break_missing_shard, r"listed in .*manifest.json are missing|Found \d+ of the \d+ shards"),
    (break_empty_shard, r"TFRecord shard .*-00002-of-\d+.tfrecord is empty"),
    (break_truncated_shard, r"TFRecord shard .*-00003-of-\d+.tfrecord has \d+ bytes, its manifest says"),
    (break_manifest_json, r"manifest.json is not a TFRecords manifest"),
    (break_manifest, r"manifest.json not found"),
    (break_no_shards, r"nowhere"),
    (break_class_count, r"labelled with 8 classes but .*classes.txt lists 7"),
    (break_class_names, r"not the class map the TFRecords .* were labelled with"),
    (break_missing_labels, r"no_labels.*classes.txt"),
    (break_image_size, r"Preset 'small' takes 96-pixel images but .* hold 80-pixel ones"),
    (break_batch_zero, r"batch_size=0: must be an integer >= 1"),
    (break_batch_too_large, r"batch_size=81 is larger than the 80 training records"),
    (break_learning_rate, r"learning_rate=-0.1: must be a number > 0"),
])
def test_bad_input_is_refused_before_training(data, tmp_path, breaker, message):
    tfrecords, labels, options = breaker(data, tmp_path)
    out = tmp_path / "model"
    with pytest.raises(DeepFaceError, match=message):
        train(tfrecords, labels, out, **{"preset": "tiny", "epochs": 1, "batch_size": 8, **options})
    assert not out.exists()  # nothing written, nothing trained


def test_corrupt_record_is_an_error_naming_its_shard(data, tmp_path):
    tfrecords = copy_tfrecords(data, tmp_path / "tfrecords")
    shard = next(tfrecords.glob("*-00001-of-*.tfrecord"))
    content = bytearray(shard.read_bytes())
    content[len(content) // 2] ^= 0xFF  # same size: only the record checksums can tell
    shard.write_bytes(bytes(content))
    out = tmp_path / "model"
    with pytest.raises(DeepFaceError, match=rf"TFRecord shard {re.escape(str(shard))} is corrupt"):
        train(tfrecords, data["labels"], out, preset="tiny", epochs=1, batch_size=8, feature_max_batches=1)
    assert not (out / "manifest.json").exists()


def test_cli_reports_bad_input_in_one_line(data, tmp_path):
    result = CliRunner().invoke(main, [
        "train", "--tfrecords", str(data["tfrecords"]), "--labels", str(data["labels"]),
        "--out", str(tmp_path / "model"), "--preset", "tiny", "--batch-size", "1000"])
    assert result.exit_code == 1
    assert "batch_size=1000 is larger than the 80 training records" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------------------------------
# The accelerator benchmark stays runnable
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_on_cpu(tmp_path):
    results_file = tmp_path / "results.json"
    command = [sys.executable, "benchmarks/gpu_train.py", "--smoke", "--json", str(results_file)]
    completed = subprocess.run(command, cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=600,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(results_file.read_text())["results"]
    # float32 and bfloat16, each with XLA off and on; then the input pipeline against the fastest step.
    assert [(result["data"], result["precision"], result["xla"]) for result in results] == [
        ("memory", "float32", False), ("memory", "float32", True),
        ("memory", "bfloat16", False), ("memory", "bfloat16", True)]
    assert all(result["img_per_s"] > 0 and result["steps"] == 2 for result in results)
    assert re.search(r"input pipeline alone .* img/s against the fastest step, .*: (fed|NOT fed)", completed.stdout)
