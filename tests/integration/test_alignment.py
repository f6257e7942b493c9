"""Alignment helps: the same pipeline (data, seeds, preset, epochs) verifies better on aligned faces.

Runs benchmarks/bench_alignment.py (labels -> tfrecords -> train -> evaluate, once with faces aligned
from their landmarks, once with whole frames) at a small size and reads its table.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_alignment.py"


@pytest.mark.slow
def test_aligned_faces_verify_better_than_whole_frames():
    result = subprocess.run([sys.executable, str(BENCHMARK), "--identities", "16", "--images", "16", "--epochs", "8"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = dict(re.findall(r"^(aligned|whole frame)\s+(\d\.\d+)", result.stdout, re.MULTILINE))
    sems = dict(re.findall(r"^(aligned|whole frame)\s+\d\.\d+\s+(\d\.\d+)", result.stdout, re.MULTILINE))
    assert set(rows) == {"aligned", "whole frame"}, result.stdout
    aligned, whole = float(rows["aligned"]), float(rows["whole frame"])
    # Better by more than both folds' standard errors together: not noise.
    assert aligned - whole > float(sems["aligned"]) + float(sems["whole frame"]), result.stdout
