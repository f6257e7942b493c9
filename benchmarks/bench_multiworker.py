"""One worker next to two at the same global batch: images per second and final loss, side by side.

Writes a synthetic dataset through the real stages (synth -> labels -> tfrecords, several shards so that
each worker reads its own) in a temporary directory, then runs `deepface train` as real processes: once
alone (the CPU strategy), once as two workers on 127.0.0.1 (`MultiWorkerMirroredStrategy`; the chief
gets its cluster by ``TF_CONFIG``, the other worker by Vertex AI's ``CLUSTER_SPEC``), with the same
settings, global batch and seed. Throughput is the mean of the epochs' img/s (global batch x steps / epoch
time, as training logs it), the first epoch left out (tracing); the final loss is the last epoch's
training loss from the chief's result.

On one machine the two workers share its cores and talk over loopback gRPC, so this measures the cost of
the collective all-reduce, not the speed-up of two machines.
Run: ``python benchmarks/bench_multiworker.py [--help]``. ``--smoke``: the same code paths at tiny sizes (a
check that the benchmark runs; its figures mean nothing; options given still win).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import parse_args

# --smoke: tiny sizes (two epochs: the first is left out of the rate).
SMOKE = {"identities": 4, "images": 4, "epochs": 2, "batch_size": 8, "timeout": 100}
EPOCH_RATE = re.compile(r"Epoch (\d+)/\d+: .* \(([0-9.]+) img/s\)")


def make_tfrecords(root: Path, identities: int, images: int, shards: int) -> tuple[Path, Path]:
    from deepface.labels import build_labels
    from deepface.synth import make_synthetic_dataset
    from deepface.tfrecords import build_tfrecords

    make_synthetic_dataset(root / "synth", train_identities=identities, test_identities=2, lfw_identities=4,
                           images_per_identity=images, image_size=64, lfw_image_size=96, seed=0, workers=1)
    archive = root / "synth" / "vggface2_train.tar.gz"
    build_labels(archive, root / "labels")
    shard_bytes = max(1, (archive.stat().st_size // shards))  # about `shards` shards
    build_tfrecords(archive, root / "labels", root / "tfrecords", image_size=80, shard_mb=shard_bytes / 2**20,
                    landmarks=root / "synth" / "bb_landmark.tar.gz", workers=1)
    return root / "tfrecords", root / "labels"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def run_workers(args: list[str], envs: list[dict], logs: Path, timeout: float) -> tuple[str, list[str]]:
    """Run one `deepface train` per environment, together; the first one's stdout and every log."""
    processes = []
    for index, extra in enumerate(envs):
        log = open(logs / f"worker{index}.log", "w")
        processes.append((subprocess.Popen([sys.executable, "-m", "deepface.cli", *args], stdout=subprocess.PIPE,
                                           stderr=log, text=True, env={**os.environ, **extra}), log))
    try:
        stdout = processes[0][0].communicate(timeout=timeout)[0]
        for process, _ in processes[1:]:
            process.wait(timeout=timeout)
    finally:
        for process, log in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    texts = [(logs / f"worker{index}.log").read_text() for index in range(len(envs))]
    for (process, _), text in zip(processes, texts):
        if process.returncode:
            raise SystemExit(f"a worker exited {process.returncode}:\n{text[-3000:]}")
    return stdout, texts


def measure(workers: int, tfrecords: Path, labels: Path, root: Path, options: argparse.Namespace) -> dict:
    out = root / f"model-{workers}"
    logs = root / f"logs-{workers}"
    logs.mkdir()
    args = ["train", "--tfrecords", str(tfrecords), "--labels", str(labels), "--out", str(out), "--preset", "tiny",
            "--epochs", str(options.epochs), "--batch-size", str(options.batch_size), "--seed", "3",
            "--checkpoint-steps", "0", "--feature-max-batches", "1"]
    if workers == 1:
        envs = [{"TF_CPP_MIN_LOG_LEVEL": "2"}]
        args += ["--strategy", "cpu"]
    else:
        hosts = [f"127.0.0.1:{port}" for port in free_ports(workers)]
        cluster = {"chief": hosts[:1], "worker": hosts[1:]}
        envs = [{"TF_CPP_MIN_LOG_LEVEL": "2",
                 "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})}]
        envs += [{"TF_CPP_MIN_LOG_LEVEL": "2", "CLUSTER_SPEC": json.dumps(
            {"cluster": {"workerpool0": hosts[:1], "workerpool1": hosts[1:]},
             "task": {"type": "workerpool1", "index": index}})} for index in range(workers - 1)]
    stdout, texts = run_workers(args, envs, logs, options.timeout)
    rates = [float(rate) for epoch, rate in EPOCH_RATE.findall(texts[0]) if int(epoch) > 1]
    return {"workers": workers, "img_per_s": statistics.mean(rates),
            "final_loss": json.loads(stdout[stdout.index("{"):])["final_metrics"]["loss"]}  # after Keras' lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--identities", type=int, default=8)
    parser.add_argument("--images", type=int, default=20, help="images per identity")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch, the same for 1 and 2 workers")
    parser.add_argument("--timeout", type=float, default=900, help="seconds each training may take")
    options = parse_args(parser, SMOKE)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tfrecords, labels = make_tfrecords(root, options.identities, options.images, shards=4)
        results = [measure(workers, tfrecords, labels, root, options) for workers in (1, 2)]
    print(f"global batch {options.batch_size}, {options.epochs} epochs, {options.identities * options.images} "
          f"images, tiny preset, CPU ({os.cpu_count()} cores)")
    print(f"{'workers':>8} {'img/s':>8} {'final loss':>11}")
    for result in results:
        print(f"{result['workers']:>8} {result['img_per_s']:>8.1f} {result['final_loss']:>11.4f}")
    print(f"2 workers / 1 worker: {results[1]['img_per_s'] / results[0]['img_per_s']:.2f}x img/s")


if __name__ == "__main__":
    main()
