"""JSON lines output: line content, size-capped rotation, and a full disk (fault 6)."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime

import pytest

from device.errors import FaceedgeError
from device.outputs import OutputsConfig, build_outputs, close_outputs, publish_all, start_outputs
from device.outputs.jsonl import JsonlConfig, JsonlOutput
from device.telemetry import Telemetry
from device.types import Result


def result(i: int, event: bool = False) -> Result:
    return Result(
        frame_id=i,
        timestamp=1_700_000_000.25 + i,
        label="face",
        score=0.912345678,
        smoothed_label="face",
        smoothed_score=0.8,
        event=event,
        stages_ms={"capture_wait": 1.23456, "invoke": 4.5},
        scores=[0.912345678],
        model_sha256="ab" * 32,
    )


def test_line_content(tmp_path):
    path = tmp_path / "out" / "results.jsonl"  # the directory is created
    outs = build_outputs(OutputsConfig(jsonl=JsonlConfig(path=str(path))), Telemetry())
    start_outputs(outs)
    for i in range(3):
        publish_all(outs, result(i, event=i == 0))
    close_outputs(outs)
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    d = json.loads(lines[1])
    assert d["frame_id"] == 1 and d["label"] == "face" and d["smoothed_label"] == "face"
    assert d["timestamp"] == 1_700_000_001.25
    assert d["time"] == "2023-11-14T22:13:21.250Z"
    assert datetime.fromisoformat(d["time"].replace("Z", "+00:00")).timestamp() == d["timestamp"]
    assert d["score"] == 0.912346
    assert d["stages_ms"] == {"capture_wait": 1.235, "invoke": 4.5}
    assert [json.loads(x)["event"] for x in lines] == [True, False, False]


def test_stdout_and_events_only(capsys):
    out = JsonlOutput(JsonlConfig(path="-", events_only=True), Telemetry())
    out.start()
    for i in range(5):
        out.publish(result(i, event=i in (0, 3)))
    out.close()
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["frame_id"] for x in lines] == [0, 3]


def test_rotation_caps_size(tmp_path):
    path = tmp_path / "results.jsonl"
    out = JsonlOutput(JsonlConfig(path=str(path), max_bytes=2000, backups=2), Telemetry())
    out.start()
    for i in range(100):
        out.publish(result(i))
    out.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["results.jsonl", "results.jsonl.1", "results.jsonl.2"]
    sizes = {name: (tmp_path / name).stat().st_size for name in files}
    assert all(0 < s <= 2000 for s in sizes.values()), sizes
    line_len = len((tmp_path / "results.jsonl.1").read_text().splitlines()[0]) + 1
    assert sizes["results.jsonl.1"] > 2000 - line_len  # rotated only when the next line did not fit
    # Newest lines in the live file, older ones in .1, .2; every line whole; nothing beyond 2 backups.
    ids = [
        json.loads(x)["frame_id"]
        for name in ("results.jsonl.2", "results.jsonl.1", "results.jsonl")
        for x in (tmp_path / name).read_text().splitlines()
    ]
    assert ids == list(range(100 - len(ids), 100))
    assert len(ids) < 100

    # Reopening appends to the existing file and keeps honouring the cap.
    out = JsonlOutput(JsonlConfig(path=str(path), max_bytes=2000, backups=2), Telemetry())
    out.start()
    for i in range(100, 110):
        out.publish(result(i))
    out.close()
    assert all((tmp_path / n).stat().st_size <= 2000 for n in files)
    assert json.loads(path.read_text().splitlines()[-1])["frame_id"] == 109


def test_full_disk_logged_once_and_counted(caplog):
    """Fault 6: /dev/full fails every write with ENOSPC; publish keeps returning, one log line."""
    tel = Telemetry()
    out = JsonlOutput(JsonlConfig(path="/dev/full"), tel)
    out.start()
    caplog.set_level(logging.WARNING, logger="device.outputs.jsonl")
    t0 = time.perf_counter()
    for i in range(200):
        out.publish(result(i))
    per_call_ms = (time.perf_counter() - t0) / 200 * 1000
    out.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "/dev/full" in errors[0].getMessage() and "No space left on device" in errors[0].getMessage()
    assert tel.counter("output_errors") == 200
    assert tel.counter("errors") == 0  # an output failure is counted once, in output_errors
    assert per_call_ms < 5, per_call_ms


def test_recovers_and_logs_it(tmp_path, caplog):
    tel = Telemetry()
    path = tmp_path / "r.jsonl"
    out = JsonlOutput(JsonlConfig(path=str(path)), tel)
    out.start()
    out.publish(result(0))
    real_fd = out._fd
    out._fd = os.open("/dev/full", os.O_WRONLY)  # the disk fills up
    caplog.set_level(logging.WARNING, logger="device.outputs.jsonl")
    for i in range(1, 4):
        out.publish(result(i))
    os.close(out._fd)
    out._fd = real_fd  # space again
    out.publish(result(4))
    out.close()
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2 and "again" in msgs[1]
    assert tel.counter("output_errors") == 3
    assert [json.loads(x)["frame_id"] for x in path.read_text().splitlines()] == [0, 4]


def test_unwritable_path_is_a_clear_error(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    (d / "x.jsonl").mkdir()  # a directory where the file should be
    out = JsonlOutput(JsonlConfig(path=str(d / "x.jsonl")), Telemetry())
    with pytest.raises(FaceedgeError, match=r"outputs.jsonl.path .*x.jsonl: cannot open"):
        out.start()


def test_config_rejects_unknown_key():
    with pytest.raises(Exception, match="max_byte"):
        OutputsConfig.model_validate({"jsonl": {"max_byte": 10}})


FSIZE_CHILD = r"""
import json, resource, sys
from device.outputs.jsonl import JsonlConfig, JsonlOutput, result_line
from device.telemetry import Telemetry
from device.types import Result

def result(i):
    return Result(frame_id=i, timestamp=1_700_000_000.25 + i, label="face", score=0.9, smoothed_label="face",
                  smoothed_score=0.8, stages_ms={"invoke": 4.5}, scores=[0.9], model_sha256="ab" * 32)

path = sys.argv[1]
tel = Telemetry()
out = JsonlOutput(JsonlConfig(path=path), tel)
out.start()
line = len(result_line(result(0)))
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
# the "disk" holds two and a half lines: line 3 is cut short, lines 4 and 5 get nothing
resource.setrlimit(resource.RLIMIT_FSIZE, (2 * line + line // 2, hard))
for i in range(5):
    out.publish(result(i))
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
for i in range(5, 7):
    out.publish(result(i))
out.close()
print(json.dumps({"output_errors": tel.counter("output_errors"), "line": line}))
"""


def test_short_write_leaves_no_torn_line(tmp_path):
    """A nearly full disk (RLIMIT_FSIZE in a child: the kernel writes part of a line, then refuses):
    the part is cut off again, so every line in the file parses and later lines follow whole."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    path = tmp_path / "r.jsonl"
    p = subprocess.run(
        [sys.executable, "-c", FSIZE_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.returncode == 0, p.stderr[-2000:]
    info = json.loads(p.stdout.strip().splitlines()[-1])
    data = path.read_bytes()
    assert data.endswith(b"\n")
    ids = [json.loads(x)["frame_id"] for x in data.decode().splitlines()]  # a torn line would not parse
    assert ids == [0, 1, 5, 6]
    assert info["output_errors"] == 3
    assert len(data) == 4 * info["line"]


def test_torn_tail_from_an_earlier_crash_is_cut_at_start(tmp_path, caplog):
    from device.outputs.jsonl import result_line

    path = tmp_path / "r.jsonl"
    path.write_bytes(result_line(result(1)) + result_line(result(2))[:40])  # power lost in the middle of a write
    out = JsonlOutput(JsonlConfig(path=str(path)), Telemetry())
    caplog.set_level(logging.WARNING, logger="device.outputs.jsonl")
    out.start()
    out.publish(result(3))
    out.close()
    ids = [json.loads(x)["frame_id"] for x in path.read_text().splitlines()]
    assert ids == [1, 3]
    assert any("incomplete last line" in r.getMessage() for r in caplog.records)


def test_a_file_that_is_not_ours_is_never_cut(tmp_path):
    """An existing file that does not end in one of our lines keeps every byte; ours start on a new line."""
    path = tmp_path / "notes.jsonl"
    path.write_bytes(b"my own notes, no newline at the end")
    out = JsonlOutput(JsonlConfig(path=str(path)), Telemetry())
    out.start()
    out.publish(result(3))
    out.close()
    first, second = path.read_bytes().split(b"\n")[:2]
    assert first == b"my own notes, no newline at the end" and json.loads(second)["frame_id"] == 3
