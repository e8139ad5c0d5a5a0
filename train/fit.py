"""Train one run: validate everything, then fit, evaluate, write the run directory and publish it.

Nothing is created before the config, the data, the split and the model weights have all been checked;
then the run is built in ``runs/<name>-<YYYYmmdd-HHMMSS>.incomplete/`` and renamed to its final name only
when everything is written (train.rundir). A killed run keeps its ``.incomplete`` directory with Keras'
BackupAndRestore state in ``backup/``; ``python -m train fit --resume DIR`` continues it at its next epoch.

The steps, each in its own module: fit the phases (train.phases: head or train, then optionally
fine_tune; the fast path on cached backbone features), evaluate every split and choose nothing from the
seen-person holdout or the unseen persons (train.evaluate), write the artefacts (train.artefacts),
publish (train.rundir).

A model that did not learn (`train.verdict`: on unseen persons not better than chance, or below
``gate.min_balanced_accuracy``) ends the run with a one-line diagnosis and exit status 1, and the
run is not kept, unless ``--allow-weak`` keeps it (marked so in metrics.json and report.md; the
conversion gate never publishes it).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from device.errors import FaceedgeError
from device.flags import add_option
from device.files import require_writable_dir
from train import artefacts, determinism, evaluate, report, rundir, stats
from train.history import read_history
from train.config import TrainConfig, load_config
from train.data import check_person_level, index_dataset
from train.phases import PhaseFitter
from train.rundir import INCOMPLETE, Plan
from train.splits import make_splits

log = logging.getLogger(__name__)


class DidNotLearn(FaceedgeError):
    """The trained model failed the floor (train.verdict); the message is the one-line diagnosis."""

    exit_code = 1


def prepare(
    config_path: str | Path | None,
    overrides: list[str] | None = None,
    *,
    timestamp: str | None = None,
    cfg: TrainConfig | None = None,
) -> tuple[Plan, object]:
    """Validate config, data, split and model weights — everything — before writing anything.
    Returns the plan and the data index (for skipped.csv)."""
    cfg = cfg or load_config(config_path, overrides)
    final = rundir.new_run_path(cfg, timestamp)
    require_writable_dir(cfg.run.runs_dir, "run.runs_dir")  # now, not after TensorFlow's start-up
    index = index_dataset(cfg.data.root, max_bad_fraction=cfg.data.max_bad_fraction)
    check_person_level(index, require=cfg.data.require_persons)
    counts = index.counts()  # index_dataset has checked: at least two labels, none without images
    splits = make_splits(
        index.records,
        holdout_persons=cfg.data.holdout_persons,
        valid_fraction=cfg.data.valid_fraction,
        seen_holdout_fraction=cfg.data.seen_holdout_fraction,
        seed=cfg.data.split_seed,
    )
    index_info = {
        "root": index.source,
        "layout": index.layout,
        "images": len(index.records),
        "counts": counts,
        "skipped": len(index.skipped),
        "has_persons": index.has_persons,
    }
    plan = Plan(
        cfg=cfg,
        final=final,
        work=final.with_name(final.name + INCOMPLETE),
        splits=splits,
        labels=list(index.labels),
        data_root=index.source,
        index_info=index_info,
    )
    return plan, index


def _strategy(cfg: TrainConfig):
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    mode = cfg.training.distribute
    if mode == "mirrored" or (mode == "auto" and len(gpus) > 1):
        strategy = tf.distribute.MirroredStrategy()
        n = strategy.num_replicas_in_sync
        return strategy, f"MirroredStrategy over {n} device{'s' if n != 1 else ''}"
    return tf.distribute.get_strategy(), f"default strategy ({len(gpus)} GPU{'s' if len(gpus) != 1 else ''})"


def run(
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    resume: str | Path | None = None,
    timestamp: str | None = None,
    cfg: TrainConfig | None = None,
    allow_weak: bool = False,
) -> Path:
    """Train; returns the final run directory. Raises FaceedgeError for bad input (nothing written), and
    DidNotLearn (exit status 1, the run not kept) for a model below the floor unless `allow_weak`."""
    if resume is not None:
        plan, index = rundir.prepare_resume(resume), None
    else:
        plan, index = prepare(config_path, overrides, timestamp=timestamp, cfg=cfg)
    return _train(plan, index, allow_weak=allow_weak)


def _train(plan: Plan, index, *, allow_weak: bool = False) -> Path:
    from train import models

    cfg = plan.cfg
    # before TensorFlow's runtime starts (_strategy lists devices) and before the model is built
    plan.extra["reproducibility"] = determinism.configure(
        cfg.training.seed, cfg.training.deterministic, cfg.training.threads
    )
    models.set_mixed_precision(cfg.training.mixed_precision)
    strategy, strategy_text = _strategy(cfg)
    try:
        with strategy.scope():
            built = models.build_model(cfg.model, len(plan.labels), mixed_precision=cfg.training.mixed_precision)
        # ---- all input validated: from here on we write (into the .incomplete directory)
        started = time.perf_counter()
        if plan.resumed:
            rundir.reopen(plan)
        else:
            rundir.create(plan, index)
        try:
            return _fit_evaluate_publish(plan, built, strategy, strategy_text, started, allow_weak=allow_weak)
        except DidNotLearn:
            raise
        except BaseException as e:
            if plan.work.is_dir():
                log.warning(
                    "run stopped (%s); the partial run stays in %s: continue it with "
                    "`python -m train fit --resume %s`, or delete it",
                    type(e).__name__,
                    plan.work,
                    plan.work,
                )
            raise
    finally:
        models.set_mixed_precision(False)


def _fit_evaluate_publish(
    plan: Plan, built, strategy, strategy_text: str, started: float, *, allow_weak: bool = False
) -> Path:
    fitted = PhaseFitter(plan, built, strategy, strategy_text).run(started)
    history = read_history(plan.work / "history.csv")
    predictions = evaluate.predict_splits(plan, built)
    metrics = evaluate.build_metrics(plan, built, predictions, history, fitted)
    artefacts.write_run_files(plan, built, metrics=metrics, predictions=predictions, history=history, fitted=fitted)
    verdict = metrics["verdict"]
    if not verdict["learned"] and not allow_weak:
        rundir.discard(plan)
        raise DidNotLearn(f"{verdict['diagnosis']} (run not kept; --allow-weak keeps it to inspect)")
    final = rundir.publish(plan)
    if not verdict["learned"]:
        log.warning(
            "%s (kept with --allow-weak: %s; the conversion gate will not publish it)", verdict["diagnosis"], final
        )
    log.info("run written to %s", final)
    return final


# ------------------------------------------------------------------------------ CLI


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "fit",
        help="train a model into runs/<name>-<timestamp>/",
        description="Train from a YAML config (see configs/). Any key can be overridden with --set; "
        "a killed run is continued with --resume.",
    )
    p.add_argument("--config", type=Path, default=None, help="YAML config (e.g. configs/sample.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.epochs=3 (repeatable; YAML values)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run (a runs/*.incomplete directory) at its next epoch",
    )
    add_option(
        p,
        "--allow-weak",
        action="store_true",
        help="keep a run whose model did not learn (not better than chance on unseen persons, or "
        "below gate.min_balanced_accuracy) to inspect it; without it such a run ends with exit "
        "status 1 and a one-line diagnosis, and is not kept",
    )
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    if args.resume is None and args.config is None:
        raise FaceedgeError("fit needs --config FILE (or --resume RUN_DIR)")
    if args.resume is not None and (args.config is not None or args.overrides):
        raise FaceedgeError("--resume takes the run's own config.yaml; drop --config/--set")
    try:
        final = run(args.config, args.overrides, resume=args.resume, allow_weak=args.allow_weak)
    except KeyboardInterrupt:
        log.warning("interrupted; continue with: python -m train fit --resume <the runs/*%s directory>", INCOMPLETE)
        raise
    print(f"run: {final}")
    metrics = json.loads((final / "metrics.json").read_text())
    for split in report.EVAL_SPLITS:
        figures = metrics[split]
        if figures["count"]:
            print(
                f"  {split:15s} accuracy {figures['accuracy']:.3f} {stats.fmt_ci(figures.get('accuracy_ci95'))}  "
                f"balanced {figures['balanced_accuracy']:.3f}  ({figures['count']} images, "
                f"{metrics['persons'][split]} persons)"
            )
    timing = metrics["timing"]
    selection = metrics["selection"]
    chosen = (
        f"weights of epoch {selection['epoch']}, chosen by the {selection['by']} split's {selection['monitor']}"
        if selection["by"]
        else f"weights of the last epoch ({selection['epoch']}), none chosen"
    )
    print(
        f"  epochs {metrics['epochs_run']} ({chosen}), first epoch {timing['first_epoch_seconds']} s, "
        f"later {timing['later_epochs_mean_seconds']} s, run {timing['run_seconds']} s"
    )
    verdict = metrics["verdict"]
    if not verdict["learned"]:
        print(f"  WARNING {verdict['diagnosis']} (kept with --allow-weak; convert will not publish it)")
    print(f"  report: {final / 'report.md'}")
    return 0
