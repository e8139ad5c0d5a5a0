"""Train one run: validate everything, then fit, evaluate and write the run directory.

A run is built in ``runs/<name>-<YYYYmmdd-HHMMSS>.incomplete/`` and renamed to its final name
only when everything is written, so a run directory without that suffix is always complete.
Nothing is created before the config, the data, the split and the model weights have all been
checked. A killed run keeps its ``.incomplete`` directory with Keras' BackupAndRestore state in
``backup/``; ``python -m train fit --resume DIR`` continues it at its next epoch.

Phases: ``head`` (or ``train`` when the backbone is trainable from the start) and, optionally,
``fine_tune`` (top N backbone layers unfrozen, small learning rate). With a frozen backbone and no
augmentation the head phase runs on backbone features computed once (the fast path).

Model selection: with ``training.patience`` > 0 the valid split chooses the epoch (lowest val_loss,
never one of a phase's first ``training.min_epochs``) and those weights are the saved model; with
patience 0 nothing is chosen, the last epoch's weights are kept. The seen-person holdout and the
unseen persons are only predicted after training: they never influence training or selection.

A model that did not learn (`train.verdict`: on unseen persons not better than chance, or below
``gate.min_balanced_accuracy``) ends the run with a one-line diagnosis and exit status 1, and the
run is not kept, unless ``--allow-weak`` keeps it (marked so in metrics.json and report.md; the
conversion gate never publishes it).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from device.errors import FaceedgeError
from device.files import atomic_write_bytes, require_writable_dir
from train import determinism, report, stats
from train.config import TrainConfig, dump_config, load_config, validate
from train.data import check_person_level, index_dataset, write_skipped_csv
from train.splits import (
    SplitRecord,
    class_weights,
    is_skewed,
    make_splits,
    read_splits_csv,
    split_summary,
    write_splits_csv,
)
from train.verdict import diagnose, floor_check, floor_split

log = logging.getLogger(__name__)

INCOMPLETE = ".incomplete"
STATE_FILE = "state.json"


class DidNotLearn(FaceedgeError):
    """The trained model failed the floor (train.verdict); the message is the one-line diagnosis."""

    exit_code = 1


# ------------------------------------------------------------------------------ run directory


def new_run_path(cfg: TrainConfig, timestamp: str | None = None) -> Path:
    runs = Path(cfg.run.runs_dir)
    ts = timestamp or datetime.now().strftime("%Y%m%d-%H%M%S")
    final = runs / f"{cfg.run.name}-{ts}"
    for p in (final, final.with_name(final.name + INCOMPLETE)):
        if p.exists() or p.is_symlink():
            raise FaceedgeError(f"run directory {p} already exists (choose another run.name)")
    return final


def update_latest(final: Path) -> None:
    """runs/latest → final, replaced atomically (symlink to a temp name, then os.replace)."""
    link = final.parent / "latest"
    tmp = final.parent / f".latest.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(final.name, tmp)
    os.replace(tmp, link)


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


# ------------------------------------------------------------------------------ callbacks


def _keras():
    import keras

    return keras


class _EpochLog:
    """Factory for the callback that appends one history.csv row per epoch (after the backup is saved),
    with wall time split into training and validation."""

    @staticmethod
    def make(path: Path, phase: str, attempt: int, train_images: int):
        keras = _keras()

        class EpochLog(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._t0 = time.perf_counter()
                self._t_val = None

            def on_test_begin(self, logs=None):
                if getattr(self, "_t_val", 1) is None:
                    self._t_val = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                now = time.perf_counter()
                train_s = (self._t_val or now) - self._t0
                lr = getattr(self.model.optimizer, "learning_rate", None)
                try:
                    lr = float(np.asarray(lr))
                except (TypeError, ValueError):
                    lr = None
                row = {
                    "epoch": epoch + 1,
                    "phase": phase,
                    "attempt": attempt,
                    "seconds": round(now - self._t0, 4),
                    "train_seconds": round(train_s, 4),
                    "images_per_s": round(train_images / train_s, 2) if train_s > 0 else "",
                    "loss": logs.get("loss"),
                    "accuracy": logs.get("accuracy"),
                    "val_loss": logs.get("val_loss"),
                    "val_accuracy": logs.get("val_accuracy"),
                    "learning_rate": lr,
                }
                new = not path.exists()
                with open(path, "a", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=report.HISTORY_FIELDS)
                    if new:
                        w.writeheader()
                    w.writerow({k: ("" if v is None else v) for k, v in row.items()})
                    f.flush()
                    os.fsync(f.fileno())

        return EpochLog()


def _early_stopping(monitor: str, patience: int, history: list[dict], start: int):
    """EarlyStopping that ignores epochs (0-based) before `start` (Keras' start_from_epoch) and, on
    resume, starts from the best value and wait count in history.csv."""
    keras = _keras()
    key = monitor
    past = [h for h in history if h.get(key) is not None and int(h["epoch"]) > start]

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if past:
                best_i = int(np.argmin([h[key] for h in past]))
                self.best = float(past[best_i][key])
                self.best_epoch = int(past[best_i]["epoch"]) - 1
                self.wait = len(past) - 1 - best_i

    return ResumableEarlyStopping(
        monitor=monitor, patience=patience, restore_best_weights=True, verbose=1, start_from_epoch=start
    )


def _best_checkpoint(path: Path, monitor: str, start: int, past: list[dict]):
    """ModelCheckpoint of the best weights that, like the early stopping, ignores epochs before `start`,
    so a run that sits at chance for its first epochs cannot select one of them."""
    keras = _keras()
    eligible = [h[monitor] for h in past if h.get(monitor) is not None and int(h["epoch"]) > start]

    class BestAfterStart(keras.callbacks.ModelCheckpoint):
        def on_epoch_end(self, epoch, logs=None):
            if epoch >= start:
                super().on_epoch_end(epoch, logs)

    return BestAfterStart(
        str(path),
        monitor=monitor,
        save_best_only=True,
        save_weights_only=True,
        initial_value_threshold=min(eligible, default=None),
    )


# ------------------------------------------------------------------------------ the run


@dataclass
class Plan:
    cfg: TrainConfig
    final: Path  # runs/<name>-<ts>
    work: Path  # runs/<name>-<ts>.incomplete
    splits: list[SplitRecord]
    labels: list[str]
    data_root: str
    index_info: dict
    resumed: bool = False
    attempt: int = 0
    extra: dict = field(default_factory=dict)

    def split(self, name: str) -> list[SplitRecord]:
        return [s for s in self.splits if s.split == name]


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
    final = new_run_path(cfg, timestamp)
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


def prepare_resume(run_dir: str | Path) -> Plan:
    work = Path(run_dir)
    if not work.is_dir():
        raise FaceedgeError(f"--resume {work}: no such run directory")
    require_writable_dir(work, "--resume")
    if not work.name.endswith(INCOMPLETE):
        if (work / "metrics.json").is_file():
            raise FaceedgeError(f"--resume {work}: this run is complete (nothing to resume)")
        raise FaceedgeError(f"--resume {work}: not an interrupted run (expected a *{INCOMPLETE} directory)")
    for name in ("config.yaml", "splits.csv", STATE_FILE):
        if not (work / name).is_file():
            raise FaceedgeError(
                f"--resume {work}: {name} is missing; the run was killed before training started "
                f"(delete it and start again)"
            )
    from train.config import load_raw

    cfg = validate(load_raw(work / "config.yaml"), str(work / "config.yaml"))
    state = json.loads((work / STATE_FILE).read_text())
    splits = read_splits_csv(work / "splits.csv")
    final = work.with_name(work.name[: -len(INCOMPLETE)])
    if final.exists():
        raise FaceedgeError(f"--resume {work}: {final} already exists")
    return Plan(
        cfg=cfg,
        final=final,
        work=work,
        splits=splits,
        labels=state["labels"],
        data_root=state["data_root"],
        index_info=state["index_info"],
        resumed=True,
        attempt=int(state.get("attempt", 0)) + 1,
        extra=state,
    )


def _strategy(cfg: TrainConfig):
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    mode = cfg.training.distribute
    if mode == "mirrored" or (mode == "auto" and len(gpus) > 1):
        strategy = tf.distribute.MirroredStrategy()
        n = strategy.num_replicas_in_sync
        return strategy, f"MirroredStrategy over {n} device{'s' if n != 1 else ''}"
    return tf.distribute.get_strategy(), f"default strategy ({len(gpus)} GPU{'s' if len(gpus) != 1 else ''})"


def _class_weights(plan: Plan) -> tuple[dict[int, float] | None, str]:
    mode = plan.cfg.data.class_weights
    train_labels = [s.label for s in plan.split("train")]
    counts = {lbl: train_labels.count(lbl) for lbl in plan.labels}
    if mode == "off":
        return None, f"off (train counts {counts})"
    skewed = is_skewed(counts)
    if mode == "auto" and not skewed:
        return None, f"none (auto: train classes balanced enough, {counts})"
    weights = class_weights(plan.splits, plan.labels)
    text = ", ".join(f"{plan.labels[i]}: {w:.3f}" for i, w in weights.items())
    return weights, f"{text} ({'auto: skewed' if mode == 'auto' else 'on'}, train counts {counts})"


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
        plan, index = prepare_resume(resume), None
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
        work = plan.work
        started = time.perf_counter()
        if not plan.resumed:
            try:
                work.mkdir(parents=True)
            except FileExistsError:  # another run of the same name started in the same second
                raise FaceedgeError(f"run directory {work} already exists (choose another run.name)") from None
            try:
                _write_text(work / "config.yaml", dump_config(cfg))
                write_splits_csv(plan.splits, work / "splits.csv")
                write_skipped_csv(index, work / "skipped.csv")
                _save_state(plan, phases_done=[])
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
        else:
            shutil.rmtree(work / "cache", ignore_errors=True)  # a killed run may leave a half-written file cache
            _save_state(plan, phases_done=plan.extra.get("phases_done", []))
            log.info("resuming %s (attempt %d)", work, plan.attempt)
        try:
            result = _fit_and_report(plan, built, strategy, strategy_text, started, allow_weak=allow_weak)
        except DidNotLearn:
            raise
        except BaseException as e:
            if work.is_dir():
                log.warning(
                    "run stopped (%s); the partial run stays in %s: continue it with "
                    "`python -m train fit --resume %s`, or delete it",
                    type(e).__name__,
                    work,
                    work,
                )
            raise
    finally:
        models.set_mixed_precision(False)
    return result


def _save_state(plan: Plan, phases_done: list[str], **more) -> None:
    state = {
        "labels": plan.labels,
        "data_root": plan.data_root,
        "index_info": plan.index_info,
        "attempt": plan.attempt,
        "phases_done": phases_done,
    }
    state.update({k: v for k, v in plan.extra.items() if k not in state})
    state.update(more)
    plan.extra.update(state)
    atomic_write_bytes(plan.work / STATE_FILE, json.dumps(state, indent=2).encode())


def _fit_and_report(
    plan: Plan, built, strategy, strategy_text: str, started: float, *, allow_weak: bool = False
) -> Path:
    import keras
    import tensorflow as tf

    from train import models, pipeline

    cfg, work = plan.cfg, plan.work
    binary = built.output_kind == "sigmoid"
    label_ix = {lbl: i for i, lbl in enumerate(plan.labels)}
    label_dtype = tf.float32 if binary else tf.int32
    size = cfg.model.input_size
    bs = cfg.training.batch_size
    train_recs, valid_recs = plan.split("train"), plan.split("valid")
    if not train_recs:
        raise FaceedgeError("the train split is empty (too few images for the requested fractions)")
    y_train = np.array([label_ix[s.label] for s in train_recs])
    y_valid = np.array([label_ix[s.label] for s in valid_recs])
    weights, weights_text = _class_weights(plan)
    monitor = "val_loss" if valid_recs else "loss"
    loss = "binary_crossentropy" if binary else "sparse_categorical_crossentropy"
    hist_path = work / "history.csv"

    def image_ds(recs, y, training, tag):
        return pipeline.image_dataset(
            [s.path for s in recs],
            y,
            size,
            batch_size=bs,
            training=training,
            cache=cfg.pipeline.cache,
            cache_path=work / "cache" / tag,
            shuffle_buffer=cfg.pipeline.shuffle_buffer,
            seed=cfg.training.seed,
            augment=cfg.augment if training else None,
            prefetch=cfg.pipeline.prefetch,
            label_dtype=label_dtype,
        )

    patience, min_epochs = cfg.training.patience, cfg.training.min_epochs

    def callbacks(phase: str, past: list[dict], start: int):
        """Backup, history, TensorBoard; with patience > 0 also early stopping and the best-epoch checkpoint
        (both blind to the phase's first min_epochs epochs). Patience 0: nothing selects an epoch."""
        best_path = work / f"best_{phase}.weights.h5"
        cbs = [
            keras.callbacks.BackupAndRestore(str(work / "backup" / phase), double_checkpoint=True),
            _EpochLog.make(hist_path, phase, plan.attempt, len(train_recs)),
            keras.callbacks.TensorBoard(str(work / "tensorboard"), profile_batch=0),
        ]
        if patience > 0:
            cbs[1:1] = [
                _best_checkpoint(best_path, monitor, start, past),
                _early_stopping(monitor, patience, past, start),
            ]
        return cbs, best_path

    def fit_phase(phase: str, model, train_ds, valid_ds, lr: float, epochs_from: int, epochs_to: int) -> None:
        past = [h for h in report.read_history(hist_path) if h["phase"] == phase]
        with strategy.scope():
            model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=["accuracy"])
        cbs, best_path = callbacks(phase, past, epochs_from + min_epochs)
        log.info(
            "phase %s: epochs %d..%d, lr %g, %d trainable parameters",
            phase,
            epochs_from + 1,
            epochs_to,
            lr,
            models.trainable_params(model),
        )
        model.fit(
            train_ds,
            validation_data=valid_ds,
            epochs=epochs_to,
            initial_epoch=epochs_from,
            class_weight=weights,
            callbacks=cbs,
            verbose=cfg.training.verbose,
            shuffle=False,
        )
        if patience > 0 and best_path.is_file():  # the chosen epoch, also across a resume (EarlyStopping
            model.load_weights(str(best_path))  # only knows this session)
        built.model.save_weights(str(work / f"phase_{phase}.weights.h5"))  # the full model (head layers shared)
        done = plan.extra.get("phases_done", []) + [phase]
        _save_state(plan, phases_done=done)

    fit_info: dict = {
        "monitor": monitor,
        "strategy": strategy_text,
        "class_weights_text": weights_text,
        "class_weights": {plan.labels[i]: w for i, w in weights.items()} if weights else None,
        "trainable_params": models.trainable_params(built.model),
        "total_params": models.total_params(built.model),
    }
    phase1 = "head" if cfg.model.freeze_backbone else "train"
    fast = cfg.model.freeze_backbone and not cfg.augment.active and cfg.pipeline.feature_cache
    fit_info["fast_path"] = fast
    timing_extra: dict = {}
    done = plan.extra.get("phases_done", [])

    if phase1 in done:
        built.model.load_weights(str(work / f"phase_{phase1}.weights.h5"))
    elif fast:
        feats_dir = work / "features"
        t0 = time.perf_counter()
        feats = {}
        for tag, recs, y in (("train", train_recs, y_train), ("valid", valid_recs, y_valid)):
            f = feats_dir / f"{tag}.npy"
            if f.is_file():
                feats[tag] = np.load(f)
            elif recs:
                ds = pipeline.image_dataset(
                    [s.path for s in recs], y, size, batch_size=bs, cache="none", prefetch=True, label_dtype=label_dtype
                )
                feats[tag] = built.feature_model.predict(ds.map(lambda x, _: x), verbose=0)
                feats_dir.mkdir(exist_ok=True)
                np.save(f, feats[tag])
        timing_extra["feature_extraction_seconds"] = round(time.perf_counter() - t0, 3)
        plan.extra["feature_extraction_seconds"] = timing_extra["feature_extraction_seconds"]
        train_ds = pipeline.array_dataset(
            feats["train"],
            y_train,
            batch_size=bs,
            training=True,
            seed=cfg.training.seed,
            label_dtype=np.float32 if binary else np.int32,
        )
        valid_ds = (
            pipeline.array_dataset(
                feats["valid"], y_valid, batch_size=bs, label_dtype=np.float32 if binary else np.int32
            )
            if valid_recs
            else None
        )
        fit_phase(phase1, built.head_model, train_ds, valid_ds, cfg.training.learning_rate, 0, cfg.training.epochs)
        shutil.rmtree(feats_dir, ignore_errors=True)
    else:
        train_ds = image_ds(train_recs, y_train, True, "train")
        valid_ds = image_ds(valid_recs, y_valid, False, "valid") if valid_recs else None
        fit_phase(phase1, built.model, train_ds, valid_ds, cfg.training.learning_rate, 0, cfg.training.epochs)
    if "feature_extraction_seconds" in plan.extra:
        timing_extra["feature_extraction_seconds"] = plan.extra["feature_extraction_seconds"]

    phase1_epochs = len([h for h in report.read_history(hist_path) if h["phase"] == phase1])
    ft = cfg.training.fine_tune
    if ft is not None:
        n = models.unfreeze_top(built.backbone, ft.layers)
        fit_info["fine_tune_trainable_params"] = models.trainable_params(built.model)
        fit_info["fine_tune_layers_unfrozen"] = n
        if "fine_tune" in plan.extra.get("phases_done", []):
            built.model.load_weights(str(work / "phase_fine_tune.weights.h5"))
        else:
            train_ds = image_ds(train_recs, y_train, True, "train")
            valid_ds = image_ds(valid_recs, y_valid, False, "valid") if valid_recs else None
            fit_phase(
                "fine_tune", built.model, train_ds, valid_ds, ft.learning_rate, phase1_epochs, phase1_epochs + ft.epochs
            )
    train_seconds = time.perf_counter() - started

    # ---- evaluate every split with the full raw-pixels-in model (the one that is saved)
    history = report.read_history(hist_path)
    metrics: dict = {"labels": plan.labels, "output_kind": built.output_kind, "threshold": 0.5}
    per_person: list[dict] = []
    preds: dict[str, tuple] = {}
    for split in report.EVAL_SPLITS:
        recs = plan.split(split)
        y = np.array([label_ix[s.label] for s in recs], np.int64)
        if recs:
            ds = pipeline.image_dataset(
                [s.path for s in recs], y, size, batch_size=bs, cache="none", label_dtype=label_dtype
            )
            probs = built.model.predict(ds.map(lambda x, _: x), verbose=0).astype(np.float64)
        else:
            probs = np.zeros((0, 1 if binary else len(plan.labels)))
        metrics[split] = report.split_metrics(y, probs, built.output_kind, len(plan.labels))
        pred = report.predicted_classes(probs, built.output_kind)
        per_person += report.per_person(split, [s.person for s in recs], y, pred)
        preds[split] = (recs, y, probs, pred)
    metrics["per_person"] = per_person
    timing = report.timing_summary(history, len(train_recs))
    timing.update(timing_extra)
    timing["run_seconds"] = round(train_seconds, 2)
    metrics["timing"] = timing
    metrics["class_weights"] = fit_info["class_weights"]
    metrics["class_weights_text"] = weights_text
    selection = _selection(history, monitor, patience, min_epochs)
    best = selection["best_epoch"]
    fit_info.update(
        epochs_run=len(history),
        best_epoch=best,
        selection=selection,
        stopped_early=len([h for h in history if h["phase"] == phase1]) < cfg.training.epochs,
    )
    metrics["epochs_run"] = len(history)
    metrics["best_epoch"] = best
    metrics["selection"] = selection
    metrics["trainable_params"] = fit_info["trainable_params"]
    metrics["total_params"] = fit_info["total_params"]
    summary = split_summary(plan.splits)
    metrics["splits"] = summary["images"]
    metrics["persons"] = {s: len(summary["persons"][s]) for s in report.EVAL_SPLITS}
    metrics["fast_path"] = fast
    metrics["reproducibility"] = plan.extra.get("reproducibility", {})
    verdict = _verdict(plan, metrics, history)
    metrics["verdict"] = verdict

    # ---- artefacts
    spec = built.spec
    info = {
        "labels": plan.labels,
        "positive_label": plan.labels[1] if binary else None,
        "output_kind": built.output_kind,
        "threshold": 0.5,
        "input_size": [size, size],
        "backbone": spec.name,
        "alpha": float(cfg.model.alpha) if spec.uses_alpha else None,
        "preprocessing": spec.preprocessing,
        "resize_method": "bilinear",
        "data_root": str(Path(plan.data_root).resolve()),
    }
    built.model.save(str(work / "model.keras"))
    report.write_json(work / "model_info.json", info)
    report.write_json(work / "metrics.json", metrics)
    ft_from = phase1_epochs if ft is not None else None
    report.plot_curves(history, work / "curves.png", ft_from, title=f"{plan.final.name}: {spec.name}")
    for split, fname, title in (
        ("seen_holdout", "predictions_seen.png", "seen persons, new images"),
        ("unseen_persons", "predictions_unseen.png", "unseen persons"),
    ):
        recs, y, probs, pred = preds[split]
        right = [bool(p == t) for p, t in zip(pred, y)]
        idx = report.pick_grid(right, [s.person for s in recs])
        imgs = pipeline.load_images([recs[i].path for i in idx], size)
        conf = [
            float(probs[i].max()) if not binary else float(probs[i][0] if pred[i] else 1 - probs[i][0]) for i in idx
        ]
        report.plot_predictions(
            imgs,
            [recs[i].label for i in idx],
            [plan.labels[pred[i]] for i in idx],
            conf,
            [recs[i].person for i in idx],
            work / fname,
            report.grid_caption(title, metrics[split], right, idx),
        )
    report.write_report(
        work,
        cfg=cfg,
        info=info,
        metrics=metrics,
        summary=summary,
        history=history,
        index_info=plan.index_info,
        fit_info=fit_info,
        title=plan.final.name,
    )
    if not verdict["learned"] and not allow_weak:
        shutil.rmtree(work, ignore_errors=True)
        raise DidNotLearn(f"{verdict['diagnosis']} (run not kept; --allow-weak keeps it to inspect)")
    # ---- tidy up and publish atomically
    for p in [
        work / "backup",
        work / "cache",
        work / "features",
        work / STATE_FILE,
        *work.glob("best_*.weights.h5"),
        *work.glob("phase_*.weights.h5"),
    ]:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()
    os.rename(work, plan.final)
    update_latest(plan.final)
    if not verdict["learned"]:
        log.warning(
            "%s (kept with --allow-weak: %s; the conversion gate will not publish it)", verdict["diagnosis"], plan.final
        )
    log.info("run written to %s", plan.final)
    return plan.final


def _selection(history: list[dict], monitor: str, patience: int, min_epochs: int) -> dict:
    """Which epoch's weights the model has, and what chose it (the last phase is the one that counts).

    patience > 0: the epoch with the lowest `monitor` after the phase's first `min_epochs` (what the
    checkpoint restored); patience 0: the last epoch, nothing chosen."""
    if not history:
        return {"by": None, "monitor": monitor, "epoch": None, "best_epoch": None, "min_epochs": min_epochs}
    rows = [h for h in history if h["phase"] == history[-1]["phase"]]
    first_eligible = int(rows[0]["epoch"]) + min_epochs  # epoch numbers are 1-based
    eligible = [h for h in rows if int(h["epoch"]) >= first_eligible and h.get(monitor) is not None]
    best = min(eligible, key=lambda h: (h[monitor], int(h["epoch"]))) if eligible else None
    chosen = patience > 0 and best is not None
    return {
        "by": ("valid" if monitor == "val_loss" else "train") if chosen else None,
        "monitor": monitor,
        "epoch": int(best["epoch"]) if chosen else int(rows[-1]["epoch"]),
        "best_epoch": int(best["epoch"]) if best is not None else None,
        "min_epochs": min_epochs,
        "first_eligible_epoch": first_eligible,
    }


def _verdict(plan: Plan, metrics: dict, history: list[dict]) -> dict:
    """The floor (train.verdict) on unseen persons (else the seen holdout, else valid), with the diagnosis."""
    cfg = plan.cfg
    split = floor_split({s: metrics[s]["count"] for s in report.EVAL_SPLITS})
    if split is None:
        return {
            "learned": True,
            "split": None,
            "diagnosis": None,
            "note": "no evaluation split has images: whether the model learned was not measured",
        }
    m = metrics[split]
    chk = floor_check(
        m["confusion_matrix"],
        m["balanced_accuracy"],
        significance=cfg.gate.significance,
        min_balanced_accuracy=cfg.gate.min_balanced_accuracy,
    )
    out = {"learned": chk["passed"], "split": split, **chk, "diagnosis": None}
    if not chk["passed"]:
        out["diagnosis"] = diagnose(
            chk,
            split,
            labels=plan.labels,
            cm=m["confusion_matrix"],
            history=history,
            epochs=cfg.training.epochs,
            patience=cfg.training.patience,
            min_epochs=cfg.training.min_epochs,
            frozen_random_backbone=cfg.model.weights == "none" and cfg.model.freeze_backbone,
        )
    return out


# ------------------------------------------------------------------------------ CLI


def add_parser(subparsers) -> None:
    import argparse

    p = subparsers.add_parser(
        "fit",
        help="train a model into runs/<name>-<timestamp>/",
        description="Train from a YAML config (see configs/). Any key can be overridden with --set; "
        "a killed run is continued with --resume.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    p.add_argument(
        "--allow-weak",
        "--allow_weak",
        dest="allow_weak",
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
        m = metrics[split]
        if m["count"]:
            print(
                f"  {split:15s} accuracy {m['accuracy']:.3f} {stats.fmt_ci(m.get('accuracy_ci95'))}  "
                f"balanced {m['balanced_accuracy']:.3f}  ({m['count']} images, "
                f"{metrics['persons'][split]} persons)"
            )
    t = metrics["timing"]
    sel = metrics["selection"]
    chosen = (
        f"weights of epoch {sel['epoch']}, chosen by the {sel['by']} split's {sel['monitor']}"
        if sel["by"]
        else f"weights of the last epoch ({sel['epoch']}), none chosen"
    )
    print(
        f"  epochs {metrics['epochs_run']} ({chosen}), first epoch {t['first_epoch_seconds']} s, "
        f"later {t['later_epochs_mean_seconds']} s, run {t['run_seconds']} s"
    )
    v = metrics["verdict"]
    if not v["learned"]:
        print(f"  WARNING {v['diagnosis']} (kept with --allow-weak; convert will not publish it)")
    print(f"  report: {final / 'report.md'}")
    return 0
