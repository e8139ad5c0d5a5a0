"""bench.md: the tables of one benchmark report (summary, raw, pipeline, bare loop, per stage, AI
Camera, efficiency, warnings), and the summary lines `device bench` prints last.

One fps figure throughout: 1000 ÷ the median time per frame (device.bench.report.efficiency says
why); frames ÷ time is in bench.json as ``throughput_fps``."""

from __future__ import annotations

from typing import Any

from device.bench.published import PUBLISHED_THREADS, verdict
from device.bench.sensor import PUBLISHED_SENSOR
from device.bench.stats import STAT_KEYS, WIDE_CV, WIDE_TAIL


def fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def stage_rows(entries: list[dict[str, Any]], stages: list[str], lead) -> list[list[str]]:
    """One row per entry: `lead(entry)`'s cells, then p50 / p95 / p99 of each stage ("—" where absent)."""
    rows = []
    for entry in entries:
        row = lead(entry)
        for stage in stages:
            x = entry["stages_ms"].get(stage)
            row.append(f"{x['p50']:.2f} / {x['p95']:.2f} / {x['p99']:.2f}" if x else "—")
        rows.append(row)
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    s = report["settings"]
    board = s.get("compare_board")
    multi = s["repeat"] > 1
    lines = [
        "# Bench",
        "",
        *summary_lines(report.get("summary") or {}, md=True),
        f"{report['created']} · {m['cpu_model']} · {m['cores_available']}/{m['cores']} cores · {m['os']} · "
        f"Python {m['python']} · {m['runtime']} {m['runtime_version']}"
        + (f" · **{m['board']}**" if m.get("board") else ""),
        "",
        f"Raw: {s['warmup_runs']} warm-up runs, then ≥ {s['runs']} runs and ≥ {s['min_seconds']} s. "
        + (
            f"Pipeline: {s['pipeline_seconds']} s after {s['pipeline_warmup_seconds']} s of warm-up, source "
            f"`{s['source_desc']}`. "
            if s["pipeline"]
            else ""
        )
        + f"{s['repeat']} round(s). The daemon's default thread count: {s['default_threads']}."
        + (f" Pinned to CPUs {','.join(map(str, s['cpus']))}." if s.get("cpus") else ""),
        "",
        "## Raw interpreter (invoke only)",
        "",
    ]
    head = (
        ["variant", "threads"]
        + (["round"] if multi else [])
        + ["load ms", "first ms", "mean", "std", "min", "p50", "p95", "p99", "max", "fps", "cv", "p95/p50"]
    )
    if board:
        head.append(f"published ({board}, {PUBLISHED_THREADS} thr)")
    rows = []
    for r in report["raw"]:
        lat = r["latency_ms"]
        row = (
            [r["variant"], str(r["threads"])]
            + ([str(r["round"])] if multi else [])
            + [
                fmt(r["load_ms"], 1),
                fmt(r["first_inference_ms"]),
                *(fmt(lat[k]) for k in STAT_KEYS),
                fmt(r["fps"], 1),
                f"{lat['cv'] * 100:.0f} %" + (" ⚠" if r["wide_spread"] else ""),
                fmt(lat["p95_over_p50"]),
            ]
        )
        if board:
            pub = r.get("published")
            row.append(
                f"{pub['ms_low']:g}–{pub['ms_high']:g} ms: {verdict(lat['p50'], pub['ms_low'], pub['ms_high'])}"
                if pub
                else "—"
            )
        rows.append(row)
    lines += table(head, rows)
    lines += [
        "",
        f"Latencies in ms. fps = 1000 ÷ p50. ⚠ = wide spread (cv > {WIDE_CV:.0%} or p95/p50 > {WIDE_TAIL}): "
        "the machine was busy or "
        "throttling; measure again.",
        "",
    ]

    if report["pipeline"]:
        lines += ["## Pipeline (the daemon's own loop, in a fresh process)", ""]
        head = (
            ["variant", "threads"]
            + (["round"] if multi else [])
            + [
                "fps",
                "raw fps",
                "÷ raw",
                "frames",
                "dropped",
                "peak RSS MB",
                "CPU %",
                "first result s",
                "from exec s",
            ]
        )
        if board:
            head.append(f"published ({board})")
        rows = []
        for p in report["pipeline"]:
            row = (
                [p["variant"], str(p["threads"])]
                + ([str(p["round"])] if multi else [])
                + [
                    fmt(p["fps"], 1),
                    fmt(p["raw_interleaved"]["fps"], 1),
                    fmt(p.get("pipeline_over_raw"), 3),
                    str(p["frames"]),
                    str(p["dropped_frames"]),
                    fmt(p["peak_rss_mb"], 1),
                    fmt(p["cpu_percent"], 0),
                    fmt(p["first_result_s"], 3),
                    fmt(p.get("first_result_from_exec_s"), 3),
                ]
            )
            if board:
                pub = p.get("published")
                row.append(f"≈{pub['fps']:g} fps, capture ≈{pub['capture_ms']:g} ms" if pub else "—")
            rows.append(row)
        lines += table(head, rows)
        lines += [
            "",
            "fps: 1000 ÷ the median time between results. raw fps: invokes of the daemon's own interpreter "
            "in slices interleaved with the pipeline's "
            f"({s.get('slice_seconds', 0.25)} s each, same process, same moment), the reference of ÷ raw. "
            "CPU % = process CPU time ÷ wall time (100 = one core busy). first result = from "
            "`Daemon.start()` (model load, source open) to the first published result; from exec = from "
            "the process spawn (interpreter start and imports included).",
            "",
        ]
        if report.get("bare"):
            lines += ["### Bare loop (reference floor: numpy + OpenCV + runtime, sequential, nothing else)", ""]
            head = (
                ["variant", "threads"]
                + (["round"] if multi else [])
                + ["fps", "peak RSS MB", "first result s", "from exec s"]
            )
            rows = [
                [bare["variant"], str(bare["threads"])]
                + ([str(bare["round"])] if multi else [])
                + [
                    fmt(bare["fps"], 1),
                    fmt(bare["peak_rss_mb"], 1),
                    fmt(bare["first_result_s"], 3),
                    fmt(bare["first_result_from_exec_s"], 3),
                ]
                for bare in report["bare"]
            ]
            lines += table(head, rows) + [""]
        lines += ["### Per stage (ms, p50 / p95 / p99)", ""]
        stages = report["pipeline"][0]["stage_names"]
        head = ["variant", "threads"] + (["round"] if multi else []) + stages
        rows = stage_rows(
            report["pipeline"],
            stages,
            lambda p: [p["variant"], str(p["threads"])] + ([str(p["round"])] if multi else []),
        )
        lines += table(head, rows)
        lines += [
            "",
            "capture: `source.read()` in the capture thread (decode + colour conversion; on a paced "
            "source it includes the wait for the next frame); frame_wait: the loop idle, waiting for a frame; "
            "capture_wait: frame age when the loop took it; crop, preprocess (resize + set_input; the daemon "
            "crops and resizes in the capture thread and reports those times here), invoke, postprocess "
            "(dequantize + decision); publish: outputs; latency: capture → decided; end_to_end: capture → "
            "published. Frames captured before their slice began are left out of these statistics.",
            "",
        ]

    if report.get("sensor"):
        lines += sensor_lines(report)
    if report.get("efficiency"):
        lines += ["## Efficiency", ""]
        lines += efficiency_lines(report, md=True)
        lines.append("")
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    return "\n".join(lines)


def sensor_lines(report: dict[str, Any]) -> list[str]:
    """The AI Camera's section: the loop's fps and the stages that exist on the Pi, the sensor's
    own DNN/DSP times when it reports them, and the published AI Camera figures beside them."""
    multi = report["settings"]["repeat"] > 1
    pub = PUBLISHED_SENSOR
    lines = ["## AI Camera (imx500: the model runs on the sensor)", ""]
    head = (
        ["variant"]
        + (["round"] if multi else [])
        + ["fps", "frames", "dropped", "peak RSS MB", "CPU %", "first result s", "published"]
    )
    rows = [
        [s["variant"]]
        + ([str(s["round"])] if multi else [])
        + [
            fmt(s["fps"], 1),
            str(s["frames"]),
            str(s["dropped_frames"]),
            fmt(s["peak_rss_mb"], 1),
            fmt(s["cpu_percent"], 0),
            fmt(s["first_result_s"], 3),
            f"sensor ≤ {pub['fps']['2028x1520']:g} fps (2028x1520), ≤ {pub['fps']['4056x3040']:g} fps (4056x3040)",
        ]
        for s in report["sensor"]
    ]
    lines += table(head, rows) + ["", "### Per stage (ms, p50 / p95 / p99)", ""]
    stages = report["sensor"][0]["stage_names"]
    head = ["variant"] + (["round"] if multi else []) + stages
    rows = stage_rows(report["sensor"], stages, lambda s: [s["variant"]] + ([str(s["round"])] if multi else []))
    lines += table(head, rows)
    lines += [
        "",
        "No crop, preprocess or invoke on the Pi: the sensor crops its region of interest, scales it and "
        "runs the network. capture: one camera request (frame + its output tensors; includes the wait for "
        "the frame); postprocess: output tensor → decision; sensor_dnn / sensor_dsp: the sensor's own "
        f"runtimes for each frame (CnnKpiInfo). Published: {pub['note']} (Sony reports ISP + AI "
        f"processing in {pub['dnn_ms']:g} ms for MobileNet V1; no figure for MobileNetV2 was found).",
        "",
    ]
    return lines


def efficiency_lines(report: dict[str, Any], md: bool = False) -> list[str]:
    """Per variant: pipeline ÷ raw fps at each thread count (the raw slices interleaved with the
    pipeline's), pipeline at default ÷ best raw, and against the bare loop."""
    out = []
    for v, e in report.get("efficiency", {}).items():
        d = e["default_threads"]
        per = ", ".join(f"{t} thr {x:.3f}" for t, x in e["pipeline_over_raw"].items())
        s = f"efficiency {v}: pipeline ÷ raw fps {per}"
        rounds = e.get("pipeline_over_raw_rounds") or []
        if len(rounds) > 1:
            s += f" [at {d} thr, rounds {min(rounds):.3f}–{max(rounds):.3f}]"
        if "pipeline_default_over_best_raw" in e:
            s += (
                f"; pipeline at default ({d}) ÷ best raw ({e['best_raw_threads']} thr) = "
                f"{e['pipeline_default_over_best_raw']:.3f}"
            )
        if "pipeline_over_bare" in e:
            s += f"; ÷ bare loop = {e['pipeline_over_bare']:.3f}"
        out.append(("- " if md else "") + s)
    return out


def summary_lines(summary: dict[str, Any], md: bool = False) -> list[str]:
    """The summary (device.bench.report.summarize) as `device bench` prints it last, and bench.md's
    first section: the same keys as bench.json's ``summary``."""
    if not summary:
        return []
    rows: list[tuple[str, str]] = []
    default = summary["default_threads"]
    if "pipeline_fps" in summary:
        lat = summary.get("latency_ms") or {}
        rows.append(
            (
                f"pipeline ({default} thr, the default)",
                f"{summary['pipeline_fps']:.1f} fps; end-to-end latency p50 {fmt(lat.get('p50'))} ms, "
                f"p95 {fmt(lat.get('p95'))}, p99 {fmt(lat.get('p99'))}",
            )
        )
        rows.append(
            (
                "pipeline at default ÷ best pipeline",
                f"{summary['pipeline_default_over_best']:.3f} (best: {summary['best_pipeline_threads']} thr, "
                f"{summary['best_pipeline_fps']:.1f} fps)",
            )
        )
    if "pipeline_over_raw_1_thread" in summary:
        rows.append(("pipeline ÷ raw at 1 thread", f"{summary['pipeline_over_raw_1_thread']:.3f}"))
    if "daemon_peak_rss_mb" in summary:
        over = (
            f"; bare loop {summary['bare_loop_peak_rss_mb']:.1f} MB, excess "
            f"{summary['daemon_rss_over_bare_mb']:+.1f} MB"
            if "bare_loop_peak_rss_mb" in summary
            else ""
        )
        rows.append(
            ("daemon peak RSS", f"{summary['daemon_peak_rss_mb']:.1f} MB (`device run`, JSONL + HTTP + MQTT){over}")
        )
        if "daemon_rss_anon_mb" in summary and "bare_loop_rss_anon_mb" in summary:
            rows.append(
                (
                    "  of it, at the end",
                    f"anonymous {summary['daemon_rss_anon_mb']:.1f} MB (bare loop "
                    f"{summary['bare_loop_rss_anon_mb']:.1f}), mapped libraries {summary['daemon_rss_file_mb']:.1f} MB "
                    f"(bare loop {summary['bare_loop_rss_file_mb']:.1f}; their size depends on the page cache)",
                )
            )
    if "help_s" in summary or "exec_to_first_result_s" in summary:
        rows.append(
            (
                "start-up",
                f"`--help` {fmt(summary.get('help_s'), 3)} s; exec → first result "
                f"{fmt(summary.get('exec_to_first_result_s'), 3)} s",
            )
        )
    if "interpreter_p50_ms" in summary and "compiled_model_p50_ms" in summary:
        rows.append(
            (
                "Interpreter vs CompiledModel",
                f"p50 {summary['interpreter_p50_ms']:.2f} vs {summary['compiled_model_p50_ms']:.2f} ms, peak RSS "
                f"{fmt(summary['interpreter_peak_rss_mb'], 1)} vs "
                f"{fmt(summary['compiled_model_peak_rss_mb'], 1)} MB, load "
                f"{summary['interpreter_load_ms']:.0f} vs {summary['compiled_model_load_ms']:.0f} ms (the "
                "daemon runs the "
                "Interpreter: docs/bench.md)",
            )
        )
    if "litert_benchmark_median_ms" in summary:
        verdict_text = (
            "agree within 15 %" if summary["litert_benchmark_agree"] else f"differ: {summary['litert_benchmark_why']}"
        )
        rows.append(
            (
                "raw median vs litert-benchmark",
                f"{summary['bench_raw_median_ms']:.2f} vs {summary['litert_benchmark_median_ms']:.2f} ms "
                f"({verdict_text})",
            )
        )
    if md:
        return [f"## Summary ({summary['variant']})", "", *table(["figure", "value"], [list(r) for r in rows]), ""]
    width = max(len(k) for k, _ in rows) if rows else 0
    return [f"summary {summary['variant']}:"] + [f"  {k:<{width}}  {v}" for k, v in rows]
