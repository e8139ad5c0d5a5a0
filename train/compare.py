"""`python -m train compare RUN...`: runs side by side, as the original log compared its four runs.

Reads each run's config.yaml, metrics.json and history.csv; no TensorFlow needed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from device.errors import FaceedgeError
from train.history import read_history
from train.report import fmt_value

log = logging.getLogger(__name__)

ROWS = (
    ("backbone", "backbone"),
    ("input", "input"),
    ("weights", "weights"),
    ("batch", "batch"),
    ("augmentation", "aug"),
    ("trainable params", "trainable_params"),
    ("epochs run", "epochs_run"),
    ("best epoch", "best_epoch"),
    ("valid acc", "valid"),
    ("seen-holdout acc", "seen_holdout"),
    ("unseen-persons acc", "unseen_persons"),
    ("unseen balanced acc", "unseen_balanced"),
    ("unseen ROC AUC", "unseen_auc"),
    ("first epoch s", "first_epoch_s"),
    ("later epochs s", "later_epoch_s"),
    ("images/s", "images_per_s"),
)


def load_run(path: str | Path) -> dict:
    """The comparable figures of one complete run directory."""
    given = Path(path)
    if not given.exists():
        raise FaceedgeError(f"{given}: no such run directory")
    real = given.resolve()
    for name in ("metrics.json", "config.yaml"):
        if not (real / name).is_file():
            raise FaceedgeError(f"{given}: not a complete run ({name} missing)")
    try:
        metrics = json.loads((real / "metrics.json").read_text())
        cfg = yaml.safe_load((real / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise FaceedgeError(f"{given}: unreadable run files ({e})") from None
    model, aug, train = cfg.get("model", {}), cfg.get("augment", {}), cfg.get("training", {})
    timing = metrics.get("timing", {})
    aug_on = aug.get("enabled", True) and any(
        aug.get(key) for key in ("flip", "brightness", "contrast", "hue", "saturation", "noise")
    )
    backbone = model.get("backbone", "?")
    if backbone in ("mobilenet_v2", "simple_cnn"):
        backbone += f" a{model.get('alpha')}"
    fine_tune = train.get("fine_tune")
    return {
        "run": real.name,
        "backbone": backbone
        + ("" if model.get("freeze_backbone", True) else " (trained)")
        + (f" +ft{fine_tune.get('layers')}" if fine_tune else ""),
        "input": model.get("input_size"),
        "weights": Path(str(model.get("weights"))).name,
        "batch": train.get("batch_size"),
        "aug": "on" if aug_on else "off",
        "trainable_params": f"{metrics.get('trainable_params', 0):,}",
        "epochs_run": metrics["epochs_run"] if "epochs_run" in metrics else len(read_history(real / "history.csv")),
        "best_epoch": metrics.get("best_epoch"),
        "valid": metrics.get("valid", {}).get("accuracy"),
        "seen_holdout": metrics.get("seen_holdout", {}).get("accuracy"),
        "unseen_persons": metrics.get("unseen_persons", {}).get("accuracy"),
        "unseen_balanced": metrics.get("unseen_persons", {}).get("balanced_accuracy"),
        "unseen_auc": metrics.get("unseen_persons", {}).get("roc_auc"),
        "first_epoch_s": timing.get("first_epoch_seconds"),
        "later_epoch_s": timing.get("later_epochs_mean_seconds"),
        "images_per_s": timing.get("images_per_s"),
    }


def table(runs: list[dict], fmt: str = "text") -> str:
    header = ["", *[r["run"] for r in runs]]
    body = [[label, *[fmt_value(r[key], 1 if key.endswith("_s") else 3) for r in runs]] for label, key in ROWS]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in [header, *body]
    )


def run(paths: list[str | Path], fmt: str = "text") -> str:
    if not paths:
        raise FaceedgeError('no runs to compare (give run directories, e.g. make compare RUNS="runs/a runs/b")')
    runs, seen = [], set()
    for p in paths:
        real = Path(p).resolve()
        if real in seen:
            continue
        seen.add(real)
        if real.name.endswith(".incomplete"):
            log.warning("skipping %s: interrupted run (resume it with python -m train fit --resume)", p)
            continue
        runs.append(load_run(p))
    if not runs:
        raise FaceedgeError("no complete runs among the given directories")
    if fmt == "json":
        return json.dumps(runs, indent=2)
    return table(runs, fmt)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="print runs side by side",
        description="Print runs side by side: model, batch, augmentation, epochs, "
        "valid / seen-holdout / unseen-person accuracy, epoch time.",
    )
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN", help="run directories (runs/<name>-<timestamp>)")
    p.add_argument(
        "--format",
        dest="fmt",
        choices=["text", "markdown", "json"],
        default="text",
        help="output format (default: %(default)s)",
    )
    p.set_defaults(func=lambda args: print(run(args.runs, args.fmt)) or 0)
