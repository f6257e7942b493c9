"""The project image, really built: docker/build.sh builds the Dockerfile with buildah on a local Debian
base image and smoke-tests it; these tests then look inside the result and run a real KFP component's
container command in it, as a Vertex AI / Kubeflow task would.

Cost (2-core machine): ~1.5 min for the base image and ~3.5-6 min for a cold build (TensorFlow and the
Google Cloud SDKs come from the package registry), ~15 s for a rebuild after a source change, plus
~20-50 s of smoke test; buildah, podman and debootstrap are installed with apt-get when missing (root
only). They need root and the network, so they are an explicit opt-in: ``DEEPFACE_IMAGE_TESTS=1``
(``make image-check``); without it they are skipped, saying so. Opted in, a machine that cannot build
(not Linux, not root, neither buildah nor apt-get) fails them; a package registry that does not answer
(checked in a few seconds) skips them with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "docker" / "build.sh"


OPT_IN = "DEEPFACE_IMAGE_TESTS"
# What the build downloads from: pip's index (PIP_INDEX_URL where set) and Debian's archive (the local base).
REGISTRIES = (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/", "http://deb.debian.org/debian/")
REACH_TIMEOUT_S = 5


def _cannot_run_reason() -> str | None:
    """Why this machine cannot build the image at all (then an opted-in run fails), or None."""
    if not sys.platform.startswith("linux"):
        return "buildah image builds need Linux"
    if os.geteuid() != 0:
        return "docker/build.sh needs root (buildah --isolation chroot, debootstrap)"
    if not shutil.which("buildah") and not shutil.which("apt-get"):
        return "buildah is not installed and apt-get is not available to install it"
    return None


def _unreachable_registry() -> str | None:
    """The first package registry the build needs that does not answer within REACH_TIMEOUT_S, with the
    error, or None. Any HTTP answer (even an error status) means the network reaches it."""
    import ssl
    import urllib.error
    import urllib.request

    bundle = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    context = ssl.create_default_context(cafile=bundle if os.path.exists(bundle) else None)
    for url in REGISTRIES:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=REACH_TIMEOUT_S,
                                   context=context).close()
        except urllib.error.HTTPError:
            continue  # it answered
        except (OSError, ValueError) as error:
            return f"{url} ({type(error).__name__}: {error})"
    return None


@pytest.fixture(scope="module", autouse=True)
def _image_tests_opted_in_and_able() -> None:
    """Skip unless opted in; opted in, fail where the image cannot be built, skip where the network
    cannot reach the package registries. Runs before the module's build."""
    if os.environ.get(OPT_IN) != "1":
        pytest.skip(f"the image tests need root and the network: opt in with {OPT_IN}=1 (make image-check)")
    reason = _cannot_run_reason()
    if reason is not None:
        pytest.fail(f"{OPT_IN}=1 but the image cannot be built here: {reason}", pytrace=False)
    unreachable = _unreachable_registry()
    if unreachable is not None:
        pytest.skip(f"the network does not reach the package registry the build needs: {unreachable}")


pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def run(*command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=check, **kwargs)


@pytest.fixture(scope="module")
def build() -> tuple[subprocess.CompletedProcess, str]:
    """docker/build.sh (build + smoke test), run once for the module, and the image reference that the
    pipeline's components name for this tree (computed just before the build starts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPFACE_IMAGE") and k != "FLAVOUR"}
    components_image = run(sys.executable, "-m", "components.image", cwd=ROOT, env=env).stdout.strip()
    result = subprocess.run([str(BUILD_SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"docker/build.sh failed:\n{result.stderr[-6000:]}"
    return result, components_image


@pytest.fixture(scope="module")
def image(build) -> str:
    return build[0].stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def container(image):
    """A working container of the image (buildah from), removed afterwards."""
    name = run("buildah", "from", "--pull-never", image).stdout.strip()
    yield name
    run("buildah", "rm", name, check=False)


def in_image(container: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    return run("buildah", "run", "--isolation", "chroot", container, "--", *command, check=check)


def test_build_tags_the_image_the_components_name(build, image):
    result, components_image = build
    assert image == components_image
    assert re.fullmatch(r"localhost/deepface-pipeline:\d+\.\d+\.\d+-g[0-9a-f]{12}(-dirty-[0-9a-f]{12})?", image)
    assert "smoke test passed as uid 1000" in result.stderr
    assert "deepface [OPTIONS] COMMAND" in result.stderr  # deepface --help ran in the image
    assert '"parameters": ' in result.stderr  # deepface model --preset tiny built the model in the image


def test_image_config(image):
    config = json.loads(run("buildah", "inspect", "--type", "image", image).stdout)["OCIv1"]["config"]
    assert config["User"] == "1000:1000"
    assert not config.get("Entrypoint"), "KFP tasks run their own command: no ENTRYPOINT"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert env["MPLCONFIGDIR"] == "/opt/matplotlib"
    assert not any("CERT" in name or "TOKEN" in name or "SECRET" in name for name in env)
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert config["Labels"]["org.opencontainers.image.version"] == version
    revision = run("git", "rev-parse", "--short=12", "HEAD", cwd=ROOT).stdout.strip()
    assert config["Labels"]["org.opencontainers.image.revision"] == revision


def test_image_holds_the_package_and_nothing_else(container):
    copied = set(in_image(container, "ls", "-A", "/opt/deepface").stdout.split())
    assert copied == {"README.md", "pyproject.toml", "constraints.txt", "docker", "deepface", "components",
                      "pipelines"}
    assert sorted(in_image(container, "ls", "-A", "/opt/deepface/docker").stdout.split()) == [
        "constraints-cuda.txt", "constraints-tpu.txt", "flavours.py"]
    assert in_image(container, "test", "-e", "/run/secrets/pip_cert", check=False).returncode != 0
    pip_list = in_image(container, "python3", "-m", "pip", "list", "--format=json").stdout
    installed = {item["name"].lower().replace("_", "-"): item["version"] for item in json.loads(pip_list)}
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for name, version in pins.items():
        key = name.lower().replace("_", "-")
        if key in installed:
            assert installed[key] == version, f"{name} {installed[key]} in the image, {version} pinned"
    for name in ("tensorflow", "keras", "kfp", "google-cloud-aiplatform", "h5py", "deepface-pipeline"):
        assert name in installed
    for test_only in ("pytest", "tf-keras", "gcp-storage-emulator"):
        assert test_only not in installed


def test_kfp_component_runs_in_the_image_as_its_user(container):
    """The real container command of the synth component, with an executor input as Vertex AI gives it:
    every parameter has a value (the driver fills in the defaults), and the output artifact is a gs:// URI,
    which the KFP executor writes under /gcs as the image's user."""
    from components.synth import make_synthetic_dataset

    spec = make_synthetic_dataset.component_spec.implementation.container
    uri = "gs://test-bucket/root/make-synthetic-dataset/data"
    executor_input = {
        "inputs": {"parameterValues": {"train_identities": 8, "test_identities": 6, "lfw_identities": 12,
                                       "images_per_identity": 10, "image_size": 64, "lfw_image_size": 96,
                                       "seed": 0, "data_uri": ""}},
        "outputs": {"artifacts": {"data": {"artifacts": [{"name": "data", "type": {"schemaTitle": "system.Dataset"},
                                                          "uri": uri, "metadata": {}}]}},
                    "outputFile": "/tmp/kfp/executor_output.json"},
    }
    args = [json.dumps(executor_input) if arg == "{{$}}" else arg for arg in spec.args]
    result = in_image(container, *spec.command, *args, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    listing = in_image(container, "ls", "/gcs/test-bucket/root/make-synthetic-dataset/data").stdout.split()
    assert {"vggface2_train.tar.gz", "lfw.tgz", "pairs.txt", "MD5SUMS"} <= set(listing)
    owned_by_user = 'test "$(stat -c %u /gcs/test-bucket/root/make-synthetic-dataset/data/MD5SUMS)" = 1000'
    assert in_image(container, "sh", "-c", owned_by_user, check=False).returncode == 0
    executor_output = json.loads(in_image(container, "cat", "/tmp/kfp/executor_output.json").stdout)
    [artifact] = executor_output["artifacts"]["data"]["artifacts"]
    assert artifact["uri"] == uri


@pytest.fixture
def fresh_container(image):
    """A container of the image that no other test has run anything in, removed afterwards."""
    name = run("buildah", "from", "--pull-never", image).stdout.strip()
    yield name
    run("buildah", "rm", name, check=False)


def test_matplotlib_font_cache_is_built_into_the_image(fresh_container):
    """A new container finds matplotlib's font cache in MPLCONFIGDIR, writable by the image's user, and
    importing pyplot uses it as it is (the file is not rewritten, no temporary cache folder is made)."""
    folder = in_image(fresh_container, "sh", "-c", 'echo "$MPLCONFIGDIR"').stdout.strip()
    assert folder == "/opt/matplotlib"
    caches = [name for name in in_image(fresh_container, "ls", "-A", folder).stdout.split()
              if re.fullmatch(r"fontlist-v[0-9.]+\.json", name)]
    assert len(caches) == 1, caches
    cache = f"{folder}/{caches[0]}"
    before = in_image(fresh_container, "stat", "-c", "%u %Y %s", cache).stdout.split()
    assert before[0] == "1000" and int(before[2]) > 1000
    assert in_image(fresh_container, "test", "-w", folder, check=False).returncode == 0
    imported = in_image(fresh_container, "python3", "-c",
                        "import matplotlib, matplotlib.pyplot; print(matplotlib.get_cachedir())")
    assert imported.stdout.strip() == folder
    assert "font cache" not in imported.stderr and "temporary" not in imported.stderr, imported.stderr
    assert in_image(fresh_container, "stat", "-c", "%u %Y %s", cache).stdout.split() == before


def test_tensorflow_log_level_comes_from_the_image(container):
    """TF_CPP_MIN_LOG_LEVEL=2 from the image turns off the C++ INFO and WARNING lines that TensorFlow's
    logging filters, e.g. cpu_feature_guard's, which the same container prints with the level set to 0.
    (TensorFlow 2.21 logs a few lines through absl before absl::InitializeLog, which no level removes:
    the oneDNN notice, 'Could not find cuda drivers'.)"""
    program = "import tensorflow as tf; tf.constant(1) + 1"
    quiet = in_image(container, "python3", "-c", program)
    assert "cpu_feature_guard" not in quiet.stderr, quiet.stderr[-3000:]
    loud = in_image(container, "env", "TF_CPP_MIN_LOG_LEVEL=0", "python3", "-c", program)
    if "cpu_feature_guard" not in loud.stderr:
        pytest.skip("this CPU has no instructions beyond TensorFlow's build: nothing for the level to filter")
    assert re.search(r"^I\d{4} .*cpu_feature_guard\.cc", loud.stderr, re.M), loud.stderr[-3000:]


def test_a_task_that_cannot_write_under_gcs_stops_at_start_in_one_line(container):
    """A /gcs bucket folder the image's user may not write (as a Cloud Storage FUSE mount refusing
    non-root users would be): the real synth command stops before kfp's executor runs, with one line
    naming the path, the uid and the fix, and no traceback."""
    from components.synth import make_synthetic_dataset

    run("buildah", "run", "--isolation", "chroot", "--user", "0:0", container, "--",
        "sh", "-c", "mkdir -p /gcs/locked-bucket && chown 0:0 /gcs/locked-bucket && chmod 755 /gcs/locked-bucket")
    spec = make_synthetic_dataset.component_spec.implementation.container
    executor_input = {
        "inputs": {"parameterValues": {"train_identities": 8, "test_identities": 6, "lfw_identities": 12,
                                       "images_per_identity": 10, "image_size": 64, "lfw_image_size": 96,
                                       "seed": 0, "data_uri": ""}},
        "outputs": {"artifacts": {"data": {"artifacts": [{"name": "data", "type": {"schemaTitle": "system.Dataset"},
                                                          "uri": "gs://locked-bucket/root/task/data",
                                                          "metadata": {}}]}},
                    "outputFile": "/tmp/kfp-locked/executor_output.json"},
    }
    args = [json.dumps(executor_input) if arg == "{{$}}" else arg for arg in spec.args]
    result = in_image(container, *spec.command, *args, check=False)
    assert result.returncode == 1, result.stderr[-4000:]
    lines = [line for line in result.stderr.splitlines() if "deepface task:" in line]
    assert lines == [
        "deepface task: cannot write output 'data' at /gcs/locked-bucket/root/task/data: folder "
        "/gcs/locked-bucket/root/task as uid 1000 (deepface): Permission denied. Fix: the /gcs mount must let "
        "uid 1000 write (on Vertex AI, /gcs is Cloud Storage FUSE: check the pipeline root bucket and the "
        "service account's write access to it), or run the image as root: RUNTIME_USER=0:0 docker/build.sh, "
        "with its own DEEPFACE_IMAGE_REPO"
    ], result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    assert "KFP Executor" not in result.stdout + result.stderr  # kfp's executor never started
    assert in_image(container, "test", "-e", "/gcs/locked-bucket/root", check=False).returncode != 0


# Smaller than the demo defaults, the same code paths (as tests/integration/test_local_pipeline.py).
DAG_PARAMS = {"synthetic_identities": 6, "synthetic_images_per_identity": 8, "epochs": 1, "batch_size": 16}
BUCKET = "deepface-test"


@pytest.fixture(scope="module")
def dag_run(image, tmp_path_factory):
    """Every task of the compiled template, in dependency order, run as its container's own command in the
    image as the image's user, with the executor input the KFP launcher writes (helpers.launcher) and its
    artifacts under gs://BUCKET/..., i.e. a /gcs/BUCKET mount; then kfp.local's run of the same parameters in
    this environment. Returns ``(bucket folder, executor outputs per task, task logs, the local run)``."""
    import yaml
    from helpers.launcher import run_template

    from pipelines.local import run_local
    from pipelines.pipeline import CompileOptions, compile_pipeline

    tmp_path = tmp_path_factory.mktemp("dag")
    template_path = compile_pipeline(tmp_path / "pipeline.yaml", CompileOptions(train_retries=0))
    template = yaml.safe_load(Path(template_path).read_text())
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    os.chown(bucket, 1000, 1000)  # the mount lets the image's user write, as Vertex AI's /gcs does for its tasks
    container = run("buildah", "from", "--pull-never", image).stdout.strip()
    logs = {}

    def run_task(name: str, argv: list[str], output_file: str) -> dict:
        result = run("buildah", "run", "--isolation", "chroot", "--volume", f"{bucket}:/gcs/{BUCKET}", container,
                     "--", *argv, check=False)
        logs[name] = result.stdout + result.stderr
        assert result.returncode == 0, f"task {name} failed in the image:\n{logs[name][-6000:]}"
        return json.loads((bucket / output_file.removeprefix(f"/gcs/{BUCKET}/")).read_text())

    try:
        outputs = run_template(template, DAG_PARAMS, run_task, pipeline_root=f"gs://{BUCKET}/root",
                               output_file=lambda task: f"/gcs/{BUCKET}/launcher/{task}/executor_output.json")
    finally:
        run("buildah", "rm", container, check=False)
    local = run_local(DAG_PARAMS, pipeline_root=tmp_path / "local")
    return bucket, outputs, logs, local


def test_the_whole_pipeline_runs_in_the_image_as_the_launcher_runs_it(dag_run):
    """The metrics of the run in the image equal kfp.local's run of the same parameters, to the last digit."""
    bucket, outputs, logs, local = dag_run
    assert list(outputs) == ["fingerprint-data", "make-synthetic-dataset", "fetch", "build-labels",
                             "build-tfrecords", "train", "evaluate"]
    # Every artifact was written under the mount, as the image's user.
    model = bucket / "root" / "train" / "model"
    assert (model / "manifest.json").is_file() and model.stat().st_uid == 1000
    assert not [name for name, log in logs.items() if "Traceback" in log]
    [metrics] = outputs["evaluate"]["artifacts"]["metrics"]["artifacts"]
    in_image = {name: value for name, value in metrics["metadata"].items() if isinstance(value, (int, float))}
    assert in_image and in_image == local.metrics


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_model_trained_by_the_local_pipeline_is_served_from_the_image(image, dag_run, tmp_path):
    """``deepface serve`` in the image (as Vertex AI would start it, as the image's user) serves the model and
    evaluation of the local pipeline's run: a verify request answers what ``deepface.load(...).verify`` says
    in this environment, to 1e-5. (The image's chroot shares this machine's network.)"""
    import base64

    import matplotlib.cbook
    import requests
    from PIL import Image, ImageOps

    import deepface

    *_, local = dag_run
    outputs = {name: uri for stage in local.stages for name, uri in stage.outputs.items()}
    model, evaluation = Path(outputs["model"]), Path(outputs["evaluation"])
    photo = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    mirrored = tmp_path / "mirrored.jpg"
    ImageOps.mirror(Image.open(photo)).save(mirrored, quality=95)
    expected = deepface.load(model, evaluation).verify(photo, mirrored)

    port = free_port()
    container = run("buildah", "from", "--pull-never", image).stdout.strip()
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(
        ["buildah", "run", "--isolation", "chroot", "--volume", f"{model}:/srv/model:ro",
         "--volume", f"{evaluation}:/srv/evaluation:ro", container, "--", "deepface", "serve",
         "--model", "/srv/model", "--evaluation", "/srv/evaluation", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):  # bounded: each round waits on the server process for up to 0.5 s
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = server.wait(timeout=0.5)
                raise AssertionError(f"the server exited ({code}):\n{(tmp_path / 'server.log').read_text()[-3000:]}")
        else:
            raise AssertionError(f"the server never got ready:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
        instance = {"image_a": base64.b64encode(photo.read_bytes()).decode(),
                    "image_b": base64.b64encode(mirrored.read_bytes()).decode()}
        response = requests.post(f"http://127.0.0.1:{port}/predict", json={"instances": [instance]}, timeout=120)
        assert response.status_code == 200, response.text
        [answer] = response.json()["predictions"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        run("buildah", "rm", container, check=False)
    assert answer["score"] == expected["score"] and answer["same"] == expected["same"]
    assert abs(answer["value"] - expected["value"]) <= 1e-5, (answer, expected)
