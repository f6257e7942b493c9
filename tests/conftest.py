"""Shared fixtures: a small synthetic dataset in the real VGGFace2 / LFW layouts, made once per session."""

from __future__ import annotations

import io
import os
import tarfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Pin the component image before any test imports `components` (the default tag hashes uncommitted changes).
os.environ["DEEPFACE_IMAGE"] = "us-central1-docker.pkg.dev/test-proj/deepface/deepface-pipeline:0.1.0-test"
os.environ["DEEPFACE_IMAGE_GPU"] = "us-central1-docker.pkg.dev/test-proj/deepface/deepface-pipeline:0.1.0-test-gpu"
os.environ["DEEPFACE_IMAGE_TPU"] = "us-central1-docker.pkg.dev/test-proj/deepface/deepface-pipeline:0.1.0-test-tpu"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# Loopback HTTP file server and GCS emulator fixtures (tests/servers.py) for every test module.
pytest_plugins = ["helpers.servers"]

# Parameters of the shared dataset; tests may read them to know the expected counts.
SYNTH_PARAMS = dict(
    train_identities=8,
    test_identities=6,
    lfw_identities=12,
    images_per_identity=10,
    image_size=64,
    lfw_image_size=96,
    seed=0,
    workers=1,
)


@pytest.fixture(scope="session")
def synth_params() -> dict:
    """The arguments ``synth_dir`` was made with (a copy: the expected counts and sizes)."""
    return dict(SYNTH_PARAMS)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding vggface2_train.tar.gz, vggface2_test.tar.gz, train_list.txt, test_list.txt,
    lfw.tgz, pairs.txt and MD5SUMS of a small synthetic dataset (seed 0). Treat it as read-only."""
    from deepface.synth import make_synthetic_dataset

    out_dir = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(out_dir, **SYNTH_PARAMS)
    return out_dir


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A .tar.gz holding ``members`` (name, bytes) in the given order (names may repeat)."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def tiny_inputs(synth_dir: Path, root: Path, *, aligned: bool = True) -> tuple[Path, Path]:
    """``root/tfrecords`` (80-pixel faces, for the tiny preset) and ``root/labels`` of the synthetic train
    split, faces aligned from their landmarks or whole frames."""
    from deepface.labels import build_labels
    from deepface.tfrecords import build_tfrecords

    archive = synth_dir / "vggface2_train.tar.gz"
    build_labels(archive, root / "labels")
    build_tfrecords(archive, root / "labels", root / "tfrecords", image_size=80, align=aligned,
                    landmarks=synth_dir / "bb_landmark.tar.gz" if aligned else None, workers=1)
    return root / "tfrecords", root / "labels"


@pytest.fixture(scope="session")
def train_inputs(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`tiny_inputs` (aligned), once per test process."""
    return tiny_inputs(synth_dir, tmp_path_factory.mktemp("train_inputs"))


def tiny_model(synth_dir: Path, root: Path, *, aligned: bool) -> Path:
    """``root`` holding labels/, tfrecords/ (80 px, `tiny_inputs`) and model/: the tiny preset trained for two
    steps on the synthetic train split, on faces aligned from their landmarks or on whole frames (the model's
    metadata says which, and evaluate and verify follow it). Only its interface matters, not its accuracy."""
    from deepface.train import train

    tfrecords, labels = tiny_inputs(synth_dir, root, aligned=aligned)
    train(tfrecords, labels, root / "model", preset="tiny", epochs=1, batch_size=8,
          steps_per_epoch=2, checkpoint_steps=0, feature_max_batches=1, strategy="cpu")
    return root


@pytest.fixture(scope="module")
def tiny_evaluated(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(model_dir, evaluation_dir)``: `tiny_model` on whole frames and its evaluation on the synthetic LFW
    (for what serves and registers a model: only its interface matters)."""
    from deepface.evaluate import evaluate

    model_dir = tiny_model(synth_dir, tmp_path_factory.mktemp("model"), aligned=False) / "model"
    evaluation = tmp_path_factory.mktemp("eval")
    evaluate(model_dir, synth_dir / "lfw.tgz", synth_dir / "pairs.txt", evaluation, baseline=False)
    return model_dir, evaluation
