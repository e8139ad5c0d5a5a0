"""Checking a --help text against the one flag style (device/flags.py)."""

from __future__ import annotations

import re

SNAKE_FLAG = re.compile(r"--[a-z0-9]+_[a-z0-9_]+")


def _entries(help_text: str) -> list[str]:
    """The options: section of an argparse help, one string per option (wrapped lines joined)."""
    section = help_text.split("options:", 1)[1]
    entries: list[str] = []
    for line in section.splitlines():
        if line.startswith("  -"):
            entries.append(line.strip())
        elif line.strip() and entries:
            entries[-1] += " " + line.strip()
    return entries


def check_help(help_text: str) -> list[str]:
    """The problems of one --help text: snake_case options shown, defaults shown twice or as None."""
    problems = []
    for entry in _entries(help_text):
        flags = entry.split("  ", 1)[0]
        if SNAKE_FLAG.search(flags):
            problems.append(f"snake_case option shown: {flags}")
        if entry.count("(default") > 1:
            problems.append(f"default shown twice: {entry}")
        if "(default: None)" in entry or "(default: [])" in entry:
            problems.append(f"meaningless default shown: {entry}")
    return problems
