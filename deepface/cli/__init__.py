"""The ``deepface`` command line: one subcommand per stage, each a thin wrapper over one function.

Subcommands are loaded lazily (``deepface --help`` does not import TensorFlow). Each module listed in
``COMMANDS`` defines a click command named ``command``.

``-v`` turns on DEBUG for this project's loggers only (:data:`VERBOSE_LOGGERS`); every other library
(matplotlib, TensorFlow, urllib3, ...) stays at INFO, the root logger's level. A user error or an OS
error of any command is one line (`UserErrorGroup`); ``-v`` logs its traceback too.
"""

from __future__ import annotations

import importlib
import logging
import os

import click

from deepface.errors import DeepFaceError, system_error_message

# subcommand name -> (module that defines `command`, one-line help shown by `deepface --help`)
COMMANDS = {
    "synth": ("deepface.cli.synth", "Write a synthetic face dataset laid out like VGGFace2 and LFW."),
    "fetch": ("deepface.cli.fetch", "Copy data (local, file://, gs://, https://) and verify MD5s."),
    "labels": ("deepface.cli.labels", "Build the class map (sorted identities) from a list, archive or folder."),
    "landmarks": ("deepface.cli.landmarks",
                  "Find faces and their 5 landmarks in an archive or folder (a CSV, resumable)."),
    "tfrecords": ("deepface.cli.tfrecords",
                  "Build sharded TFRecords of aligned faces from an archive or folder (resumable)."),
    "train": ("deepface.cli.train", "Train DeepFace from TFRecords (TPU, GPUs or CPU; resumable)."),
    "evaluate": ("deepface.cli.evaluate", "Evaluate face verification (LFW protocol) and write the report."),
    "verify": ("deepface.cli.verify", "Say whether two face images show the same person."),
    "model": ("deepface.cli.model", "Build a DeepFace preset and print its summary and parameter count."),
    "import-weights": ("deepface.cli.import_weights", "Import the seed project's tf.keras HDF5 weights."),
    "serve": ("deepface.cli.serve", "Serve embeddings and verification over HTTP (Vertex AI custom container)."),
    "embed": ("deepface.cli.embed", "Embed every face image of a folder or archive into .npz shards (resumable)."),
}


# The loggers `-v` sets to DEBUG (`deepface -v`, `python -m pipelines -v`); the root logger stays at INFO.
VERBOSE_LOGGERS = ("deepface", "pipelines", "components")

logger = logging.getLogger(__name__)


def configure_logging(verbose: bool) -> None:
    """Log INFO and above to stderr; with ``verbose``, DEBUG too, but only from :data:`VERBOSE_LOGGERS`.
    TensorFlow's log level defaults to 2 (`deepface.startup` reads it when TensorFlow is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in VERBOSE_LOGGERS:  # NOTSET: inherit the root's INFO (also undoes an earlier -v in this process)
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.NOTSET)
    if verbose:
        logger.debug("debug logging on for the loggers %s", ", ".join(VERBOSE_LOGGERS))


class UserErrorGroup(click.Group):
    """A click group whose user errors print one line, ``Error: ...``, exit code 1: a `DeepFaceError`, and
    any `OSError` (a full or read-only disk, refused permission, a file where a directory belongs, too many
    open files...) or TensorFlow file error, as `deepface.errors.system_error_message` words it: the path
    and the fix. With ``-v`` the traceback is logged (DEBUG) before that line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DeepFaceError as error:  # a user error: one clear line, no traceback
            logger.debug("traceback of the error below", exc_info=True)
            raise click.ClickException(str(error)) from error
        except Exception as error:  # the system refused (OSError, TF's file errors): the path and the fix
            message = self.error_message(error)
            if message is None:  # a bug: its traceback
                raise
            logger.debug("traceback of the error below", exc_info=True)
            raise click.ClickException(message) from error

    def error_message(self, error: Exception) -> str | None:
        """The one line for an error the system raised, or None for a bug (shown with its traceback).
        Subclasses word their own kinds first (e.g. a refused connection, which is an OSError too)."""
        return system_error_message(error)


class LazyGroup(UserErrorGroup):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name = COMMANDS[name][0]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:  # stage not implemented yet
                return None
            raise
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List subcommands from COMMANDS without importing them (no TensorFlow start-up for --help)."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, help_text) in sorted(COMMANDS.items())])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages of deepface, pipelines and components.")
@click.version_option(package_name="deepface-pipeline")
def main(verbose: bool) -> None:
    """Train and evaluate the DeepFace face-verification network."""
    configure_logging(verbose)

