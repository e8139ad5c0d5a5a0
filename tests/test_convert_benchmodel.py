"""`python -m convert.benchmodel`: a loadable int8 MobileNetV2 model for the device bench."""

from __future__ import annotations

import json

import numpy as np

from convert.benchmodel import MARKER, NOTE, build
from device.manifest import load_manifest
from device.runtime import Classifier


def test_bench_model_loads_and_says_what_it_is(tmp_path):
    mdir = build(tmp_path / "bench", size=32, alpha=0.35)
    assert mdir == tmp_path / "bench" / "export" / "int8"
    assert json.loads((tmp_path / "bench" / MARKER).read_text())["made_by"] == "convert.benchmodel"  # make clean's mark
    man, model_path = load_manifest(tmp_path / "bench")  # a run-like folder: export/int8/
    assert man.backbone == "mobilenet_v2" and man.notes == NOTE and man.status == "published"
    assert man.input.dtype == "uint8" and man.output.dtype == "uint8" and man.input_height == 32
    clf = Classifier(model_path, man, num_threads=1)
    clf.set_input(np.zeros((32, 32, 3), np.uint8))
    clf.invoke()
