"""`device bench` / `bench-remote`: the JSON's fields and structure on the tiny model (not its
speed), the statistics, the published-figure column, the plots, and a real ssh round trip."""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.bench import cli as bench_cli
from device.bench import machine, markdown, models, pipeline, plot, published, report, stats, suite
from device.bench.suite import BenchOptions
from device.errors import FaceedgeError
from device.runtime import default_threads
from tests.helpers import ROOT
from tests.helpers.sshd import start_sshd

# the daemon's own stages (Result.stages_ms) plus the bench's capture (timed source.read), publish, end_to_end
PIPELINE_STAGES = {
    "capture",
    "capture_wait",
    "crop",
    "preprocess",
    "invoke",
    "postprocess",
    "publish",
    "latency",
    "end_to_end",
}
MACHINE_KEYS = {
    "cpu_model",
    "cores",
    "cores_available",
    "os",
    "python",
    "runtime",
    "runtime_version",
    "board",
    "numpy",
    "opencv",
    "arch",
}


def make_run(tmp: Path, tiny_models: dict) -> Path:
    """A run dir as convert leaves it: export/int8 and export/float32."""
    run = tmp / "run-20260101-000000"
    for v in ("int8", "float32"):
        shutil.copytree(tiny_models[v], run / "export" / v)
    return run


def ordered(st: dict) -> bool:
    return st["min"] <= st["p50"] <= st["p95"] <= st["p99"] <= st["max"] and st["std"] >= 0


@pytest.fixture(scope="module")
def bench_run(tiny_models, tmp_path_factory):
    """One real `python -m device bench` on the tiny run (≈ a second of measuring per pair)."""
    from device.cli import main

    run = make_run(tmp_path_factory.mktemp("bench"), tiny_models)
    threads = sorted({1, default_threads()})
    argv = [
        "bench",
        "--model-dir",
        str(run),
        "--threads",
        ",".join(map(str, threads)),
        "--runs",
        "20",
        "--min-seconds",
        "0.1",
        "--warmup-runs",
        "3",
        "--pipeline-seconds",
        "0.4",
        "--pipeline-warmup-seconds",
        "0.2",
        "--resolution",
        "320x240",
    ]
    import contextlib
    import io

    buf = io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    elapsed = time.monotonic() - t0
    out_dir = run / "bench"
    return {
        "code": code,
        "stdout": buf.getvalue(),
        "dir": out_dir,
        "threads": threads,
        "elapsed": elapsed,
        "report": json.loads((out_dir / "bench.json").read_text()),
    }


def test_bench_json_structure(bench_run):
    assert bench_run["code"] == 0
    rep = bench_run["report"]
    threads = bench_run["threads"]
    assert rep["schema_version"] == suite.SCHEMA_VERSION
    assert MACHINE_KEYS <= set(rep["machine"])
    assert rep["machine"]["cores"] >= 1 and rep["machine"]["runtime"] == "ai-edge-litert"
    assert rep["machine"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(rep["models"]) == {"int8", "float32"}
    assert rep["models"]["int8"]["input_size"] == [32, 32]
    # raw: every variant × thread count, ordered statistics, positive figures
    assert sorted((r["variant"], r["threads"]) for r in rep["raw"]) == sorted(
        (v, t) for v in ("int8", "float32") for t in threads
    )
    for r in rep["raw"]:
        st = r["latency_ms"]
        assert ordered(st), st
        assert st["n"] >= 20 and r["seconds"] >= 0.1
        assert r["load_ms"] > 0 and r["first_inference_ms"] > 0
        assert r["fps"] == pytest.approx(1000 / st["p50"], rel=1e-3)  # the one fps figure
        assert r["throughput_fps"] == pytest.approx(1000 / st["mean"], rel=1e-3)
        assert isinstance(r["wide_spread"], bool)
    # pipeline: the daemon's own stages, every variant × thread count
    assert sorted((p["variant"], p["threads"]) for p in rep["pipeline"]) == sorted(
        (v, t) for v in ("int8", "float32") for t in threads
    )
    for p in rep["pipeline"]:
        assert PIPELINE_STAGES <= set(p["stage_names"]) == set(p["stages_ms"])
        for st in p["stages_ms"].values():
            assert ordered(st), st
        assert p["threads_used"] == p["threads"]
        assert p["frames"] >= 2 and p["seconds"] >= 0.4 and p["fps"] > 0 and p["throughput_fps"] > 0
        # the capture thread reads up to two frames ahead of each slice
        assert p["dropped_frames"] >= 0 and p["frames_captured"] >= p["frames"] - 2 * p["slices"]
        assert 20 < p["peak_rss_mb"] < 2000
        assert p["cpu_percent"] > 0
        assert 0 < p["first_result_s"] < p["first_result_from_exec_s"]
        assert p["source"].startswith("synthetic") and "320x240" in p["source"]
        ri = p["raw_interleaved"]  # raw slices on the daemon's own interpreter, between the pipeline's
        assert ordered(ri["latency_ms"]) and ri["fps"] > 0 and ri["seconds"] > 0
        assert p["pipeline_over_raw"] == pytest.approx(p["fps"] / ri["fps"], rel=1e-3)
        assert p["pipeline_over_raw_throughput"] == pytest.approx(p["throughput_fps"] / ri["throughput_fps"], rel=1e-3)
        assert p["slices"] >= 2
        # the end-to-end time covers every stage of the loop
        e2e = p["stages_ms"]["end_to_end"]["p50"]
        assert e2e >= p["stages_ms"]["invoke"]["p50"]
    # bare-loop reference at the default thread count
    d = rep["settings"]["default_threads"]
    assert {(b["variant"], b["threads"]) for b in rep["bare"]} == {("int8", d), ("float32", d)}
    for b in rep["bare"]:
        assert b["fps"] > 0 and b["peak_rss_mb"] > 20 and b["first_result_s"] > 0
    # efficiency
    for v in ("int8", "float32"):
        e = rep["efficiency"][v]
        assert set(e["pipeline_over_raw"]) == set(e["pipeline_over_raw_throughput"]) == {str(t) for t in threads}
        assert e["pipeline_default_over_best_raw"] > 0 and e["best_raw_threads"] in threads
        assert "pipeline_over_bare" in e and "rss_over_bare_mb" in e
    assert "targets" not in rep  # internal targets live in tests, not in the user's report


SUMMARY_KEYS = {
    "variant",
    "default_threads",
    "pipeline_fps",
    "latency_ms",
    "best_pipeline_threads",
    "best_pipeline_fps",
    "pipeline_default_over_best",
    "pipeline_over_raw_1_thread",
    "daemon_peak_rss_mb",
    "bare_loop_peak_rss_mb",
    "daemon_rss_over_bare_mb",
    "daemon_rss_anon_mb",
    "daemon_rss_file_mb",
    "bare_loop_rss_anon_mb",
    "bare_loop_rss_file_mb",
    "help_s",
    "exec_to_first_result_s",
    "interpreter_p50_ms",
    "compiled_model_p50_ms",
    "interpreter_peak_rss_mb",
    "compiled_model_peak_rss_mb",
    "litert_benchmark_median_ms",
    "bench_raw_median_ms",
    "litert_benchmark_agree",
}


def test_bench_summary_from_one_run(bench_run):
    """The figures `device bench` prints last are bench.json's summary, computed from this run."""
    rep = bench_run["report"]
    sm = rep["summary"]
    assert SUMMARY_KEYS <= set(sm), SUMMARY_KEYS - set(sm)
    d = rep["settings"]["default_threads"]
    assert sm["variant"] == "int8" and sm["default_threads"] == d
    fps = {p["threads"]: p["fps"] for p in rep["pipeline"] if p["variant"] == "int8"}
    close = dict(rel=1e-3)  # bench.json's floats are rounded
    assert sm["pipeline_fps"] == pytest.approx(fps[d], **close)
    assert sm["best_pipeline_fps"] == pytest.approx(max(fps.values()), **close)
    assert sm["pipeline_default_over_best"] == pytest.approx(fps[d] / max(fps.values()), **close)
    assert sm["pipeline_over_raw_1_thread"] == pytest.approx(
        rep["efficiency"]["int8"]["pipeline_over_raw"]["1"], **close
    )
    ex = rep["extras"]
    assert sm["daemon_peak_rss_mb"] == ex["daemon"]["peak_rss_mb"] > 20
    bare = [b["peak_rss_mb"] for b in rep["bare"] if b["variant"] == "int8"]
    assert sm["daemon_rss_over_bare_mb"] == pytest.approx(sm["daemon_peak_rss_mb"] - bare[0], abs=1e-3)  # rounded
    # the peak splits into the program's own memory and the mapped libraries (both read at the end)
    assert 0 < sm["daemon_rss_anon_mb"] and 0 < sm["daemon_rss_file_mb"]
    assert sm["daemon_rss_anon_mb"] + sm["daemon_rss_file_mb"] <= sm["daemon_peak_rss_mb"] + 0.5
    assert 0 < sm["help_s"] < 30 and 0 < sm["exec_to_first_result_s"] < 60
    assert ex["apis"]["threads"] == d and ex["apis"]["faster"] in ("interpreter", "compiled_model")
    assert sm["interpreter_p50_ms"] > 0 and sm["compiled_model_p50_ms"] > 0
    lb = ex["litert_benchmark"]
    assert lb["bench_median_ms"] == pytest.approx(
        [r["latency_ms"]["p50"] for r in rep["raw"] if r["variant"] == "int8" and r["threads"] == d][0]
    )
    assert lb["agree"] == (abs(lb["bench_median_ms"] / lb["litert_benchmark_median_ms"] - 1) <= 0.15)
    assert lb["agree"] or lb["why"]  # they agree, or the bench says why not
    # printed: one summary line per figure, the same numbers
    out = bench_run["stdout"]
    tail = out[out.index("summary int8:") :]
    for label in (
        "pipeline (",
        "pipeline at default ÷ best pipeline",
        "pipeline ÷ raw at 1 thread",
        "daemon peak RSS",
        "start-up",
        "Interpreter vs CompiledModel",
        "raw median vs litert-benchmark",
    ):
        assert label in tail, label
    assert f"{sm['pipeline_fps']:.1f} fps" in tail and f"excess {sm['daemon_rss_over_bare_mb']:+.1f} MB" in tail
    assert "target" not in out.lower() and "MISSED" not in out


def test_bench_writes_md_png_and_prints_efficiency_last(bench_run):
    out = bench_run["dir"]
    md = (out / "bench.md").read_text()
    for heading in (
        "## Raw interpreter",
        "## Pipeline",
        "### Per stage",
        "### Bare loop",
        "## Efficiency",
        "## Summary (int8)",
    ):
        assert heading in md
    assert md.count("| int8 |") >= 3 * len(bench_run["threads"])  # raw, pipeline, per-stage rows
    assert "published (" not in md  # not a Pi, no --compare-board: no published column
    img = cv2.imread(str(out / "bench.png"))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
    assert bench_run["report"]["plot_backend"] in ("matplotlib", "opencv")
    lines = [ln for ln in bench_run["stdout"].splitlines() if ln.strip()]
    last = lines.index("summary int8:")
    assert lines[last - 2].startswith("efficiency float32:") and lines[last - 1].startswith("efficiency int8:")
    assert "÷ best raw" in lines[last - 1] and "÷ bare loop" in lines[last - 1]
    assert all(ln.startswith("  ") for ln in lines[last + 1 :])  # the summary is printed last
    assert "fps (p50)" not in md  # one fps figure
    assert bench_run["elapsed"] < 60


def test_summarize_known_values_and_order():
    st = stats.summarize(range(1, 101))
    assert (st["n"], st["min"], st["max"], st["mean"]) == (100, 1.0, 100.0, 50.5)
    assert st["p50"] == pytest.approx(50.5) and st["p95"] == pytest.approx(95.05) and st["p99"] == pytest.approx(99.01)
    assert st["std"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert stats.summarize([3.0])["std"] == 0.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert ordered(stats.summarize(rng.lognormal(0, 1, rng.integers(1, 50))))
    with pytest.raises(ValueError):
        stats.summarize([])


def test_wide_spread_rule():
    steady = stats.summarize([10.0, 10.2, 9.9, 10.1] * 25)
    noisy = stats.summarize([10.0] * 90 + [40.0] * 10)
    assert not stats.is_wide(steady)
    assert stats.is_wide(noisy) and noisy["p95_over_p50"] == pytest.approx(4.0)


def test_board_detection(tmp_path):
    f = tmp_path / "model"
    f.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    assert machine.board_model(f) == "Raspberry Pi 4 Model B Rev 1.4"
    assert machine.board_model(tmp_path / "absent") is None
    assert machine.board_key("Raspberry Pi 4 Model B Rev 1.4") == "pi4"
    assert machine.board_key("Raspberry Pi 5 Model B Rev 1.0") == "pi5"
    assert machine.board_key("Raspberry Pi Compute Module 4 Rev 1.1") == "pi4"
    assert machine.board_key("Raspberry Pi 3 Model B Plus Rev 1.3") is None
    assert machine.board_key(None) is None


MNV2 = {"backbone": "mobilenet_v2", "input_size": [224, 224], "alpha": None}


def test_published_figures_only_for_the_same_model_and_threads():
    """Which runs get a published figure next to them: the same board, model (MobileNetV2 1.0 at
    224), variant and thread count only; each such run gets that board's own entry."""
    assert published.PUBLISHED_RAW_MS, "no published figures to compare with"
    for board, variants in published.PUBLISHED_RAW_MS.items():
        for variant, (low, high) in variants.items():
            pub = published.published_raw(board, MNV2, variant, published.PUBLISHED_THREADS)
            assert (pub["board"], pub["ms_low"], pub["ms_high"]) == (board, low, high)
            assert 0 < low <= high  # a range, fastest first
            assert published.published_raw(board, MNV2, variant, published.PUBLISHED_THREADS - 1) is None
            assert published.published_raw(board, {**MNV2, "alpha": 0.35}, variant, published.PUBLISHED_THREADS) is None
            assert (
                published.published_raw(board, {**MNV2, "input_size": [96, 96]}, variant, published.PUBLISHED_THREADS)
                is None
            )
            assert (
                published.published_raw(board, {**MNV2, "backbone": "vgg16"}, variant, published.PUBLISHED_THREADS)
                is None
            )
            assert published.published_raw(board, {**MNV2, "alpha": 1.0}, variant, published.PUBLISHED_THREADS) == pub
    assert published.published_raw(None, MNV2, "int8", published.PUBLISHED_THREADS) is None
    assert published.published_raw("pi3", MNV2, "int8", published.PUBLISHED_THREADS) is None
    # one board's figures are not another's
    pi4, pi5 = (published.published_raw(b, MNV2, "int8", published.PUBLISHED_THREADS) for b in ("pi4", "pi5"))
    assert pi5["ms_high"] < pi4["ms_low"]  # a Pi 5 is faster than a Pi 4, not the same entry twice


@pytest.mark.parametrize(
    "p50, expected",
    [
        (None, "as published"),  # the middle of the range
        ("low*0.9", "as published"),
        ("low*0.89", "faster than published"),
        ("high*1.1", "as published"),
        ("high*1.11", "slower ×1.1"),
        ("high*2", "slower ×2.0"),
    ],
)
def test_verdict_follows_the_measured_median(p50, expected):
    low, high = published.PUBLISHED_RAW_MS["pi4"]["int8"]
    if p50 is None:
        ms = (low + high) / 2
    else:
        ref, k = p50.split("*")
        ms = {"low": low, "high": high}[ref] * float(k)
    assert published.verdict(ms, low, high) == expected


def test_published_column_rendered_on_a_pi(bench_run):
    """The markdown's published column on a Pi: the board's entry next to the row, and the verdict of
    THAT row's measured median against it (three medians, three verdicts)."""
    pub = published.published_raw("pi4", MNV2, "int8", published.PUBLISHED_THREADS)
    low, high = pub["ms_low"], pub["ms_high"]
    for p50, verdict in (
        (low / 2, "faster than published"),
        ((low + high) / 2, "as published"),
        (high * 3, "slower ×3.0"),
    ):
        rep = copy.deepcopy(bench_run["report"])
        rep["settings"]["compare_board"] = "pi4"
        rep["machine"]["board"] = "Raspberry Pi 4 Model B Rev 1.4"
        row = rep["raw"][0]
        row["published"], row["latency_ms"]["p50"] = pub, p50
        md = markdown.render_markdown(rep)
        assert f"published (pi4, {published.PUBLISHED_THREADS} thr)" in md
        (line,) = [ln for ln in md.splitlines() if f"{low:g}–{high:g} ms:" in ln]
        assert line.rstrip(" |").endswith(f"{low:g}–{high:g} ms: {verdict}"), line
        assert f"| {markdown.fmt(p50)} |" in line  # the row's own median is shown


def test_efficiency_ratios_by_hand():
    def pipe(t, fps, fps50, raw, raw50, rnd=1):
        return {
            "variant": "int8",
            "threads": t,
            "round": rnd,
            "fps": fps,
            "throughput_fps": fps50,
            "peak_rss_mb": 90.0,
            "raw_interleaved": {"fps": raw, "throughput_fps": raw50},
        }

    pipes = [pipe(1, 95, 99, 100, 110), pipe(2, 171, 190, 180, 200), pipe(4, 120, 160, 150, 210)]
    bare = [{"variant": "int8", "threads": 2, "round": 1, "fps": 150.0, "throughput_fps": 190.0, "peak_rss_mb": 70.0}]
    e = report.efficiency(pipes, 2, bare)["int8"]
    assert e["pipeline_over_raw"] == {"1": 0.95, "2": 0.95, "4": 0.8}
    assert list(e["pipeline_over_raw_throughput"]) == ["1", "2", "4"]
    assert e["pipeline_over_raw_throughput_at_default"] == pytest.approx(0.95)
    assert e["best_raw_threads"] == 2 and e["pipeline_default_over_best_raw"] == pytest.approx(171 / 180)
    assert e["best_raw_threads_throughput"] == 4
    assert e["pipeline_default_over_best_raw_throughput"] == pytest.approx(190 / 210)
    assert e["pipeline_over_bare"] == pytest.approx(171 / 150) and e["rss_over_bare_mb"] == pytest.approx(20.0)
    # rounds: the median of the per-round ratios (0.95, 0.5, 0.9 → 0.9)
    rounds = pipes + [pipe(t, 50, 50, 100, 100, 2) for t in (1, 2, 4)]
    rounds += [pipe(t, 90, 90, 100, 100, 3) for t in (1, 2, 4)]
    assert report.efficiency(rounds, 2)["int8"]["pipeline_over_raw"]["2"] == pytest.approx(0.9)
    # the default thread count not measured: no default ratio, and no crash
    assert "pipeline_default_over_best_raw" not in report.efficiency(pipes, 8)["int8"]


def test_opencv_plot_fallback(bench_run, tmp_path):
    """The Pi has no matplotlib: the plot is drawn with OpenCV instead."""
    path = tmp_path / "bench.png"
    plot.plot_cv2(bench_run["report"], path)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[1] == 900
    n_rows = len(bench_run["report"]["raw"]) + sum(len(p["stage_names"]) for p in bench_run["report"]["pipeline"])
    assert img.shape[0] == 60 + 22 * n_rows


def test_bad_input_is_one_line_error(tmp_path, capsys):
    from device.cli import main

    assert main(["bench", "--model-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope" in err and "\n" not in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceedgeError, match="make convert"):
        models.find_variants(tmp_path / "empty")
    with pytest.raises(FaceedgeError, match="unknown variant 'int4'"):
        models.find_variants(tmp_path / "empty", ["int4"])
    with pytest.raises(FaceedgeError, match="--source 'nofile.avi'"):
        pipeline.source_config("nofile.avi", (640, 480))
    for bad in (["--threads", "0"], ["--threads", "a,b"], ["--resolution", "640"]):
        with pytest.raises(SystemExit):
            main(["bench", "--model-dir", str(tmp_path), *bad])
        assert "error:" in capsys.readouterr().err


def test_pipeline_failure_in_the_child_is_one_line(tiny_models, tmp_path, capsys):
    """--source config with a config whose video file is gone: the child's one-line reason."""
    from device.cli import main

    cfg = tmp_path / "device.yaml"
    cfg.write_text(f"source: {{type: opencv, device: {tmp_path / 'gone.avi'}}}\n")
    code = main(
        [
            "bench",
            "--model-dir",
            str(tiny_models["int8"]),
            "--threads",
            "1",
            "--runs",
            "3",
            "--min-seconds",
            "0",
            "--config",
            str(cfg),
            "--source",
            "config",
            "--no-baseline",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: pipeline bench of ") and "gone.avi" in err[-1]
    assert not (tmp_path / "out" / "bench.json").exists()  # nothing half-written
    with pytest.raises(FaceedgeError, match="--source config needs --config"):
        suite.run(BenchOptions(model_dir=tiny_models["int8"], source="config", out=tmp_path / "o2"))


def test_cpus_pinning(tiny_models, tmp_path):
    assert bench_cli.parse_cpus("0-2,5") == [0, 1, 2, 5] and bench_cli.parse_cpus("3") == [3]
    for bad in ("", "a", "2-x"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench_cli.parse_cpus(bad)
    before = os.sched_getaffinity(0)
    opts = BenchOptions(
        model_dir=tiny_models["int8"], out=tmp_path, cpus=(min(before),), pipeline=False, runs=5, min_seconds=0
    )
    rep = suite.run(opts)
    assert rep["settings"]["cpus"] == [min(before)] and rep["machine"]["cores_available"] == 1
    assert [r["threads"] for r in rep["raw"]] == [1]  # 1 … pinned CPUs
    assert os.sched_getaffinity(0) == before  # restored
    assert f"Pinned to CPUs {min(before)}." in (tmp_path / "bench.md").read_text()


def test_single_model_dir_and_variant_filter(tiny_models):
    assert models.find_variants(tiny_models["int8"]) == {"int8": tiny_models["int8"]}
    with pytest.raises(FaceedgeError, match="holds a int8 model"):
        models.find_variants(tiny_models["int8"], ["float32"])


def test_passthrough_flags_round_trip():
    import argparse

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    bench_cli.add_parser(sub)
    args = p.parse_args(
        [
            "bench-remote",
            "--hosts",
            "pi@x",
            "--threads",
            "1,4",
            "--no-pipeline",
            "--resolution",
            "1280x720",
            "--min-seconds",
            "3",
        ]
    )
    flags = bench_cli.passthrough_flags(args)
    assert flags == ["--threads", "1,4", "--min-seconds", "3.0", "--no-pipeline", "--resolution", "1280x720"]
    again = p.parse_args(["bench", *flags])
    assert (again.threads, again.pipeline, again.resolution, again.min_seconds) == ([1, 4], False, (1280, 720), 3.0)


# ------------------------------------------------------------------------------------------ remote (real sshd)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An OpenSSH server on 127.0.0.1 (generated keys, its own known_hosts), the 'Pi'."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"), env={"PYTHONPATH": str(ROOT)})
    yield {
        "port": server.port,
        "key": server.key,
        "known_hosts": server.known_hosts,
        "home": server.home,
        "host": server.host,
    }
    server.stop()


@pytest.mark.slow
def test_bench_remote_over_real_ssh(sshd, tiny_models, tmp_path, capsys):
    """The deployed layout (<remote_dir>/current/{venv,model}) on the 'Pi'; results come back here."""
    from device.cli import main

    current = sshd["home"] / "faceedge" / "current"
    current.mkdir(parents=True)
    (current / "venv").symlink_to(Path(sys.prefix))  # the project venv plays the release venv
    shutil.copytree(tiny_models["int8"], current / "model")
    out = tmp_path / "fetched"
    argv = [
        "bench-remote",
        "--hosts",
        sshd["host"],
        "--port",
        str(sshd["port"]),
        "--ssh-key",
        str(sshd["key"]),
        "--known-hosts",
        str(sshd["known_hosts"]),
        "--remote-dir",
        "faceedge",
        "--out",
        str(out),
        "--threads",
        "1",
        "--runs",
        "5",
        "--min-seconds",
        "0.05",
        "--pipeline-seconds",
        "0.3",
        "--pipeline-warmup-seconds",
        "0.1",
        "--no-baseline",
    ]
    assert main(argv) == 0, capsys.readouterr()
    stdout = capsys.readouterr().out
    rep = json.loads((out / "bench.json").read_text())
    assert [(r["variant"], r["threads"]) for r in rep["raw"]] == [("int8", 1)]
    assert rep["remote"]["host"] == sshd["host"]
    assert rep["remote"]["dir"].startswith(str((sshd["home"] / "faceedge" / "bench").resolve()))
    assert PIPELINE_STAGES <= set(rep["pipeline"][0]["stage_names"])
    assert (out / "bench.md").is_file() and cv2.imread(str(out / "bench.png")) is not None
    # the results also stay on the device, and the summary is printed last
    assert (Path(rep["remote"]["dir"]) / "bench.json").is_file()
    lines = stdout.strip().splitlines()
    assert "summary int8:" in lines and lines[-1].startswith("  ")
    # no deployed release: one clear line naming the fix
    assert main([*argv[: argv.index("--remote-dir")], "--remote-dir", "elsewhere", "--no-pipeline"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "deploy" in err


def test_bare_loop_runs_by_path_and_loads_no_project_module(tiny_models, tmp_path):
    """The bare-loop reference is a file run by path: its process holds numpy, OpenCV and the
    runtime, and no module of this project (no daemon, no pydantic, nothing under device/)."""
    import subprocess

    from device.manifest import load_manifest
    from device.runtime import RUNTIMES, load_runtime

    _, model_path = load_manifest(tiny_models["int8"])
    module = next(m for m, dist in RUNTIMES if dist == load_runtime().name)
    spec = {
        "model_path": str(model_path),
        "threads": 1,
        "runtime_module": module,
        "source": pipeline.source_config("synthetic", (64, 48)),
        "seconds": 0.2,
        "warmup_seconds": 0.05,
        "spawned_at": time.time(),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    script = pipeline.BARE_LOOP_SCRIPT
    assert script.is_file() and script.parent == Path(pipeline.__file__).parent
    wrapper = tmp_path / "wrap.py"
    wrapper.write_text(
        "import json, runpy, sys\n"
        "script, spec, out, mods = sys.argv[1:5]\n"
        "sys.argv = [script, spec, out]\n"
        "try:\n"
        "    runpy.run_path(script, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "open(mods, 'w').write(json.dumps(sorted(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [
            sys.executable,
            "-P",
            str(wrapper),
            str(script),
            str(tmp_path / "spec.json"),
            str(tmp_path / "out.json"),
            str(tmp_path / "mods.json"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["frames"] >= 2 and result["fps"] > 0 and result["peak_rss_mb"] > 0
    loaded = json.loads((tmp_path / "mods.json").read_text())
    assert "cv2" in loaded and "numpy" in loaded and module in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("device", "convert", "train", "pydantic", "yaml")]
