"""``deepface demo``: the main job. The whole pipeline runs here, through kfp.local, on the embedded data.

It is ``python -m pipelines run-local`` under the project's own command: the synthetic VGGFace2 + LFW
dataset is generated, fetched, labelled, converted to TFRecords, a tiny DeepFace is trained and
evaluated on the LFW protocol; each stage's outputs land under ``--pipeline-root`` and a rerun with the
same parameters is served from the cache. The terminal shows each stage's progress, results and status,
then the report; all of the tasks' output (kfp's executor input, TensorFlow's start-up messages...) is in
the log file the report names, and on the terminal too with ``-v``. The pipeline package (and kfp) is
imported only when the command runs: the ``deepface`` library itself never imports kfp.
"""

from __future__ import annotations

import click


@click.command("demo")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Pipeline parameter override (repeatable), e.g. --param epochs=5 or --param data_uri=gs://bucket/data/.")
@click.option("--pipeline-root", default="local_outputs", show_default=True, type=click.Path(file_okay=False),
              help="Local folder for the outputs and the cache.")
@click.option("--cache/--no-cache", "enable_caching", default=True, show_default=True,
              help="Reuse the outputs of stages whose inputs are unchanged.")
@click.option("-v", "--verbose", is_flag=True,
              help="Show every line of the tasks' output (kfp's executor input, TensorFlow's start-up messages); "
                   "without it they are only in the run's log file.")
def command(params: tuple[str, ...], pipeline_root: str, enable_caching: bool, verbose: bool) -> None:
    """Run the whole pipeline locally on the embedded synthetic data; print the outputs and the evaluation."""
    from pipelines.cli import run_local_and_report

    run_local_and_report(params, pipeline_root=pipeline_root, enable_caching=enable_caching, verbose=verbose)
