"""Keras callbacks of a run: history.csv, and model selection that survives a resume.

With patience > 0 the early stopping and the best-epoch checkpoint are both blind to a phase's first
``training.min_epochs`` epochs, so a run that sits at chance for its first epochs cannot select one of
them; on resume both start from what history.csv already holds. Patience 0: nothing selects an epoch.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np

from train.history import HISTORY_FIELDS


def _keras():
    import keras

    return keras


def phase_callbacks(
    work: Path,
    phase: str,
    *,
    attempt: int,
    train_images: int,
    monitor: str,
    patience: int,
    past: list[dict],
    start: int,
) -> tuple[list, Path]:
    """Backup, history, TensorBoard; with patience > 0 also the best-epoch checkpoint and early stopping,
    ignoring epochs (0-based) before `start`. Returns the callbacks and the best-weights path."""
    keras = _keras()
    best_path = work / f"best_{phase}.weights.h5"
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work / "backup" / phase), double_checkpoint=True),
        epoch_log(work / "history.csv", phase, attempt, train_images),
        keras.callbacks.TensorBoard(str(work / "tensorboard"), profile_batch=0),
    ]
    if patience > 0:
        callbacks[1:1] = [
            best_checkpoint(best_path, monitor, start, past),
            early_stopping(monitor, patience, past, start),
        ]
    return callbacks, best_path


def epoch_log(path: Path, phase: str, attempt: int, train_images: int):
    """The callback that appends one history.csv row per epoch (after the backup is saved), with wall
    time split into training and validation."""
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
                writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
                f.flush()
                os.fsync(f.fileno())

    return EpochLog()


def early_stopping(monitor: str, patience: int, history: list[dict], start: int):
    """EarlyStopping that ignores epochs (0-based) before `start` (Keras' start_from_epoch) and, on
    resume, starts from the best value and wait count in history.csv."""
    keras = _keras()
    past = [h for h in history if h.get(monitor) is not None and int(h["epoch"]) > start]

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if past:
                best_i = int(np.argmin([h[monitor] for h in past]))
                self.best = float(past[best_i][monitor])
                self.best_epoch = int(past[best_i]["epoch"]) - 1
                self.wait = len(past) - 1 - best_i

    return ResumableEarlyStopping(
        monitor=monitor, patience=patience, restore_best_weights=True, verbose=1, start_from_epoch=start
    )


def best_checkpoint(path: Path, monitor: str, start: int, past: list[dict]):
    """ModelCheckpoint of the best weights that, like the early stopping, ignores epochs before `start`."""
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
