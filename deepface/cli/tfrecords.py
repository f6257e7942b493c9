"""``deepface tfrecords``: the command line of `deepface.tfrecords.build_tfrecords`."""

from __future__ import annotations

import click

from deepface.settings import TfrecordsSettings, click_options


@click.command("tfrecords")
@click.option("--source", required=True,
              help="Image archive (tar, tar.gz...; read as a stream) or directory of identity folders.")
@click.option("--labels", "labels_dir", required=True, help="Output directory of `deepface labels` (classes.txt).")
@click.option("--out", "out_dir", required=True, help="Output directory: the shards and manifest.json.")
@click.option("--landmarks", type=click.Path(exists=True), default=None,
              help="loose_landmark_*.csv, or VGGFace2's bb_landmark folder/archive  [default: run the face detector]")
@click_options(TfrecordsSettings)
def command(source: str, labels_dir: str, out_dir: str, landmarks: str | None, **settings) -> None:
    """Write the images as sharded TFRecords (schema v1), in parallel; resumes an interrupted build."""
    from deepface.tfrecords import build_tfrecords

    manifest = build_tfrecords(source, labels_dir, out_dir, landmarks=landmarks, **settings)
    click.echo(f"{manifest['num_records']} records in {manifest['num_shards']} shards, "
               f"{manifest['num_skipped']} skipped -> {out_dir}")
