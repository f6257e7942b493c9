"""``deepface model``: the command line of `deepface.model.build_classifier`, without TensorFlow until it runs
(``deepface model --help`` imports none)."""

from __future__ import annotations

import json

import click

from deepface.config import PAPER_NUM_CLASSES, PRESETS, get_config


@click.command("model")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="paper", show_default=True,
              help="Model preset.")
@click.option("--num-classes", type=click.IntRange(min=2), default=PAPER_NUM_CLASSES, show_default=True,
              help="Identities of the F8 softmax.")
@click.option("--json", "as_json", is_flag=True, help="Print the config and parameter count as JSON only.")
def command(preset: str, num_classes: int, as_json: bool) -> None:
    """Build a DeepFace preset and print its summary and parameter count."""
    from deepface.model import build_classifier

    model = build_classifier(preset, num_classes)
    info = {"preset": get_config(preset).to_dict(), "num_classes": num_classes,
            "parameters": model.count_params(),
            "parameters_without_f8": model.count_params() - model.get_layer("F8").count_params()}
    if not as_json:
        model.summary(print_fn=click.echo)
    click.echo(json.dumps(info, indent=2, sort_keys=True))
