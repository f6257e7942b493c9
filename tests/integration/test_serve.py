"""Serving: the SavedModel export, and ``deepface serve`` under Vertex AI's custom-container contract, as a real
server process on 127.0.0.1 called over real HTTP.

The model is tiny, trained for two steps on whole frames (``align=False``) and evaluated on the synthetic LFW
(its threshold.json), so the drawn faces of the synthetic data are verified without a face detector (which does
not find drawn faces). A second server aligns faces (``--align``) for what needs the detector: a real photograph
(matplotlib's ``grace_hopper.jpg``) and an image without a face.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import requests
from PIL import Image

import deepface
from deepface.contracts import MANIFEST_FILE
from deepface.errors import DeepFaceError
from deepface.serving.export import SERVING_FILE, export_saved_model

HEALTH, PREDICT = "/v1/health", "/v1/endpoints/1/deployedModels/2:predict"  # as Vertex AI sets them
MAX_INSTANCES, MAX_IMAGE_BYTES = 8, 200_000
DEADLINE = 300.0  # seconds a server may take to start (TensorFlow's import on a busy machine)
POLL = 0.05  # seconds between readiness checks (a wait on the server process, which also sees it die)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def trained(tiny_evaluated) -> tuple[Path, Path]:
    return tiny_evaluated


@pytest.fixture(scope="module")
def serving_dir(trained, tmp_path_factory) -> Path:
    model_dir, evaluation = trained
    out = tmp_path_factory.mktemp("export") / "serving"
    export_saved_model(model_dir, out, threshold_json=evaluation / "threshold.json")
    return out


@pytest.fixture(scope="module")
def lfw(synth_dir, tmp_path_factory) -> Path:
    """The synthetic LFW, extracted: ``lfw/<Name>/<Name>_NNNN.jpg``."""
    root = tmp_path_factory.mktemp("lfw")
    with tarfile.open(synth_dir / "lfw.tgz") as archive:
        archive.extractall(root, filter="data")
    return root / "lfw"


def lfw_images(lfw: Path, count: int) -> list[Path]:
    return sorted(lfw.glob("*/*.jpg"))[:count]


class Server:
    """``python -m deepface.cli.serve`` in a subprocess; ``url(route)`` once it listens (port from its log)."""

    def __init__(self, log: Path, args: list[str], env: dict[str, str]):
        self.log_path = log
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deepface.cli.serve", "--host", "127.0.0.1", *args], stdout=self._log,
            stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
                                           "AIP_HTTP_PORT": "0", **env})
        self.port = int(self.wait_for(lambda: re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log()),
                                      "its port").group(1))

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}{route}"

    def wait_for(self, condition, what: str):
        """Poll ``condition()`` until truthy (bounded; fails at once if the server exits)."""
        deadline = DEADLINE / POLL
        while not (found := condition()):
            try:
                code = self.process.wait(timeout=POLL)
            except subprocess.TimeoutExpired:
                deadline -= 1
                assert deadline > 0, f"the server did not reach {what} in {DEADLINE} s:\n{self.log()[-3000:]}"
                continue
            raise AssertionError(f"the server exited ({code}) before {what}:\n{self.log()[-3000:]}")
        return found

    def ready(self, route: str = HEALTH) -> dict:
        response = self.wait_for(lambda: _ok(requests.get(self.url(route), timeout=10)), "readiness")
        return response.json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self._log.close()


def _ok(response: requests.Response) -> requests.Response | None:
    assert response.status_code in (200, 503), response.text
    return response if response.status_code == 200 else None


@pytest.fixture(scope="module")
def loading_gate(serving_dir, tmp_path_factory) -> tuple[Path, Path]:
    """``(directory, fifo)``: the serving export whose serving.json is a named pipe, so that the server's
    model load waits until the test writes it (health must answer 503 meanwhile)."""
    root = tmp_path_factory.mktemp("gated") / "serving"
    shutil.copytree(serving_dir, root)
    fifo = root / SERVING_FILE
    fifo.unlink()
    os.mkfifo(fifo)
    return root, fifo


@pytest.fixture(scope="module")
def server(loading_gate, serving_dir, tmp_path_factory):
    """The server of the export (model from AIP_STORAGE_URI, Vertex AI's routes), started while its model load
    is held; ``server.loading`` holds what the health and predict routes answered then."""
    directory, fifo = loading_gate
    log = tmp_path_factory.mktemp("server") / "server.log"
    started = Server(log, ["--max-instances", str(MAX_INSTANCES), "--max-image-bytes", str(MAX_IMAGE_BYTES),
                           "--max-batch-size", "8", "--max-wait-ms", "100"],
                     {"AIP_STORAGE_URI": str(directory), "AIP_HEALTH_ROUTE": HEALTH, "AIP_PREDICT_ROUTE": PREDICT})
    try:
        started.loading = (requests.get(started.url(HEALTH), timeout=10),
                           requests.post(started.url(PREDICT), json={"instances": []}, timeout=10))
        fifo.write_bytes((serving_dir / SERVING_FILE).read_bytes())  # the load goes on
        started.ready()
        yield started
    finally:
        started.stop()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def predict(server: Server, instances: list, **options) -> requests.Response:
    return requests.post(server.url(PREDICT), json={"instances": instances}, timeout=120, **options)


def health(server: Server) -> dict:
    return requests.get(server.url(HEALTH), timeout=10).json()


# -------------------------------------------------------------------------------------------------- export


SUBPROCESS_EMBED = """
import sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
embed = loaded.signatures["serving_default"]
assert "deepface" not in sys.modules, "loading the SavedModel imported deepface"
np.save(sys.argv[3], embed(images=tf.constant(np.load(sys.argv[2])))["embeddings"].numpy())
assert "deepface" not in sys.modules
print("ok", [name for name in sys.modules if name.startswith("deepface")])
"""


def test_the_saved_model_needs_no_deepface_and_embeds_as_keras_does(trained, serving_dir, tmp_path):
    import keras

    model_dir, evaluation = trained
    model = keras.saving.load_model(model_dir / "embedding.keras", compile=False)
    size = model.input_shape[1]
    images = np.random.default_rng(1).random((5, size, size, 3), dtype=np.float32)
    np.save(tmp_path / "images.npy", images)
    process = subprocess.run([sys.executable, "-c", SUBPROCESS_EMBED, str(serving_dir), str(tmp_path / "images.npy"),
                              str(tmp_path / "out.npy")], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""})
    assert process.returncode == 0 and "ok []" in process.stdout, process.stdout + process.stderr
    exported = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(exported, np.asarray(model(images)), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(exported, axis=1), 1, atol=1e-5)

    serving = json.loads((serving_dir / SERVING_FILE).read_text())
    saved = json.loads((evaluation / "threshold.json").read_text())
    assert serving["threshold"] == saved["thresholds"]["cosine"]["threshold"] and serving["flip"] is False
    assert serving["image_size"] == size and serving["align"] is False
    assert serving["signature"]["input_shape"] == [None, size, size, 3]
    manifest = json.loads((serving_dir / MANIFEST_FILE).read_text())
    assert {"saved_model.pb", SERVING_FILE, "threshold.json"} <= set(manifest["files"])
    # A rerun returns the export; another model's threshold is refused.
    assert export_saved_model(model_dir, serving_dir, threshold_json=evaluation) == manifest
    other = tmp_path / "other"
    other.mkdir()
    (other / "threshold.json").write_text(json.dumps({**saved, "model_sha256": "0" * 64}))
    with pytest.raises(DeepFaceError, match="another model"):
        export_saved_model(model_dir, tmp_path / "export", threshold_json=other / "threshold.json")
    with pytest.raises(DeepFaceError, match="threshold_json="):
        export_saved_model(model_dir, tmp_path / "export", threshold_json=tmp_path / "images.npy")


# ------------------------------------------------------------------------------------------------ the server


def test_health_says_503_until_the_model_is_loaded(server):
    loading_health, loading_predict = server.loading
    assert loading_health.status_code == 503 and loading_health.json()["status"] == "loading"
    assert loading_predict.status_code == 503 and "loading" in loading_predict.json()["error"]
    ready = health(server)
    assert ready["status"] == "ready" and ready["image_size"] == 80 and ready["threshold"] is not None


def test_embeddings_are_those_of_the_python_api(server, trained, lfw):
    paths = lfw_images(lfw, 3)
    response = predict(server, [{"image": b64(path.read_bytes())} for path in paths])
    assert response.status_code == 200, response.text
    embeddings = np.array([p["embedding"] for p in response.json()["predictions"]], np.float32)
    expected = deepface.load(trained[0]).embed([str(path) for path in paths])
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    # Vertex AI's {"b64": ...} form of a binary value is the same image.
    again = predict(server, [{"image": {"b64": b64(paths[0].read_bytes())}}]).json()["predictions"][0]
    np.testing.assert_allclose(again["embedding"], embeddings[0], atol=1e-6)


def decided_pairs(synth_dir, lfw, trained) -> list[tuple[Path, Path, dict]]:
    """A matched pair and a mismatched pair of pairs.txt whose decisions differ when possible (one "same", one
    "different"), each with `deepface verify`'s result; none within 1e-4 of the threshold."""
    from deepface.pairs import read_pairs
    from deepface.verify import verify

    model_dir, evaluation = trained
    verifier = deepface.load(model_dir, evaluation)
    chosen = {}
    for pair in read_pairs(synth_dir / "pairs.txt"):
        a = lfw / pair.name1 / f"{pair.name1}_{pair.number1:04d}.jpg"
        b = lfw / pair.name2 / f"{pair.name2}_{pair.number2:04d}.jpg"
        result = verifier.verify(str(a), str(b))
        if abs(result["value"] - result["threshold"]) > 1e-4 and result["same"] == pair.same:
            chosen.setdefault(pair.same, (a, b))
        if len(chosen) == 2:
            break
    assert len(chosen) == 2, "no matched and mismatched pair decided rightly by the tiny model"
    return [(a, b, verify(model_dir, a, b, evaluation_dir=evaluation)) for a, b in chosen.values()]


def test_verify_decides_as_deepface_verify(server, synth_dir, lfw, trained):
    pairs = decided_pairs(synth_dir, lfw, trained)
    response = predict(server, [{"image_a": b64(a.read_bytes()), "image_b": b64(b.read_bytes())} for a, b, _ in pairs])
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert sorted(p["same"] for p in predictions) == [False, True]
    for prediction, (_, _, expected) in zip(predictions, pairs):
        assert prediction["same"] == expected["same"] and prediction["score"] == expected["score"] == "cosine"
        assert prediction["threshold"] == pytest.approx(expected["threshold"], abs=1e-12)
        assert prediction["value"] == pytest.approx(expected["value"], abs=1e-5)


def test_a_request_is_one_forward_pass(server, lfw):
    paths = lfw_images(lfw, 6)
    instances = [{"image": b64(path.read_bytes())} for path in paths[:4]]
    instances += [{"image_a": b64(paths[4].read_bytes()), "image_b": b64(paths[5].read_bytes())}] * 2
    before = health(server)
    response = predict(server, instances)
    after = health(server)
    assert response.status_code == 200, response.text
    assert (after["passes"] - before["passes"], after["images"] - before["images"]) == (1, 8)
    alone = predict(server, [instances[1]]).json()["predictions"][0]
    batched = response.json()["predictions"]
    np.testing.assert_allclose(batched[1]["embedding"], alone["embedding"], atol=1e-6)
    assert batched[4] == batched[5] and set(batched[4]) == {"score", "value", "threshold", "same"}


def test_concurrent_clients_share_forward_passes(server, lfw):
    paths = lfw_images(lfw, 8)
    expected = predict(server, [{"image": b64(path.read_bytes())} for path in paths]).json()["predictions"]
    clients, rounds = len(paths), 3
    start = threading.Barrier(clients)
    results: dict[int, list] = {}

    def client(k: int) -> None:
        start.wait(timeout=60)
        results[k] = [predict(server, [{"image": b64(paths[k].read_bytes())}]) for _ in range(rounds)]

    before = health(server)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    after = health(server)
    assert sorted(results) == list(range(clients))
    for k, responses in results.items():
        for response in responses:
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(response.json()["predictions"][0]["embedding"], expected[k]["embedding"],
                                       atol=1e-6)
    assert after["images"] - before["images"] == clients * rounds
    assert after["passes"] - before["passes"] < clients * rounds  # some requests shared a pass


def noise_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


BAD_REQUESTS = {
    "not JSON": (lambda good: {"data": b"{instances: nope"}, 400, "not JSON"),
    "no instances": (lambda good: {"json": {"inputs": [good]}}, 400, "instances"),
    "bad base64": (lambda good: {"json": {"instances": [good, {"image": "@@not base64@@"}]}}, 400,
                   r"instances\[1\]\.image is not valid base64"),
    "wrong field": (lambda good: {"json": {"instances": [{"img": good["image"]}]}}, 400,
                    r"instances\[0\] has fields \['img'\]"),
    "half a pair": (lambda good: {"json": {"instances": [{"image_a": good["image"]}]}}, 400, "image_b"),
    "not an image": (lambda good: {"json": {"instances": [{"image": b64(b"hello")}]}}, 400,
                     r"instances\[0\]\.image cannot be used"),
    "too many instances": (lambda good: {"json": {"instances": [good] * (MAX_INSTANCES + 1)}}, 400,
                           f"too many instances: {MAX_INSTANCES + 1}, at most {MAX_INSTANCES}"),
    "image over the size limit": (lambda good: {"json": {"instances": [{"image": b64(noise_png(300))}]}}, 413,
                                  r"instances\[0\]\.image is too large"),
    "over Vertex AI's 1.5 MB": (lambda good: {"json": {"instances": [good] * 4, "pad": "x" * 1_500_000}}, 413,
                                "the request is too large: .* at most 1500000"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_and_the_server_goes_on(server, lfw, case):
    make, status, message = BAD_REQUESTS[case]
    good = {"image": b64(lfw_images(lfw, 1)[0].read_bytes())}
    response = requests.post(server.url(PREDICT), timeout=120, **make(good))
    assert response.status_code == status, response.text
    assert re.search(message, response.json()["error"]), response.json()
    assert "\n" not in response.json()["error"]
    assert predict(server, [good]).status_code == 200  # still serving


# ---------------------------------------------------------------------------------------- aligned faces


@pytest.fixture(scope="module")
def aligned_server(trained, tmp_path_factory):
    """``deepface serve --model MODEL_DIR --evaluation EVAL --align``: a model directory exported at start, faces
    found by the detector and aligned."""
    model_dir, evaluation = trained
    log = tmp_path_factory.mktemp("aligned") / "server.log"
    started = Server(log, ["--model", str(model_dir), "--evaluation", str(evaluation), "--align"], {})
    try:
        started.ready("/health")
        yield started
    finally:
        started.stop()


def test_faces_are_found_and_aligned_as_the_python_api_does(aligned_server, trained):
    photo = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    response = requests.post(aligned_server.url("/predict"), json={"instances": [{"image": b64(photo.read_bytes())}]},
                             timeout=120)
    assert response.status_code == 200, response.text
    expected = deepface.load(trained[0], align=True).embed(str(photo))
    np.testing.assert_allclose(response.json()["predictions"][0]["embedding"], expected[0], atol=1e-5)

    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), (128, 128, 128)).save(buffer, "PNG")
    blank = {"image_a": b64(photo.read_bytes()), "image_b": b64(buffer.getvalue())}
    response = requests.post(aligned_server.url("/predict"), json={"instances": [blank]}, timeout=120)
    assert response.status_code == 422, response.text
    assert re.match(r"instances\[0\]\.image_b: no face found; .*--no-face center-crop", response.json()["error"])
    assert requests.post(aligned_server.url("/predict"), json={"instances": [{"image": b64(photo.read_bytes())}]},
                         timeout=120).status_code == 200
