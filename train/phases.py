"""Fit a run's phases: ``head`` (or ``train`` when the backbone is trainable from the start) and,
optionally, ``fine_tune`` (top N backbone layers unfrozen, small learning rate).

With a frozen backbone and no augmentation the head phase runs on backbone features computed once
(the fast path). Each finished phase saves the full model's weights and is recorded in state.json,
so a resumed run loads it instead of fitting it again.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass

import numpy as np

from device.errors import FaceedgeError
from train import rundir
from train.callbacks import phase_callbacks
from train.history import read_history
from train.rundir import Plan
from train.splits import SplitRecord, class_weights, is_skewed

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What the fit did, for the metrics and report.md."""

    info: dict  # report.md's Info: strategy, class weights, parameters, fast path, ...
    timing: dict  # timing figures beside the epochs' (feature extraction)
    first_phase: str  # "head" or "train"
    first_phase_epochs: int
    fine_tuned: bool
    fast_path: bool
    monitor: str  # val_loss, or loss without a valid split
    train_images: int
    train_seconds: float


def choose_class_weights(plan: Plan) -> tuple[dict[int, float] | None, str]:
    """The class weights data.class_weights asks for (auto: only for skewed train classes), and their text."""
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


class PhaseFitter:
    """Fits the phases of one run into its .incomplete directory (`plan.work`)."""

    def __init__(self, plan: Plan, built, strategy, strategy_text: str):
        import tensorflow as tf

        cfg = plan.cfg
        self.plan, self.built, self.strategy, self.strategy_text = plan, built, strategy, strategy_text
        self.binary = built.output_kind == "sigmoid"
        self.label_dtype = tf.float32 if self.binary else tf.int32
        self.train_records, self.valid_records = plan.split("train"), plan.split("valid")
        if not self.train_records:
            raise FaceedgeError("the train split is empty (too few images for the requested fractions)")
        label_index = {lbl: i for i, lbl in enumerate(plan.labels)}
        self.y_train = np.array([label_index[s.label] for s in self.train_records])
        self.y_valid = np.array([label_index[s.label] for s in self.valid_records])
        self.class_weights, self.class_weights_text = choose_class_weights(plan)
        self.monitor = "val_loss" if self.valid_records else "loss"
        self.loss = "binary_crossentropy" if self.binary else "sparse_categorical_crossentropy"
        self.history_path = plan.work / "history.csv"
        self.first_phase = "head" if cfg.model.freeze_backbone else "train"
        self.fast_path = cfg.model.freeze_backbone and not cfg.augment.active and cfg.pipeline.feature_cache

    def run(self, started: float) -> FitResult:
        """Fit (or, on resume, load) every phase; `started` is when the run's clock started."""
        from train import models

        cfg, built, work = self.plan.cfg, self.built, self.plan.work
        info: dict = {
            "monitor": self.monitor,
            "strategy": self.strategy_text,
            "class_weights_text": self.class_weights_text,
            "class_weights": (
                {self.plan.labels[i]: w for i, w in self.class_weights.items()} if self.class_weights else None
            ),
            "trainable_params": models.trainable_params(built.model),
            "total_params": models.total_params(built.model),
            "fast_path": self.fast_path,
        }
        timing: dict = {}
        phases_done = self.plan.extra.get("phases_done", [])
        if self.first_phase in phases_done:
            built.model.load_weights(str(work / f"phase_{self.first_phase}.weights.h5"))
        elif self.fast_path:
            self._fit_head_on_features()
        else:
            train_ds, valid_ds = self._image_datasets()
            self._fit(
                self.first_phase, built.model, train_ds, valid_ds, cfg.training.learning_rate, 0, cfg.training.epochs
            )
        if "feature_extraction_seconds" in self.plan.extra:
            timing["feature_extraction_seconds"] = self.plan.extra["feature_extraction_seconds"]

        history = read_history(self.history_path)
        first_phase_epochs = len([h for h in history if h["phase"] == self.first_phase])
        fine_tune = cfg.training.fine_tune
        if fine_tune is not None:
            unfrozen = models.unfreeze_top(built.backbone, fine_tune.layers)
            info["fine_tune_trainable_params"] = models.trainable_params(built.model)
            info["fine_tune_layers_unfrozen"] = unfrozen
            if "fine_tune" in self.plan.extra.get("phases_done", []):
                built.model.load_weights(str(work / "phase_fine_tune.weights.h5"))
            else:
                train_ds, valid_ds = self._image_datasets()
                self._fit(
                    "fine_tune",
                    built.model,
                    train_ds,
                    valid_ds,
                    fine_tune.learning_rate,
                    first_phase_epochs,
                    first_phase_epochs + fine_tune.epochs,
                )
        return FitResult(
            info=info,
            timing=timing,
            first_phase=self.first_phase,
            first_phase_epochs=first_phase_epochs,
            fine_tuned=fine_tune is not None,
            fast_path=self.fast_path,
            monitor=self.monitor,
            train_images=len(self.train_records),
            train_seconds=time.perf_counter() - started,
        )

    # ---- datasets

    def _image_dataset(self, records: list[SplitRecord], y: np.ndarray, *, training: bool, tag: str):
        from train import pipeline

        cfg = self.plan.cfg
        return pipeline.image_dataset(
            [s.path for s in records],
            y,
            cfg.model.input_size,
            batch_size=cfg.training.batch_size,
            training=training,
            cache=cfg.pipeline.cache,
            cache_path=self.plan.work / "cache" / tag,
            shuffle_buffer=cfg.pipeline.shuffle_buffer,
            seed=cfg.training.seed,
            augment=cfg.augment if training else None,
            prefetch=cfg.pipeline.prefetch,
            label_dtype=self.label_dtype,
        )

    def _image_datasets(self):
        """(train, valid) datasets of decoded images; valid is None without a valid split."""
        train_ds = self._image_dataset(self.train_records, self.y_train, training=True, tag="train")
        valid_ds = (
            self._image_dataset(self.valid_records, self.y_valid, training=False, tag="valid")
            if self.valid_records
            else None
        )
        return train_ds, valid_ds

    def _fit_head_on_features(self) -> None:
        """The fast path: backbone features of train and valid computed once (kept in features/ until the
        phase is done, so a resume reuses them), then the head fitted on them."""
        from train import pipeline

        cfg, built = self.plan.cfg, self.built
        batch_size = cfg.training.batch_size
        features_dir = self.plan.work / "features"
        t0 = time.perf_counter()
        features = {}
        for tag, records, y in (
            ("train", self.train_records, self.y_train),
            ("valid", self.valid_records, self.y_valid),
        ):
            path = features_dir / f"{tag}.npy"
            if path.is_file():
                features[tag] = np.load(path)
            elif records:
                images = pipeline.image_dataset(
                    [s.path for s in records],
                    y,
                    cfg.model.input_size,
                    batch_size=batch_size,
                    cache="none",
                    prefetch=True,
                    label_dtype=self.label_dtype,
                )
                features[tag] = built.feature_model.predict(images.map(lambda x, _: x), verbose=0)
                features_dir.mkdir(exist_ok=True)
                np.save(path, features[tag])
        self.plan.extra["feature_extraction_seconds"] = round(time.perf_counter() - t0, 3)
        label_dtype = np.float32 if self.binary else np.int32
        train_ds = pipeline.array_dataset(
            features["train"],
            self.y_train,
            batch_size=batch_size,
            training=True,
            seed=cfg.training.seed,
            label_dtype=label_dtype,
        )
        valid_ds = (
            pipeline.array_dataset(features["valid"], self.y_valid, batch_size=batch_size, label_dtype=label_dtype)
            if self.valid_records
            else None
        )
        self._fit(
            self.first_phase, built.head_model, train_ds, valid_ds, cfg.training.learning_rate, 0, cfg.training.epochs
        )
        shutil.rmtree(features_dir, ignore_errors=True)

    # ---- one phase

    def _fit(self, phase: str, model, train_ds, valid_ds, learning_rate: float, epochs_from: int, epochs_to: int):
        """Compile and fit `model` for epochs epochs_from+1..epochs_to; keep the chosen epoch's weights (with
        patience > 0), save the full model's weights and mark the phase done in state.json."""
        import keras

        from train import models

        cfg, work = self.plan.cfg, self.plan.work
        patience, min_epochs = cfg.training.patience, cfg.training.min_epochs
        past = [h for h in read_history(self.history_path) if h["phase"] == phase]
        with self.strategy.scope():
            model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=self.loss, metrics=["accuracy"])
        callbacks, best_path = phase_callbacks(
            work,
            phase,
            attempt=self.plan.attempt,
            train_images=len(self.train_records),
            monitor=self.monitor,
            patience=patience,
            past=past,
            start=epochs_from + min_epochs,
        )
        log.info(
            "phase %s: epochs %d..%d, lr %g, %d trainable parameters",
            phase,
            epochs_from + 1,
            epochs_to,
            learning_rate,
            models.trainable_params(model),
        )
        model.fit(
            train_ds,
            validation_data=valid_ds,
            epochs=epochs_to,
            initial_epoch=epochs_from,
            class_weight=self.class_weights,
            callbacks=callbacks,
            verbose=cfg.training.verbose,
            shuffle=False,
        )
        if patience > 0 and best_path.is_file():  # the chosen epoch, also across a resume (EarlyStopping
            model.load_weights(str(best_path))  # only knows this session)
        self.built.model.save_weights(str(work / f"phase_{phase}.weights.h5"))  # the full model (head layers shared)
        rundir.save_state(self.plan, phases_done=self.plan.extra.get("phases_done", []) + [phase])
