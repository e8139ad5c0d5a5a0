"""`python -m device <command>` (also `faceedge-device`): dispatches to the subcommand modules.

Each subcommand lives in its own module with an ``add_parser(subparsers)`` function that adds its
parser and sets ``func`` (called with the parsed args, returns the exit status). To add one, write
the module and list its command(s) in SUBCOMMANDS. This file only dispatches.

Only the module of the command being run is imported: importing them all (deploy, bench, collect)
to build the parser took `--help` and the daemon's start-up ~0.5 s longer on a Pi-class CPU.
`--help` lists the commands from SUBCOMMANDS; tests/test_device_cli.py checks that table against the
modules' own parsers.

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
from device.flags import add_option

# command: (module whose add_parser adds it, the one-line help `--help` lists)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("device.run", "run the daemon: camera → classifier → outputs"),
    "check": ("device.check", "load the model, classify a self-test image, print result and timings"),
    "collect": (
        "device.collect",
        "save de-duplicated, sharp crops from a camera/video into <out>/<label>/<person>/",
    ),
    "ha-remove": (
        "device.outputs.homeassistant",
        "remove this device from Home Assistant (clear its retained MQTT discovery configs)",
    ),
    "deploy": ("device.deploy.cli", "deploy daemon + model to Raspberry Pis over ssh"),
    "deploy-model": ("device.deploy.cli", "ship a new model only and reload it with SIGHUP"),
    "rollback": ("device.deploy.cli", "go back one release on the device(s)"),
    "status": (
        "device.deploy.cli",
        "what each Pi runs: current and previous release, model sha256, health, uptime",
    ),
    "pull": (
        "device.pull",
        "copy crops collected on Pis into a local dataset folder (new files only, never overwriting)",
    ),
    "bench": ("device.bench.cli", "latency benchmark here: raw interpreter and the daemon's pipeline"),
    "bench-remote": (
        "device.bench.cli",
        "run `bench` on Pis over ssh in the deployed release and bring the results back",
    ),
    "bench-http": (
        "device.bench.http_load",
        "the daemon's HTTP endpoints under concurrent loopback clients (latency, errors, fps)",
    ),
}
_TAKES_VALUE = {"--validate_config", "--validate-config", "--log_level", "--log-level"}

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def command_in(argv: list[str]) -> str | None:
    """The subcommand named in argv (the first word that is not an option or an option's value)."""
    words = iter(argv)
    for word in words:
        if word in _TAKES_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: the real sub-parser of the command it names and, for the others, a
    stand-in that only lists the command and its help. None: every command's real sub-parser."""
    parser = argparse.ArgumentParser(
        prog="python -m device",
        description="faceedge on the device: run the classifier on camera frames, check, collect, deploy, bench.",
    )
    add_option(
        parser,
        "--validate-config",
        type=Path,
        default=None,
        metavar="CONFIG",
        help="validate a device YAML config and exit",
    )
    add_option(
        parser,
        "--log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr (default: the config's log_level, else INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    command = None if argv is None else command_in(argv)
    wanted = {m for c, (m, _) in SUBCOMMANDS.items() if argv is None or c == command}
    added: set[str] = set()
    for name, (module, help_text) in SUBCOMMANDS.items():
        if module not in wanted:
            sub.add_parser(name, help=help_text, add_help=False)
        elif module not in added:  # the module adds all of its commands
            importlib.import_module(module).add_parser(sub)
            added.add(module)
    return parser


def standalone(
    add_parser, prog: str, argv: list[str] | None = None, *, command: str | None = None, log_level: str = "INFO"
) -> int:
    """`python -m device.<module>`: the same subcommand(s) without the dispatcher.

    `command` is prepended to argv for modules with a single subcommand (`python -m device.check ...`).
    """
    parser = argparse.ArgumentParser(prog=prog)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
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
