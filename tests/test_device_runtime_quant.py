import numpy as np
import pytest

from device import quant
from device.errors import FaceedgeError
from device.manifest import load_manifest
from device.runtime import Classifier, load_runtime


def test_dequantize_uint8_does_not_wrap():
    q = np.array([0, 3, 128, 255], dtype=np.uint8)
    assert quant.dequantize(q, 0.5, 128).tolist() == [-64.0, -62.5, 0.0, 63.5]


def test_dequantize_int8():
    q = np.array([-128, -1, 0, 127], dtype=np.int8)
    np.testing.assert_allclose(quant.dequantize(q, 1 / 256, -128), [0.0, 127 / 256, 128 / 256, 255 / 256])


def test_quantize_rounds_and_clips():
    x = np.array([-10.0, 0.0, 1.24, 1.26, 500.0])
    assert quant.quantize(x, 0.5, 10, np.uint8).tolist() == [0, 10, 12, 13, 255]
    assert quant.quantize(x, 1.0, -128, np.int8).tolist() == [-128, -128, -127, -127, 127]


def test_quantize_roundtrip_within_half_step():
    x = np.linspace(-1, 1, 101)
    q = quant.quantize(x, 2 / 255, 128, np.uint8)
    assert np.abs(quant.dequantize(q, 2 / 255, 128) - x).max() <= (1 / 255) + 1e-6


def test_float_tensors_pass_through():
    x = np.array([0.25, 0.75], dtype=np.float32)
    assert quant.dequantize(x, 0.0, 0).tolist() == [0.25, 0.75]


def test_runtime_prefers_ai_edge_litert():
    assert load_runtime().name == "ai-edge-litert"


@pytest.mark.parametrize(
    "content", [b"", b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", b"\x00" * 100]
)
def test_bad_model_files_are_one_line_errors(tmp_path, content):
    p = tmp_path / "model.tflite"
    p.write_bytes(content)
    with pytest.raises(FaceedgeError) as e:
        Classifier(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_manifest_sha_mismatch(tiny_models, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_models["int8"], d)
    data = bytearray((d / "model.tflite").read_bytes())
    data[-1] ^= 0xFF
    (d / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(FaceedgeError, match="sha256"):
        load_manifest(d)


def test_atomic_write_has_the_mode_of_a_plain_file(tmp_path):
    import os

    from device.files import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind
