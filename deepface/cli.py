"""The ``deepface`` command line: one subcommand per stage, each a thin wrapper over one function.

Subcommands are loaded lazily (``deepface --help`` does not import TensorFlow). Each module listed in
``COMMANDS`` defines a click command named ``command``.
"""

from __future__ import annotations

import importlib
import logging
import os

import click

from deepface.errors import DeepFaceError

# subcommand name -> module that defines `command`
COMMANDS = {
    "synth": "deepface.synth",
    "fetch": "deepface.fetch",
    "labels": "deepface.labels",
    "tfrecords": "deepface.tfrecords",
    "train": "deepface.train",
    "evaluate": "deepface.evaluate",
    "verify": "deepface.verify",
    "model": "deepface.model",
    "import-weights": "deepface.weights",
    "demo": "deepface.demo",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module_name = COMMANDS.get(name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:  # stage not implemented yet
                return None
            raise
        return module.command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DeepFaceError as error:  # a user error: one clear line, no traceback
            raise click.ClickException(str(error)) from error


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.version_option(package_name="deepface-pipeline")
def main(verbose: bool) -> None:
    """Train and evaluate the DeepFace face-verification network."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


if __name__ == "__main__":
    main()
