"""Multi-worker training, actually run: two `deepface train` processes on 127.0.0.1 train one model with
`MultiWorkerMirroredStrategy` (collective ops over gRPC, AUTO communication: ring all-reduce on CPU).

The cluster is given the two ways a Vertex AI replica may get it: the chief (Vertex's primary replica,
workerpool0) by ``TF_CONFIG``, the other worker by Vertex's own ``CLUSTER_SPEC`` (workerpool1), both
naming the same two addresses. Both run the same command line with the same arguments, as the replicas
of a Vertex AI custom job do.

Checked: two workers train like one at the same global batch (same steps, a final loss within
`LOSS_TOLERANCE`: each worker reads its own shards, so the batches, and the dropout masks, differ from
one worker's); only the chief's checkpoints and model directory exist, the other worker's throw-away
checkpoints are removed; and after one worker is SIGKILLed past a checkpoint and both are restarted,
training resumes at the chief's last checkpoint on both and ends with the steps, metrics and weights of
the uninterrupted two-worker run, no step done twice.

Every wait is bounded (`helpers.faults.DEADLINE_SECONDS`); a kill point is a checkpoint seen on disk.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers.faults import DEADLINE_SECONDS, Child, await_point, checkpoint_step, child_env, classifier_weights

from deepface.data import make_dataset
from deepface.labels import build_labels
from deepface.tfrecords import build_tfrecords
from deepface.train import train

pytestmark = pytest.mark.slow  # a few minutes on 2 cores: four training runs, three of them with two workers

EPOCHS = 8
STEPS = 10  # 80 records / global batch 8
SETTINGS = dict(preset="tiny", optimizer="adam", learning_rate=0.001, epochs=EPOCHS, batch_size=8, seed=3,
                checkpoint_steps=3, feature_max_batches=2)
# Final training loss of two workers vs one, relative: the runs see the same records in other batches
# (each worker reads its own shards) with other dropout masks, so they agree only statistically (measured:
# 1.41 vs 1.51 and 1.63 nats from 2.08 at chance).
LOSS_TOLERANCE = 0.25
LEARNED = 0.8  # both end below this share of the chance loss ln(8) over every record (measured: 0.58; 0.47, 0.75)


@pytest.fixture(scope="module")
def inputs(synth_dir, tmp_path_factory) -> tuple[Path, Path]:
    """TFRecords of the synthetic train split in 4 shards (2 per worker) and its labels."""
    root = tmp_path_factory.mktemp("multiworker_inputs")
    archive = synth_dir / "vggface2_train.tar.gz"
    build_labels(archive, root / "labels")
    build_tfrecords(archive, root / "labels", root / "tfrecords", image_size=80, shard_mb=40_000 / 2**20,
                    landmarks=synth_dir / "bb_landmark.tar.gz", workers=1)
    assert len(list((root / "tfrecords").glob("train-*.tfrecord"))) >= 4
    return root / "tfrecords", root / "labels"


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 now (held open together while chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def cluster_envs() -> tuple[dict[str, str], dict[str, str]]:
    """The environments of the chief (``TF_CONFIG``) and of the other worker (Vertex AI's ``CLUSTER_SPEC``)
    of one two-machine cluster on fresh ports."""
    chief, worker = (f"127.0.0.1:{port}" for port in free_ports(2))
    tf_config = {"cluster": {"chief": [chief], "worker": [worker]}, "task": {"type": "chief", "index": 0}}
    cluster_spec = {"cluster": {"workerpool0": [chief], "workerpool1": [worker]}, "environment": "cloud",
                    "task": {"type": "workerpool1", "index": 0, "trial": ""}, "job": "{}"}
    return {"TF_CONFIG": json.dumps(tf_config)}, {"CLUSTER_SPEC": json.dumps(cluster_spec)}


def start_workers(inputs: tuple[Path, Path], out: Path, logs: Path, name: str) -> list[Child]:
    """Start the chief and the other worker, with the same arguments; each gets its own TMPDIR under
    ``logs`` (where a non-chief worker writes its throw-away checkpoints)."""
    tfrecords, labels = inputs
    args = ["train", "--tfrecords", str(tfrecords), "--labels", str(labels), "--out", str(out), "--keep-checkpoints",
            *[arg for key, value in SETTINGS.items() for arg in (f"--{key.replace('_', '-')}", str(value))]]
    children = []
    for role, env in zip(("chief", "worker"), cluster_envs()):
        tmp = logs / f"{name}-{role}-tmp"
        tmp.mkdir(parents=True)
        children.append(Child(args, logs / f"{name}-{role}.log", child_env(TMPDIR=str(tmp), **env)))
    return children


def finish(children: list[Child]) -> list[str]:
    """Wait for every worker to end (each within DEADLINE_SECONDS), all with status 0; their logs."""
    try:
        for child in children:
            returncode = child.wait(timeout=DEADLINE_SECONDS)
            assert returncode == 0, f"{child.log_path.name} exited {returncode}:\n{child.log()[-4000:]}"
    except subprocess.TimeoutExpired:
        pytest.fail(f"a worker did not finish in {DEADLINE_SECONDS} s:\n{children[0].log()[-3000:]}")
    finally:
        for child in children:
            if child.process.returncode is None:
                child.kill()
    return [child.log() for child in children]


def dataset_loss(model_dir: Path, tfrecords: Path) -> float:
    """Mean cross-entropy of the saved classifier over every record (inference mode: no dropout)."""
    model = keras.saving.load_model(model_dir / "classifier.keras", compile=False)
    losses = []
    for images, labels in make_dataset(tfrecords, batch_size=40, image_size=80, training=False):
        probabilities = model(images, training=False).numpy()
        losses.append(-np.log(probabilities[np.arange(len(labels)), labels.numpy()] + 1e-12))
    return float(np.concatenate(losses).mean())


@pytest.fixture(scope="module")
def one_worker(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one_worker") / "model"
    train(*inputs, out, strategy="cpu", **SETTINGS)
    return out


@pytest.fixture(scope="module")
def two_workers(inputs, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("two_workers")
    logs = finish(start_workers(inputs, root / "model", root, "run"))
    return {"root": root, "model": root / "model", "logs": logs}


def test_two_workers_train_like_one_at_the_same_global_batch(inputs, one_worker, two_workers):
    model = two_workers["model"]
    metadata = json.loads((model / "metadata.json").read_text())
    assert metadata["strategy"]["kind"] == "multi-worker" and metadata["strategy"]["replicas"] == 2
    assert metadata["batch_size"] == {"global": 8, "per_replica": 4}
    chief_log, worker_log = two_workers["logs"]
    assert "Input pipeline 0/2: 2 shard(s)" in chief_log and "Input pipeline 1/2: 2 shard(s)" in worker_log
    # Every step all-reduces the gradients of every trainable variable (TensorFlow logs each collective).
    trainable = len(keras.saving.load_model(model / "classifier.keras", compile=False).trainable_weights)
    for log in two_workers["logs"]:
        assert f"Collective all_reduce tensors: {trainable} all_reduces, num_devices = 1, group_size = 2" in log

    history = json.loads((model / "history.json").read_text())
    reference = json.loads((one_worker / "history.json").read_text())
    assert history["optimizer_steps"] == reference["optimizer_steps"] == EPOCHS * STEPS
    assert history["runs"] == [{"start_epoch": 0, "start_step": 0, "steps": EPOCHS * STEPS}]
    mine, theirs = dataset_loss(model, inputs[0]), dataset_loss(one_worker, inputs[0])
    assert max(mine, theirs) < LEARNED * np.log(8), (mine, theirs)
    final, reference_final = history["metrics"]["loss"][-1], reference["metrics"]["loss"][-1]
    assert abs(final - reference_final) <= LOSS_TOLERANCE * reference_final, (final, reference_final)


def test_only_the_chief_keeps_checkpoints(two_workers):
    root = two_workers["root"]
    assert checkpoint_step(root / "model" / "checkpoints") == EPOCHS * STEPS  # kept: --keep-checkpoints
    assert {path.name for path in root.iterdir()} == {"model", "run-chief-tmp", "run-worker-tmp", "run-chief.log",
                                                      "run-worker.log"}
    chief_log, worker_log = two_workers["logs"]
    # The other worker saved as often as the chief, into its throw-away directory, removed at its end.
    worker_saves = worker_log.count(f"Checkpoint {root / 'run-worker-tmp'}/deepface-worker-checkpoints-")
    assert worker_saves == chief_log.count(f"Checkpoint {root / 'model' / 'checkpoints'}/ckpt-") > EPOCHS
    assert not any((root / "run-worker-tmp").iterdir())
    # Only the chief wrote the model directory (and printed its result).
    assert '"final_metrics"' in chief_log and '"final_metrics"' not in worker_log


def test_a_killed_worker_resumes_from_the_chiefs_checkpoint(inputs, two_workers, tmp_path):
    """SIGKILL the other worker once the chief has checkpointed inside the second epoch, then the chief
    (the job restarts as a whole); rerun both: each resumes at the chief's last checkpoint, and the run
    ends as the uninterrupted one did."""
    out = tmp_path / "model"
    chief, worker = start_workers(inputs, out, tmp_path, "killed")
    try:
        await_point(chief, lambda: checkpoint_step(out / "checkpoints") > STEPS, "kill the worker", "checkpoint")
    finally:
        assert worker.kill() == -9
        chief.kill()
    killed_at = checkpoint_step(out / "checkpoints")
    assert STEPS < killed_at < EPOCHS * STEPS and not (out / "manifest.json").exists()

    logs = finish(start_workers(inputs, out, tmp_path, "resumed"))
    epoch, step = divmod(killed_at, STEPS)
    for log in logs:  # both restored the chief's checkpoint
        assert f"Resuming from {out / 'checkpoints' / f'ckpt-{killed_at}'} at epoch {epoch}, step {step}" in log
    history = json.loads((out / "history.json").read_text())
    assert history["runs"] == [{"start_epoch": 0, "start_step": 0, "steps": killed_at},
                               {"start_epoch": epoch, "start_step": step, "steps": EPOCHS * STEPS - killed_at}]
    assert history["optimizer_steps"] == EPOCHS * STEPS  # no step done twice
    uninterrupted = json.loads((two_workers["model"] / "history.json").read_text())
    for name, values in uninterrupted["metrics"].items():
        np.testing.assert_allclose(history["metrics"][name], values, rtol=1e-4, err_msg=name)
    for mine, theirs in zip(classifier_weights(out), classifier_weights(two_workers["model"])):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)
    assert not any((tmp_path / "resumed-worker-tmp").iterdir())
