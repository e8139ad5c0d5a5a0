"""`python -m train <command>`: the training stage's CLI.

Each subcommand lives in its own module, which exposes a function that adds its subparser and
sets ``func`` (called with the parsed args, returns the exit code). To add one, append
``"module"`` (function ``add_parser``) or ``"module:function"`` to SUBCOMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from device.errors import FaceedgeError
from device.flags import add_option

SUBCOMMANDS = [
    "train.sample_data:add_data_parser",  # data: generate the offline sample dataset
    "train.fit",  # fit: train a run
    "train.compare",  # compare: runs side by side
    "train.bench",  # bench: input pipeline and feature-cache benchmark
    "train.crop_faces",  # crop-faces: face crops from raw photos
    "train.label",  # label: review a dataset in the browser before training
]


def _register(subparsers, entry: str) -> None:
    module_name, _, func_name = entry.partition(":")
    getattr(importlib.import_module(module_name), func_name or "add_parser")(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description=__doc__.splitlines()[0],
    )
    add_option(
        parser,
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: %(default)s)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for entry in SUBCOMMANDS:
        _register(subparsers, entry)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        return int(args.func(args) or 0)
    except FaceedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
