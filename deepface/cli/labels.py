"""``deepface labels``: the command line of `deepface.labels.build_labels` (it has no settings)."""

from __future__ import annotations

import click


@click.command("labels")
@click.option("--source", required=True,
              help="Image list (train_list.txt), tar archive (vggface2_train.tar.gz) or directory of identity folders.")
@click.option("--out", "out_dir", required=True, help="Output directory: classes.txt, class_counts.tsv, manifest.json.")
def command(source: str, out_dir: str) -> None:
    """Build the class map: sorted identity ids (class id = line index) and images per identity."""
    from deepface.labels import build_labels

    manifest = build_labels(source, out_dir)
    click.echo(f"{manifest['num_classes']} classes, {manifest['num_images']} images -> {out_dir}")
