"""`python -m convert`: int8 (and float) TFLite from a training run, verified and gated.

    python -m convert --run runs/latest                          # int8 + float32 into the run
    python -m convert --run runs/latest --variants int8,float32,float16 --io-dtype int8
    python -m convert --from model.h5 --data DIR_OR_CSV --out DIR  # a model from elsewhere

Exit status: 0 = every variant passed the gate and is published; 1 = the gate rejected a variant
(it is written to export/<variant>.rejected/ with status "rejected", which the device refuses to
load, and a previously published export/<variant>/ stays); 2 = bad input (one line `error: ...`
naming the file and the failed check; nothing written).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from convert.gate import DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT, DEFAULT_SIGNIFICANCE
from convert.probe import DEFAULT_TIMEOUT_S
from convert.quantize import DEFAULT_CALIBRATION_STEPS
from device.errors import FaceedgeError
from device.flags import add_option
from device.manifest import VARIANTS

EXIT_GATE_FAILED = 1


def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _variants(text: str) -> list[str]:
    items = _csv_list(text)
    bad = [x for x in items if x not in VARIANTS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{text!r}: variants are a comma list of {', '.join(VARIANTS)}")
    return items


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m convert",
        description="Convert a trained model to int8 (and float) TFLite, verify every model with the device "
        "runtime on the run's splits, gate the int8 model against the float model, and publish "
        "export/<variant>/model.tflite + manifest.json, convert.json and a report section.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--run", type=Path, metavar="RUN_DIR", help="training run directory (model.keras, model_info.json, splits.csv)"
    )
    src.add_argument(
        "--from",
        dest="from_model",
        type=Path,
        metavar="MODEL",
        help="a .keras, full-model .h5 or SavedModel dir (needs --data and --out)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR_OR_CSV",
        help="images to calibrate/verify with: a splits.csv, a path,label[,person] CSV or a "
        "<label>/<person>/ folder (split person-aware by the training stage)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where export/, convert.json and report.md go (required with --from; default: the run dir)",
    )
    p.add_argument(
        "--variants",
        type=_variants,
        default="int8,float32",
        help=f"comma list of {', '.join(VARIANTS)} (default: %(default)s)",
    )
    add_option(
        p,
        "--io-dtype",
        choices=("uint8", "int8"),
        default="uint8",
        help="int8 model's input/output tensor type (default: %(default)s)",
    )
    add_option(
        p,
        "--calibration-images",
        type=int,
        default=DEFAULT_CALIBRATION_STEPS,
        help="representative images drawn from the training split; warning below 100 (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for drawing the calibration images (default: %(default)s)")
    add_option(
        p,
        "--max-drop",
        type=float,
        default=DEFAULT_MAX_DROP,
        help="gate: a variant fails a split where it is significantly worse than the float model "
        "(exact McNemar) by more than this many accuracy points (default: %(default)s)",
    )
    add_option(
        p,
        "--min-agreement",
        type=float,
        default=DEFAULT_MIN_AGREEMENT,
        help="gate: a variant fails a split where its agreement with the float model is "
        "significantly below this fraction, exact binomial test (default: %(default)s)",
    )
    p.add_argument(
        "--significance",
        type=float,
        default=None,
        help=f"gate: p-value below which a test counts (default: the run's gate.significance, "
        f"else {DEFAULT_SIGNIFICANCE})",
    )
    add_option(
        p,
        "--min-balanced-accuracy",
        type=float,
        default=None,
        help="floor: a model below this balanced accuracy on unseen persons is never published "
        "(default: the run's gate.min_balanced_accuracy, else 0.55 for two labels)",
    )
    p.add_argument(
        "--labels",
        type=_csv_list,
        default=None,
        help="--from without model_info.json: labels in output order (default: sorted data labels)",
    )
    add_option(
        p,
        "--positive-label",
        type=str,
        default=None,
        help="--from, 1-unit models: the label a sigmoid output of 1.0 means (default: second sorted)",
    )
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default: model_info's or 0.5)")
    p.add_argument(
        "--preprocessing",
        type=str,
        default=None,
        help="--from: text for the manifest describing the model's in-model preprocessing",
    )
    add_option(
        p,
        "--child-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds allowed for loading each model in a child process (default: %(default)s)",
    )
    add_option(
        p,
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        help="logging level (default: %(default)s)",
    )
    return p


def run(run_dir: str | os.PathLike | None = None, **kw) -> dict:
    """Callable from tests: the same as the CLI (keyword names = flag names); returns convert.json's content."""
    from convert.pipeline import options_from
    from convert.pipeline import run as pipeline_run

    return pipeline_run(options_from(run=run_dir, **kw))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="convert: %(message)s", stream=sys.stderr)
    logging.getLogger("tensorflow").setLevel(max(logging.WARNING, logging.getLevelName(args.log_level)))
    # TensorFlow's C++ start-up chatter (CUDA probing on a CPU machine...); its real errors raise.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    options = {key: value for key, value in vars(args).items() if key not in ("run", "log_level")}
    try:
        summary = run(args.run, **options)
    except FaceedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    for variant, result in summary["variants"].items():
        ratio = result["size_ratio_to_float32"]
        worst = min(result["splits"].values(), key=lambda figures: figures["agreement"])
        accuracies = ", ".join(
            f"{split} {100 * figures['accuracy']:.1f}% {_ci(figures['accuracy_ci95'])} (n {figures['n']})"
            for split, figures in result["splits"].items()
        )
        print(
            f"{variant}: {result['status']}, {result['size_bytes']} bytes"
            + (f" ({ratio:.3f} of float32)" if ratio is not None else "")
            + f", accuracy {accuracies}, min agreement {100 * worst['agreement']:.2f}%, {result['path']}"
        )
        if result["status"] != "published":
            print(f"{variant}: {current_text(variant, result.get('current'))}")
    for note in summary["gate"].get("notes", []):
        print(f"note: gate: {note}")
    out = Path(summary["variants"][next(iter(summary["variants"]))]["path"]).parents[2]
    print(f"figures: {out / 'convert.json'}; report: {out / 'report.md'}")
    if not summary["gate"]["passed"]:
        for failure in summary["gate"]["failures"]:
            print(f"error: gate: {failure}", file=sys.stderr)
        return EXIT_GATE_FAILED
    return 0


def _ci(ci) -> str:
    return "[–]" if ci is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def current_text(variant: str, current: dict | None) -> str:
    """Which model of `variant` the device would load now, after a rejection."""
    if current is None:
        return f"no published {variant} model: export/{variant}/ does not exist (the device has nothing to load)"
    if current.get("status") != "published":
        return f"export/{variant}/ holds a model that is not publishable ({current.get('status')})"
    return (
        f"the published model is unchanged: {current['path']} (created {current.get('created') or '?'}, "
        f"sha256 {str(current.get('sha256'))[:12]}…)"
    )
