"""submit, schedule, upload and submit-kfp through the real client libraries against fake endpoints.

The aiplatform SDK, kfp.registry.RegistryClient and kfp.Client talk HTTP to `fake_vertex.FakeCloud`
on 127.0.0.1; the tests assert on the requests it received. Bad input must fail before any request.
"""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from helpers.fake_vertex import FakeCloud

from components.image import image_reference
from pipelines.cli import main
from pipelines.pipeline import compile_pipeline

PROJECT, REGION = "test-proj", "us-central1"
SERVICE_ACCOUNT = f"runner@{PROJECT}.iam.gserviceaccount.com"
NETWORK = "projects/123456/global/networks/faces-vpc"


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
    assert job["labels"] == {"team": "faces", "stage": "dev"}
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


def test_submit_compiles_by_default_keeps_task_caching_and_can_wait(fake):
    result = invoke("submit", *vertex_args(fake, "--wait"))
    assert result.exit_code == 0, result.output
    job = created_job(fake)
    assert job["runtimeConfig"].get("parameterValues", {}) == {}
    images = {e["container"]["image"] for e in job["pipelineSpec"]["deploymentSpec"]["executors"].values()}
    assert images == {image_reference()}
    caching = {t["cachingOptions"].get("enableCache") for t in job["pipelineSpec"]["root"]["dag"]["tasks"].values()}
    assert caching == {True}
    assert fake.find("GET", "/pipelineJobs/")  # waited
    assert "state: PIPELINE_STATE_SUCCEEDED" in result.output


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
    assert job["labels"] == {"team": "faces"}
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
    assert all(r.headers.get("authorization") == "Bearer kfp-token-93c0" for r in fake.requests)
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
                    "--accelerator", "TPU_V5_LITEPODSLICE", "--accelerator-count", "4")
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
