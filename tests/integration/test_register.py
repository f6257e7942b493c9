"""The Model Registry step: `deepface.registry.register_model` and its component through the real aiplatform SDK
against `fake_vertex.FakeCloud` on 127.0.0.1 (the tests read what the SDK sent and what the fake's registry
holds); champion/challenger both ways; bad input refused before any request; the pipeline's wiring (after
evaluate, the serving image, the run's project and region, a parameter that turns it off) and the local run,
which refuses and skips it.

The model is tiny, trained for two steps on whole frames and evaluated on the synthetic LFW: only its
interface matters. The champion's accuracy is set in the fake's registry around the challenger's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from helpers.fake_vertex import FakeCloud
from kfp.dsl import Dataset, Model

from components.image import image_reference
from deepface.errors import DeepFaceError
from deepface.registry import ACCURACY_LABEL, MODEL_LABEL, RECORD_FILE, SERVING_FOLDER, register_model
from deepface.settings import SettingError
from pipelines.local import run_local
from pipelines.pipeline import REGISTER_CONDITION, REGISTER_STAGE, RUN_LOCATION, RUN_PROJECT, compile_pipeline

PROJECT, REGION = "test-proj", "us-central1"
LOCATION = f"projects/{PROJECT}/locations/{REGION}"
ARTIFACT_URI = "gs://faces-bucket/runs/42/register/serving"
IMAGE = "us-central1-docker.pkg.dev/test-proj/deepface/deepface-pipeline:0.1.0-test"


@pytest.fixture(scope="module")
def trained(tiny_evaluated) -> tuple[Path, Path]:
    return tiny_evaluated


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    """One output folder for the module: the export is made once and found complete by later calls."""
    return tmp_path_factory.mktemp("registered")


@pytest.fixture
def fake():
    with FakeCloud() as server:
        yield server


def accuracy_of(evaluation: Path) -> float:
    return json.loads((evaluation / "metrics.json").read_text())["summary"]["accuracy"]


def label(value: float) -> str:
    return f"{value:.6f}".replace(".", "_")


def register(fake: FakeCloud, trained, out_dir: Path, **options) -> dict:
    model_dir, evaluation = trained
    arguments = dict(serving_image=IMAGE, project=PROJECT, location=REGION, artifact_uri=ARTIFACT_URI,
                     api_endpoint=fake.url, labels={"deepface-image-tag": "0_1_0-test"})
    return register_model(model_dir, evaluation, out_dir, **{**arguments, **options})


def uploads(fake: FakeCloud) -> list[dict]:
    return [request.json() for request in fake.find("POST", f"/v1/{LOCATION}/models:upload")]


def seed_champion(fake: FakeCloud, accuracy: str | None) -> dict:
    """Version 1 of the model ``deepface``, holding ``default``, with this accuracy label (None: none)."""
    labels = {ACCURACY_LABEL: accuracy} if accuracy is not None else {"team": "faces"}
    return fake.add_model_version(LOCATION, "deepface", labels=labels)


def test_the_first_version_makes_the_model_and_is_default(fake, trained, out_dir):
    record = register(fake, trained, out_dir)
    [upload] = uploads(fake)
    model = upload["model"]
    # A new model: no parent; the serving container is the project image running `deepface serve`.
    assert "parentModel" not in upload
    assert model["displayName"] == "deepface"
    assert model["artifactUri"] == ARTIFACT_URI
    assert model["containerSpec"] == {"imageUri": IMAGE, "command": ["deepface"], "args": ["serve"],
                                      "ports": [{"containerPort": 8080}], "predictRoute": "/predict",
                                      "healthRoute": "/health"}
    assert model["versionAliases"] == ["default"]
    # The metrics travel with the version: labels (read back as the next run's champion) and description.
    accuracy = accuracy_of(trained[1])
    assert model["labels"][ACCURACY_LABEL] == label(accuracy)
    assert {"deepface-auc", "deepface-eer", MODEL_LABEL} <= set(model["labels"])
    assert model["labels"]["deepface-image-tag"] == "0_1_0-test"
    assert f"accuracy {accuracy:.4f}" in model["versionDescription"]
    # The SDK looked for the model by its name first.
    [listing] = [request for request in fake.find("GET", f"/v1/{LOCATION}/models") if "filter" in request.query]
    assert listing.path == f"/v1/{LOCATION}/models" and listing.query["filter"] == ['display_name="deepface"']
    # The decision record: returned and written beside the export, which Vertex AI reads.
    [name] = fake.models
    assert record["model"] == name and record["version"] == "1" and record["version_name"] == f"{name}@1"
    assert record["promoted"] is True and record["parent_model"] is None and record["champion"] is None
    assert record["champion_accuracy"] is None and record["challenger_accuracy"] == round(accuracy, 6)
    assert record["default_version"] == "1" and "first version" in record["reason"]
    assert json.loads((out_dir / RECORD_FILE).read_text()) == record
    serving = out_dir / SERVING_FOLDER
    assert (serving / "saved_model.pb").is_file() and (serving / "serving.json").is_file()
    assert fake.model_version(name)["versionId"] == "1"


@pytest.mark.parametrize("champion_gap, margin", [(-0.05, 0.0), (-0.001, 0.0)])
def test_a_better_challenger_becomes_default(fake, trained, out_dir, champion_gap, margin):
    accuracy = accuracy_of(trained[1])
    champion = seed_champion(fake, label(max(accuracy + champion_gap, 0.0)))
    record = register(fake, trained, out_dir, promote_margin=margin)
    [upload] = uploads(fake)
    assert upload["parentModel"] == champion["name"]
    assert "default" in upload["model"]["versionAliases"]
    # The registry moved `default` to the new version.
    assert fake.model_version(champion["name"])["versionId"] == "2"
    assert [version["versionAliases"] for version in fake.models[champion["name"]]] == [[], ["default"]]
    assert record["promoted"] is True and record["version"] == "2" and record["default_version"] == "2"
    assert record["parent_model"] == champion["name"]
    assert record["champion"] == {"version": "1", "accuracy": round(max(accuracy + champion_gap, 0.0), 6)}
    assert record["champion_accuracy"] < record["challenger_accuracy"] == round(accuracy, 6)
    assert "promoted" in record["reason"]
    # The champion was read as Vertex AI's default version.
    assert fake.find("GET", f"/v1/{champion['name']}@default")


@pytest.mark.parametrize("champion_gap, margin", [(0.0, 0.0), (0.05, 0.0), (-0.001, 0.01)],
                         ids=["equal", "better-champion", "gain-below-margin"])
def test_a_challenger_that_is_not_better_leaves_default_on_the_champion(fake, trained, out_dir, champion_gap, margin):
    accuracy = accuracy_of(trained[1])
    champion_accuracy = min(max(accuracy + champion_gap, 0.0), 1.0)
    champion = seed_champion(fake, label(champion_accuracy))
    record = register(fake, trained, out_dir, promote_margin=margin)
    [upload] = uploads(fake)
    assert upload["parentModel"] == champion["name"]
    assert "default" not in upload["model"].get("versionAliases", [])
    # Uploaded as version 2; the champion keeps `default`.
    assert [version["versionId"] for version in fake.models[champion["name"]]] == ["1", "2"]
    assert fake.model_version(champion["name"])["versionId"] == "1"
    assert record["promoted"] is False and record["version"] == "2" and record["default_version"] == "1"
    assert record["champion_accuracy"] == round(champion_accuracy, 6)
    assert record["challenger_accuracy"] == round(accuracy, 6)
    assert "default stays" in record["reason"]
    assert json.loads((out_dir / RECORD_FILE).read_text()) == record


def test_a_champion_without_an_accuracy_label_keeps_default(fake, trained, out_dir):
    champion = seed_champion(fake, None)
    record = register(fake, trained, out_dir)
    assert record["promoted"] is False and record["champion_accuracy"] is None
    assert f"no {ACCURACY_LABEL} label" in record["reason"]
    assert fake.model_version(champion["name"])["versionId"] == "1"


def test_several_models_of_the_name_are_refused_before_uploading(fake, trained, out_dir):
    first, second = (fake.add_model_version(LOCATION, "deepface") for _ in range(2))
    with pytest.raises(DeepFaceError, match=r"model_name 'deepface': 2 registry models have this name") as error:
        register(fake, trained, out_dir)
    assert first["name"] in str(error.value) and second["name"] in str(error.value)
    assert not uploads(fake)


@pytest.mark.parametrize("options, message", [
    ({"project": ""}, r"project='': give the Google Cloud project id"),
    ({"project": RUN_PROJECT}, r"project='\{\{\$\.pipeline_google_cloud_project_id\}\}'"),
    ({"location": "moon"}, r"location='moon': give a Vertex AI region"),
    ({"serving_image": "registry.example/deepface:latest"}, r"serving_image=.*immutable tag"),
    ({"serving_image": "registry.example/deepface"}, r"serving_image=.*immutable tag"),
    ({"labels": {"Team": "faces"}}, r"labels Team='faces': use lowercase letters"),
    ({"labels": {ACCURACY_LABEL: "1_0"}}, r"labels deepface-accuracy: these are the registry step's own labels"),
    ({"version_aliases": ["default"]}, r"version_aliases 'default'"),
    ({"artifact_uri": "/data/serving"}, r"artifact_uri='/data/serving': .* give a gs:// URI"),
    ({"artifact_uri": None}, r"out_dir .*: Vertex AI reads models from Cloud Storage: write under /gcs/BUCKET/"),
])
def test_bad_input_is_one_line_before_any_request(fake, trained, tmp_path, options, message):
    with pytest.raises(DeepFaceError, match=message) as error:
        register(fake, trained, tmp_path / "out", **options)
    assert "\n" not in str(error.value)
    assert not fake.requests and not (tmp_path / "out").exists()


def test_bad_settings_and_an_incomplete_evaluation_are_refused(fake, trained, tmp_path):
    with pytest.raises(SettingError, match="model_name='deep face'"):
        register(fake, trained, tmp_path / "out", model_name="deep face")
    with pytest.raises(SettingError, match="promote_margin=-0.1"):
        register(fake, trained, tmp_path / "out", promote_margin=-0.1)
    with pytest.raises(DeepFaceError, match="not a complete output of `deepface evaluate`"):
        register_model(trained[0], tmp_path, tmp_path / "out", serving_image=IMAGE, project=PROJECT,
                       location=REGION, artifact_uri=ARTIFACT_URI, api_endpoint=fake.url)
    assert not fake.requests


def test_the_component_records_the_version_and_the_decision_in_its_metadata(fake, trained, tmp_path):
    """The component as the KFP launcher calls it: its output's URI is in Cloud Storage (gs://, what Vertex AI
    reads) while its path is where this machine writes (Vertex AI's /gcs mount)."""
    import inspect

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    from components.register import register_model as component

    # The component passes no endpoint: the SDK keeps the one aiplatform.init was given (here the fake's).
    aiplatform.init(project=PROJECT, location=REGION, credentials=AnonymousCredentials(), api_endpoint=fake.url,
                    api_transport="rest")
    model_dir, evaluation = trained
    registered = Model(uri="gs://faces-bucket/runs/42/register-model/registered")
    registered.set_path(str(tmp_path / "registered"))
    arguments = inspect.signature(component.python_func).bind(
        model=Model(uri=str(model_dir)), evaluation=Dataset(uri=str(evaluation)), registered=registered,
        serving_image=IMAGE, project=PROJECT, location=REGION, labels={"deepface-image-tag": "0_1_0-test"})
    arguments.apply_defaults()
    component.python_func(**arguments.arguments)
    [upload] = uploads(fake)
    assert upload["model"]["artifactUri"] == "gs://faces-bucket/runs/42/register-model/registered/serving"
    assert upload["model"]["displayName"] == "deepface"
    [name] = fake.models
    assert registered.metadata["resourceName"] == f"{name}@1"
    assert registered.metadata["promoted"] is True and registered.metadata["default_version"] == "1"
    assert registered.metadata["challenger_accuracy"] == round(accuracy_of(evaluation), 6)
    assert "champion_accuracy" not in registered.metadata  # no champion: a new model
    assert (tmp_path / "registered" / SERVING_FOLDER / "saved_model.pb").is_file()
    assert json.loads((tmp_path / "registered" / RECORD_FILE).read_text())["version_name"] == f"{name}@1"


# ----------------------------------------------------------------------------------------------- the pipeline


def test_the_pipeline_registers_after_evaluate_with_the_serving_image(tmp_path):
    spec = yaml.safe_load(open(compile_pipeline(tmp_path / "pipeline.yaml"), encoding="utf-8"))
    root = spec["root"]["dag"]["tasks"]
    [(group, condition)] = [(name, body) for name, body in root.items()
                            if body["taskInfo"]["name"] == REGISTER_CONDITION]
    assert set(condition["dependentTasks"]) == {"train", "evaluate"}
    assert condition["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--register'] == true"
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["register"]["defaultValue"] is True and "Local runs skip" in parameters["register"]["description"]
    assert parameters["model_name"]["defaultValue"] == "deepface"
    assert parameters["promote_margin"]["defaultValue"] == 0.0
    [task] = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"].values()
    assert task["taskInfo"]["name"] == REGISTER_STAGE
    inputs = task["inputs"]
    assert inputs["artifacts"]["model"]["componentInputArtifact"] == "pipelinechannel--train-model"
    assert inputs["artifacts"]["evaluation"]["componentInputArtifact"] == "pipelinechannel--evaluate-evaluation"
    constants = {name: value["runtimeValue"]["constant"] for name, value in inputs["parameters"].items()
                 if "runtimeValue" in value}
    # The serving image is the project image (CPU flavour); the registry is the run's own project and region.
    assert constants["serving_image"] == image_reference() == IMAGE
    assert constants["project"] == RUN_PROJECT == "{{$.pipeline_google_cloud_project_id}}"
    assert constants["location"] == RUN_LOCATION == "{{$.pipeline_google_cloud_location}}"
    assert constants["labels"] == {"deepface-image-tag": "0_1_0-test"}
    assert {inputs["parameters"][name]["componentInputParameter"] for name in ("model_name", "promote_margin")} == {
        "pipelinechannel--model_name", "pipelinechannel--promote_margin"}
    executor = spec["deploymentSpec"]["executors"][spec["components"][task["componentRef"]["name"]]["executorLabel"]]
    assert executor["container"]["image"] == IMAGE
    assert "from deepface.registry import" in " ".join(executor["container"]["command"])


def test_a_local_run_refuses_to_register(tmp_path):
    with pytest.raises(DeepFaceError, match=r"register=true: a local run cannot reach the Vertex AI Model Registry"):
        run_local({"register": True}, pipeline_root=tmp_path)
    assert os.listdir(tmp_path) == []
