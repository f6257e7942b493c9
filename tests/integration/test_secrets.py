"""Secrets never reach logs, manifests, compiled templates or artifacts; the image runs as non-root with
pinned dependencies.

Tokens are planted where a user puts them: the HTTP header in the environment variable named by
``--auth-header-env`` or in the (fake) Secret Manager secret named by ``--auth-secret``, a signature and an
access token in signed URLs, user info in a URL, the Kubeflow and registry tokens in ``DEEPFACE_KFP_TOKEN``
and ``DEEPFACE_REGISTRY_TOKEN``. Then every command of a
run executes with debug logging (``-v``), and every byte it printed or wrote is searched for every
token, in every form it could take (as is, URL-quoted, in base64 as a Basic credential).
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers.fake_secret_manager import FakeSecretManager
from helpers.fake_vertex import FakeCloud
from helpers.faults import child_env
from helpers.servers import HttpFileServer

REPOSITORY = Path(__file__).resolve().parents[2]
TOKENS = {
    "auth header": "hdr-7c1e5a90d2",
    "URL signature": "sig-4b8f02ce61",
    "URL access token": "acc-9d3a7e15f0",
    "URL user info": "usr-2f6b8c4a3e",
    "wrong auth header": "bad-0e5d9b7c12",
    "KFP token": "kfp-5a1c3e7b9d",
    "registry token": "reg-8e2f4a6c0b",
}
USER = "reader"
SECRET_NAME = "projects/p/secrets/release-header/versions/latest"


def forms(token: str) -> list[bytes]:
    """The byte strings that would betray ``token``: as is, URL-quoted, and as a Basic credential."""
    return [token.encode(), quote(token).encode(), base64.b64encode(f"{USER}:{token}".encode())]


def leaks(outputs: dict[str, bytes], tokens: dict[str, str] = TOKENS) -> list[str]:
    """``"<token> in <output>"`` for every planted token found in any output."""
    return [f"{name} in {where}" for where, data in outputs.items() for name, token in tokens.items()
            if any(form in data for form in forms(token))]


def every_file(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def secret_env(**extra: str) -> dict[str, str]:
    return child_env(
        FETCH_AUTH=f"X-Api-Key: {TOKENS['auth header']}", FETCH_AUTH_WRONG=f"X-Api-Key: {TOKENS['wrong auth header']}",
        DEEPFACE_KFP_TOKEN=TOKENS["KFP token"], DEEPFACE_REGISTRY_TOKEN=TOKENS["registry token"], **extra,
    )


def run_verbose(module: str, args: list, env: dict[str, str], outputs: dict[str, bytes], expect: int = 0) -> str:
    """Run ``python -m <module> -v <args>``; record everything it printed in ``outputs``."""
    result = subprocess.run([sys.executable, "-m", module, "-v", *map(str, args)], capture_output=True, env=env,
                            cwd=REPOSITORY, timeout=600)
    printed = result.stdout + result.stderr
    outputs[f"output of {module} {args[0]}"] = printed
    assert result.returncode == expect, printed.decode(errors="replace")[-3000:]
    return printed.decode(errors="replace")


# --------------------------------------------------------------------------------------------------
# A data run: fetch (with credentials) -> labels -> tfrecords -> train -> evaluate


@pytest.mark.slow
def test_no_token_reaches_the_logs_manifests_or_artifacts_of_a_run(synth_dir, tmp_path):
    release = {name: (synth_dir / name).read_bytes()
               for name in ("vggface2_train.tar.gz", "lfw.tgz", "pairs.txt", "MD5SUMS", "bb_landmark.tar.gz",
                            "lfw_landmarks.csv")}
    run_dir, outputs = tmp_path / "run", {}
    env = secret_env()
    with HttpFileServer({f"release/{name}": data for name, data in release.items()},
                        required_header=("X-Api-Key", TOKENS["auth header"])) as server:
        signed = f"?X-Goog-Signature={TOKENS['URL signature']}&access_token={TOKENS['URL access token']}&alt=media"
        sources = [server.url(f"release/{name}") + signed
                   for name in ("vggface2_train.tar.gz", "pairs.txt", "bb_landmark.tar.gz", "lfw_landmarks.csv")]
        sources.append(server.url("release/lfw.tgz").replace("http://", f"http://{USER}:{TOKENS['URL user info']}@"))
        data = run_dir / "data"
        run_verbose("deepface.cli", ["fetch", *(a for s in sources for a in ("--source", s)), "--out", data,
                                     "--auth-header-env", "FETCH_AUTH"], env, outputs)
        # the same fetch with a wrong header: refused, and its error must not show the header either
        error = run_verbose("deepface.cli", ["fetch", "--source", sources[0], "--out", run_dir / "refused",
                                             "--auth-header-env", "FETCH_AUTH_WRONG"], env, outputs, expect=1)
        assert "HTTP 403" in error
        # the same header from (a fake) Secret Manager
        with FakeSecretManager({SECRET_NAME: f"X-Api-Key: {TOKENS['auth header']}".encode()}) as secrets:
            run_verbose("deepface.cli", ["fetch", "--source", sources[1], "--out", run_dir / "from-secret",
                                         "--auth-secret", SECRET_NAME],
                        secret_env(DEEPFACE_SECRET_MANAGER_ENDPOINT=secrets.url), outputs)
            assert secrets.requests == [f"/v1/{SECRET_NAME}:access"]
        assert (run_dir / "from-secret" / "pairs.txt").read_bytes() == release["pairs.txt"]
        requests = [request for request in server.requests if request.method == "GET"]
    # The tokens were really used: the header and the signed query reached the server.
    assert {request.headers.get("X-Api-Key") for request in requests} == {
        TOKENS["auth header"], TOKENS["wrong auth header"]
    }
    assert any(TOKENS["URL signature"] in request.path for request in requests)
    assert json.loads((data / "manifest.json").read_text())["files"]["pairs.txt"]["source"].endswith(
        "/pairs.txt?alt=media"
    )

    run_verbose("deepface.cli", ["labels", "--source", data / "vggface2_train.tar.gz", "--out", run_dir / "labels"],
                env, outputs)
    run_verbose("deepface.cli", ["tfrecords", "--source", data / "vggface2_train.tar.gz",
                                 "--labels", run_dir / "labels",
                                 "--out", run_dir / "tfrecords", "--image-size", "80", "--workers", "1",
                                 "--landmarks", data / "bb_landmark.tar.gz"], env, outputs)
    run_verbose("deepface.cli", ["train", "--tfrecords", run_dir / "tfrecords", "--labels", run_dir / "labels",
                                 "--out", run_dir / "model", "--preset", "tiny", "--epochs", "1", "--batch-size", "8",
                                 "--steps-per-epoch", "2", "--feature-max-batches", "1", "--strategy", "cpu"],
                env, outputs)
    run_verbose("deepface.cli", ["evaluate", "--model", run_dir / "model", "--images", data / "lfw.tgz",
                                 "--pairs", data / "pairs.txt", "--out", run_dir / "evaluation", "--no-baseline",
                                 "--landmarks", data / "lfw_landmarks.csv"],
                env, outputs)

    outputs.update(every_file(run_dir))
    assert len(outputs) > 20  # every stage's files were searched, the model and report included
    assert leaks(outputs) == []


@pytest.mark.slow
def test_no_token_reaches_the_files_or_the_output_of_a_local_pipeline_run(synth_dir, tmp_path):
    """`python -m pipelines run-local -v` on a data folder behind an HTTP header that the fetch and fingerprint
    tasks read from (a fake) Secret Manager, the same header also in an environment variable: no token in
    anything it printed, nor in any file under the pipeline root (kfp.local's executor inputs and outputs,
    its cache, the run's log, every artifact)."""
    release = {name: (synth_dir / name).read_bytes()
               for name in ("vggface2_train.tar.gz", "lfw.tgz", "pairs.txt", "MD5SUMS", "bb_landmark.tar.gz",
                            "lfw_landmarks.csv", "train_list.txt", "test_list.txt", "vggface2_test.tar.gz")}
    root, outputs = tmp_path / "runs", {}
    header = f"X-Api-Key: {TOKENS['auth header']}"
    with HttpFileServer({f"release/{name}": data for name, data in release.items()},
                        required_header=("X-Api-Key", TOKENS["auth header"])) as server, \
            FakeSecretManager({SECRET_NAME: header.encode()}) as secrets:
        run_verbose("pipelines", ["run-local", "--pipeline-root", root, "--param", f"data_uri={server.url('release/')}",
                                  "--param", f"auth_secret={SECRET_NAME}", "--param", "epochs=1",
                                  "--param", "batch_size=16"],
                    secret_env(DEEPFACE_SECRET_MANAGER_ENDPOINT=secrets.url), outputs)  # FETCH_AUTH: the header too
        used = {request.headers.get("X-Api-Key") for request in server.requests if request.method == "GET"}
    # The secret was really read (by the fingerprint and fetch tasks) and its header really sent.
    assert secrets.requests and set(secrets.requests) == {f"/v1/{SECRET_NAME}:access"}
    assert used == {TOKENS["auth header"]}
    files = every_file(root)
    assert any(name.startswith(".kfp_cache") for name in files), sorted(files)[:20]  # the cache was searched
    assert any(name.startswith("logs/") for name in files) and any("executor_output" in name for name in files)
    outputs.update(files)
    assert len(outputs) > 20
    assert leaks(outputs) == []


# --------------------------------------------------------------------------------------------------
# Templates and submissions


def test_no_token_reaches_a_compiled_template_an_upload_or_a_kubeflow_run(tmp_path):
    outputs = {}
    env = secret_env(DEEPFACE_IMAGE="registry.example/deepface-pipeline:0.1.0-test")
    template = tmp_path / "pipeline.yaml"
    run_verbose("pipelines", ["compile", "--output", template], env, outputs)
    with FakeCloud() as fake:
        run_verbose("pipelines", ["upload", "--host", f"{fake.url}/proj/templates", "--template", template,
                                  "--tag", "v1"],
                    env, outputs)
        run_verbose("pipelines", ["submit-kfp", "--host", fake.url, "--template", template, "--param", "epochs=2"],
                    env, outputs)
        # Vertex AI: submit (waiting, so it prints the run's state too) and schedule, with a secret's name
        vertex = ["--project", "test-proj", "--region", "us-central1", "--pipeline-root", "gs://faces-bucket/runs",
                  "--api-endpoint", fake.url, "--template", template, "--param", f"auth_secret={SECRET_NAME}"]
        vertex_env = {**env, "STORAGE_EMULATOR_HOST": fake.url}
        submitted = run_verbose("pipelines", ["submit", *vertex, "--wait"], vertex_env, outputs)
        scheduled = run_verbose("pipelines", ["schedule", *vertex, "--cron", "0 3 * * 1"], vertex_env, outputs)
        assert "PIPELINE_STATE_SUCCEEDED" in submitted and "/pipelines/schedules/" in scheduled
        requests = list(fake.requests)
    assert fake.find("POST", "/pipelineJobs") and fake.find("POST", "/schedules")
    for number, request in enumerate(requests):
        outputs[f"body of request {number} ({request.method} {request.path})"] = request.body
        outputs[f"URL of request {number}"] = f"{request.path}?{request.query}".encode()
    outputs.update(every_file(tmp_path))
    assert leaks(outputs) == []
    # The tokens were really used, in the Authorization header only.
    authorizations = {request.headers.get("authorization") for request in requests}
    assert f"Bearer {TOKENS['registry token']}" in authorizations
    assert f"Bearer {TOKENS['KFP token']}" in authorizations


# --------------------------------------------------------------------------------------------------
# The container image and the pinned environment (static checks; building is the image's own test)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPOSITORY / "Dockerfile").read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in map(str.strip, text.splitlines()) if line and not line.startswith("#")]


def test_the_image_runs_as_a_user_other_than_root():
    instructions = dockerfile_instructions()
    last_stage = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    users = [arguments.split(":")[0].strip() for name, arguments in instructions[last_stage:] if name == "USER"]
    assert users, "the final stage of the Dockerfile has no USER instruction: it would run as root"
    assert users[-1] not in ("root", "0"), users[-1]


def pip_installs(text: str) -> list[str]:
    return [command for command in re.findall(r"pip install[^&;\n]*", text) if "--no-deps" not in command]


def test_the_image_and_the_virtual_environment_install_from_the_same_constraints():
    dockerfile = " ".join(arguments for name, arguments in dockerfile_instructions() if name == "RUN")
    makefile = (REPOSITORY / "Makefile").read_text()
    # every pip install of dependencies in the image uses the flavour's constraints (constraints.txt, with the
    # flavour's own pins: docker/flavours.py, tests/unit/test_flavours.py), or pins what it installs
    flavoured = "-c /tmp/flavour/constraints.txt"
    assert 'docker/flavours.py write "${FLAVOUR}" /tmp/flavour' in dockerfile
    for command in pip_installs(dockerfile):
        assert flavoured in command or all("==" in arg for arg in re.findall(r'"([^"]+)"', command)), command
    assert any(flavoured in command for command in pip_installs(dockerfile))
    venv_installs = [
        line for line in makefile.splitlines() if "pip install" in line and "/tmp/deepface-lock" not in line
    ]
    assert venv_installs and all("-c constraints.txt" in line for line in venv_installs), venv_installs


@pytest.mark.parametrize("constraints", [
    "constraints.txt", "docker/constraints-cuda.txt", "docker/constraints-tpu.txt"])
def test_every_constraint_is_an_exact_pin(constraints):
    lines = [line.strip() for line in (REPOSITORY / constraints).read_text().splitlines()]
    pins = [line for line in lines if line and not line.startswith("#")]
    assert pins
    loose = [line for line in pins if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+(\s*;.+)?", line)]
    assert loose == []
    names = [re.split(r"==", line)[0].lower().replace("_", "-") for line in pins]
    assert len(names) == len(set(names)), "a package is pinned twice"


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (REPOSITORY / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            pins[canonical(name)] = version
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_this_environment_is_the_pinned_one():
    """Every dependency of deepface-pipeline[dev], direct or not, is pinned and installed at its pin."""
    from packaging.requirements import Requirement

    pins, unpinned, wrong = pinned_versions(), [], []
    pending, seen = [("deepface-pipeline", ("dev",))], set()
    while pending:
        name, extras = pending.pop()
        if (canonical(name), extras) in seen:
            continue
        seen.add((canonical(name), extras))
        distribution = importlib.metadata.distribution(name)
        if canonical(name) != "deepface-pipeline":
            if canonical(name) not in pins:
                unpinned.append(name)
            elif distribution.version != pins[canonical(name)]:
                wrong.append(f"{name} {distribution.version} != {pins[canonical(name)]}")
        for text in distribution.requires or []:
            requirement = Requirement(text)
            marker_ok = any(requirement.marker is None or requirement.marker.evaluate({"extra": extra})
                            for extra in (extras or ("",)))
            if marker_ok:
                pending.append((requirement.name, tuple(sorted(requirement.extras))))
    assert unpinned == [] and wrong == []
    assert len(seen) > 50  # the walk really covered TensorFlow, kfp and the Google Cloud libraries
