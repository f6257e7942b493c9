"""The benchmarks run: every ``benchmarks/*.py`` with ``--smoke`` (every code path at tiny sizes) exits 0 and
prints its result table and ratio lines.

Parametrised over the files found, so a new benchmark fails here until it has ``--smoke`` and its lines in
`RESULTS`. The figures of a smoke run mean nothing: only their presence is checked.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TIMEOUT = 120  # seconds per smoke run
NUMBER = r"-?\d+(?:\.\d+)?"
# What each smoke run prints: (pattern, at least how many lines match it), matched line by line on stdout.
RESULTS: dict[str, list[tuple[str, int]]] = {
    "bench_alignment.py": [
        (r"^faces +accuracy +\+- sem +AUC +baseline$", 1),
        (rf"^(aligned|whole frame) +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}$", 2),
        (rf"^alignment: [+-]{NUMBER} accuracy$", 1),
    ],
    "bench_detect.py": [
        (rf"^first call \(TensorFlow, weights, tracing\): {NUMBER} s wall$", 1),
        (r"^image +step +ms/img +img/s$", 1),
        (rf"^(LFW 250x250|photo 512x600|phone 3000x4000) +(detect|face_image) +{NUMBER} +{NUMBER}$", 6),
        (rf"^LFW: 13233 images x {NUMBER} ms = {NUMBER} min on one core", 1),
        (rf"^verify, two phone photos: {NUMBER} s of detection and alignment", 1),
    ],
    "bench_evaluate.py": [
        (r"^measurement +median s +img/s +ratio$", 1),
        (rf"^embed \d+ imgs.* {NUMBER} +{NUMBER} +{NUMBER}$", 4),
        (rf"^metrics, 6,000 pairs: .* {NUMBER} +{NUMBER}$", 2),
    ],
    "bench_input.py": [
        (r"^method +cores +img/s wall +img/CPU-s +vs bare +vs batched", 1),
        (r"^\S.* +\d+ +\d+ +\d+ +\d+% +\d+% +\d+( \d+)*$", 9),
        (r"^Load average at the end: .* Goal: make_dataset", 1),
    ],
    "bench_layers.py": [
        (r"^  variant +batch +grads +img/s +x seed +first s +peak GB$", 1),
        (rf"^  \S+ +\d+ +\S+ +{NUMBER} +({NUMBER}|-) +{NUMBER} +{NUMBER}$", 1),
        (r"^load average at end: ", 1),
    ],
    "bench_multiworker.py": [
        (r"^ +workers +img/s +final loss$", 1),
        (rf"^ +[12] +{NUMBER} +{NUMBER}$", 2),
        (rf"^2 workers / 1 worker: {NUMBER}x img/s$", 1),
    ],
    "bench_serve.py": [
        (r"^server +latency_ms_median +latency_ms_p95 +sequential_img_s", 1),
        (rf"^(micro-batching \(32\)|a pass per request \(1\))( +{NUMBER}){{9}}$", 2),
    ],
    "bench_tfrecords.py": [
        (r"^contender +workers +wall img/s +per core +vs loop", 1),
        (rf"^(loop|tfrecords), .*? +[12] +\d+ +\d+ +{NUMBER}", 8),
    ],
    "bench_train.py": [
        (r"^source +steps +s/step +img/s", 1),
        (rf"^(in-memory|tfrecords) +\d+ +{NUMBER} +{NUMBER}", 2),
        (rf"^Round by round, tfrecords img/s / in-memory img/s: .*median {NUMBER}%\.$", 1),
    ],
    "profile_step.py": [
        (r"^item +fwd ms +bwd ms +total ms +of step +GFLOP +GFLOP/s +of f32 peak$", 1),
        (rf"^(C1|L4|L5|L6|F7) +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}% +{NUMBER}", 5),
        (rf"^full step +{NUMBER} +{NUMBER}% +{NUMBER} +{NUMBER} +{NUMBER}%$", 1),
        (rf"^full step: {NUMBER} img/s .*float32 peak", 1),
    ],
    "gpu_train.py": [
        (r"^data +XLA +img/s +ms/step", 1),
        (rf"^(memory|tfrecords) +(on|off) +{NUMBER} +{NUMBER}", 1),
    ],
}
# A result that is an error (bench_layers prints a variant's failure in its row) or a swallowed exception.
FAILURE = re.compile(r"Traceback \(most recent call last\)|\b\w*Error\b|\bfailed \(exit")


def run_smoke(script: Path, cwd: Path) -> tuple[int, str, str]:
    """``script --smoke`` in its own process group (a timeout ends the servers and workers it started)."""
    env = {**os.environ, "TMPDIR": str(cwd), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen([sys.executable, str(script), "--smoke"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{script.name} --smoke ran past {TIMEOUT} s:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever it left behind (a server, a worker)
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, stdout, stderr


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")),
                         ids=lambda path: path.name)
def test_benchmark_smoke_run(script, tmp_path):
    expected = RESULTS.get(script.name)
    assert expected, f"benchmarks/{script.name}: add the lines its --smoke run prints to RESULTS in {__file__}"
    returncode, stdout, stderr = run_smoke(script, tmp_path)
    assert returncode == 0, f"{script.name} --smoke exited {returncode}:\n{stdout[-2000:]}\n{stderr[-4000:]}"
    lines = stdout.splitlines()
    for pattern, count in expected:
        found = [line for line in lines if re.search(pattern, line)]
        assert len(found) >= count, f"{script.name}: {count} line(s) like {pattern!r} expected in:\n{stdout}"
    assert not FAILURE.search(stdout), stdout
    assert "Traceback (most recent call last)" not in stderr, stderr[-4000:]
