"""submit, schedule, upload and submit-kfp through the real client libraries against fake endpoints.

The aiplatform SDK, kfp.registry.RegistryClient and kfp.Client talk HTTP to `fake_vertex.FakeCloud`
on 127.0.0.1; the tests assert on the requests it received. Bad input must fail before any request; an
endpoint that does not answer (a closed port on 127.0.0.1, a connection the fake drops) is one line.
"""

from __future__ import annotations

import json
import socket
import subprocess

import click
import pytest
import yaml
from click.testing import CliRunner
from helpers.fake_vertex import FakeCloud

from components.image import _REPO_ROOT, image_reference
from pipelines.cli import PipelinesGroup, main
from pipelines.pipeline import compile_pipeline

PROJECT, REGION = "test-proj", "us-central1"
SERVICE_ACCOUNT = f"runner@{PROJECT}.iam.gserviceaccount.com"
NETWORK = "projects/123456/global/networks/faces-vpc"
KMS_KEY = f"projects/{PROJECT}/locations/{REGION}/keyRings/faces/cryptoKeys/runs"
TENSORBOARD = f"projects/123456/locations/{REGION}/tensorboards/789"
# conftest's DEEPFACE_IMAGE tag, 0.1.0-test, as a label value.
IMAGE_TAG_LABEL = "0_1_0-test"
TPU = ("--training", "custom-job", "--machine-type", "ct5lp-hightpu-4t", "--accelerator", "TPU_V5_LITEPOD",
       "--accelerator-count", "4")


@pytest.fixture(scope="module")
def template_path(tmp_path_factory) -> str:
    return compile_pipeline(tmp_path_factory.mktemp("template") / "pipeline.yaml")


@pytest.fixture
def fake(monkeypatch):
    with FakeCloud() as server:
        # The SDK checks the pipeline-root bucket through the Cloud Storage client: send it here too.
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        yield server


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result


def vertex_args(fake: FakeCloud, *extra: str) -> list[str]:
    return ["--project", PROJECT, "--region", REGION, "--pipeline-root", "gs://faces-bucket/runs",
            "--service-account", SERVICE_ACCOUNT, "--api-endpoint", fake.url, *extra]


def without_caching(root: dict) -> dict:
    """The pipeline's root DAG without the tasks' caching options (a run may override those)."""
    root = json.loads(json.dumps(root))
    for task in root["dag"]["tasks"].values():
        task.pop("cachingOptions", None)
    return root


def created_job(fake: FakeCloud) -> dict:
    [request] = fake.find("POST", f"/v1/projects/{PROJECT}/locations/{REGION}/pipelineJobs")
    return request.json()


def test_submit_sends_the_template_parameters_and_run_settings(fake, template_path):
    result = invoke("submit", *vertex_args(fake, "--template", template_path, "--network", NETWORK,
                                           "--label", "team=faces", "--label", "stage=dev",
                                           "--param", "epochs=7", "--param", "preset=small",
                                           "--param", "learning_rate=0.02", "--param", "augment=true",
                                           "--no-cache", "--display-name", "deepface-nightly"))
    assert result.exit_code == 0, result.output
    job = created_job(fake)
    template = yaml.safe_load(open(template_path, encoding="utf-8"))
    assert without_caching(job["pipelineSpec"]["root"]) == without_caching(template["root"])
    assert job["pipelineSpec"]["deploymentSpec"] == template["deploymentSpec"]
    runtime = job["runtimeConfig"]
    assert runtime["gcsOutputDirectory"] == "gs://faces-bucket/runs"
    assert runtime["parameterValues"] == {"epochs": 7, "preset": "small", "learning_rate": 0.02, "augment": True}
    assert job["serviceAccount"] == SERVICE_ACCOUNT
    assert job["network"] == NETWORK
    # The image tag comes first as a default label; a given template says nothing of this checkout's commit.
    assert job["labels"] == {"deepface-image-tag": IMAGE_TAG_LABEL, "team": "faces", "stage": "dev"}
    assert "encryptionSpec" not in job
    assert job["displayName"] == "deepface-nightly"
    caching = {
        t["cachingOptions"].get("enableCache", False) for t in job["pipelineSpec"]["root"]["dag"]["tasks"].values()
    }
    assert caching == {False}
    job_id = fake.find("POST", "/pipelineJobs")[0].query["pipelineJobId"][0]
    assert (f"https://console.cloud.google.com/vertex-ai/locations/{REGION}/pipelines/runs/{job_id}"
            f"?project={PROJECT}") in result.output
    # The SDK checked (and here created) the pipeline-root bucket on the storage endpoint.
    assert fake.find("GET", "/storage/v1/b/faces-bucket") and "faces-bucket" in fake.buckets
    # Not waiting: no poll of the job's state.
    assert not fake.find("GET", "/pipelineJobs/")


def test_submit_compiles_by_default_keeps_task_caching_and_can_wait(fake, template_path):
    result = invoke("submit", *vertex_args(fake, "--wait"))
    assert result.exit_code == 0, result.output
    job = created_job(fake)
    assert job["runtimeConfig"].get("parameterValues", {}) == {}
    images = {e["container"]["image"] for e in job["pipelineSpec"]["deploymentSpec"]["executors"].values()}
    assert images == {image_reference()}
    # Each task keeps the template's own caching option (on, but for a task the pipeline never caches).
    def caching(tasks: dict) -> dict:
        return {name: task.get("cachingOptions", {}).get("enableCache") for name, task in tasks.items()}

    template_tasks = yaml.safe_load(open(template_path, encoding="utf-8"))["root"]["dag"]["tasks"]
    assert caching(job["pipelineSpec"]["root"]["dag"]["tasks"]) == caching(template_tasks)
    assert list(caching(template_tasks).values()).count(True) >= 6
    assert fake.find("GET", "/pipelineJobs/")  # waited
    assert "state: PIPELINE_STATE_SUCCEEDED" in result.output


def test_submit_cache_turns_caching_on_for_every_task(fake, template_path):
    """--cache overrides the template: every task, even the one the template never caches (the data's
    fingerprint), is sent with caching on."""
    template_tasks = yaml.safe_load(open(template_path, encoding="utf-8"))["root"]["dag"]["tasks"]
    assert False in {task.get("cachingOptions", {}).get("enableCache", False) for task in template_tasks.values()}
    result = invoke("submit", *vertex_args(fake, "--template", template_path, "--cache"))
    assert result.exit_code == 0, result.output
    tasks = created_job(fake)["pipelineSpec"]["root"]["dag"]["tasks"]
    assert set(tasks) == set(template_tasks)
    assert {name: task.get("cachingOptions", {}).get("enableCache", False) for name, task in tasks.items()} == {
        name: True for name in template_tasks}


def test_submit_reports_a_failed_run_when_waiting(fake, template_path):
    fake.pipeline_state = "PIPELINE_STATE_FAILED"
    result = invoke("submit", *vertex_args(fake, "--template", template_path, "--wait"))
    assert result.exit_code == 1
    assert "failed" in result.output and "Traceback" not in result.output


def test_schedule_sends_cron_and_the_run_to_start(fake, template_path):
    result = invoke("schedule", *vertex_args(fake, "--template", template_path, "--cron", "TZ=Europe/Paris 0 3 * * 1",
                                             "--param", "epochs=2", "--label", "team=faces", "--max-runs", "10",
                                             "--schedule-name", "weekly"))
    assert result.exit_code == 0, result.output
    [request] = fake.find("POST", f"/v1/projects/{PROJECT}/locations/{REGION}/schedules")
    schedule = request.json()
    assert schedule["cron"] == "TZ=Europe/Paris 0 3 * * 1"
    assert schedule["displayName"] == "weekly"
    assert int(schedule["maxRunCount"]) == 10 and int(schedule["maxConcurrentRunCount"]) == 1
    job = schedule["createPipelineJobRequest"]["pipelineJob"]
    assert job["runtimeConfig"]["parameterValues"] == {"epochs": 2}
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://faces-bucket/runs"
    assert job["serviceAccount"] == SERVICE_ACCOUNT
    assert job["labels"] == {"deepface-image-tag": IMAGE_TAG_LABEL, "team": "faces"}
    assert not fake.find("POST", "/pipelineJobs")  # a schedule, not a run
    assert f"/locations/{REGION}/pipelines/schedules/" in result.output


def test_upload_posts_the_template_with_tags(fake, template_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_REGISTRY_TOKEN", "registry-token-5e1a")
    host = f"{fake.url}/{PROJECT}/deepface-templates"
    result = invoke("upload", "--host", host, "--template", template_path, "--tag", "v1", "--tag", "nightly")
    assert result.exit_code == 0, result.output
    [request] = fake.find("POST", f"/{PROJECT}/deepface-templates")
    form = request.multipart()
    assert form["content"] == open(template_path, "rb").read()
    assert form["tags"] == b"v1,nightly"
    assert request.headers["authorization"] == "Bearer registry-token-5e1a"
    assert "registry-token-5e1a" not in result.output
    assert f"template: {host}/deepface-pipeline/sha256:" in result.output


def test_upload_tags_the_image_tag_by_default(fake):
    result = invoke("upload", "--host", f"{fake.url}/{PROJECT}/repo")
    assert result.exit_code == 0, result.output
    [request] = fake.find("POST", f"/{PROJECT}/repo")
    assert request.multipart()["tags"] == image_reference().rsplit(":", 1)[1].encode()
    assert yaml.safe_load(request.multipart()["content"])["pipelineInfo"]["name"] == "deepface-pipeline"


def test_submit_kfp_creates_an_experiment_and_a_run(fake, template_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_KFP_TOKEN", "kfp-token-93c0")
    result = invoke("submit-kfp", "--host", fake.url, "--namespace", "faces", "--experiment", "deepface-dev",
                    "--template", template_path, "--param", "epochs=4", "--pipeline-root", "minio://mlpipeline/v2",
                    "--service-account", "pipeline-runner", "--no-cache", "--run-name", "try-1", "--wait")
    assert result.exit_code == 0, result.output
    [experiment] = fake.find("POST", "/apis/v2beta1/experiments")
    assert experiment.json()["display_name"] == "deepface-dev" and experiment.json()["namespace"] == "faces"
    [run_request] = fake.find("POST", "/apis/v2beta1/runs")
    run = run_request.json()
    assert run["display_name"] == "try-1"
    assert run["experiment_id"] == fake.kfp_experiments["deepface-dev"]
    assert run["runtime_config"] == {"parameters": {"epochs": 4}, "pipeline_root": "minio://mlpipeline/v2"}
    assert run["service_account"] == "pipeline-runner"
    template_root = yaml.safe_load(open(template_path, encoding="utf-8"))["root"]
    assert without_caching(run["pipeline_spec"]["root"]) == without_caching(template_root)
    assert {
        t["cachingOptions"].get("enableCache", False) for t in run["pipeline_spec"]["root"]["dag"]["tasks"].values()
    } == {False}
    # Every API request carries the token; the reachability probe first carries none.
    [probe] = fake.find("HEAD", "/")
    assert "authorization" not in probe.headers
    assert all(r.headers.get("authorization") == "Bearer kfp-token-93c0" for r in fake.requests if r is not probe)
    assert fake.find("GET", "/apis/v2beta1/runs/run-1")  # waited
    assert f"run run-1: {fake.url}/#/runs/details/run-1" in result.output
    assert "kfp-token-93c0" not in result.output


def test_bad_template_image_for_vertex(fake, template_path, tmp_path):
    local = tmp_path / "local-image.yaml"
    local.write_text(
        open(template_path, encoding="utf-8").read().replace(image_reference(), "localhost/deepface-pipeline:0.1.0-g1")
    )
    result = invoke("submit", *vertex_args(fake, "--template", str(local)))
    assert result.exit_code == 1 and "cannot pull" in result.output
    assert fake.requests == []


def args_without(args: list[str], option: str) -> list[str]:
    at = args.index(option)
    return args[:at] + args[at + 2:]


@pytest.mark.parametrize("command", ["submit", "schedule"])
@pytest.mark.parametrize("change, message", [
    (lambda a: a + ["--param", "epoch=3"], "unknown pipeline parameter 'epoch' (did you mean 'epochs'?)"),
    (lambda a: a + ["--param", "epochs=three"], "epochs='three': expected an integer"),
    (lambda a: a + ["--param", "learning_rate=fast"], "expected a number"),
    (lambda a: a + ["--param", "augment=maybe"], "expected true or false"),
    (lambda a: a + ["--param", "epochs"], "write NAME=VALUE"),
    (lambda a: args_without(a, "--project"), "missing --project"),
    (lambda a: args_without(a, "--region"), "missing --region"),
    (lambda a: a + ["--region", "moon-base1"], "not a Vertex AI region"),
    (lambda a: a + ["--pipeline-root", "/tmp/runs"], "give a gs://BUCKET/PATH folder"),
    (lambda a: a + ["--pipeline-root", "s3://bucket/runs"], "give a gs://BUCKET/PATH folder"),
    (lambda a: a + ["--label", "Team=Faces"], "--label 'Team=Faces'"),
    (lambda a: a + ["--service-account", "runner"], "--service-account"),
    (lambda a: a + ["--network", "faces-vpc"], "--network"),
    (lambda a: a + ["--encryption-key", "faces/runs"], "--encryption-key 'faces/runs': give a Cloud KMS key"),
    (lambda a: a + ["--encryption-key", KMS_KEY.replace(REGION, "europe-west4")],
     "is in europe-west4: Vertex AI needs a key in the run's region, us-central1"),
    (lambda a: a + ["--label", "deepface-image-tag=Not.Valid"], "--label 'deepface-image-tag=Not.Valid'"),
])
def test_bad_vertex_input_fails_before_any_request(fake, template_path, monkeypatch, command, change, message):
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_REGION", raising=False)
    args = vertex_args(fake, "--template", template_path) + (["--cron", "0 3 * * *"] if command == "schedule" else [])
    result = invoke(command, *change(args))
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert fake.requests == []


@pytest.mark.parametrize("cron", ["0 3 * *", "every monday", ""])
def test_bad_cron(fake, template_path, cron):
    result = invoke("schedule", *vertex_args(fake, "--template", template_path, "--cron", cron))
    assert result.exit_code == 1 and "--cron" in result.output
    assert fake.requests == []


def test_project_and_region_from_the_environment(fake, template_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("GOOGLE_CLOUD_REGION", REGION)
    args = args_without(args_without(vertex_args(fake, "--template", template_path), "--project"), "--region")
    result = invoke("submit", *args)
    assert result.exit_code == 0, result.output
    assert created_job(fake)["runtimeConfig"]["gcsOutputDirectory"] == "gs://faces-bucket/runs"


@pytest.mark.parametrize("args, message", [
    (["--param", "epochs=1.5"], "expected an integer"),
    (["--param", "batchsize=8"], "did you mean 'batch_size'"),
    ([], "missing --host"),
])
def test_bad_kfp_input_fails_before_any_request(fake, template_path, monkeypatch, args, message):
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    host = [] if message == "missing --host" else ["--host", fake.url]
    result = invoke("submit-kfp", *host, "--template", template_path, *args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert fake.requests == []


def test_custom_job_template_is_refused_by_kubeflow(fake):
    result = invoke("submit-kfp", "--host", fake.url, "--training", "custom-job", "--machine-type", "ct5lp-hightpu-4t",
                    "--accelerator", "TPU_V5_LITEPOD", "--accelerator-count", "4")
    assert result.exit_code == 1 and "Kubeflow cannot run" in result.output
    assert fake.requests == []


@pytest.mark.parametrize("args, message", [
    (["--host", "not a url"], "--host"),
    (["--project", PROJECT, "--region", REGION], "--repository"),
    (["--project", PROJECT, "--region", REGION, "--repository", "Bad_Repo"], "--repository"),
    (["--host", "https://us-central1-kfp.pkg.dev/p/r", "--tag", "sha256:abc"], "--tag"),
])
def test_bad_upload_input(fake, args, message, monkeypatch):
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_REGION", raising=False)
    result = invoke("upload", *args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert fake.requests == []


def test_registry_host_from_project_region_repository():
    from pipelines.submit import registry_host

    assert registry_host(None, PROJECT, REGION, "templates") == f"https://{REGION}-kfp.pkg.dev/{PROJECT}/templates"


def test_no_secret_reaches_the_vertex_request(fake, template_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_KFP_TOKEN", "kfp-token-1b7e")
    monkeypatch.setenv("DEEPFACE_REGISTRY_TOKEN", "registry-token-4a2d")
    result = invoke("submit", *vertex_args(fake, "--template", template_path))
    assert result.exit_code == 0, result.output
    for request in fake.requests:
        text = request.body.decode("utf-8", "replace") + json.dumps(request.headers)
        assert "kfp-token-1b7e" not in text and "registry-token-4a2d" not in text
        assert "authorization" not in request.headers  # plain http endpoint: anonymous


@pytest.mark.parametrize("command, args", [
    ("submit", ["--project", PROJECT, "--region", REGION, "--pipeline-root", "gs://faces-bucket/runs"]),
    ("upload", ["--project", PROJECT, "--region", REGION, "--repository", "templates"]),
])
def test_missing_google_credentials_is_one_clear_line(fake, template_path, monkeypatch, tmp_path, command, args):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    result = invoke(command, *args, "--template", template_path)
    assert result.exit_code == 1, result.output
    assert "no Google Cloud credentials found" in result.output and "Traceback" not in result.output


# ----- experiment, encryption key, TensorBoard, provenance labels -----


def launcher_request(pipeline_spec: dict) -> dict:
    """The custom training job's request as the template writes it into the launcher's arguments (with
    its placeholders)."""
    [executor] = [e["container"] for e in pipeline_spec["deploymentSpec"]["executors"].values()
                  if "--payload" in e["container"].get("args", [])]
    return executor["args"][executor["args"].index("--payload") + 1]


def test_submit_files_the_run_under_an_experiment_with_key_and_provenance_labels(fake):
    fake.pipeline_state = "PIPELINE_STATE_RUNNING"  # Vertex AI makes the run's metadata context once it runs
    result = invoke("submit", *vertex_args(fake, "--experiment", "deepface-dev", "--encryption-key", KMS_KEY,
                                           "--label", "team=faces", *TPU, "--tensorboard", TENSORBOARD))
    assert result.exit_code == 0, result.output
    job = created_job(fake)
    assert job["encryptionSpec"] == {"kmsKeyName": KMS_KEY}
    # Compiled here: the image tag and this checkout's commit are default labels.
    commit = subprocess.run(["git", "-C", str(_REPO_ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert job["labels"]["deepface-image-tag"] == IMAGE_TAG_LABEL and job["labels"]["team"] == "faces"
    assert job["labels"]["deepface-git-revision"] in (commit, f"{commit}-dirty")
    # The experiment: created in the default metadata store, then the run's context filed under it.
    contexts = f"/v1/projects/{PROJECT}/locations/{REGION}/metadataStores/default/contexts"
    [create] = [r for r in fake.find("POST", contexts) if "contextId" in r.query]
    assert create.query["contextId"] == ["deepface-dev"]
    assert create.json()["schemaTitle"] == "system.Experiment"
    [child] = fake.find("POST", "/contexts/deepface-dev:addContextChildren")
    job_id = fake.find("POST", "/pipelineJobs")[0].query["pipelineJobId"][0]
    assert child.json()["childContexts"] == [
        f"projects/{PROJECT}/locations/{REGION}/metadataStores/default/contexts/{job_id}"]
    # The custom training job compiled for this run carries the run's labels (its own image's tag: the TPU
    # flavour) and the TensorBoard.
    request = launcher_request(job["pipelineSpec"])
    assert '"team": "faces"' in request and f'"deepface-image-tag": "{IMAGE_TAG_LABEL}-tpu"' in request
    train = job["pipelineSpec"]["components"]["comp-train"]["inputDefinitions"]["parameters"]
    assert train["tensorboard"]["defaultValue"] == TENSORBOARD


def test_a_given_template_keeps_its_own_custom_job_labels(fake, tmp_path):
    path = tmp_path / "tpu.yaml"
    assert invoke("compile", "--output", str(path), *TPU).exit_code == 0
    result = invoke("submit", *vertex_args(fake, "--template", str(path), "--label", "team=faces"))
    assert result.exit_code == 0, result.output
    job = created_job(fake)
    assert job["labels"]["team"] == "faces"  # the run has it ...
    assert '"team"' not in launcher_request(job["pipelineSpec"])  # ... the template's job does not
    assert launcher_request(job["pipelineSpec"]) == launcher_request(yaml.safe_load(path.read_text()))


def test_an_experiment_vertex_refuses_is_one_line_and_no_run(fake):
    # The name is taken by a context that is not an experiment: the SDK refuses it before creating the run.
    name = f"projects/{PROJECT}/locations/{REGION}/metadataStores/default/contexts/deepface-dev"
    fake.contexts[name] = {"name": name, "schemaTitle": "system.PipelineRun"}
    result = invoke("submit", *vertex_args(fake, "--experiment", "deepface-dev"))
    assert result.exit_code == 1
    assert "--experiment deepface-dev: Vertex AI could not find or create it" in result.output
    assert "system.PipelineRun" in result.output and "Traceback" not in result.output
    assert not fake.find("POST", "/pipelineJobs")


def test_schedule_refuses_an_experiment_before_compiling(fake):
    result = invoke("schedule", *vertex_args(fake, "--cron", "0 3 * * 1", "--experiment", "deepface-dev"))
    assert result.exit_code == 1
    assert "cannot file a schedule's runs under an experiment" in result.output
    assert fake.requests == []


@pytest.mark.parametrize("args, message", [
    (["--experiment", "Deepface_Dev"], "--experiment 'Deepface_Dev': an experiment name has"),
    ([*TPU, "--tensorboard", TENSORBOARD.replace(REGION, "europe-west4")],
     f"--tensorboard {TENSORBOARD.replace(REGION, 'europe-west4')} is in europe-west4, the run in {REGION}"),
    (["--tensorboard", TENSORBOARD], "--tensorboard needs --training custom-job"),
    ([*TPU, "--tensorboard", "my-tensorboard"], "--tensorboard 'my-tensorboard': give a Vertex AI TensorBoard"),
])
def test_bad_experiment_or_tensorboard_fails_before_any_request(fake, args, message):
    result = invoke("submit", *vertex_args(fake, *args))
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert fake.requests == []


# ----- images Vertex AI cannot pull, endpoints that do not answer -----


def test_upload_refuses_a_localhost_image(fake, template_path, tmp_path):
    local = tmp_path / "local-image.yaml"
    local.write_text(
        open(template_path, encoding="utf-8").read().replace(image_reference(), "localhost/deepface-pipeline:0.1.0-g1")
    )
    result = invoke("upload", "--host", f"{fake.url}/{PROJECT}/repo", "--template", str(local))
    assert result.exit_code == 1
    assert "localhost/deepface-pipeline:0.1.0-g1, which Vertex AI cannot pull" in result.output
    assert fake.requests == []


def test_upload_refuses_a_localhost_image_compiled_now(fake, monkeypatch):
    monkeypatch.setenv("DEEPFACE_IMAGE", "localhost/deepface-pipeline:0.1.0-test")
    result = invoke("upload", "--host", f"{fake.url}/{PROJECT}/repo")
    assert result.exit_code == 1 and "which Vertex AI cannot pull" in result.output
    assert fake.requests == []


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 that refuses connections: bound for the test, never listening."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    return line


@pytest.mark.parametrize("command", ["submit", "schedule", "upload", "submit-kfp"])
def test_an_endpoint_that_refuses_connections_is_one_line(command, closed_port, template_path, monkeypatch):
    dead = f"http://127.0.0.1:{closed_port}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", dead)
    args = {
        "submit": ["--project", PROJECT, "--region", REGION, "--pipeline-root", "gs://faces-bucket/runs",
                   "--api-endpoint", dead],
        "schedule": ["--project", PROJECT, "--region", REGION, "--pipeline-root", "gs://faces-bucket/runs",
                     "--api-endpoint", dead, "--cron", "0 3 * * 1"],
        "upload": ["--host", f"{dead}/{PROJECT}/repo"],
        "submit-kfp": ["--host", dead],
    }[command]
    line = one_line_error(invoke(command, *args, "--template", template_path))
    assert f"cannot reach {'the Vertex AI API' if command in ('submit', 'schedule') else ''}" in line
    assert f"127.0.0.1:{closed_port}" in line and "Connection refused" in line
    assert "then try again" in line


@pytest.mark.parametrize("command, dropped", [
    ("submit", "/pipelineJobs"),
    ("schedule", "/schedules"),
    ("upload", f"/{PROJECT}/repo"),
    ("submit-kfp", "/apis/v2beta1/runs"),
])
def test_a_connection_lost_on_the_way_is_one_line(fake, template_path, command, dropped):
    """The endpoint answers the first probe, then closes the connection of the request that matters."""
    fake.drop = {dropped}
    args = {
        "submit": vertex_args(fake),
        "schedule": vertex_args(fake, "--cron", "0 3 * * 1"),
        "upload": ["--host", f"{fake.url}/{PROJECT}/repo"],
        "submit-kfp": ["--host", fake.url],
    }[command]
    line = one_line_error(invoke(command, *args, "--template", template_path))
    assert f"at {fake.url}" in line and "Remote end closed connection without response" in line, line
    assert [r for r in fake.requests if any(part in r.path for part in fake.drop)]  # it was tried


def test_any_command_reports_a_connection_error_in_one_line(closed_port):
    """The group's last resort: a connection error from anywhere in a command, with the URL it names."""
    import requests

    @click.group(cls=PipelinesGroup)
    def group():
        pass

    @group.command("fetch-something")
    def fetch_something():
        requests.get(f"http://127.0.0.1:{closed_port}/status", timeout=5)

    line = one_line_error(CliRunner().invoke(group, ["fetch-something"]))
    assert f"cannot reach a service at http://127.0.0.1:{closed_port}/status (Connection refused)" in line
