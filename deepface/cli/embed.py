"""``deepface embed``: the command line of `deepface.serving.embed.embed_folder`."""

from __future__ import annotations

import click

from deepface.settings import EmbedSettings, click_options


@click.command("embed")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Model directory written by `deepface train`.")
@click.option("--images", "source", required=True, type=click.Path(exists=True),
              help="Folder or tar archive (.tar, .tar.gz, ...) of face images.")
@click.option("--out", "out_dir", required=True, help="Output directory (shards of .npz and manifest.json).")
@click.option("--landmarks", type=click.Path(exists=True), default=None,
              help="loose_landmark_*.csv or bb_landmark archive of the images  [default: run the face detector]")
@click_options(EmbedSettings)
def command(model_dir: str, source: str, out_dir: str, landmarks: str | None, **settings) -> None:
    """Embed every face image of a folder or archive into shards in OUT (resumable, deterministic)."""
    from deepface.serving.embed import embed_folder

    manifest = embed_folder(model_dir, source, out_dir, landmarks=landmarks, **settings)
    click.echo(f"{manifest['embedded']} of {manifest['images']} images embedded into {len(manifest['shards'])} "
               f"shards in {out_dir} ({len(manifest['skipped'])} skipped, listed in its manifest.json)")


def main(argv: list[str] | None = None) -> None:
    """``python -m deepface.cli.embed``: this command alone, with the CLI's logging and one-line errors."""
    import sys

    from deepface.cli import UserErrorGroup, configure_logging

    configure_logging(False)
    group = UserErrorGroup(commands={"embed": command})
    group.main(["embed", *(sys.argv[1:] if argv is None else argv)], prog_name="deepface")


if __name__ == "__main__":
    main()
