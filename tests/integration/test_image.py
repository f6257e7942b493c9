"""The project image, really built: docker/build.sh builds the Dockerfile with buildah on a local Debian
base image and smoke-tests it; these tests then look inside the result and run a real KFP component's
container command in it, as a Vertex AI / Kubeflow task would.

Cost (2-core machine): ~1.5 min for the base image and ~3.5-6 min for a cold build (TensorFlow and the
Google Cloud SDKs come from the package registry), ~15 s for a rebuild after a source change, plus
~20-50 s of smoke test; buildah, podman and debootstrap are installed with apt-get when missing (root
only, as in CI). Skipped, with the reason, where that cannot work (not root, no apt-get).
"""

from __future__ import annotations

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


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "buildah image builds need Linux"
    if os.geteuid() != 0:
        return "docker/build.sh needs root (buildah --isolation chroot, debootstrap); CI runs as root"
    if not shutil.which("buildah") and not shutil.which("apt-get"):
        return "buildah is not installed and apt-get is not available to install it"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
]


def run(*command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=check, **kwargs)


@pytest.fixture(scope="module")
def build() -> tuple[subprocess.CompletedProcess, str]:
    """docker/build.sh (build + smoke test), run once for the module, and the image reference that the
    pipeline's components name for this tree (computed just before the build starts)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DEEPFACE_IMAGE", "DEEPFACE_IMAGE_REPO", "TF_PACKAGE")}
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
    assert in_image(container, "ls", "-A", "/opt/deepface/docker").stdout.split() == ["constraints-cuda.txt"]
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
