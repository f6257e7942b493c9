"""Send the pipeline somewhere: a Vertex AI run or schedule, an Artifact Registry template, a Kubeflow run.

Every function checks its input (parameter names and types, project, region, pipeline root, labels,
images) and raises `DeepFaceError` before any request is made. Credentials come from the environment
only: Application Default Credentials for Google Cloud, ``$DEEPFACE_REGISTRY_TOKEN`` for a registry
that is not Artifact Registry, ``$DEEPFACE_KFP_TOKEN`` for a Kubeflow endpoint; never from arguments.

A plain ``http://`` API endpoint (an emulator or a test server on this machine) gets anonymous
credentials: no token is ever sent over an unencrypted connection.

Endpoints that cannot be reached fail in one line naming the endpoint and what to check: each command
first makes one plain request to the endpoints it will use (any HTTP answer will do), so that it does not
spend the client libraries' minutes of retries first, and a connection that fails later is reported the
same way (`reaching`).
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
from deepface.registry import PROJECT_ID
from pipelines.params import check_labels, check_parameters, provenance_labels
from pipelines.pipeline import PIPELINE_NAME, CompileOptions, compile_pipeline

logger = logging.getLogger(__name__)

REGISTRY_TOKEN_ENV = "DEEPFACE_REGISTRY_TOKEN"
KFP_TOKEN_ENV = "DEEPFACE_KFP_TOKEN"
CONSOLE = "https://console.cloud.google.com/vertex-ai"
# Images that only Vertex AI can run (the launcher of create_custom_training_job_from_component).
VERTEX_ONLY_IMAGES = ("gcr.io/ml-pipeline/google-cloud-pipeline-components",)

_SERVICE_ACCOUNT = re.compile(r"^[a-z0-9-]+@[a-z0-9.-]+$")
_NETWORK = re.compile(r"^projects/[0-9]+/global/networks/[A-Za-z0-9_-]+$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_KMS_KEY = re.compile(r"^projects/[^/\s]+/locations/([a-z0-9-]+)/keyRings/[A-Za-z0-9_-]+/cryptoKeys/[A-Za-z0-9_-]+$")
_EXPERIMENT = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
_TENSORBOARD_LOCATION = re.compile(r"^projects/[^/]+/locations/([^/]+)/tensorboards/")
_DISPLAY_NAME_MAX = 128
# Seconds to wait for an endpoint to accept a connection before calling it unreachable.
CONNECT_TIMEOUT_S = 10


@dataclasses.dataclass(frozen=True)
class Template:
    """A compiled pipeline on local disk: its path and its content."""

    path: str
    spec: dict
    compiled_here: bool = False  # compiled by this process from this checkout (not read from --template)


@contextlib.contextmanager
def template(path: str | os.PathLike | None, options: CompileOptions = CompileOptions()) -> Iterator[Template]:
    """The template at ``path``, or the pipeline compiled now with ``options`` (into a temporary folder)."""
    if path is not None:
        yield load_template(path)
        return
    with tempfile.TemporaryDirectory(prefix="deepface-pipeline-") as folder:
        compiled = load_template(compile_pipeline(os.path.join(folder, f"{PIPELINE_NAME}.yaml"), options))
        yield dataclasses.replace(compiled, compiled_here=True)


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


def project_image(spec: Mapping[str, Any]) -> str | None:
    """The project's image in a template (the one image that is not Google's custom-job launcher)."""
    images = sorted(image for image in template_images(spec) if not image.startswith(VERTEX_ONLY_IMAGES))
    return images[0] if images else None


def custom_job_tensorboards(spec: Any) -> set[str]:
    """The TensorBoard instances a template's custom training jobs upload to."""
    found: set[str] = set()
    for component in (spec.get("components") or {}).values():
        parameters = component.get("inputDefinitions", {}).get("parameters", {})
        if "worker_pool_specs" in parameters and parameters.get("tensorboard", {}).get("defaultValue"):
            found.add(parameters["tensorboard"]["defaultValue"])
    return found


def run_labels(template: Template, labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """The labels of a run: the template image's provenance (`pipelines.params.provenance_labels`, with
    this checkout's commit when the template was compiled here), then ``labels``, which win."""
    image = project_image(template.spec)
    checkout_tag = None
    if template.compiled_here:
        from components.image import image_tag

        checkout_tag = image_tag()
    default = provenance_labels(image, checkout_tag) if image else {}
    return check_labels({**default, **(labels or {})})


# ----- checks -----


def check_project_region(project: str | None, region: str | None) -> None:
    from google.cloud.aiplatform import utils as aiplatform_utils

    if not project:
        raise DeepFaceError("missing --project (or $GOOGLE_CLOUD_PROJECT): the Google Cloud project to run in")
    if not PROJECT_ID.fullmatch(project):
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
    """Vertex AI pulls images from a registry: refuse images only this machine has (localhost/...), for a
    run, a schedule or a template uploaded for the console alike."""
    local = sorted(
        image for image in template_images(spec) if image.startswith("localhost/") or "/" not in image.split(":")[0]
    )
    if local:
        raise DeepFaceError(
            f"the template runs image {local[0]}, which Vertex AI cannot pull: push the image to Artifact Registry "
            "(docker/build.sh with IMAGE_REPO=REGION-docker.pkg.dev/PROJECT/REPO/deepface-pipeline, then push) and "
            "set DEEPFACE_IMAGE_REPO (or DEEPFACE_IMAGE) before compiling"
        )


def check_encryption_key(key: str | None, region: str) -> None:
    """A Cloud KMS key in the run's region (Vertex AI encrypts a run's resources with a key of its region)."""
    if not key:
        return
    match = _KMS_KEY.match(key)
    if not match:
        raise DeepFaceError(
            f"--encryption-key {key!r}: give a Cloud KMS key, projects/PROJECT/locations/REGION/keyRings/RING/"
            "cryptoKeys/KEY"
        )
    if match.group(1) != region:
        raise DeepFaceError(
            f"--encryption-key {key!r} is in {match.group(1)}: Vertex AI needs a key in the run's region, {region}"
        )


def check_tensorboards(spec: Mapping[str, Any], region: str) -> None:
    """The template's TensorBoard instance (a compile option) must be in the run's region."""
    for tensorboard in sorted(custom_job_tensorboards(spec)):
        match = _TENSORBOARD_LOCATION.match(tensorboard)
        if match and match.group(1) != region:
            raise DeepFaceError(
                f"--tensorboard {tensorboard} is in {match.group(1)}, the run in {region}: give a TensorBoard "
                "instance of the run's region (it is a compile option: compile again, or give --template a "
                "template compiled with it)"
            )


def check_experiment(experiment: str | None) -> None:
    if experiment and not _EXPERIMENT.match(experiment):
        raise DeepFaceError(
            f"--experiment {experiment!r}: an experiment name has 1-128 lowercase letters, digits and '-', "
            "e.g. deepface-baselines"
        )


def check_schedule_experiment(experiment: str | None) -> None:
    if experiment:
        raise DeepFaceError(
            f"--experiment {experiment}: Vertex AI cannot file a schedule's runs under an experiment (the "
            "Schedule API has no such setting); leave it out, label the runs instead (--label "
            f"experiment={experiment}), or start runs with submit --experiment"
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


# ----- endpoints that do not answer -----


def _failure_types() -> tuple[type[BaseException], ...]:
    """What a connection failure is in the libraries used here (imported only when one is examined)."""
    import socket

    import requests
    import urllib3.exceptions
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    return (
        ConnectionError, socket.gaierror, TimeoutError,  # the socket layer
        requests.ConnectionError, requests.Timeout,  # refused, unknown host, TLS, proxy, timeouts
        urllib3.exceptions.MaxRetryError, urllib3.exceptions.NewConnectionError, urllib3.exceptions.ProtocolError,
        urllib3.exceptions.TimeoutError,
        api_exceptions.ServiceUnavailable, api_exceptions.RetryError,  # gRPC UNAVAILABLE / HTTP 503; retries gave up
        auth_exceptions.TransportError,  # a token refresh that could not connect
    )


def connection_failure(error: BaseException) -> BaseException | None:
    """The connection failure behind ``error`` (itself, or a cause, context or wrapped reason of it), or
    None when ``error`` is something else."""
    types = _failure_types()
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, types):
            return current
        pending += [current.__cause__, current.__context__]
    return None


def _reason(failure: BaseException) -> str:
    """A short reason for a connection failure: the text of the first OS error found inside it ("Connection
    refused", "Name or service not known"), else of the innermost exception it wraps."""
    seen: set[int] = set()
    pending: list[Any] = [failure]
    innermost = failure
    while pending:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        if str(current):
            innermost = current
        pending += [getattr(current, "reason", None), current.__cause__, current.__context__,
                    getattr(current, "cause", None), *current.args]
    return _one_line(str(innermost) or type(innermost).__name__)


def _one_line(text: Any, limit: int = 300) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()[:limit]


def unreachable(what: str, url: str, fix: str, failure: BaseException) -> DeepFaceError:
    """The one-line error for an endpoint that did not answer."""
    return DeepFaceError(f"cannot reach {what} at {url} ({_reason(failure)}): {fix}")


@contextlib.contextmanager
def reaching(what: str, url: str, fix: str) -> Iterator[None]:
    """Turn a connection failure inside the block into `unreachable`'s one line; other errors pass."""
    try:
        yield
    except DeepFaceError:
        raise
    except Exception as error:
        failure = connection_failure(error)
        if failure is None:
            raise
        raise unreachable(what, url, fix, failure) from None


def check_reachable(what: str, url: str, fix: str) -> None:
    """One plain request to ``url``: any HTTP answer will do; no connection (refused, unknown host, TLS,
    proxy, no answer within `CONNECT_TIMEOUT_S`) raises `unreachable`'s one line. It sends no credentials
    and honours the usual proxy variables."""
    import requests

    try:
        requests.head(url, timeout=(CONNECT_TIMEOUT_S, 60), allow_redirects=False)
    except requests.ConnectionError as error:
        raise unreachable(what, url, fix, error) from None
    except requests.RequestException:
        pass  # it answered, slowly or oddly: the client library will say more


def _base_url(endpoint: str) -> str:
    return (endpoint if re.match(r"^https?://", endpoint) else f"https://{endpoint}").rstrip("/") + "/"


def vertex_endpoint(region: str, api_endpoint: str | None) -> str:
    """The Vertex AI API base URL the SDK talks to."""
    return _base_url(api_endpoint or f"{region}-aiplatform.googleapis.com")


def storage_endpoint() -> str:
    """The Cloud Storage base URL the SDK checks the pipeline root's bucket on."""
    return _base_url(os.environ.get("STORAGE_EMULATOR_HOST") or "storage.googleapis.com")


_NETWORK_FIX = "check the network, a proxy (HTTPS_PROXY) or firewall in the way, and the address"


def _vertex_fix(api_endpoint: str | None) -> str:
    return f"{_NETWORK_FIX} ({'--api-endpoint' if api_endpoint else '--region'}), then try again"


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
    encryption_key: str | None = None,
    api_endpoint: str | None = None,
):
    """An unsubmitted ``aiplatform.PipelineJob`` for ``template``, after every check, once its endpoint
    answers. Its labels are `run_labels` (the template's provenance, then ``labels``)."""
    check_project_region(project, region)
    check_pipeline_root(pipeline_root)
    check_run_identity(service_account, network)
    check_encryption_key(encryption_key, region)
    check_vertex_images(template.spec)
    check_tensorboards(template.spec, region)
    values = check_parameters(template.spec, parameters or {})
    all_labels = run_labels(template, labels)
    display_name = display_name or PIPELINE_NAME
    if len(display_name) > _DISPLAY_NAME_MAX:
        raise DeepFaceError(f"--display-name: at most {_DISPLAY_NAME_MAX} characters")
    _init_vertex(project, region, api_endpoint)
    check_reachable("the Vertex AI API", vertex_endpoint(region, api_endpoint), _vertex_fix(api_endpoint))
    from google.cloud import aiplatform

    return aiplatform.PipelineJob(
        display_name=display_name, template_path=template.path, pipeline_root=pipeline_root,
        parameter_values=values, enable_caching=enable_caching, labels=all_labels or None,
        encryption_spec_key_name=encryption_key or None, project=project, location=region,
    )


def console_url(resource_name: str) -> str:
    """Console page of a pipeline job or schedule from its resource name."""
    parts = resource_name.split("/")  # projects/P/locations/L/(pipelineJobs|schedules)/ID
    project, region, kind, resource_id = parts[1], parts[3], parts[4], parts[5]
    page = "runs" if kind == "pipelineJobs" else "schedules"
    return f"{CONSOLE}/locations/{region}/pipelines/{page}/{resource_id}?project={project}"


def submit_vertex(template: Template, *, wait: bool = False, service_account: str | None = None,
                  network: str | None = None, experiment: str | None = None, **job_options):
    """Submit a Vertex AI pipeline run; returns the PipelineJob (finished if ``wait``).

    ``experiment``: a Vertex AI Experiment (created if missing) that the run is filed under; its
    parameters and metrics then show there. The SDK files it once Vertex AI has made the run's metadata,
    so submitting waits for that.
    """
    check_experiment(experiment)
    job = vertex_job(template, service_account=service_account, network=network, **job_options)
    region, api_endpoint = job_options.get("region"), job_options.get("api_endpoint")
    url, fix = vertex_endpoint(region, api_endpoint), _vertex_fix(api_endpoint)
    check_reachable("Cloud Storage (the pipeline root's bucket)", storage_endpoint(),
                    f"{_NETWORK_FIX}, then try again")
    with reaching("the Vertex AI API", url, fix):
        try:
            job.submit(service_account=service_account or None, network=network or None, experiment=experiment)
        except RuntimeError as error:  # the SDK's experiment errors (the run's own failures raise others)
            if not experiment or connection_failure(error) is not None:
                raise
            cause = _one_line(error.__cause__ or error)
            if not _created(job):
                raise DeepFaceError(
                    f"--experiment {experiment}: Vertex AI could not find or create it ({cause}); check the "
                    "Vertex AI Experiments permissions of your account, or leave out --experiment"
                ) from None
            raise DeepFaceError(
                f"the run {console_url(job.resource_name)} started but was not filed under experiment "
                f"{experiment} ({cause}); file it from the console's Experiments page"
            ) from None
        logger.info("submitted %s", job.resource_name)
        if wait:
            try:
                job.wait()
            except RuntimeError as error:
                if connection_failure(error) is not None:
                    raise
                raise DeepFaceError(f"the pipeline run {console_url(job.resource_name)} failed: {error}") from None
    return job


def _created(job) -> bool:
    """Whether Vertex AI has created ``job`` (it has a resource name)."""
    try:
        return bool(job.resource_name)
    except RuntimeError:
        return False


def schedule_vertex(template: Template, *, cron: str, schedule_name: str | None = None,
                    max_runs: int | None = None, service_account: str | None = None,
                    network: str | None = None, experiment: str | None = None, **job_options):
    """Create a Vertex AI schedule that starts a run of ``template`` at every ``cron`` time.

    ``experiment`` is refused: Vertex AI cannot file a schedule's runs under an experiment (neither the
    Schedule API nor the SDK has such a setting: googleapis/python-aiplatform issue 2340).
    """
    check_schedule_experiment(experiment)
    check_cron(cron)
    if max_runs is not None and max_runs < 1:
        raise DeepFaceError(f"--max-runs {max_runs}: must be at least 1")
    job = vertex_job(template, service_account=service_account, network=network, **job_options)
    api_endpoint = job_options.get("api_endpoint")
    with reaching("the Vertex AI API", vertex_endpoint(job_options.get("region"), api_endpoint),
                  _vertex_fix(api_endpoint)):
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
    check_vertex_images(template.spec)
    from kfp.registry import ApiAuth, RegistryClient

    # Artifact Registry: Application Default Credentials; another registry: $DEEPFACE_REGISTRY_TOKEN, if set.
    token = os.environ.get(REGISTRY_TOKEN_ENV)
    if "-kfp.pkg.dev/" in host:
        auth = google_credentials()
    else:
        auth = ApiAuth(token) if token else None
    fix = f"{_NETWORK_FIX} (--host, or --project/--region/--repository), then try again"
    check_reachable("the template registry", host, fix)
    with reaching("the template registry", host, fix):
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

    fix = f"{_NETWORK_FIX} (--host or $KF_PIPELINES_ENDPOINT), then try again"
    check_reachable("Kubeflow Pipelines", host, fix)
    token = os.environ.get(KFP_TOKEN_ENV) or None
    with reaching("Kubeflow Pipelines", host, fix):
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
