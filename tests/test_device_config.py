"""The device YAML: typed, unknown keys rejected, errors name the dotted key; --validate-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from device.config import DaemonConfig, load_config, parse_config, source_from_arg
from device.errors import FaceedgeError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "configs" / "device.yaml"


def test_sample_config_is_valid_and_enables_jsonl_stdout():
    cfg = load_config(SAMPLE)
    assert cfg.source.type == "picamera2" and cfg.source.format == "BGR888"
    assert cfg.outputs.jsonl is not None and cfg.outputs.jsonl.path == "-"
    assert cfg.outputs.http.host == "127.0.0.1"
    assert cfg.model.num_threads is None and cfg.decision.threshold is None


def test_defaults_need_no_file():
    cfg = load_config(None)
    assert isinstance(cfg, DaemonConfig) and cfg.source.type == "synthetic"
    assert cfg.capture.stall_s == 5.0


@pytest.mark.parametrize(
    "data, key",
    [
        ({"sorce": {}}, "'sorce'"),
        ({"source": {"type": "opencv", "devise": 0}}, "'source.devise'"),
        ({"source": {"type": "webcam"}}, "'source.type'"),
        ({"source": {"type": "synthetic", "fps": -1}}, "'source.fps'"),
        ({"capture": {"stall_s": 0}}, "'capture.stall_s'"),
        ({"decision": {"smoothing": "median"}}, "'decision.smoothing'"),
        ({"outputs": {"jsonl": {"pth": "x"}}}, "'outputs.jsonl.pth'"),
        ({"crop": {"mode": "eyes"}}, "'crop.mode'"),
        ({"model": {"num_threads": 0}}, "'model.num_threads'"),
    ],
)
def test_errors_name_the_dotted_key(data, key):
    with pytest.raises(FaceedgeError) as e:
        parse_config(data, "dev.yaml")
    msg = str(e.value)
    assert msg.startswith("dev.yaml: key " + key), msg
    assert "\n" not in msg


def test_bad_value_is_quoted():
    with pytest.raises(FaceedgeError, match=r"'decision.smoothing'.*got 'median'"):
        parse_config({"decision": {"smoothing": "median"}}, "dev.yaml")


def test_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("source:\n  type: synthetic\n  fps: [30\n")
    with pytest.raises(FaceedgeError, match=r"bad.yaml: invalid YAML at line \d+"):
        load_config(p)
    with pytest.raises(FaceedgeError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    p.write_text("- a list\n")
    with pytest.raises(FaceedgeError, match="expected a mapping"):
        load_config(p)


def test_source_override(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert source_from_arg("synthetic").type == "synthetic"
    assert source_from_arg("picamera2").type == "picamera2"
    assert source_from_arg("2").model_dump() == {**source_from_arg("2").model_dump(), "type": "opencv", "device": 2}
    assert source_from_arg(str(tmp_path / "clip.mp4")).type == "opencv"
    assert source_from_arg("rtsp://127.0.0.1/cam").device == "rtsp://127.0.0.1/cam"
    assert source_from_arg(str(tmp_path / "imgs")).type == "images"
    assert source_from_arg(str(tmp_path / "*.jpg")).type == "images"
    assert source_from_arg(str(tmp_path / "a.jpg")).type == "images"
    kept = load_config(None).source  # same kind: the config's settings are kept
    assert source_from_arg("synthetic", kept) is kept
    with pytest.raises(FaceedgeError, match="--source 'nope.mp4'"):
        source_from_arg("nope.mp4")


def test_validate_config_cli(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "device", "--validate-config", str(SAMPLE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and ok.stdout.startswith(f"ok: {SAMPLE}"), ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("source:\n  type: synthetic\n  fsp: 30\n")
    r = subprocess.run(
        [sys.executable, "-m", "device", "--validate-config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {bad}: key 'source.fsp': Extra inputs are not permitted"


def test_the_old_duration_key_still_reads_with_a_warning(caplog):
    """Every duration key ends in _s: capture.stall_seconds is now capture.stall_s; a config that
    still says stall_seconds works and is told so, and giving both is an error naming the key."""
    import logging

    with caplog.at_level(logging.WARNING):
        cfg = parse_config({"capture": {"stall_seconds": 2.5}})
    assert cfg.capture.stall_s == 2.5
    assert "capture.stall_seconds is deprecated: call it capture.stall_s" in caplog.text
    with pytest.raises(FaceedgeError, match="capture.*give stall_s only"):
        parse_config({"capture": {"stall_seconds": 2.5, "stall_s": 3}})
