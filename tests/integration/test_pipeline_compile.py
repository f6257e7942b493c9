"""The compiled pipeline template: determinism, DAG, parameters, resources, caching, image, no secrets."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys

# The image the components are built with (before they are imported): a registry image with a fixed tag.
import pytest
import yaml
from click.testing import CliRunner
from helpers.fake_vertex import FakeCloud

from components import image
from deepface.errors import DeepFaceError
from pipelines.cli import main
from pipelines.pipeline import (
    REGISTER_CONDITION,
    REGISTER_STAGE,
    STAGE_RESOURCES,
    CompileOptions,
    compile_pipeline,
    make_pipeline,
)

TASK_OF_STAGE = {"fingerprint": "fingerprint-data", "synth": "make-synthetic-dataset", "fetch": "fetch",
                 "labels": "build-labels", "tfrecords": "build-tfrecords", "train": "train", "evaluate": "evaluate",
                 REGISTER_STAGE: "register-model"}
SECRETS = {"DEEPFACE_KFP_TOKEN": "kfp-secret-0d9f", "DEEPFACE_REGISTRY_TOKEN": "registry-secret-77ab",
           "FETCH_AUTH": "Authorization: Bearer fetch-secret-1c2e"}


def compiled(tmp_path, options=CompileOptions(), name="pipeline.yaml") -> dict:
    path = compile_pipeline(tmp_path / name, options)
    return yaml.safe_load(open(path, encoding="utf-8"))


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    return compiled(tmp_path_factory.mktemp("compile"))


def executor_of(spec: dict, task: str) -> dict:
    if task == "register-model":  # the registry step, inside its condition group
        condition = next(name for name, body in spec["root"]["dag"]["tasks"].items()
                         if body["taskInfo"]["name"] == REGISTER_CONDITION)
        component = spec["components"][spec["root"]["dag"]["tasks"][condition]["componentRef"]["name"]]
        component = component["dag"]["tasks"][task]["componentRef"]["name"]
    else:
        component = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    label = spec["components"][component]["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]["container"]


def test_compiling_twice_gives_identical_files(tmp_path):
    first = compile_pipeline(tmp_path / "a.yaml")
    result = CliRunner().invoke(main, ["compile", "--output", str(tmp_path / "b.yaml")])
    assert result.exit_code == 0, result.output
    assert open(first, "rb").read() == (tmp_path / "b.yaml").read_bytes()


def test_template_reloads_with_kfp(tmp_path):
    from kfp import components

    path = compile_pipeline(tmp_path / "pipeline.yaml")
    reloaded = components.load_component_from_file(path)
    assert reloaded.name == "deepface-pipeline"
    assert set(reloaded.component_spec.inputs) == set(inspect.signature(make_pipeline().pipeline_func).parameters)
    assert {"model", "metrics", "report"} <= set(reloaded.component_spec.outputs)


def test_dag_edges(spec):
    tasks = spec["root"]["dag"]["tasks"]
    edges = {(upstream, task) for task, body in tasks.items() for upstream in body.get("dependentTasks", [])}
    assert edges == {
        ("fingerprint-data", "fetch"), ("make-synthetic-dataset", "fetch"),
        ("fetch", "build-labels"),
        ("fetch", "build-tfrecords"), ("build-labels", "build-tfrecords"),
        ("build-tfrecords", "train"), ("build-labels", "train"),
        ("train", "evaluate"), ("fetch", "evaluate"),
        ("train", "condition-1"), ("evaluate", "condition-1"),  # the registry step (tests/integration/test_register.py)
    }
    train_inputs = tasks["train"]["inputs"]["artifacts"]
    assert train_inputs["tfrecords"]["taskOutputArtifact"] == {
        "outputArtifactKey": "tfrecords", "producerTask": "build-tfrecords"
    }
    assert train_inputs["labels"]["taskOutputArtifact"] == {
        "outputArtifactKey": "labels", "producerTask": "build-labels"
    }
    evaluate_inputs = tasks["evaluate"]["inputs"]["artifacts"]
    assert evaluate_inputs["model"]["taskOutputArtifact"]["producerTask"] == "train"
    assert {body["taskInfo"]["name"] for body in tasks.values()} == set(TASK_OF_STAGE) - {REGISTER_STAGE} | {
        REGISTER_CONDITION}


def test_parameters_have_the_function_defaults_and_descriptions(spec):
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    signature = inspect.signature(make_pipeline().pipeline_func).parameters
    assert set(parameters) == set(signature)
    for name, parameter in parameters.items():
        assert parameter["defaultValue"] == signature[name].default, name
        assert parameter.get("description", "").strip(), f"{name} has no description"
        assert parameter.get("isOptional") is True, name
    # The default run is the embedded synthetic demo.
    assert parameters["data_uri"]["defaultValue"] == ""
    assert parameters["preset"]["defaultValue"] == "tiny"
    # Faces are aligned by default, for training and evaluation alike, and the run form says so.
    assert parameters["align"]["defaultValue"] is True and "aligned" in parameters["align"]["description"]
    tasks = spec["root"]["dag"]["tasks"]
    for task in ("build-tfrecords", "evaluate"):
        assert tasks[task]["inputs"]["parameters"]["align"]["componentInputParameter"] == "align"
    assert tasks["build-tfrecords"]["inputs"]["parameters"]["landmarks"]["componentInputParameter"] == "landmarks"
    assert (tasks["evaluate"]["inputs"]["parameters"]["landmarks"]["componentInputParameter"]
            == "verification_landmarks")


def test_every_component_input_and_output_is_described():
    from components.evaluate import evaluate
    from components.fetch import fetch
    from components.labels import build_labels
    from components.register import register_model
    from components.synth import make_synthetic_dataset
    from components.tfrecords import build_tfrecords
    from components.train import train

    for component in (make_synthetic_dataset, fetch, build_labels, build_tfrecords, train, evaluate, register_model):
        interface = component.component_spec
        for name, io in {**interface.inputs, **(interface.outputs or {})}.items():
            assert (io.description or "").strip(), f"{component.name}.{name} has no description"


def test_artifact_types(spec):
    outputs = {name: c.get("outputDefinitions", {}).get("artifacts", {}) for name, c in spec["components"].items()}
    evaluate = outputs["comp-evaluate"]
    assert {k: v["artifactType"]["schemaTitle"] for k, v in evaluate.items()} == {
        "evaluation": "system.Dataset", "metrics": "system.Metrics",
        "roc": "system.ClassificationMetrics", "report": "system.HTML",
    }
    assert outputs["comp-train"]["model"]["artifactType"]["schemaTitle"] == "system.Model"


def test_resources_per_task(spec):
    for stage, (cpu, memory) in STAGE_RESOURCES.items():
        resources = executor_of(spec, TASK_OF_STAGE[stage])["resources"]
        assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == (cpu, memory), stage
    train = executor_of(spec, "train")["resources"]
    defaults = CompileOptions()
    assert (train["resourceCpuLimit"], train["resourceMemoryLimit"]) == (defaults.train_cpu, defaults.train_memory)
    assert "accelerator" not in train


def test_gpu_option_sets_the_training_accelerator(tmp_path):
    spec = compiled(tmp_path, CompileOptions(accelerator="NVIDIA_L4", accelerator_count=2, train_memory="64G"))
    train = executor_of(spec, "train")["resources"]
    assert train["accelerator"]["resourceType"] == "NVIDIA_L4"
    assert train["accelerator"]["resourceCount"] == "2"
    assert train["resourceMemoryLimit"] == "64G"
    assert "accelerator" not in executor_of(spec, "evaluate")["resources"]
    # Training gets the GPU flavour of the image; every other task keeps the CPU one.
    assert executor_of(spec, "train")["image"] == image.image_reference("gpu") != image.image_reference()
    assert all(executor_of(spec, TASK_OF_STAGE[stage])["image"] == image.image_reference()
               for stage in TASK_OF_STAGE if stage != "train")


def test_an_accelerator_without_its_image_flavour_is_refused(tmp_path, monkeypatch):
    """One explicit image (DEEPFACE_IMAGE) cannot serve a GPU: compiling says which variable to set, and a
    GPU override that is another flavour's tag is refused too. Nothing is written."""
    monkeypatch.delenv("DEEPFACE_IMAGE_GPU")
    with pytest.raises(DeepFaceError, match="set DEEPFACE_IMAGE_GPU too"):
        compile_pipeline(tmp_path / "gpu.yaml", CompileOptions(accelerator="NVIDIA_L4"))
    monkeypatch.setenv("DEEPFACE_IMAGE_GPU", "r.example/deepface:0.1.0-g0123456789ab-tpu")
    with pytest.raises(DeepFaceError, match="is the tpu flavour, but this task needs the gpu image"):
        compile_pipeline(tmp_path / "gpu.yaml", CompileOptions(accelerator="NVIDIA_L4"))
    assert not (tmp_path / "gpu.yaml").exists()
    compile_pipeline(tmp_path / "cpu.yaml", CompileOptions())  # no accelerator: no GPU image needed


def test_tpu_custom_job_option(tmp_path):
    options = CompileOptions(training="custom-job", accelerator="TPU_V5_LITEPOD", accelerator_count=4,
                             machine_type="ct5lp-hightpu-4t", replicas=2)
    spec = compiled(tmp_path, options)
    train_component = spec["components"][spec["root"]["dag"]["tasks"]["train"]["componentRef"]["name"]]
    pools = train_component["inputDefinitions"]["parameters"]["worker_pool_specs"]["defaultValue"]
    assert [pool["replica_count"] for pool in pools] == [1, 1]  # the chief, then one more worker
    assert pools[0]["machine_spec"] == {"machine_type": "ct5lp-hightpu-4t", "accelerator_type": "TPU_V5_LITEPOD",
                                        "accelerator_count": 4}
    assert pools[0]["container_spec"]["image_uri"] == image.image_reference("tpu")
    args = pools[0]["container_spec"]["args"]
    assert args[args.index("--function_to_execute") + 1] == "train"
    # The custom job reads and writes the same artifacts as the plain training task.
    assert set(train_component["inputDefinitions"]["artifacts"]) == {"tfrecords", "labels"}
    assert set(train_component["outputDefinitions"]["artifacts"]) == {"model"}


@pytest.mark.parametrize("options, message", [
    (CompileOptions(accelerator="TPU_V3"), "needs --training custom-job"),
    (CompileOptions(replicas=3), "needs --training custom-job"),
    (CompileOptions(train_memory="lots"), "--train-memory"),
    (CompileOptions(train_cpu="eight"), "--train-cpu"),
    (CompileOptions(accelerator="nvidia l4"), "--accelerator"),
    (CompileOptions(training="kubernetes"), "--training"),
    (CompileOptions(accelerator_count=0, accelerator="NVIDIA_L4"), "--accelerator-count"),
    (CompileOptions(training="custom-job", accelerator="TPU_V5_LITEPODSLICE"),
     "TPU_V5_LITEPODSLICE: not a Vertex AI accelerator type"),
    (CompileOptions(tensorboard="projects/1/locations/us-central1/tensorboards/2"),
     "--tensorboard needs --training custom-job"),
    (CompileOptions(training="custom-job", tensorboard="faces-board"), "--tensorboard 'faces-board'"),
    (CompileOptions(training="custom-job", labels=(("Team", "faces"),)), "--label Team='faces'"),
])
def test_bad_compile_options(options, message):
    with pytest.raises(DeepFaceError, match=message):
        make_pipeline(options)


def test_bad_compile_option_on_the_command_line_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["compile", "--output", str(tmp_path / "p.yaml"), "--accelerator", "TPU_V3"])
    assert result.exit_code == 1
    assert "needs --training custom-job" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "p.yaml").exists()


def test_only_training_retries(spec, tmp_path):
    tasks = spec["root"]["dag"]["tasks"]
    assert {name for name, body in tasks.items() if "retryPolicy" in body} == {"train"}
    assert tasks["train"]["retryPolicy"]["maxRetryCount"] == CompileOptions().train_retries
    local = compiled(tmp_path, CompileOptions(train_retries=0))["root"]["dag"]["tasks"]
    assert not any("retryPolicy" in body for body in local.values())


def test_caching_is_on_for_every_task_but_the_data_fingerprint(spec):
    tasks = {name: body for name, body in spec["root"]["dag"]["tasks"].items() if "triggerPolicy" not in body}
    assert {name: body["cachingOptions"].get("enableCache") for name, body in tasks.items()} == {
        name: name != "fingerprint-data" or None for name in tasks
    }
    # No custom cache key: a task's key is its inputs, so train and evaluate rerun when their inputs change.
    assert not any(body["cachingOptions"].get("cacheKey") for body in tasks.values())


def test_components_run_the_project_image_without_installing_kfp(spec):
    for stage, task in TASK_OF_STAGE.items():
        container = executor_of(spec, task)
        assert container["image"] == image.image_reference(), stage
        command = " ".join(container["command"])
        assert "pip install" not in command, stage
        assert "kfp.dsl.executor_main" in command, stage
        assert "import deepface" in command or "from deepface" in command, stage


def test_components_name_the_placeholder_and_no_template_does(tmp_path):
    """The components carry a stand-in image; the pipeline sets the real reference on every task, the
    custom-job worker pool included."""
    from components.train import train

    assert train.component_spec.implementation.container.image == image.PLACEHOLDER
    custom_job = CompileOptions(training="custom-job", accelerator="TPU_V5_LITEPOD",
                                machine_type="ct5lp-hightpu-4t")
    for options in (CompileOptions(), custom_job):
        text = open(compile_pipeline(tmp_path / f"{options.training}.yaml", options), encoding="utf-8").read()
        assert image.PLACEHOLDER not in text and image.image_reference() in text, options.training
        assert (image.image_reference("tpu") in text) == (options.training == "custom-job")


def test_importing_the_components_runs_no_git(tmp_path):
    """Only building a pipeline computes the image reference (git); importing a component does not."""
    calls = tmp_path / "git-calls"
    fake_git = tmp_path / "bin" / "git"
    fake_git.parent.mkdir()
    fake_git.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nexit 1\n")
    fake_git.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DEEPFACE_IMAGE", "DEEPFACE_IMAGE_REPO")}
    env["PATH"] = f"{fake_git.parent}{os.pathsep}{env.get('PATH', '')}"
    imports = "; ".join(f"import components.{name}" for name in
                        ("synth", "fetch", "labels", "tfrecords", "train", "evaluate"))
    subprocess.run([sys.executable, "-c", imports], env=env, check=True, timeout=300)
    assert not calls.exists(), calls.read_text()
    # The same environment does reach the fake git once a reference is computed.
    subprocess.run([sys.executable, "-c", "from components.image import image_reference; image_reference()"],
                   env=env, check=True, timeout=300)
    assert "rev-parse" in calls.read_text()


def test_no_secret_in_the_template(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    text = open(compile_pipeline(tmp_path / "pipeline.yaml"), encoding="utf-8").read()
    for value in SECRETS.values():
        assert value not in text
    assert "Bearer" not in text


def test_image_reference_rules(monkeypatch):
    assert image.check_image_reference("r.example/deepface:0.1.0-g1234") == "r.example/deepface:0.1.0-g1234"
    assert image.check_image_reference("r.example/deepface@sha256:" + "a" * 64)
    for bad in ("r.example/deepface", "r.example/deepface:latest", "r.example:5000/deepface",
                "r.example/deepface@sha256:abc"):
        with pytest.raises(DeepFaceError, match="DEEPFACE_IMAGE"):
            image.check_image_reference(bad)
    monkeypatch.delenv("DEEPFACE_IMAGE")
    monkeypatch.setenv("DEEPFACE_IMAGE_REPO", "europe-west4-docker.pkg.dev/p/r/deepface-pipeline/")
    reference = image.image_reference()
    assert reference.startswith("europe-west4-docker.pkg.dev/p/r/deepface-pipeline:")
    tag = reference.rsplit(":", 1)[1]
    assert tag == image.image_tag() and tag.startswith(image.__version__) and tag != "latest"


def test_content_hash_matches_the_shell_recipe_of_the_image_build():
    """docker/build.sh tags dirty trees with find | sort | sha256sum; image.context_hash must agree."""
    root = image._REPO_ROOT
    present = [name for name in image.IMAGE_CONTEXT if (root / name).exists()]
    shell = ("find \"$@\" -type f -not -name '*.pyc' -not -path '*/__pycache__/*' -not -path '*.egg-info/*' "
             "-print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12")
    expected = subprocess.run(["sh", "-c", shell, "sh", *present], cwd=root, capture_output=True, text=True,
                              check=True, env={**os.environ, "LC_ALL": "C"}).stdout.strip()
    assert image.context_hash() == expected


# ----- the custom training job takes the run's settings -----

PROJECT, REGION = "test-proj", "us-central1"
TENSORBOARD = f"projects/123456/locations/{REGION}/tensorboards/789"
TPU_JOB = dict(training="custom-job", accelerator="TPU_V5_LITEPOD", accelerator_count=4,
               machine_type="ct5lp-hightpu-4t")
PARAMETER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")


def custom_job(spec: dict) -> tuple[dict, str]:
    """The training component's input parameters and the request its launcher sends (with placeholders)."""
    component = spec["components"][spec["root"]["dag"]["tasks"]["train"]["componentRef"]["name"]]
    args = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]["args"]
    return component["inputDefinitions"]["parameters"], args[args.index("--payload") + 1]


def test_custom_job_takes_the_run_settings_and_the_options(tmp_path):
    from google_cloud_pipeline_components import _placeholders

    options = CompileOptions(**TPU_JOB, tensorboard=TENSORBOARD, labels=(("team", "faces"),))
    parameters, request = custom_job(compiled(tmp_path, options))
    # The run's own service account, network and key (Vertex AI resolves gcpc's placeholders at run time).
    assert parameters["service_account"]["defaultValue"] == _placeholders.SERVICE_ACCOUNT_PLACEHOLDER
    assert parameters["network"]["defaultValue"] == _placeholders.NETWORK_PLACEHOLDER
    assert (parameters["encryption_spec_key_name"]["defaultValue"]
            == _placeholders.ENCRYPTION_SPEC_KMS_KEY_NAME_PLACEHOLDER)
    assert parameters["tensorboard"]["defaultValue"] == TENSORBOARD
    # Written into the request: labels (the image tag, then the options'), the scheduling strategy, and a
    # base output directory per run (for AIP_TENSORBOARD_LOG_DIR) that is no parameter value.
    assert '"labels": {"deepface-image-tag": "0_1_0-test-tpu", "team": "faces"}' in request
    assert '"strategy": "STANDARD"' in request
    assert '"output_uri_prefix": "{{$.pipeline_root}}/{{$.pipeline_job_uuid}}/train"' in request
    # Every input the request reads is a parameter of the component (the training component's `labels`
    # artifact and `strategy` parameter share names with the custom job's settings).
    assert set(PARAMETER.findall(request)) <= set(parameters)
    assert "labels" not in PARAMETER.findall(request) and "strategy" not in PARAMETER.findall(request)
    assert parameters["strategy"]["defaultValue"] == "auto"  # the training's own distribution strategy


def test_custom_job_without_tensorboard_has_no_base_output_directory(tmp_path):
    parameters, request = custom_job(compiled(tmp_path, CompileOptions(**TPU_JOB)))
    assert parameters["tensorboard"]["defaultValue"] == ""
    assert '"output_uri_prefix": "{{$.inputs.parameters[\'base_output_directory\']}}"' in request
    assert parameters["base_output_directory"]["defaultValue"] == ""


def resolve_like_vertex(request: str, parameters: dict, run: dict[str, str]) -> str:
    """What Vertex AI hands the launcher: each input placeholder replaced by the parameter's value (a
    string as is, inside the request's quotes; anything else as JSON, whole numbers without '.0'; null
    without a value), then the run's placeholders by the run's settings."""

    def whole(value):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, list):
            return [whole(item) for item in value]
        if isinstance(value, dict):
            return {key: whole(item) for key, item in value.items()}
        return value

    def parameter(match: re.Match) -> str:
        value = parameters[match.group(1)].get("defaultValue")
        return value if isinstance(value, str) else json.dumps(whole(value))

    text = PARAMETER.sub(parameter, request)
    for name, value in run.items():
        text = text.replace(f"{{{{$.{name}}}}}", value)
    assert "{{$.pipeline_" not in text, text
    return text


@pytest.mark.parametrize("with_run_settings", [True, False])
def test_the_launcher_creates_the_custom_job_with_the_run_settings(tmp_path, monkeypatch, with_run_settings):
    """Google's launcher code (google_cloud_pipeline_components.container) turns the compiled request,
    resolved as Vertex AI does, into a CustomJob; the real JobServiceClient sends it to the fake endpoint."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.aiplatform_v1.services.job_service import JobServiceClient
    from google_cloud_pipeline_components.container.v1.custom_job import remote_runner
    from google_cloud_pipeline_components.container.v1.gcp_launcher.utils import json_util

    network = "projects/123456/global/networks/faces-vpc" if with_run_settings else ""
    key = f"projects/{PROJECT}/locations/{REGION}/keyRings/faces/cryptoKeys/runs" if with_run_settings else ""
    options = CompileOptions(**TPU_JOB, replicas=2, tensorboard=TENSORBOARD if with_run_settings else "")
    parameters, request = custom_job(compiled(tmp_path, options))
    run = {"pipeline_service_account": f"runner@{PROJECT}.iam.gserviceaccount.com", "pipeline_network": network,
           "pipeline_encryption_key_name": key, "pipeline_root": "gs://faces-bucket/runs",
           "pipeline_job_uuid": "4c1f0a7e", "pipeline_google_cloud_project_id": PROJECT,
           "pipeline_google_cloud_location": REGION, "pipeline_persistent_resource_id": ""}
    # Vertex AI's own labels reach the launcher through this variable; the job's labels are added to them.
    monkeypatch.setenv("VERTEX_AI_PIPELINES_RUN_LABELS", '{"vertex-ai-pipelines-run-billing-id": "42"}')
    payload = remote_runner.insert_system_labels_into_payload(resolve_like_vertex(request, parameters, run))
    job_spec = json_util.recursive_remove_empty(json.loads(payload, strict=False))
    with FakeCloud() as fake:
        client = JobServiceClient(credentials=AnonymousCredentials(), transport="rest",
                                  client_options={"api_endpoint": fake.url})
        remote_runner.create_custom_job_with_client(client, f"projects/{PROJECT}/locations/{REGION}", job_spec)
        [sent] = fake.find("POST", f"/v1/projects/{PROJECT}/locations/{REGION}/customJobs")
    body = sent.json()
    spec = body["jobSpec"]
    assert body["labels"] == {"vertex-ai-pipelines-run-billing-id": "42", "deepface-image-tag": "0_1_0-test-tpu"}
    assert spec["serviceAccount"] == run["pipeline_service_account"]
    assert spec["scheduling"]["strategy"] in ("STANDARD", 3)  # REST sends enums as numbers: STANDARD is 3
    pools = spec["workerPoolSpecs"]
    assert [int(pool["replicaCount"]) for pool in pools] == [1, 1]
    assert pools[0]["containerSpec"]["imageUri"] == image.image_reference("tpu")
    assert pools[0]["machineSpec"]["machineType"] == "ct5lp-hightpu-4t"
    assert pools[0]["machineSpec"]["acceleratorCount"] == 4
    if with_run_settings:
        assert spec["network"] == network
        assert body["encryptionSpec"] == {"kmsKeyName": key}
        assert spec["tensorboard"] == TENSORBOARD
        assert spec["baseOutputDirectory"] == {"outputUriPrefix": "gs://faces-bucket/runs/4c1f0a7e/train"}
    else:
        assert not {"network", "tensorboard", "baseOutputDirectory"} & set(spec)
        assert "encryptionSpec" not in body
