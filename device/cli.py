"""`python -m device <command>` (also `faceedge-device`): dispatches to the subcommand modules.

Each subcommand lives in its own module with an ``add_parser(subparsers)`` function that adds its
parser and sets ``func`` (called with the parsed args, returns the exit status). To add one, write
the module and list it in SUBCOMMAND_MODULES. This file only dispatches.

Errors a user can fix (`FaceedgeError`) print as one ``error: ...`` line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from device.errors import FaceedgeError

SUBCOMMAND_MODULES = (
    "device.daemon",  # run
    "device.check",  # check
    "device.collect",  # collect
    "device.outputs.homeassistant",  # ha-remove
    "device.deploy.cli",  # deploy, rollback, deploy-model
    "device.pull",  # pull
    "device.bench.cli",  # bench, bench-remote
    "device.bench.http_load",  # bench-http
)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m device",
        description="faceedge on the device: run the classifier on camera frames, check, collect, deploy, bench.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--validate_config",
        "--validate-config",
        dest="validate_config",
        type=Path,
        default=None,
        metavar="CONFIG",
        help="validate a device YAML config and exit",
    )
    parser.add_argument(
        "--log_level",
        "--log-level",
        dest="log_level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr (default: the config's log_level, else INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def standalone(
    add_parser, prog: str, argv: list[str] | None = None, *, command: str | None = None, log_level: str = "INFO"
) -> int:
    """`python -m device.<module>`: the same subcommand(s) without the dispatcher.

    `command` is prepended to argv for modules with a single subcommand (`python -m device.check ...`).
    """
    parser = argparse.ArgumentParser(prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_parser(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args([command, *argv] if command else argv)
    logging.basicConfig(level=log_level, format=LOG_FORMAT, stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except FaceedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


def validate_config(path: Path) -> int:
    from device.config import load_config, summary

    cfg = load_config(path)
    print(f"ok: {path}: {summary(cfg)}")
    return 0


def _dump_modules() -> None:
    """FACEEDGE_DUMP_MODULES=path: write the imported module names (the no-TensorFlow test)."""
    path = os.environ.get("FACEEDGE_DUMP_MODULES")
    if path:
        Path(path).write_text("\n".join(sorted(sys.modules)) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level or "INFO", format=LOG_FORMAT, stream=sys.stderr)
    try:
        if args.validate_config is not None:
            return validate_config(args.validate_config)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        return int(args.func(args) or 0)
    except FaceedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        _dump_modules()
