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

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from device.errors import FaceedgeError

log = logging.getLogger(__name__)


def _time_pass(ds) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for x, _ in ds:
        n += int(x.shape[0])
    return time.perf_counter() - t0, n


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
    ix = {lbl: i for i, lbl in enumerate(index.labels)}
    paths = [s.path for s in train]
    y = np.array([ix[s.label] for s in train])
    binary = len(index.labels) == 2
    size, bs = cfg.model.input_size, cfg.training.batch_size
    keras.utils.set_random_seed(cfg.training.seed)
    mc = cfg.model.model_copy(update={"freeze_backbone": True})
    built = models.build_model(mc, len(index.labels))
    n = len(paths)
    res: dict = {
        "images": n,
        "batch_size": bs,
        "input_size": size,
        "backbone": cfg.model.backbone,
        "alpha": cfg.model.alpha if cfg.model.backbone == "mobilenet_v2" else None,
        "weights": cfg.model.weights,
    }
    aug = cfg.augment.model_copy(update={"enabled": True})

    def ds(cache, prefetch, augment):
        return pipeline.image_dataset(
            paths,
            y,
            size,
            batch_size=bs,
            training=True,
            cache=cache,
            shuffle_buffer=cfg.pipeline.shuffle_buffer,
            seed=0,
            augment=aug if augment else None,
            prefetch=prefetch,
        )

    # 1. input pipeline alone (one unmeasured pass first, so every variant reads files from the OS cache)
    _time_pass(ds("none", False, False))
    res["pipeline_plain_s"] = min(_time_pass(ds("none", False, False))[0] for _ in range(epochs))
    cached = ds("memory", True, False)
    res["pipeline_cache_fill_s"], _ = _time_pass(cached)
    res["pipeline_cached_s"] = min(_time_pass(cached)[0] for _ in range(epochs))
    cached_aug = ds("memory", True, True)
    _time_pass(cached_aug)
    res["pipeline_cached_aug_s"] = min(_time_pass(cached_aug)[0] for _ in range(epochs))

    # 2. the train step alone (one batch in memory, repeated)
    loss = "binary_crossentropy" if binary else "sparse_categorical_crossentropy"
    model = built.model
    model.compile(optimizer=keras.optimizers.Adam(cfg.training.learning_rate), loss=loss)
    xb, yb = next(iter(ds("none", False, False)))
    yb = tf.cast(yb, tf.float32 if binary else tf.int32)
    model.train_on_batch(xb, yb)  # trace
    steps = max(3, min(20, n // bs))
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(xb, yb)
    res["train_step_s"] = (time.perf_counter() - t0) / steps
    res["train_step_images_per_s"] = int(xb.shape[0]) / res["train_step_s"]

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
        vds = pipeline.image_dataset(
            paths,
            y,
            size,
            batch_size=bs,
            training=True,
            cache=cache,
            shuffle_buffer=cfg.pipeline.shuffle_buffer,
            seed=0,
            prefetch=prefetch,
            augment=aug if augment else None,
            label_dtype=tf.float32 if binary else tf.int32,
        )
        times = []
        for _ in range(epochs + 1):  # the first epoch (trace, cache fill) is reported apart
            t0 = time.perf_counter()
            model.fit(vds, epochs=1, verbose=0, shuffle=False)
            times.append(time.perf_counter() - t0)
        res[f"epoch_{key}_first_s"], res[f"epoch_{key}_s"] = times[0], float(min(times[1:]))
    res["plain_first_epoch_s"], res["plain_epoch_s"] = (
        res["epoch_cache_prefetch_first_s"],
        res["epoch_cache_prefetch_s"],
    )
    ordered = pipeline.image_dataset(paths, y, size, batch_size=bs, cache="none")  # unshuffled: features line up with y
    t0 = time.perf_counter()
    feats = built.feature_model.predict(ordered.map(lambda a, b: a), verbose=0)
    res["feature_extraction_s"] = time.perf_counter() - t0
    yf = y.astype(label_dtype)
    head = built.head_model
    head.compile(optimizer=keras.optimizers.Adam(cfg.training.learning_rate), loss=loss)
    fds = pipeline.array_dataset(feats, yf, batch_size=bs, training=True, label_dtype=label_dtype)
    times = []
    for _ in range(epochs + 1):
        t0 = time.perf_counter()
        head.fit(fds, epochs=1, verbose=0, shuffle=False)
        times.append(time.perf_counter() - t0)
    res["feature_first_epoch_s"], res["feature_epoch_s"] = times[0], float(min(times[1:]))

    for k in ("pipeline_plain_s", "pipeline_cached_s", "pipeline_cached_aug_s", "pipeline_cache_fill_s"):
        res[k.replace("_s", "_images_per_s")] = n / res[k] if res[k] > 0 else None
    res["ratio_pipeline_plain_vs_train_step"] = res["pipeline_plain_images_per_s"] / res["train_step_images_per_s"]
    res["ratio_pipeline_cached_vs_train_step"] = res["pipeline_cached_images_per_s"] / res["train_step_images_per_s"]
    res["ratio_pipeline_cached_aug_vs_train_step"] = (
        res["pipeline_cached_aug_images_per_s"] / res["train_step_images_per_s"]
    )
    res["ratio_cache_speedup"] = res["pipeline_plain_s"] / res["pipeline_cached_s"]
    res["ratio_plain_vs_feature_epoch"] = res["plain_epoch_s"] / res["feature_epoch_s"]
    return res


def format_result(r: dict) -> str:
    f = lambda v: f"{v:,.0f}"  # noqa: E731
    alpha = f" alpha {r['alpha']}" if r.get("alpha") else ""
    lines = [
        f"train bench: {r['images']} train images, {r['backbone']}{alpha} (frozen, weights {r['weights']}), "
        f"input {r['input_size']}, batch {r['batch_size']}",
        "",
        "input pipeline (decode + resize + shuffle + batch), one pass (best of --epochs):",
        f"  no cache, no prefetch     {r['pipeline_plain_s']:8.3f} s  {f(r['pipeline_plain_images_per_s']):>9} images/s",
        f"  cache + prefetch, filling {r['pipeline_cache_fill_s']:8.3f} s  "
        f"{f(r['pipeline_cache_fill_images_per_s']):>9} images/s",
        f"  cache + prefetch, cached  {r['pipeline_cached_s']:8.3f} s  {f(r['pipeline_cached_images_per_s']):>9} images/s",
        f"  cached + 6 augmentations  {r['pipeline_cached_aug_s']:8.3f} s  "
        f"{f(r['pipeline_cached_aug_images_per_s']):>9} images/s",
        f"train step alone (batch in memory)        {f(r['train_step_images_per_s']):>9} images/s",
        "",
        "training epoch through the frozen backbone, by input pipeline (best of the later epochs):",
        f"  no cache, no prefetch            {r['epoch_nocache_s']:.3f} s",
        f"  cache                            {r['epoch_cache_s']:.3f} s  (cache saves "
        f"{r['epoch_nocache_s'] - r['epoch_cache_s']:+.3f} s per epoch)",
        f"  cache + prefetch                 {r['epoch_cache_prefetch_s']:.3f} s  (prefetch saves "
        f"{r['epoch_cache_s'] - r['epoch_cache_prefetch_s']:+.3f} s per epoch)",
        f"  cache + prefetch + augmentation  {r['epoch_cache_prefetch_aug_s']:.3f} s  (augmentation costs "
        f"{r['epoch_cache_prefetch_aug_s'] - r['epoch_cache_prefetch_s']:+.3f} s per epoch)",
        "",
        "epoch time, frozen backbone (cache + prefetch) vs the fast path:",
        f"  plain (images through the backbone)  first {r['plain_first_epoch_s']:.3f} s, then {r['plain_epoch_s']:.3f} s",
        f"  feature cache (head on features)     first {r['feature_first_epoch_s']:.3f} s, then "
        f"{r['feature_epoch_s']:.3f} s (+ {r['feature_extraction_s']:.3f} s extraction once)",
        "",
        "ratios:",
        f"  input pipeline / train step, no cache, no prefetch : {r['ratio_pipeline_plain_vs_train_step']:6.2f}x",
        f"  input pipeline / train step, cache + prefetch      : {r['ratio_pipeline_cached_vs_train_step']:6.2f}x",
        f"  input pipeline / train step, cached + augmentation : {r['ratio_pipeline_cached_aug_vs_train_step']:6.2f}x",
        "     (> 1: the pipeline outruns the train step, it is not the bottleneck)",
        f"  cache speed-up of the input pipeline               : {r['ratio_cache_speedup']:6.2f}x",
        f"  plain epoch / feature-cache epoch                  : {r['ratio_plain_vs_feature_epoch']:6.1f}x",
    ]
    return "\n".join(lines)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="input pipeline and feature-cache benchmark (ratios)",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    p.add_argument("--max_images", type=int, default=512, help="use at most this many train images")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after the first, per variant (best is kept)")
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    if args.max_images < 1 or args.epochs < 1:
        raise FaceedgeError("--max_images and --epochs must be >= 1")
    r = run(args.config, args.overrides, max_images=args.max_images, epochs=args.epochs)
    print(json.dumps(r, indent=2) if args.json else format_result(r))
    return 0
