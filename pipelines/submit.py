"""Send the pipeline somewhere: a Vertex AI run or schedule, an Artifact Registry template, a Kubeflow run.

Every function checks its input (parameter names and types, project, region, pipeline root, labels,
images) and raises `DeepFaceError` before any request is made. Credentials come from the environment
only: Application Default Credentials for Google Cloud, ``$DEEPFACE_REGISTRY_TOKEN`` for a registry
that is not Artifact Registry, ``$DEEPFACE_KFP_TOKEN`` for a Kubeflow endpoint; never from arguments.

A plain ``http://`` API endpoint (an emulator or a test server on this machine) gets anonymous
credentials: no token is ever sent over an unencrypted connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from deepface.errors import DeepFaceError
from pipelines.params import check_parameters
from pipelines.pipeline import PIPELINE_NAME, CompileOptions, compile_pipeline

logger = logging.getLogger(__name__)

REGISTRY_TOKEN_ENV = "DEEPFACE_REGISTRY_TOKEN"
KFP_TOKEN_ENV = "DEEPFACE_KFP_TOKEN"
CONSOLE = "https://console.cloud.google.com/vertex-ai"
# Images that only Vertex AI can run (the launcher of create_custom_training_job_from_component).
VERTEX_ONLY_IMAGES = ("gcr.io/ml-pipeline/google-cloud-pipeline-components",)

_PROJECT = re.compile(r"^([a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_SERVICE_ACCOUNT = re.compile(r"^[a-z0-9-]+@[a-z0-9.-]+$")
_NETWORK = re.compile(r"^projects/[0-9]+/global/networks/[A-Za-z0-9_-]+$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DISPLAY_NAME_MAX = 128


@dataclasses.dataclass(frozen=True)
class Template:
    """A compiled pipeline on local disk: its path and its content."""

    path: str
    spec: dict


@contextlib.contextmanager
def template(path: str | os.PathLike | None, options: CompileOptions = CompileOptions()) -> Iterator[Template]:
    """The template at ``path``, or the pipeline compiled now with ``options`` (into a temporary folder)."""
    if path is not None:
        yield load_template(path)
        return
    with tempfile.TemporaryDirectory(prefix="deepface-pipeline-") as folder:
        yield load_template(compile_pipeline(os.path.join(folder, f"{PIPELINE_NAME}.yaml"), options))


def load_template(path: str | os.PathLike) -> Template:
    """Read a compiled pipeline YAML; refuse anything else with a clear message."""
    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise DeepFaceError(f"--template {path}: cannot read it ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise DeepFaceError(f"--template {path}: not YAML ({error})") from None
    if not isinstance(spec, dict) or "root" not in spec or "pipelineInfo" not in spec:
        raise DeepFaceError(
            f"--template {path}: not a compiled KFP pipeline (write one with `python -m pipelines compile`)"
        )
    return Template(str(path), spec)


def template_images(spec: Any) -> set[str]:
    """Every container image a template names (task images and custom-job worker images)."""
    found: set[str] = set()
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key in ("image", "image_uri", "imageUri") and isinstance(value, str):
                found.add(value)
            else:
                found |= template_images(value)
    elif isinstance(spec, list):
        for item in spec:
            found |= template_images(item)
    return found


# ----- checks -----


def check_project_region(project: str | None, region: str | None) -> None:
    from google.cloud.aiplatform import utils as aiplatform_utils

    if not project:
        raise DeepFaceError("missing --project (or $GOOGLE_CLOUD_PROJECT): the Google Cloud project to run in")
    if not _PROJECT.match(project):
        raise DeepFaceError(f"--project {project!r} is not a Google Cloud project ID (e.g. my-project-123)")
    if not region:
        raise DeepFaceError("missing --region (or $GOOGLE_CLOUD_REGION): the Vertex AI region, e.g. us-central1")
    try:
        aiplatform_utils.validate_region(region)
    except ValueError:
        raise DeepFaceError(f"--region {region!r} is not a Vertex AI region (e.g. us-central1, europe-west4)") from None


def check_pipeline_root(pipeline_root: str | None) -> None:
    if not pipeline_root:
        raise DeepFaceError("missing --pipeline-root: a Cloud Storage folder for the run's artifacts, e.g. gs://my-bucket/pipeline-root")
    if not re.match(r"^gs://[a-z0-9][a-z0-9._-]{1,221}[a-z0-9](/.*)?$", pipeline_root):
        raise DeepFaceError(
            f"--pipeline-root {pipeline_root!r}: Vertex AI keeps artifacts in Cloud Storage; "
            "give a gs://BUCKET/PATH folder "
            "(a bucket name has 3-63 lowercase letters, digits, '-', '_' or '.')"
        )


def check_run_identity(service_account: str | None, network: str | None) -> None:
    if service_account and not _SERVICE_ACCOUNT.match(service_account):
        raise DeepFaceError(
            f"--service-account {service_account!r}: give an e-mail, e.g. runner@my-project.iam.gserviceaccount.com"
        )
    if network and not _NETWORK.match(network):
        raise DeepFaceError(f"--network {network!r}: give projects/PROJECT_NUMBER/global/networks/NETWORK")


def check_vertex_images(spec: Mapping[str, Any]) -> None:
    """Vertex AI pulls images from a registry: refuse images only this machine has (localhost/...)."""
    local = sorted(
        image for image in template_images(spec) if image.startswith("localhost/") or "/" not in image.split(":")[0]
    )
    if local:
        raise DeepFaceError(
            f"the template runs image {local[0]}, which Vertex AI cannot pull: push the image to Artifact Registry "
            "(docker/build.sh with IMAGE_REPO=REGION-docker.pkg.dev/PROJECT/REPO/deepface-pipeline, then push) and "
            "set DEEPFACE_IMAGE_REPO (or DEEPFACE_IMAGE) before compiling"
        )


def check_cron(cron: str | None) -> str:
    if not cron:
        raise DeepFaceError('missing --cron: when to run, e.g. --cron "0 3 * * 1" (Mondays 03:00 UTC)')
    fields = cron.split()
    if fields and re.match(r"^(CRON_)?TZ=\S+$", fields[0]):
        fields = fields[1:]
    if len(fields) != 5:
        raise DeepFaceError(
            f'--cron {cron!r}: give 5 fields (minute hour day month weekday), optionally after TZ=Area/City, '
            'e.g. "TZ=Europe/Paris 0 3 * * 1"'
        )
    return cron


# ----- Vertex AI -----


def google_credentials():
    """Application Default Credentials, or a DeepFaceError that says how to get them."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError as error:
        raise DeepFaceError(
            f"no Google Cloud credentials found ({error}): run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service account key file"
        ) from None
    return credentials


def _init_vertex(project: str, region: str, api_endpoint: str | None) -> None:
    from google.cloud import aiplatform

    transport = None
    if api_endpoint and api_endpoint.startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        credentials, transport = AnonymousCredentials(), "rest"
    else:
        credentials = google_credentials()
    aiplatform.init(project=project, location=region, credentials=credentials, api_endpoint=api_endpoint,
                    api_transport=transport)


def vertex_job(
    template: Template,
    *,
    project: str | None,
    region: str | None,
    pipeline_root: str | None,
    parameters: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    enable_caching: bool | None = None,
    display_name: str | None = None,
    service_account: str | None = None,
    network: str | None = None,
    api_endpoint: str | None = None,
):
    """An unsubmitted ``aiplatform.PipelineJob`` for ``template``, after every check."""
    check_project_region(project, region)
    check_pipeline_root(pipeline_root)
    check_run_identity(service_account, network)
    check_vertex_images(template.spec)
    values = check_parameters(template.spec, parameters or {})
    display_name = display_name or PIPELINE_NAME
    if len(display_name) > _DISPLAY_NAME_MAX:
        raise DeepFaceError(f"--display-name: at most {_DISPLAY_NAME_MAX} characters")
    _init_vertex(project, region, api_endpoint)
    from google.cloud import aiplatform

    return aiplatform.PipelineJob(
        display_name=display_name, template_path=template.path, pipeline_root=pipeline_root,
        parameter_values=values, enable_caching=enable_caching, labels=dict(labels or {}) or None,
        project=project, location=region,
    )


def console_url(resource_name: str) -> str:
    """Console page of a pipeline job or schedule from its resource name."""
    parts = resource_name.split("/")  # projects/P/locations/L/(pipelineJobs|schedules)/ID
    project, region, kind, resource_id = parts[1], parts[3], parts[4], parts[5]
    page = "runs" if kind == "pipelineJobs" else "schedules"
    return f"{CONSOLE}/locations/{region}/pipelines/{page}/{resource_id}?project={project}"


def submit_vertex(template: Template, *, wait: bool = False, service_account: str | None = None,
                  network: str | None = None, **job_options):
    """Submit a Vertex AI pipeline run; returns the PipelineJob (finished if ``wait``)."""
    job = vertex_job(template, service_account=service_account, network=network, **job_options)
    job.submit(service_account=service_account or None, network=network or None)
    logger.info("submitted %s", job.resource_name)
    if wait:
        try:
            job.wait()
        except RuntimeError as error:
            raise DeepFaceError(f"the pipeline run {console_url(job.resource_name)} failed: {error}") from None
    return job


def schedule_vertex(template: Template, *, cron: str, schedule_name: str | None = None,
                    max_runs: int | None = None, service_account: str | None = None,
                    network: str | None = None, **job_options):
    """Create a Vertex AI schedule that starts a run of ``template`` at every ``cron`` time."""
    check_cron(cron)
    if max_runs is not None and max_runs < 1:
        raise DeepFaceError(f"--max-runs {max_runs}: must be at least 1")
    job = vertex_job(template, service_account=service_account, network=network, **job_options)
    return job.create_schedule(
        cron=cron, display_name=schedule_name or f"{PIPELINE_NAME}-schedule", max_run_count=max_runs,
        max_concurrent_run_count=1, service_account=service_account or None, network=network or None,
    )


# ----- Artifact Registry -----


def registry_host(host: str | None, project: str | None, region: str | None, repository: str | None) -> str:
    """The KFP registry URL: ``host``, or https://REGION-kfp.pkg.dev/PROJECT/REPOSITORY."""
    if host:
        if not re.match(r"^https?://[^/\s]+/\S+$", host):
            raise DeepFaceError(f"--host {host!r}: give the repository URL, e.g. https://us-central1-kfp.pkg.dev/my-project/my-repo")
        return host.rstrip("/")
    check_project_region(project, region)
    if not repository or not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", repository):
        raise DeepFaceError(
            "missing or invalid --repository: the Artifact Registry repository (format KFP) to upload to"
        )
    return f"https://{region}-kfp.pkg.dev/{project}/{repository}"


def upload_template(template: Template, host: str, tags: Sequence[str] = ()) -> tuple[str, str, str]:
    """Upload ``template`` to a KFP registry with ``tags``; returns (package, version, template URL).

    Console users then start runs from it (Vertex AI > Pipelines > Create run > Select from existing).
    """
    for tag in tags:
        if not _TAG.match(tag) or tag.startswith("sha256:"):
            raise DeepFaceError(f"--tag {tag!r}: letters, digits, '.', '-' and '_' only (not a sha256: version)")
    from kfp.registry import ApiAuth, RegistryClient

    # Artifact Registry: Application Default Credentials; another registry: $DEEPFACE_REGISTRY_TOKEN, if set.
    token = os.environ.get(REGISTRY_TOKEN_ENV)
    if "-kfp.pkg.dev/" in host:
        auth = google_credentials()
    else:
        auth = ApiAuth(token) if token else None
    client = RegistryClient(host=host, auth=auth)
    package, version = client.upload_pipeline(file_name=template.path, tags=list(tags) or None)
    return package, version, f"{host}/{package}/{version}"


# ----- Kubeflow Pipelines -----


def submit_kfp(
    template: Template,
    *,
    host: str | None,
    namespace: str | None = None,
    experiment: str = "deepface",
    run_name: str | None = None,
    pipeline_root: str | None = None,
    service_account: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    enable_caching: bool | None = None,
    wait: bool = False,
    timeout_s: float = 7 * 24 * 3600,
) -> tuple[str, str]:
    """Start a run on a Kubeflow Pipelines endpoint; returns (run id, run URL)."""
    if not host:
        raise DeepFaceError("missing --host: the Kubeflow Pipelines endpoint, e.g. https://kubeflow.example.com/pipeline")
    if not re.match(r"^https?://\S+$", host):
        raise DeepFaceError(f"--host {host!r}: give an http(s):// URL")
    vertex_only = sorted(i for i in template_images(template.spec) if i.startswith(VERTEX_ONLY_IMAGES))
    if vertex_only:
        raise DeepFaceError(
            "this template trains as a Vertex AI custom job, which Kubeflow cannot run: compile with "
            "--training pipeline for Kubeflow"
        )
    values = check_parameters(template.spec, parameters or {})
    import kfp

    token = os.environ.get(KFP_TOKEN_ENV) or None
    with warnings.catch_warnings():  # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later"
        warnings.simplefilter("ignore", FutureWarning)
        client = kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token)
    result = client.create_run_from_pipeline_package(
        template.path, arguments=values, run_name=run_name, experiment_name=experiment, namespace=namespace,
        pipeline_root=pipeline_root or None, enable_caching=enable_caching,
        service_account=service_account or None,
    )
    url = f"{host.rstrip('/')}/#/runs/details/{result.run_id}"
    if wait:
        run = result.wait_for_run_completion(timeout=timeout_s)
        if str(run.state).upper() != "SUCCEEDED":
            raise DeepFaceError(f"the Kubeflow run {url} ended {run.state}")
    return result.run_id, url
