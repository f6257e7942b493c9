"""``deepface fetch``: the command line of `deepface.fetch.fetch`."""

from __future__ import annotations

import click

from deepface.settings import FetchSettings, click_options


@click.command("fetch")
@click.option("--source", "sources", multiple=True, required=True, metavar="URI",
              help="Local path, file://, gs://, https:// or http:// URI; a trailing '/' (or a directory) fetches "
                   "every file under it. Repeatable.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click_options(FetchSettings)
def command(sources: tuple[str, ...], out_dir: str, **settings) -> None:
    """Copy source files into OUT, verify their MD5s and write OUT/manifest.json."""
    from deepface.fetch import fetch

    manifest = fetch(list(sources), out_dir, **settings)
    click.echo(f"fetched {len(manifest['files'])} file(s) into {out_dir}")
