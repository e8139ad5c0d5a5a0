"""One flag style for the training and conversion CLIs (device.flags): kebab-case in --help, the
snake_case spelling still accepted but hidden, and each default shown once."""

from __future__ import annotations

import argparse
import pytest

from device.flags import add_option
from tests.helpers.flags import check_help


def _help(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_check_help_can_fail():
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--io_dtype", default="uint8", help="tensor type (default: uint8)")
    parser.add_argument("--labels", default=None, help="labels")
    problems = check_help(parser.format_help())
    assert any("snake_case option shown: --io_dtype" in p for p in problems)
    assert any(p.startswith("default shown twice") for p in problems)
    assert any(p.startswith("meaningless default") for p in problems)


def test_add_option_hides_the_snake_case_alias():
    parser = argparse.ArgumentParser()
    add_option(parser, "--max-images", type=int, default=512, help="at most (default: %(default)s)")
    add_option(parser, "--allow-weak", action="store_true", help="keep it")
    assert parser.parse_args([]) == argparse.Namespace(max_images=512, allow_weak=False)
    new = parser.parse_args(["--max-images", "7", "--allow-weak"])
    old = parser.parse_args(["--max_images", "7", "--allow_weak"])
    assert new == old == argparse.Namespace(max_images=7, allow_weak=True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--max_images", "seven"])  # the alias converts and checks like the option
    text = parser.format_help()
    assert "--max-images" in text and "--max_images" not in text and "--allow_weak" not in text
    assert check_help(text) == []
    with pytest.raises(ValueError):
        add_option(parser, "--snake_case", type=int)


@pytest.mark.parametrize("command", [[], ["data"], ["label"], ["fit"], ["compare"], ["bench"], ["crop-faces"]])
def test_train_help_is_kebab_case_with_one_default(command, capsys):
    from train.cli import main

    assert check_help(_help(main, command, capsys)) == []


def test_convert_and_demo_help_is_kebab_case_with_one_default(capsys):
    from convert import demo
    from convert.cli import main

    assert check_help(_help(main, [], capsys)) == []
    assert check_help(_help(demo.main, [], capsys)) == []


def test_old_snake_case_spellings_still_parse():
    from convert import demo
    from convert.cli import build_parser

    values = {
        "io-dtype": "int8",
        "calibration-images": "50",
        "max-drop": "2",
        "min-agreement": "0.9",
        "min-balanced-accuracy": "0.6",
        "positive-label": "open",
        "child-timeout": "30",
        "log-level": "ERROR",
    }
    kebab = [x for k, v in values.items() for x in (f"--{k}", v)]
    snake = [x for k, v in values.items() for x in (f"--{k.replace('-', '_')}", v)]
    parser = build_parser()
    assert parser.parse_args(["--run", "r", *kebab]) == parser.parse_args(["--run", "r", *snake])
    assert parser.parse_args(["--run", "r", *snake]).calibration_images == 50

    demo_values = {
        "data-args": "--persons 4",
        "convert-args": "--seed 1",
        "video-fps": "5",
        "frames-per-image": "2",
        "video-size": "64",
        "bench-seconds": "0.5",
    }
    kebab = [x for k, v in demo_values.items() for x in (f"--{k}", v)]
    snake = [x for k, v in demo_values.items() for x in (f"--{k.replace('-', '_')}", v)]
    demo_parser = demo.build_parser()
    assert demo_parser.parse_args(kebab) == demo_parser.parse_args(snake)
    args = demo_parser.parse_args(snake)
    assert "--frames-per-image 2" in demo.resume_command(args, "train", None)  # resumes in today's spelling
