"""Command-line flags of the training and conversion stages: one style for all of them.

Flags are kebab-case (``--io-dtype``); the snake_case spelling they had before (``--io_dtype``)
still works as a hidden alias, so old command lines and scripts keep running. The parsed value
keeps its snake_case name (``args.io_dtype``). Help texts state a default once, with
``%(default)s`` or in words; the parsers do not add a second one (no ArgumentDefaultsHelpFormatter).
"""

from __future__ import annotations

import argparse


def add_option(parser, flag: str, **kwargs) -> argparse.Action:
    """`parser.add_argument(flag, **kwargs)` for a kebab-case `flag`, plus its snake_case spelling as a
    hidden alias (same destination, type, choices and action; no default of its own; not in --help).
    `parser` may be an argument group or a mutually exclusive group."""
    if not flag.startswith("--") or "_" in flag:
        raise ValueError(f"{flag}: expected a kebab-case long option")
    if kwargs.get("required"):
        raise ValueError(f"{flag}: a required option cannot have a hidden alias")
    action = parser.add_argument(flag, **kwargs)
    alias = "--" + flag[2:].replace("-", "_")
    if alias != flag:
        parser.add_argument(
            alias, **{**kwargs, "dest": action.dest, "help": argparse.SUPPRESS, "default": argparse.SUPPRESS}
        )
    return action
