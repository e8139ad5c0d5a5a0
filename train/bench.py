"""`python -m train bench --config C`: the original log's pipeline measurement, done in one run.

Measured on the config's data, input size, backbone and batch size, with the backbone frozen:

1. input pipeline images/s: decode+resize without cache or prefetch, then with cache + prefetch
   (first pass fills the cache, second pass reads it), with and without the augmentations;
2. the train step's own images/s (one batch held in memory, so no input cost at all);
3. whole training epochs through the frozen backbone with no cache / cache / cache + prefetch /
   + augmentation, so what each costs or saves per epoch is seen (the log's run-2 figures);
4. an epoch of the plain model (images through the frozen backbone every epoch) against an epoch
   of the fast path (the head on backbone features computed once), plus that one-off extraction.

Timings are the best of a few repeats (the machine may be shared).

Everything is printed as seconds and images/s and, what the log wanted to know, as ratios: is the
input pipeline faster than the train step (then it is not the bottleneck)?
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from device.errors import FaceedgeError
from device.flags import add_option

log = logging.getLogger(__name__)


def _time_pass(ds) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for x, _ in ds:
        n += int(x.shape[0])
    return time.perf_counter() - t0, n


def _bench_dataset(paths, y, cfg, augment_cfg, *, cache: str, prefetch: bool, augment: bool, label_dtype=None):
    """The training input pipeline over `paths` with one cache/prefetch/augmentation setting
    (labels float32 unless `label_dtype`)."""
    import tensorflow as tf

    from train import pipeline

    return pipeline.image_dataset(
        paths,
        y,
        cfg.model.input_size,
        batch_size=cfg.training.batch_size,
        training=True,
        cache=cache,
        shuffle_buffer=cfg.pipeline.shuffle_buffer,
        seed=0,
        augment=augment_cfg if augment else None,
        prefetch=prefetch,
        label_dtype=label_dtype or tf.float32,
    )


def _epoch_times(model, dataset, epochs: int) -> tuple[float, float]:
    """(first epoch, best of the next `epochs`) in seconds: the first traces and fills caches."""
    times = []
    for _ in range(epochs + 1):
        t0 = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        times.append(time.perf_counter() - t0)
    return times[0], float(min(times[1:]))


def run(config_path, overrides: list[str] | None = None, *, max_images: int = 512, epochs: int = 3) -> dict:
    import keras
    import tensorflow as tf

    from train import models, pipeline
    from train.config import load_config
    from train.data import index_dataset
    from train.splits import make_splits

    cfg = load_config(config_path, overrides)
    index = index_dataset(cfg.data.root, max_bad_fraction=cfg.data.max_bad_fraction)  # ≥ 2 labels, checked
    splits = make_splits(
        index.records,
        holdout_persons=cfg.data.holdout_persons,
        valid_fraction=cfg.data.valid_fraction,
        seen_holdout_fraction=cfg.data.seen_holdout_fraction,
        seed=cfg.data.split_seed,
    )
    train = [s for s in splits if s.split == "train"][:max_images]
    label_index = {lbl: i for i, lbl in enumerate(index.labels)}
    paths = [s.path for s in train]
    y = np.array([label_index[s.label] for s in train])
    binary = len(index.labels) == 2
    size, batch_size = cfg.model.input_size, cfg.training.batch_size
    keras.utils.set_random_seed(cfg.training.seed)
    frozen = cfg.model.model_copy(update={"freeze_backbone": True})
    built = models.build_model(frozen, len(index.labels))
    n_images = len(paths)
    result: dict = {
        "images": n_images,
        "batch_size": batch_size,
        "input_size": size,
        "backbone": cfg.model.backbone,
        "alpha": cfg.model.alpha if cfg.model.backbone == "mobilenet_v2" else None,
        "weights": cfg.model.weights,
    }
    augment_cfg = cfg.augment.model_copy(update={"enabled": True})

    def dataset(cache: str, prefetch: bool, augment: bool, label_dtype=None):
        return _bench_dataset(
            paths, y, cfg, augment_cfg, cache=cache, prefetch=prefetch, augment=augment, label_dtype=label_dtype
        )

    # 1. input pipeline alone (one unmeasured pass first, so every variant reads files from the OS cache)
    _time_pass(dataset("none", False, False))
    result["pipeline_plain_s"] = min(_time_pass(dataset("none", False, False))[0] for _ in range(epochs))
    cached = dataset("memory", True, False)
    result["pipeline_cache_fill_s"], _ = _time_pass(cached)
    result["pipeline_cached_s"] = min(_time_pass(cached)[0] for _ in range(epochs))
    cached_aug = dataset("memory", True, True)
    _time_pass(cached_aug)
    result["pipeline_cached_aug_s"] = min(_time_pass(cached_aug)[0] for _ in range(epochs))

    # 2. the train step alone (one batch in memory, repeated)
    loss = "binary_crossentropy" if binary else "sparse_categorical_crossentropy"
    model = built.model
    model.compile(optimizer=keras.optimizers.Adam(cfg.training.learning_rate), loss=loss)
    x_batch, y_batch = next(iter(dataset("none", False, False)))
    y_batch = tf.cast(y_batch, tf.float32 if binary else tf.int32)
    model.train_on_batch(x_batch, y_batch)  # trace
    steps = max(3, min(20, n_images // batch_size))
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x_batch, y_batch)
    result["train_step_s"] = (time.perf_counter() - t0) / steps
    result["train_step_images_per_s"] = int(x_batch.shape[0]) / result["train_step_s"]

    # 3. whole training epochs through the frozen backbone, input pipeline variants (the log's run 2
    #    measurement: what cache, prefetch and augmentation each cost per epoch), then the fast path
    label_dtype = np.float32 if binary else np.int32
    variants = (
        ("nocache", "none", False, False),
        ("cache", "memory", False, False),
        ("cache_prefetch", "memory", True, False),
        ("cache_prefetch_aug", "memory", True, True),
    )
    for key, cache, prefetch, augment in variants:
        epoch_ds = dataset(cache, prefetch, augment, label_dtype=tf.float32 if binary else tf.int32)
        result[f"epoch_{key}_first_s"], result[f"epoch_{key}_s"] = _epoch_times(model, epoch_ds, epochs)
    result["plain_first_epoch_s"], result["plain_epoch_s"] = (
        result["epoch_cache_prefetch_first_s"],
        result["epoch_cache_prefetch_s"],
    )
    # unshuffled: the features line up with y
    ordered = pipeline.image_dataset(paths, y, size, batch_size=batch_size, cache="none")
    t0 = time.perf_counter()
    features = built.feature_model.predict(ordered.map(lambda images, _labels: images), verbose=0)
    result["feature_extraction_s"] = time.perf_counter() - t0
    head = built.head_model
    head.compile(optimizer=keras.optimizers.Adam(cfg.training.learning_rate), loss=loss)
    features_ds = pipeline.array_dataset(
        features, y.astype(label_dtype), batch_size=batch_size, training=True, label_dtype=label_dtype
    )
    result["feature_first_epoch_s"], result["feature_epoch_s"] = _epoch_times(head, features_ds, epochs)

    for key in ("pipeline_plain_s", "pipeline_cached_s", "pipeline_cached_aug_s", "pipeline_cache_fill_s"):
        result[key.replace("_s", "_images_per_s")] = n_images / result[key] if result[key] > 0 else None
    train_step_rate = result["train_step_images_per_s"]
    result["ratio_pipeline_plain_vs_train_step"] = result["pipeline_plain_images_per_s"] / train_step_rate
    result["ratio_pipeline_cached_vs_train_step"] = result["pipeline_cached_images_per_s"] / train_step_rate
    result["ratio_pipeline_cached_aug_vs_train_step"] = result["pipeline_cached_aug_images_per_s"] / train_step_rate
    result["ratio_cache_speedup"] = result["pipeline_plain_s"] / result["pipeline_cached_s"]
    result["ratio_plain_vs_feature_epoch"] = result["plain_epoch_s"] / result["feature_epoch_s"]
    return result


def _thousands(value: float) -> str:
    return f"{value:,.0f}"


def format_result(result: dict) -> str:
    """The figures of run() as text."""
    alpha = f" alpha {result['alpha']}" if result.get("alpha") else ""
    lines = [
        f"train bench: {result['images']} train images, {result['backbone']}{alpha} "
        f"(frozen, weights {result['weights']}), input {result['input_size']}, batch {result['batch_size']}",
        "",
        "input pipeline (decode + resize + shuffle + batch), one pass (best of --epochs):",
        f"  no cache, no prefetch     {result['pipeline_plain_s']:8.3f} s  "
        f"{_thousands(result['pipeline_plain_images_per_s']):>9} images/s",
        f"  cache + prefetch, filling {result['pipeline_cache_fill_s']:8.3f} s  "
        f"{_thousands(result['pipeline_cache_fill_images_per_s']):>9} images/s",
        f"  cache + prefetch, cached  {result['pipeline_cached_s']:8.3f} s  "
        f"{_thousands(result['pipeline_cached_images_per_s']):>9} images/s",
        f"  cached + 6 augmentations  {result['pipeline_cached_aug_s']:8.3f} s  "
        f"{_thousands(result['pipeline_cached_aug_images_per_s']):>9} images/s",
        f"train step alone (batch in memory)        {_thousands(result['train_step_images_per_s']):>9} images/s",
        "",
        "training epoch through the frozen backbone, by input pipeline (best of the later epochs):",
        f"  no cache, no prefetch            {result['epoch_nocache_s']:.3f} s",
        f"  cache                            {result['epoch_cache_s']:.3f} s  (cache saves "
        f"{result['epoch_nocache_s'] - result['epoch_cache_s']:+.3f} s per epoch)",
        f"  cache + prefetch                 {result['epoch_cache_prefetch_s']:.3f} s  (prefetch saves "
        f"{result['epoch_cache_s'] - result['epoch_cache_prefetch_s']:+.3f} s per epoch)",
        f"  cache + prefetch + augmentation  {result['epoch_cache_prefetch_aug_s']:.3f} s  (augmentation costs "
        f"{result['epoch_cache_prefetch_aug_s'] - result['epoch_cache_prefetch_s']:+.3f} s per epoch)",
        "",
        "epoch time, frozen backbone (cache + prefetch) vs the fast path:",
        f"  plain (images through the backbone)  first {result['plain_first_epoch_s']:.3f} s, "
        f"then {result['plain_epoch_s']:.3f} s",
        f"  feature cache (head on features)     first {result['feature_first_epoch_s']:.3f} s, then "
        f"{result['feature_epoch_s']:.3f} s (+ {result['feature_extraction_s']:.3f} s extraction once)",
        "",
        "ratios:",
        f"  input pipeline / train step, no cache, no prefetch : {result['ratio_pipeline_plain_vs_train_step']:6.2f}x",
        f"  input pipeline / train step, cache + prefetch      : {result['ratio_pipeline_cached_vs_train_step']:6.2f}x",
        "  input pipeline / train step, cached + augmentation : "
        f"{result['ratio_pipeline_cached_aug_vs_train_step']:6.2f}x",
        "     (> 1: the pipeline outruns the train step, it is not the bottleneck)",
        f"  cache speed-up of the input pipeline               : {result['ratio_cache_speedup']:6.2f}x",
        f"  plain epoch / feature-cache epoch                  : {result['ratio_plain_vs_feature_epoch']:6.1f}x",
    ]
    return "\n".join(lines)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="input pipeline and feature-cache benchmark (ratios)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--config", type=Path, required=True, help="YAML config (data, model, batch size)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable)",
    )
    add_option(
        p, "--max-images", type=int, default=512, help="use at most this many train images (default: %(default)s)"
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="timed epochs after the first, per variant; the best is kept (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    if args.max_images < 1 or args.epochs < 1:
        raise FaceedgeError("--max-images and --epochs must be >= 1")
    r = run(args.config, args.overrides, max_images=args.max_images, epochs=args.epochs)
    print(json.dumps(r, indent=2) if args.json else format_result(r))
    return 0
