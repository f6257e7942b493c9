"""``deepface fetch``: the command line of `deepface.fetch.fetch`."""

from __future__ import annotations

import click

from deepface.settings import FetchSettings, click_options


@click.command("fetch")
@click.option("--source", "sources", multiple=True, required=True, metavar="URI",
              help="Local path, file://, gs://, https:// or http:// URI; a trailing '/' (or a directory) fetches "
                   "every file under it. Repeatable.")
@click.option("--out", "out_dir", required=True, help="Output directory.")
@click_options(FetchSettings)
def command(sources: tuple[str, ...], out_dir: str, **settings) -> None:
    """Copy source files into OUT, verify their MD5s and write OUT/manifest.json.

    One gs:// folder that the Cloud Storage FUSE mount shows (/gcs/BUCKET/..., as on Vertex AI) is verified
    in place from its objects' stored MD5s instead of copied, unless --copy-gs."""
    from deepface.fetch import fetch

    manifest = fetch(list(sources), out_dir, **settings)
    if "location" in manifest:  # a gs:// folder seen through the Cloud Storage FUSE mount: verified in place
        click.echo(f"verified {len(manifest['files'])} file(s) in place at {manifest['location']}; "
                   f"manifest in {out_dir}")
    else:
        click.echo(f"fetched {len(manifest['files'])} file(s) into {out_dir}")
