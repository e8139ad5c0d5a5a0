"""Model builders: a registry of backbones, each with its own input preprocessing as a layer.

Every model takes raw RGB pixels 0..255 (float32, shape (H, W, 3)) and does its own scaling:

    image ─► preprocess (layer) ─► backbone(training=False when pretrained/frozen) ─► pool ─► head

The head's layers are shared between the full model and a small `head_model` that takes pooled
backbone features, so the fast path (train the head on cached features) trains the very weights
the saved full model uses; nothing has to be copied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from device.errors import FaceedgeError
from train.config import ModelConfig

log = logging.getLogger(__name__)

# keras.applications.vgg16.preprocess_input (mode "caffe"): RGB → BGR, then subtract these means.
VGG_MEAN_BGR = (103.939, 116.779, 123.68)


def mobilenet_v2_preprocess() -> keras.layers.Layer:
    """x/127.5 - 1: the [-1, 1] range MobileNetV2's ImageNet weights were trained on."""
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")


class _FixedConv:
    """A frozen 1x1 convolution that does caffe-style preprocessing with a built-in layer only
    (no Lambda, no custom class), so model.keras loads anywhere and converts to TFLite."""

    def __call__(self) -> keras.layers.Layer:
        layer = keras.layers.Conv2D(3, 1, name="preprocess", trainable=False)
        layer.build((None, None, None, 3))
        kernel = np.zeros((1, 1, 3, 3), np.float32)
        for out_c, in_c in enumerate((2, 1, 0)):  # output BGR from input RGB
            kernel[0, 0, in_c, out_c] = 1.0
        layer.set_weights([kernel, -np.asarray(VGG_MEAN_BGR, np.float32)])
        return layer


@dataclass(frozen=True)
class Backbone:
    name: str
    build: Callable[..., keras.Model]  # (input_shape, alpha, weights) → headless keras.Model
    make_preprocess: Callable[[], keras.layers.Layer]
    preprocessing: str  # what the preprocess layer does, for model_info.json / the manifest
    weights_file_hint: str  # keras' own file name of the no-top ImageNet weights
    uses_alpha: bool = False


def _mobilenet_v2(input_shape, alpha, weights):
    return keras.applications.MobileNetV2(input_shape=input_shape, alpha=alpha, include_top=False, weights=weights)


def _vgg16(input_shape, alpha, weights):
    return keras.applications.VGG16(input_shape=input_shape, include_top=False, weights=weights)


def _simple_cnn(input_shape, alpha, weights):
    """A compact VGG-style ConvNet (4 blocks of 2x [conv3x3-BN-ReLU] + max-pool) that trains from
    scratch in minutes on a CPU: the offline sample config's backbone, where no ImageNet weights
    can be downloaded and a randomly initialised MobileNetV2 does not learn a few hundred images."""
    if weights is not None:
        raise ValueError("simple_cnn has no pretrained weights (use weights: none or a file it saved)")
    width = max(4, int(round(32 * alpha)))
    inp = keras.Input(input_shape)
    x = inp
    for block in range(4):
        for conv in range(2):
            x = keras.layers.Conv2D(
                width * 2**block, 3, padding="same", use_bias=False, name=f"block{block + 1}_conv{conv + 1}"
            )(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{block + 1}_bn{conv + 1}")(x)
            x = keras.layers.ReLU(name=f"block{block + 1}_relu{conv + 1}")(x)
        x = keras.layers.MaxPooling2D(name=f"block{block + 1}_pool")(x)
    return keras.Model(inp, x, name="simple_cnn")


BACKBONES: dict[str, Backbone] = {}


def register(backbone: Backbone) -> Backbone:
    BACKBONES[backbone.name] = backbone
    return backbone


register(
    Backbone(
        name="mobilenet_v2",
        build=_mobilenet_v2,
        make_preprocess=mobilenet_v2_preprocess,
        preprocessing="mobilenet_v2: x/127.5 - 1",
        weights_file_hint="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_<alpha>_<size>_no_top.h5",
        uses_alpha=True,
    )
)
register(
    Backbone(
        name="vgg16",
        build=_vgg16,
        make_preprocess=_FixedConv(),
        preprocessing="vgg16: RGB->BGR, minus ImageNet mean (103.939, 116.779, 123.68)",
        weights_file_hint="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )
)
register(
    Backbone(
        name="simple_cnn",
        build=_simple_cnn,
        make_preprocess=mobilenet_v2_preprocess,
        preprocessing="simple_cnn: x/127.5 - 1",
        weights_file_hint="simple_cnn.weights.h5",
        uses_alpha=True,
    )
)


@dataclass
class Built:
    model: keras.Model  # raw pixels in → prediction
    feature_model: keras.Model  # raw pixels in → pooled backbone features
    head_model: keras.Model  # pooled features in → prediction (shares layers with `model`)
    backbone: keras.Model
    spec: Backbone
    output_kind: str  # "sigmoid" | "softmax"


def _load_backbone(spec: Backbone, cfg: ModelConfig) -> keras.Model:
    shape = (cfg.input_size, cfg.input_size, 3)
    alpha = cfg.alpha if spec.uses_alpha else None
    if cfg.weights == "none":
        return spec.build(shape, alpha, None)
    if cfg.weights == "imagenet":
        try:
            return spec.build(shape, alpha, "imagenet")
        except ValueError as e:  # e.g. an alpha that has no ImageNet weights
            raise FaceedgeError(f"model.weights imagenet for {spec.name}: {e}") from None
        except Exception as e:  # noqa: BLE001 - keras.utils.get_file: URL fetch failure, no network
            raise FaceedgeError(
                f"could not download the ImageNet weights for {spec.name} ({type(e).__name__}: {e}); "
                f"offline, set `model.weights: none` or `model.weights: /path/to/{spec.weights_file_hint}`"
            ) from None
    path = Path(cfg.weights).expanduser()
    if not path.is_file():
        raise FaceedgeError(f"{path}: model.weights file not found")
    base = spec.build(shape, alpha, None)
    try:
        base.load_weights(str(path))
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a file it cannot read
        raise FaceedgeError(f"{path}: cannot load as {spec.name} backbone weights ({type(e).__name__}: {e})") from None
    return base


def build_model(cfg: ModelConfig, num_classes: int, *, mixed_precision: bool = False) -> Built:
    """The classifier for `num_classes` labels (2 → one sigmoid unit, more → softmax)."""
    if num_classes < 2:
        raise FaceedgeError(f"need at least two labels to train a classifier, got {num_classes}")
    spec = BACKBONES.get(cfg.backbone)
    if spec is None:
        raise FaceedgeError(f"model.backbone {cfg.backbone!r}: unknown (one of {', '.join(BACKBONES)})")
    base = _load_backbone(spec, cfg)
    base.trainable = not cfg.freeze_backbone
    pretrained = cfg.weights != "none"
    if not pretrained and not cfg.freeze_backbone:
        # Trained from scratch: Keras' MobileNetV2 BatchNorm momentum (0.999) needs thousands of steps
        # before its moving statistics are usable, so validation would sit at chance for a short run
        # (measured on the sample config: 0.50 on every split after 60 epochs, 1.00 valid with 0.9).
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = cfg.bn_momentum if cfg.bn_momentum is not None else min(layer.momentum, 0.9)

    inp = keras.Input((cfg.input_size, cfg.input_size, 3), name="image")
    x = spec.make_preprocess()(inp)
    # A pretrained or frozen backbone runs its BatchNorm in inference mode, also when fine-tuned
    # (keras-io transfer learning guide); a backbone trained from scratch needs batch statistics.
    x = base(x, training=False) if (pretrained or cfg.freeze_backbone) else base(x)
    pool = (
        keras.layers.GlobalAveragePooling2D(name="pool")
        if cfg.head.pooling == "avg"
        else keras.layers.Flatten(name="pool")
    )
    feats = pool(x)

    head_layers: list[keras.layers.Layer] = []
    for i, units in enumerate(cfg.head.fc_units):
        # The log's VGG16 head: "new fc6/fc7" — named so, counting on from the backbone's conv layers.
        head_layers.append(keras.layers.Dense(units, activation="relu", name=f"fc{6 + i}"))
        if cfg.head.dropout:
            head_layers.append(keras.layers.Dropout(cfg.head.dropout, name=f"dropout{6 + i}"))
    if cfg.head.dropout and not cfg.head.fc_units:
        head_layers.append(keras.layers.Dropout(cfg.head.dropout, name="dropout"))
    binary = num_classes == 2
    head_layers.append(
        keras.layers.Dense(
            1 if binary else num_classes,
            activation="sigmoid" if binary else "softmax",
            name="predictions",
            dtype="float32",
        )
    )  # float32 output also under mixed precision

    def apply_head(t):
        for layer in head_layers:
            t = layer(t)
        return t

    model = keras.Model(inp, apply_head(feats), name=f"faceedge_{spec.name}")
    feature_model = keras.Model(inp, feats, name=f"{spec.name}_features")
    feat_in = keras.Input(tuple(feats.shape[1:]), name="features")
    head_model = keras.Model(feat_in, apply_head(feat_in), name="head")
    return Built(model, feature_model, head_model, base, spec, "sigmoid" if binary else "softmax")


def trainable_params(model: keras.Model) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def total_params(model: keras.Model) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.weights))


def unfreeze_top(backbone: keras.Model, layers: int | str) -> int:
    """Fine-tune: make the top `layers` backbone layers trainable (all with "all"); BatchNorm stays
    frozen so its ImageNet statistics are kept. Returns the number of layers unfrozen."""
    backbone.trainable = True
    n = len(backbone.layers) if layers == "all" else max(0, min(int(layers), len(backbone.layers)))
    cut = len(backbone.layers) - n
    count = 0
    for i, layer in enumerate(backbone.layers):
        trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        count += bool(trainable and layer.weights)
    return count


def set_mixed_precision(enabled: bool) -> None:
    keras.mixed_precision.set_global_policy("mixed_float16" if enabled else "float32")
