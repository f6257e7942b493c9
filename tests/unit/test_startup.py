"""TensorFlow's start-up lines are kept out of the logs (deepface.startup); everything else on standard
error still comes through, and TF_CPP_MIN_LOG_LEVEL=0 shows them all."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deepface import startup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Import deepface, then TensorFlow, run an op, then write a line of our own to standard error.
PROGRAM = ("import sys, deepface, tensorflow as tf; tf.constant(1) + 1; "
           "print('after the import', file=sys.stderr)")


def run(level: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": level, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(os.path.exists(startup.NVIDIA_DRIVER), reason="a GPU machine: CUDA's lines are kept there")
def test_importing_tensorflow_prints_nothing_but_our_own_lines():
    quiet = run("2")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "after the import\n"
    # The same program shows TensorFlow's start-up lines when asked to (and they were what we filtered).
    loud = run("0")
    assert "absl::InitializeLog" in loud.stderr and "port.cc" in loud.stderr, loud.stderr[-2000:]


def test_the_copy_keeps_every_other_line_in_order(tmp_path):
    noise = [b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             b"I0000 00:00:1796027719.503326   12978 port.cc:153] oneDNN custom operations are on. You may see",
             b"I0000 00:00:1796027719.503326   12978 cpu_feature_guard.cc:210] This TensorFlow binary is optimized"]
    kept = [b"a line of ours", b"I0000 00:00:1.2   3 other.cc:1] not a start-up line", b"Traceback (most recent"]
    read, write = os.pipe()
    target = os.open(tmp_path / "stderr", os.O_WRONLY | os.O_CREAT)
    os.write(write, b"\n".join([noise[0], kept[0], noise[1], kept[1], noise[2]]) + b"\n" + kept[2])
    os.close(write)
    startup._copy_lines(read, target)
    os.close(target)
    assert (tmp_path / "stderr").read_bytes() == kept[0] + b"\n" + kept[1] + b"\n" + kept[2]


def test_cuda_lines_are_noise_only_where_there_is_no_driver(monkeypatch, tmp_path):
    line = b"E0000 00:00:1796027750.874112   14840 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error"
    monkeypatch.setattr(startup, "NVIDIA_DRIVER", str(tmp_path / "absent"))
    assert startup._is_noise(line)
    monkeypatch.setattr(startup, "NVIDIA_DRIVER", str(tmp_path))  # a driver is loaded: the line is a clue
    assert not startup._is_noise(line)


@pytest.mark.skipif(os.path.exists(startup.NVIDIA_DRIVER), reason="a GPU machine: CUDA's lines are kept there")
def test_the_command_line_filters_them_without_a_level_in_the_environment():
    """`deepface ...` sets the level itself (`configure_logging`), after ``import deepface`` has looked for it:
    a user's shell without TF_CPP_MIN_LOG_LEVEL still gets no start-up lines."""
    program = ("import sys; from deepface.cli import configure_logging; configure_logging(False); "
               "import tensorflow as tf; tf.constant(1) + 1; print('after the import', file=sys.stderr)")
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                               env={**env, "PYTHONPATH": ROOT}, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == "after the import\n"
