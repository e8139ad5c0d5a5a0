"""Training config: typed, strict, overridable from the command line. No TensorFlow needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.errors import FaceedgeError
from train.config import apply_overrides, dump_config, load_config, parse_override, validate

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_logs(tmp_path):
    cfg = load_config(write(tmp_path, "data: {root: d}\n"))
    assert (cfg.data.valid_fraction, cfg.data.split_seed, cfg.data.seen_holdout_fraction) == (0.2, 112, 0.1)
    assert (cfg.training.learning_rate, cfg.training.patience) == (1e-3, 5)
    assert (cfg.model.backbone, cfg.model.alpha, cfg.model.input_size, cfg.model.weights) == (
        "mobilenet_v2",
        1.0,
        224,
        "imagenet",
    )
    a = cfg.augment
    assert (a.flip, a.brightness, a.contrast, a.hue, a.saturation, a.noise) == (
        True,
        0.15,
        (0.7, 1.3),
        0.05,
        (0.7, 2.0),
        0.08,
    )
    assert cfg.model.head.fc_units == [] and cfg.model.head.pooling == "avg"


def test_vgg16_default_head_is_the_logs_fc6_fc7(tmp_path):
    cfg = load_config(write(tmp_path, "data: {root: d}\nmodel: {backbone: vgg16}\n"))
    assert cfg.model.head.fc_units == [2048, 2048] and cfg.model.head.dropout == 0.5
    assert cfg.model.head.pooling == "flatten"
    cfg = load_config(write(tmp_path, "data: {root: d}\nmodel: {backbone: vgg16}\n"), ["model.head.dropout=0.3"])
    assert cfg.model.head.fc_units == [2048, 2048] and cfg.model.head.dropout == 0.3  # merged, not replaced


@pytest.mark.parametrize(
    "text, key",
    [
        ("data: {root: d}\ntraining: {epoch: 3}\n", "training.epoch"),
        ("data: {root: d, valid_fraktion: 0.1}\n", "data.valid_fraktion"),
        ("data: {root: d}\nmodel: {head: {fc: [1]}}\n", "model.head.fc"),
        ("data: {root: d}\nmodels: {}\n", "models"),
        ("data: {root: d}\ntraining: {fine_tune: {layer: 3}}\n", "training.fine_tune.layer"),
    ],
)
def test_unknown_key_is_named_with_its_full_path(tmp_path, text, key):
    with pytest.raises(FaceedgeError, match=rf"unknown config key '{key}'") as e:
        load_config(write(tmp_path, text))
    assert "\n" not in str(e.value)
    assert str(tmp_path / "c.yaml") in str(e.value)


@pytest.mark.parametrize(
    "override, key, bad",
    [
        ("training.epochs=abc", "training.epochs", "abc"),
        ("model.backbone=resnet", "model.backbone", "resnet"),
        ("data.valid_fraction=1.5", "data.valid_fraction", "1.5"),
        ("model.weights=weights.bin", "model.weights", "weights.bin"),
        ("augment.contrast=[1.3, 0.7]", "augment.contrast", "1.3"),
    ],
)
def test_bad_value_names_key_and_value(tmp_path, override, key, bad):
    with pytest.raises(FaceedgeError) as e:
        load_config(write(tmp_path, "data: {root: d}\n"), [override])
    assert f"'{key}'" in str(e.value) and bad in str(e.value)


def test_overrides_are_yaml_scalars_and_create_sections(tmp_path):
    cfg = load_config(
        write(tmp_path, "data: {root: d}\ntraining: {epochs: 30}\n"),
        [
            "training.epochs=3",
            "model.weights=none",
            "augment.noise=0",
            "augment.flip=false",
            "data.holdout_persons=[p01, p02]",
            "training.fine_tune.layers=all",
            "training.fine_tune.learning_rate=1e-5",
            "run.name=x_1",
        ],
    )
    assert cfg.training.epochs == 3 and cfg.model.weights == "none"
    assert cfg.augment.noise == 0 and cfg.augment.flip is False and cfg.augment.active  # others still on
    assert cfg.data.holdout_persons == ["p01", "p02"]
    assert cfg.training.fine_tune.layers == "all" and cfg.training.fine_tune.learning_rate == 1e-5
    assert cfg.run.name == "x_1"
    assert load_config(write(tmp_path, "data: {root: d}\n"), ["data.holdout_persons=2"]).data.holdout_persons == 2


def test_override_syntax_errors():
    with pytest.raises(FaceedgeError, match="KEY.PATH=VALUE"):
        parse_override("training.epochs")
    with pytest.raises(FaceedgeError, match="not a section"):
        apply_overrides({"training": {"epochs": 3}}, ["training.epochs.x=1"])
    with pytest.raises(FaceedgeError, match="valid YAML"):
        parse_override("a.b=[1, 2")


def test_all_augmentations_off_is_inactive(tmp_path):
    cfg = load_config(write(tmp_path, "data: {root: d}\n"), ["augment.enabled=false"])
    assert not cfg.augment.active
    cfg = load_config(
        write(tmp_path, "data: {root: d}\n"),
        [
            "augment.flip=false",
            "augment.brightness=0",
            "augment.contrast=null",
            "augment.hue=0",
            "augment.saturation=null",
            "augment.noise=0",
        ],
    )
    assert not cfg.augment.active


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, "data: {root: d}\nmodel: {backbone: vgg16}\n"), ["training.epochs=7"])
    import yaml

    again = validate(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(FaceedgeError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(FaceedgeError, match="not valid YAML"):
        load_config(write(tmp_path, "data: [\n"))
    with pytest.raises(FaceedgeError, match="'data' is required"):
        load_config(write(tmp_path, "training: {epochs: 1}\n"))


@pytest.mark.parametrize("name", ["sample", "seed-run1", "seed-run2", "seed-run3", "seed-run4"])
def test_shipped_configs_validate(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    if name.startswith("seed-run"):
        n = int(name[-1])
        assert cfg.training.batch_size == {1: 32, 2: 64, 3: 128, 4: 128}[n]
        assert cfg.augment.active == (n != 2)
        assert cfg.model.backbone == ("vgg16" if n <= 2 else "mobilenet_v2")
        assert cfg.training.epochs == (10 if n <= 2 else 30)
        assert (
            cfg.training.learning_rate,
            cfg.training.patience,
            cfg.data.valid_fraction,
            cfg.data.split_seed,
            cfg.model.weights,
            cfg.model.input_size,
        ) == (1e-3, 5, 0.2, 112, "imagenet", 224)
    else:
        assert cfg.model.weights == "none"  # offline
