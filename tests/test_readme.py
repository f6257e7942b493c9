"""README.md's stage walkthrough, run verbatim on the README's own data: every command works, and the
model it trains beats its untrained baseline.

The walkthrough's commands are read from README.md (the code block of "Each stage on its own"), joined
across backslash continuations, and run with `deepface` in an empty folder. Commands that need what this
machine lacks (a bucket, real LFW, the seed's weight file, your face photos) are left out by name.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
NEEDS_ELSEWHERE = ("gs://", "real/", "face1.jpg", ".h5")


def walkthrough() -> list[list[str]]:
    """The walkthrough's commands, as argument lists (comments dropped)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Each stage on its own", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words and not any(marker in line for marker in NEEDS_ELSEWHERE):
            commands.append(words)
    return commands


def test_the_walkthrough_is_found():
    names = [words[1] for words in walkthrough()]
    assert names[:5] == ["synth", "labels", "tfrecords", "train", "evaluate"], names


@pytest.mark.slow
def test_the_readme_walkthrough_runs_verbatim_and_its_model_beats_the_baseline(tmp_path):
    deepface = Path(sys.executable).with_name("deepface")
    for words in walkthrough():
        assert words[0] == "deepface", words
        result = subprocess.run([str(deepface), *words[1:]], cwd=tmp_path, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, f"{shlex.join(words)}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    for evaluation in ("out/eval", "out/eval-vgg"):
        summary = json.loads((tmp_path / evaluation / "metrics.json").read_text())["summary"]
        assert summary["accuracy"] > summary["baseline_accuracy"] + 0.05, (evaluation, summary)
