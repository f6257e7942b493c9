"""What the benchmarks share (a module, not a benchmark: tests/integration/test_benchmarks.py skips names
starting with an underscore)."""

from __future__ import annotations

import argparse

SMOKE_HELP = "tiny sizes (a check that the benchmark runs; its figures mean nothing)"


def parse_args(parser: argparse.ArgumentParser, smoke: dict) -> argparse.Namespace:
    """Add ``--smoke`` to ``parser`` and parse the command line; under ``--smoke`` the values in ``smoke``
    become the defaults (options given still win).

    Example: ``args = parse_args(parser, {"rounds": 1, "images": 8})``.
    """
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**smoke)
        args = parser.parse_args()
    return args
