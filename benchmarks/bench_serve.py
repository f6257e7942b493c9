"""Benchmark of ``deepface serve``: request latency, and embeddings per second with and without batching.

Builds a model of ``--preset`` (synthetic data, two training steps: only the speed matters), exports it for
serving, starts the real server process twice (micro-batching across requests: ``--max-batch-size 32``; off:
``--max-batch-size 1``, one forward pass per request, all its images) and measures over real HTTP on 127.0.0.1:

1. latency: sequential requests of one image (median and 95th percentile), and of one verify pair (median
   and 99th percentile);
2. one request of ``--per-request`` images (all in one forward pass);
3. ``--clients`` concurrent clients sending one-image requests (micro-batching across requests), also as a
   fraction of the reference: ``model.predict`` in this process on the same images, already cut (the
   server's ceiling: no HTTP, no decoding, no face cutting).

Usage: ``python benchmarks/bench_serve.py [--preset tiny|small|paper] [--requests 48] [--clients 8]``.
Prints one table (the machine is shared and noisy: compare the ratios, not the seconds). ``--smoke`` sends a
few requests of each kind (options given still win): a check that the benchmark runs, its figures meaningless.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from _common import parse_args

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# --smoke: every kind of request a few times, two concurrent clients.
SMOKE = {"requests": 4, "per_request": 2, "clients": 2}


def build_export(root: Path, preset: str) -> tuple[Path, list[bytes]]:
    """A serving export of ``preset`` trained for two steps, and the synthetic LFW images as files."""
    import tarfile

    from deepface.config import get_config
    from deepface.evaluate import evaluate
    from deepface.labels import build_labels
    from deepface.serving.export import export_saved_model
    from deepface.synth import make_synthetic_dataset
    from deepface.tfrecords import build_tfrecords
    from deepface.train import train

    size = get_config(preset).image_size
    make_synthetic_dataset(root / "synth", train_identities=4, test_identities=2, lfw_identities=8,
                           images_per_identity=8, image_size=64, lfw_image_size=96, workers=1)
    archive = root / "synth" / "vggface2_train.tar.gz"
    build_labels(archive, root / "labels")
    build_tfrecords(archive, root / "labels", root / "tfrecords", image_size=size, align=False, workers=1)
    train(root / "tfrecords", root / "labels", root / "model", preset=preset, epochs=1, batch_size=4,
          steps_per_epoch=2, checkpoint_steps=0, feature_max_batches=1, strategy="cpu")
    synth = root / "synth"
    evaluate(root / "model", synth / "lfw.tgz", synth / "pairs.txt", root / "evaluation", baseline=False,
             allow_missing=True)
    export_saved_model(root / "model", root / "serving", threshold_json=root / "evaluation" / "threshold.json")
    with tarfile.open(synth / "lfw.tgz") as lfw:
        images = [lfw.extractfile(m).read() for m in lfw.getmembers() if m.isfile() and m.name.endswith(".jpg")]
    return root / "serving", images


def predict_rate(model_dir: Path, images: list[bytes], count: int, batch_size: int, repeats: int = 3) -> float:
    """Images per second of ``model.predict`` on ``count`` of ``images``, cut as the server cuts them
    (`deepface.load(...).crop`, not timed); the median of ``repeats``."""
    import numpy as np

    import deepface

    verifier = deepface.load(model_dir, threshold=0.5)
    crops = np.stack([verifier.crop(images[k % len(images)]) for k in range(count)]).astype(np.float32) / 255
    verifier.model.predict(crops[:batch_size], batch_size=batch_size, verbose=0)  # warm-up (tracing)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        verifier.model.predict(crops, batch_size=batch_size, verbose=0)
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


class Server:
    def __init__(self, serving: Path, log: Path, *args: str):
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deepface.cli.serve", "--model", str(serving), "--host", "127.0.0.1", "--port", "0",
             *args], stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        while not (found := re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())):
            self._alive()
        self.url = f"http://127.0.0.1:{found.group(1)}"
        while requests.get(self.url + "/health", timeout=10).status_code != 200:
            self._alive()

    def _alive(self):
        try:
            self.process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            return
        raise SystemExit(f"the server exited:\n{self.log.read_text()[-3000:]}")

    def embed(self, images: list[bytes]) -> None:
        body = {"instances": [{"image": base64.b64encode(image).decode()} for image in images]}
        response = requests.post(self.url + "/predict", json=body, timeout=300)
        response.raise_for_status()

    def verify(self, a: bytes, b: bytes) -> None:
        body = {"instances": [{"image_a": base64.b64encode(a).decode(), "image_b": base64.b64encode(b).decode()}]}
        response = requests.post(self.url + "/predict", json=body, timeout=300)
        response.raise_for_status()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def measure(server: Server, images: list[bytes], args) -> dict[str, float]:
    server.embed(images[:2])  # warm-up (the first forward pass traces)
    latencies = []
    for k in range(args.requests):
        started = time.perf_counter()
        server.embed([images[k % len(images)]])
        latencies.append(time.perf_counter() - started)
    started = time.perf_counter()
    for k in range(args.requests // args.per_request or 1):
        server.embed([images[(k * args.per_request + j) % len(images)] for j in range(args.per_request)])
    one_request = (args.requests // args.per_request or 1) * args.per_request / (time.perf_counter() - started)
    barrier = threading.Barrier(args.clients)

    errors = []

    def client(c: int):
        barrier.wait()
        try:
            for k in range(args.requests // args.clients):
                server.embed([images[(c * 31 + k) % len(images)]])
        except (requests.RequestException, OSError) as error:  # a thread's would only be printed: raised below
            errors.append(error)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    concurrent = args.requests // args.clients * args.clients / (time.perf_counter() - started)
    if errors:
        raise SystemExit(f"{len(errors)} client(s) failed, e.g. {errors[0]!r}")
    verify_latencies = []
    for k in range(args.requests):
        started = time.perf_counter()
        server.verify(images[k % len(images)], images[(k + 1) % len(images)])
        verify_latencies.append(time.perf_counter() - started)
    verify_latencies.sort()
    health = requests.get(server.url + "/health", timeout=10).json()
    return {"latency_ms_median": 1000 * statistics.median(latencies),
            "latency_ms_p95": 1000 * sorted(latencies)[int(0.95 * (len(latencies) - 1))],
            "sequential_img_s": len(latencies) / sum(latencies), "one_request_img_s": one_request,
            "concurrent_img_s": concurrent, "mean_pass_images": health["images"] / health["passes"],
            "verify_ms_median": 1000 * statistics.median(verify_latencies),
            "verify_ms_p99": 1000 * verify_latencies[int(0.99 * (len(verify_latencies) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--per-request", type=int, default=16)
    parser.add_argument("--clients", type=int, default=8)
    args = parse_args(parser, SMOKE)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        serving, images = build_export(root, args.preset)
        rows = {}
        for name, options in {"micro-batching (32)": ["--max-batch-size", "32"],
                              "a pass per request (1)": ["--max-batch-size", "1"]}.items():
            server = Server(serving, root / f"{len(rows)}.log", *options)
            try:
                rows[name] = measure(server, images, args)
            finally:
                server.stop()
        reference = predict_rate(root / "model", images, args.requests // args.clients * args.clients, 32)
    for row in rows.values():
        row["concurrent_of_predict"] = row["concurrent_img_s"] / reference
    columns = list(next(iter(rows.values())))
    print(f"preset {args.preset}, {os.cpu_count()} CPUs; model.predict on the same images, already cut: "
          f"{reference:.1f} img/s")
    print(f"{'server':22}" + "".join(f"{column:>22}" for column in columns))
    for name, row in rows.items():
        print(f"{name:22}" + "".join(f"{row[column]:22.2f}" if column == "concurrent_of_predict"
                                     else f"{row[column]:22.1f}" for column in columns))


if __name__ == "__main__":
    main()
