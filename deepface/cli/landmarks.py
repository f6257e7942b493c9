"""``deepface landmarks``: the command line of `deepface.detect.detect_landmarks`."""

from __future__ import annotations

import click

from deepface.settings import LandmarksSettings, click_options


@click.command("landmarks")
@click.option("--source", required=True,
              help="Image archive (tar, tar.gz...; read as a stream) or directory of identity folders.")
@click.option("--out", "out_dir", required=True,
              help="Output directory: loose_landmark_<split>.csv, loose_bb_<split>.csv, manifest.json.")
@click_options(LandmarksSettings)
def command(source: str, out_dir: str, **settings) -> None:
    """Find the face and its 5 landmarks in every image (VGGFace2 bb_landmark CSVs); resumable."""
    from deepface.detect import detect_landmarks

    manifest = detect_landmarks(source, out_dir, **settings)
    click.echo(f"{manifest['faces_found']} of {manifest['images']} images have a face "
               f"({manifest['no_face']['count']} without, {manifest['undecodable']['count']} undecodable) -> {out_dir}")
