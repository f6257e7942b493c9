"""Each KFP component on small synthetic data: through kfp.local (the real executor, in subprocesses)
where its inputs allow it, else through ``component.python_func`` (called as the launcher calls it) with
artifacts on local paths."""

import inspect
import json
import os

import pytest
from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Metrics, Model

from components.evaluate import evaluate
from components.fetch import fetch
from components.labels import build_labels
from components.synth import make_synthetic_dataset
from components.tfrecords import build_tfrecords
from components.train import train
from pipelines.local import init_local

# kfp.local's remark that the project image is not a "python" image: expected, tasks run in this environment.
pytestmark = pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")

SMALL_SYNTH = dict(train_identities=3, test_identities=2, lfw_identities=4, images_per_identity=4,
                   image_size=48, lfw_image_size=64, seed=3)
RELEASE_FILES = {"vggface2_train.tar.gz", "vggface2_test.tar.gz", "train_list.txt", "test_list.txt", "lfw.tgz",
                 "pairs.txt", "MD5SUMS", "bb_landmark.tar.gz", "lfw_landmarks.csv"}


def artifact(kind, path) -> dsl.Artifact:
    return kind(uri=str(path))


def run(component, **arguments):
    """Call the component's function as the KFP launcher does: every parameter passed, the ones not given
    with the component's defaults (the source declares settings parameters without Python defaults)."""
    bound = inspect.signature(component.python_func).bind(**arguments)
    bound.apply_defaults()
    return component.python_func(**bound.arguments)


@pytest.fixture
def local_session(tmp_path):
    init_local(tmp_path / "root", enable_caching=False)
    return tmp_path / "root"


def test_synth_component_through_kfp_local(local_session):
    task = make_synthetic_dataset(**SMALL_SYNTH)
    folder = task.outputs["data"].path
    assert set(os.listdir(folder)) == RELEASE_FILES
    assert folder.startswith(str(local_session))


def test_synth_component_makes_nothing_when_data_is_given(local_session):
    task = make_synthetic_dataset(data_uri="gs://faces-bucket/vggface2/", **SMALL_SYNTH)
    assert os.listdir(task.outputs["data"].path) == []


def test_synth_fetch_labels_chain_through_kfp_local(local_session):
    @dsl.pipeline(name="data-chain")
    def chain() -> Dataset:
        synth = make_synthetic_dataset(**SMALL_SYNTH)
        fetched = fetch(synthetic=synth.outputs["data"])
        return build_labels(data=fetched.outputs["data"]).outputs["labels"]

    labels = chain().output
    classes = open(os.path.join(labels.path, "classes.txt"), encoding="utf-8").read().split()
    assert len(classes) == SMALL_SYNTH["train_identities"] and classes == sorted(classes)
    fetched_dir = os.path.join(os.path.dirname(os.path.dirname(labels.path)), "fetch", "data")
    manifest = json.load(open(os.path.join(fetched_dir, "manifest.json"), encoding="utf-8"))
    assert set(manifest["files"]) == RELEASE_FILES
    assert {entry["verified"] for name, entry in manifest["files"].items() if name != "MD5SUMS"} == {"MD5SUMS"}


def test_fetch_component_reads_an_https_style_folder_with_a_header_from_the_environment(
        synth_dir, http_server, tmp_path, monkeypatch):
    names = ["pairs.txt", "train_list.txt"]
    md5sums = "".join(line + "\n" for line in (synth_dir / "MD5SUMS").read_text().splitlines()
                      if line.split()[-1] in names)
    http_server.files = {f"data/{name}": (synth_dir / name).read_bytes() for name in names}
    http_server.files["data/MD5SUMS"] = md5sums.encode()
    http_server.required_header = ("X-Data-Token", "fetch-secret-62b1")
    monkeypatch.setenv("DATA_TOKEN_HEADER", "X-Data-Token: fetch-secret-62b1")
    data = artifact(Dataset, tmp_path / "data")
    run(fetch, synthetic=artifact(Dataset, tmp_path / "unused"), data=data,
                      data_uri=http_server.url("data/"), auth_header_env="DATA_TOKEN_HEADER")
    for name in names:
        assert (tmp_path / "data" / name).read_bytes() == (synth_dir / name).read_bytes()
    manifest = (tmp_path / "data" / "manifest.json").read_text()
    assert "fetch-secret-62b1" not in manifest
    files = json.loads(manifest)["files"]
    assert [files[name]["verified"] for name in names] == ["MD5SUMS", "MD5SUMS"]


@pytest.fixture(scope="module")
def stages(synth_dir, tmp_path_factory) -> dict:
    """Run fetch -> labels -> tfrecords -> train -> evaluate once through python_func on the shared data."""
    out = tmp_path_factory.mktemp("components")
    made = {
        "data": artifact(Dataset, out / "data"), "labels": artifact(Dataset, out / "labels"),
        "tfrecords": artifact(Dataset, out / "tfrecords"), "model": artifact(Model, out / "model"),
        "evaluation": artifact(Dataset, out / "evaluation"), "metrics": artifact(Metrics, out / "metrics"),
        "roc": artifact(ClassificationMetrics, out / "roc"), "report": artifact(HTML, out / "report.html"),
    }
    run(fetch, synthetic=artifact(Dataset, synth_dir), data=made["data"])
    run(build_labels, data=made["data"], labels=made["labels"])
    run(build_tfrecords, data=made["data"], labels=made["labels"], tfrecords=made["tfrecords"], preset="tiny")
    run(train, tfrecords=made["tfrecords"], labels=made["labels"], model=made["model"], preset="tiny",
                      epochs=1, batch_size=8, seed=0)
    run(evaluate, model=made["model"], data=made["data"], evaluation=made["evaluation"],
                         metrics=made["metrics"], roc=made["roc"], report=made["report"], batch_size=16,
                         roc_points=20)
    return made


def test_fetch_copies_the_synthetic_folder(stages, synth_dir):
    assert set(os.listdir(stages["data"].path)) >= RELEASE_FILES
    for name in RELEASE_FILES:
        assert open(os.path.join(stages["data"].path, name), "rb").read() == (synth_dir / name).read_bytes()


def test_tfrecords_are_stored_at_the_preset_size(stages):
    from deepface.model import get_config

    manifest = json.load(open(os.path.join(stages["tfrecords"].path, "manifest.json"), encoding="utf-8"))
    assert manifest["image_size"] == get_config("tiny").image_size
    assert any(
        name.startswith("train-") and name.endswith(".tfrecord") for name in os.listdir(stages["tfrecords"].path)
    )


def test_train_writes_a_complete_model_directory(stages):
    files = set(os.listdir(stages["model"].path))
    assert {"classifier.keras", "embedding.keras", "classes.txt", "metadata.json", "manifest.json"} <= files
    assert stages["model"].metadata["preset"] == "tiny"


def test_evaluate_logs_metrics_roc_and_report(stages):
    summary = json.load(open(os.path.join(stages["evaluation"].path, "metrics.json"), encoding="utf-8"))["summary"]
    logged = stages["metrics"].metadata
    assert {"accuracy", "accuracy_sem", "auc", "eer"} <= set(logged)
    assert any(name.startswith("tar_at_far_") for name in logged)
    assert logged == {name: value for name, value in summary.items() if value is not None}
    assert json.load(open(stages["metrics"].path, encoding="utf-8")) == logged  # a file, so kfp.local can cache it
    assert json.load(open(stages["roc"].path, encoding="utf-8")) == stages["roc"].metadata
    points = stages["roc"].metadata["confidenceMetrics"]
    assert 2 <= len(points) <= 20
    rates = [(p["falsePositiveRate"], p["recall"]) for p in points]
    assert rates == sorted(rates) and rates[0] == (0.0, 0.0) and rates[-1] == (1.0, 1.0)
    html = open(stages["report"].path, "rb").read()
    assert html == open(os.path.join(stages["evaluation"].path, "report.html"), "rb").read()
    assert html.lstrip().lower().startswith(b"<!doctype html")
