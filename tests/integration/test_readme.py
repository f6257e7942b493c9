"""README.md's stage walkthrough, run verbatim on the README's own data: every command works, and the
model it trains beats its untrained baseline. README's first command is ``make demo``, which runs the
pipelines package's ``demo``; every command the README shows names a command that exists.

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

import click
import pytest

from deepface.cli import COMMANDS
from pipelines.cli import main as pipelines_main

README = Path(__file__).resolve().parents[2] / "README.md"
MAKEFILE = README.with_name("Makefile")
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


def code_lines() -> list[list[str]]:
    """Every command line of README's bash blocks, as argument lists (comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    lines = [shlex.split(line, comments=True) for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [words for words in lines if words]


def test_the_first_command_is_make_demo_which_runs_the_pipelines_demo():
    assert code_lines()[0] == ["make", "demo"]
    recipe = MAKEFILE.read_text(encoding="utf-8").split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "-m pipelines demo" in recipe, recipe


def test_every_command_shown_exists():
    pipeline_commands = set(pipelines_main.list_commands(click.Context(pipelines_main)))
    for words in code_lines():
        if words[0] == "deepface":
            assert words[1] in COMMANDS, words
        elif words[:3] == ["python", "-m", "pipelines"]:
            assert words[3] in pipeline_commands, words


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
