"""One flag style for the device CLIs (device.flags): kebab-case in --help, the snake_case spelling
still accepted but hidden, and each default shown once."""

from __future__ import annotations

import pytest

from device.cli import build_parser, main
from tests.helpers.flags import check_help


COMMANDS = [
    "run",
    "check",
    "collect",
    "ha-remove",
    "deploy",
    "deploy-model",
    "rollback",
    "status",
    "pull",
    "bench",
    "bench-remote",
    "bench-http",
]


def test_every_device_command_is_checked(capsys):
    """The list above is every subcommand `python -m device --help` shows."""
    with pytest.raises(SystemExit):
        main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in lines if line.startswith("    ") and not line.startswith("     ")]
    assert sorted(listed) == sorted(COMMANDS)


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_device_help_is_kebab_case_with_one_default(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert check_help(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["run", "--model_dir", "m"], "model_dir", "m"),
        (["run", "--max-frames", "3"], "max_frames", 3),
        (["check", "--expect_score", "0.5"], "expect_score", 0.5),
        (["deploy", "--hosts", "pi@x", "--remote_dir", "fe", "--ssh_key", "k"], "remote_dir", "fe"),
        (["deploy", "--hosts", "pi@x", "--selftest-image", "a.png"], "selftest_image", "a.png"),
        (["bench", "--min_seconds", "3"], "min_seconds", 3.0),
        (["bench-remote", "--hosts", "pi@x", "--no_pipeline"], "pipeline", False),
        (["collect", "--label", "a", "--person", "b", "--out", "o", "--every_s", "1"], "every_s", 1.0),
    ],
)
def test_snake_case_spellings_still_work(argv, dest, value):
    args = build_parser().parse_args(argv)
    assert str(getattr(args, dest)) == str(value)
