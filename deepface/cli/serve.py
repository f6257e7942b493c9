"""``deepface serve``: the command line of `deepface.serving.server.serve` (Vertex AI's custom-container contract).

Run as the container's command on Vertex AI (``deepface serve``: the model from ``AIP_STORAGE_URI``), or
locally: ``deepface serve --model out/serving --port 8080``, or straight from training and evaluation:
``deepface serve --model out/model --evaluation out/eval`` (exported to a temporary directory first).
Also runs as ``python -m deepface.cli.serve``.
"""

from __future__ import annotations

import click

from deepface.settings import ServeSettings, click_options


@click.command("serve")
@click.option("--model", "model_uri", default=None,
              help="Serving export (local or gs://) or model directory of `deepface train`  "
                   "[default: $AIP_STORAGE_URI]")
@click.option("--evaluation", "evaluation_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="With a model directory: the output of `deepface evaluate` whose threshold to verify with.")
@click_options(ServeSettings)
def command(model_uri: str | None, evaluation_dir: str | None, **settings) -> None:
    """Serve embeddings and face verification over HTTP (Vertex AI's custom-container contract)."""
    from deepface.serving.server import serve

    serve(model_uri, evaluation_dir=evaluation_dir, **settings)


def main(argv: list[str] | None = None) -> None:
    """``python -m deepface.cli.serve``: this command alone, with the CLI's logging and one-line errors."""
    import sys

    from deepface.cli import UserErrorGroup, configure_logging

    configure_logging(False)
    group = UserErrorGroup(commands={"serve": command})
    group.main(["serve", *(sys.argv[1:] if argv is None else argv)], prog_name="deepface")


if __name__ == "__main__":
    main()
