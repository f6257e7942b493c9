"""The `deepface` command line: every subcommand resolves, help is cheap, user errors are one line."""

import subprocess
import sys

import click
from click.testing import CliRunner

from deepface.cli import COMMANDS, main


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
