"""The `deepface` and `python -m pipelines` command lines: every subcommand resolves, help is cheap and lists
the group's own commands, user errors are one line, -v debugs this project only."""

import ast
import logging
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from deepface.cli import COMMANDS, VERBOSE_LOGGERS, main


def test_every_listed_subcommand_resolves_to_a_click_command():
    for name in COMMANDS:
        command = main.get_command(click.Context(main), name)
        assert isinstance(command, click.Command), name


def test_help_lists_commands_without_importing_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from deepface.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); print(r.output); "
            "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED')")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "TF_NOT_IMPORTED" in output
    for name in COMMANDS:
        assert name in output


def test_user_error_is_one_line_without_traceback():
    result = CliRunner().invoke(main, ["model", "--preset", "tiny", "--num-classes", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["labels", "--source", "/nonexistent/list.txt", "--out", "/tmp/x"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "/nonexistent/list.txt" in result.output


REPOSITORY = Path(__file__).resolve().parents[2]
PIPELINE_COMMANDS = {"compile", "submit", "upload", "schedule", "submit-kfp", "run-local", "demo"}


def listed_commands(help_text: str) -> set[str]:
    """The command names of a click help page's "Commands:" section (continuation lines are indented more)."""
    section = help_text.split("\nCommands:\n", 1)[1]
    return {line.split()[0] for line in section.splitlines() if line.startswith("  ") and line[2:3].strip()}


def test_pipelines_help_lists_its_own_commands_not_deepface_stages():
    result = subprocess.run([sys.executable, "-m", "pipelines", "--help"], capture_output=True, text=True,
                            cwd=REPOSITORY, timeout=120)
    assert result.returncode == 0, result.stderr
    assert listed_commands(result.stdout) == PIPELINE_COMMANDS, result.stdout
    assert "Start a Vertex AI pipeline run and print its console URL." in result.stdout  # the short help


def test_pipelines_does_not_know_deepface_stages():
    result = subprocess.run([sys.executable, "-m", "pipelines", "synth"], capture_output=True, text=True,
                            cwd=REPOSITORY, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "No such command 'synth'" in result.stderr


def test_the_demo_is_a_pipelines_command_not_a_deepface_one():
    """The main job runs the pipeline, so it lives in pipelines/ (`python -m pipelines demo`, `make demo`)."""
    assert "demo" not in COMMANDS and main.get_command(click.Context(main), "demo") is None
    from pipelines.cli import main as pipelines_main

    demo = pipelines_main.get_command(click.Context(pipelines_main), "demo")
    run_local = pipelines_main.get_command(click.Context(pipelines_main), "run-local")
    assert [p.name for p in demo.params] == [p.name for p in run_local.params]
    assert [p.default for p in demo.params] == [p.default for p in run_local.params]


def test_the_library_imports_neither_components_nor_pipelines_nor_kfp():
    """Layers point one way: pipelines -> components -> deepface; the library imports none of the others."""
    for path in sorted((REPOSITORY / "deepface").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("components", "pipelines", "kfp"), f"{path}: imports {name}"


@pytest.mark.parametrize("stage", sorted(COMMANDS))
def test_stage_help_does_not_import_tensorflow(stage):
    code = ("import sys; from click.testing import CliRunner; from deepface.cli import main; "
            f"r = CliRunner().invoke(main, [{stage!r}, '--help']); print(r.exit_code, r.output); "
            "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED')")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=REPOSITORY, timeout=300).stdout
    assert output.startswith("0 Usage:"), output
    assert "TF_NOT_IMPORTED" in output


def test_verbose_debugs_this_project_only(tmp_path):
    """-v: DEBUG from deepface/pipelines/components; matplotlib (drawing text logs font-manager DEBUG lines)
    and the root logger stay at INFO."""
    code = f"""
import logging
from deepface.cli import main
main(["-v", "synth", "--out", {str(tmp_path / "synth")!r}, "--train-identities", "2", "--test-identities", "2",
      "--lfw-identities", "10", "--images-per-identity", "3", "--image-size", "64", "--lfw-image-size", "64",
      "--workers", "1"], standalone_mode=False)
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
figure = Figure()
figure.text(0.5, 0.5, "font lookups log at DEBUG")
FigureCanvasAgg(figure).draw()
levels = {{name: logging.getLogger(name).getEffectiveLevel() for name in ["deepface", "pipelines", "components"]}}
print("LEVELS", levels, logging.getLogger().level, logging.getLogger("matplotlib").getEffectiveLevel())
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPOSITORY, timeout=300)
    assert result.returncode == 0, result.stderr
    debug = [line for line in result.stderr.splitlines() if " DEBUG " in line]
    assert debug and all(line.split(" DEBUG ", 1)[1].startswith("deepface.") for line in debug), debug
    assert "matplotlib" not in result.stderr
    levels = {"deepface": logging.DEBUG, "pipelines": logging.DEBUG, "components": logging.DEBUG}
    assert f"LEVELS {levels} {logging.INFO} {logging.INFO}" in result.stdout


def test_verbose_sets_debug_on_the_project_loggers_only():
    try:
        result = CliRunner().invoke(main, ["-v", "labels", "--help"])
        assert result.exit_code == 0, result.output
        for name in VERBOSE_LOGGERS:
            assert logging.getLogger(name).level == logging.DEBUG
        assert logging.getLogger("matplotlib").level == logging.NOTSET
        assert logging.getLogger().level != logging.DEBUG
    finally:
        CliRunner().invoke(main, ["labels", "--help"])  # without -v: back to inheriting the root's level
    assert all(logging.getLogger(name).level == logging.NOTSET for name in VERBOSE_LOGGERS)
