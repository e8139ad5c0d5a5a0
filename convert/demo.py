"""`make demo` (= `python -m convert.demo`): the whole chain, offline, on generated data.

    data ─► train ─► convert ─► video of unseen persons ─► device daemon on it ─► bench ─► summary

Each stage is the stage's own CLI in a child process (exactly what its Make target runs, printed
before it starts so it can be re-run alone), its output streamed as it comes (training prints one
line per epoch). The demo is resumable: ``--from STAGE --run RUN`` (``make demo FROM=convert
RUN=runs/sample-...``) starts at STAGE on an existing run, ``--to STAGE`` stops after it; a failed
stage prints the command that resumes there. The video stage is ``make video RUN=...``. Every
figure of the summary is read back from the stages' files, so a resumed demo reports the same.

The demo's own files go into the run directory, beside what the stages write:

    runs/<run>/demo/unseen_persons.avi    MJPG video made from the unseen persons' images
    runs/<run>/demo/unseen_persons.csv    frame → image, label (the video's ground truth)
    runs/<run>/demo/device.yaml           the daemon config used (video source, JSONL output)
    runs/<run>/demo/results.jsonl         one line per classified frame (the daemon's output)
    runs/<run>/demo/summary.json          the headline figures printed at the end, each with its n

It lives in `convert/` because it drives the training stage (TensorFlow) as well as the device;
the device package itself never imports TensorFlow, train or convert.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from device.errors import FaceedgeError
from device.files import atomic_write_bytes
from train import stats

log = logging.getLogger(__name__)

DEMO_DIR = "demo"
VIDEO_NAME = "unseen_persons.avi"
TRUTH_NAME = "unseen_persons.csv"


STAGES = ("data", "train", "convert", "video", "device", "bench")
NEEDS_RUN = ("convert", "video", "device", "bench")  # stages that work on an existing run


class StageFailed(FaceedgeError):
    exit_code = 1


def _say(text: str = "") -> None:
    print(text, flush=True)


def run_stage(
    number: int, total: int, name: str, argv: list[str], remake: str, *, env: dict | None = None, resume: str = ""
) -> list[str]:
    """Run one stage CLI, stream its output (indented), return its stdout lines; raise on failure."""
    _say(f"==> [{number}/{total}] {name}: {shlex.join(argv)}")
    _say(f"    (re-run alone: {remake})")
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        if _noise(line):
            continue
        _say(f"    {line}")
    rc = proc.wait()
    if rc != 0:
        raise StageFailed(
            f"stage {name} failed (exit {rc}); "
            + (
                f"resume the demo there with: {resume} (or re-run the stage alone: {remake})"
                if resume
                else f"re-run it alone with: {remake}"
            )
        )
    _say(f"    {name} done in {time.perf_counter() - t0:.1f} s")
    return lines


def _noise(line: str) -> bool:
    """TensorFlow/absl C++ start-up chatter that says nothing about the stage."""
    return (
        line.startswith(("WARNING: All log messages before absl", "I0000 ", "W0000 ", "E0000 "))
        or "cuda" in line.lower()
        and ("cuInit" in line or "Could not find cuda" in line)
        or line.startswith(("To enable the following instructions", "fully_quantize:"))
    )


def make_video(
    run_dir: Path, out_dir: Path, *, fps: float, frames_per_image: int, size: int
) -> tuple[Path, list[dict]]:
    """An MJPG .avi of the run's unseen-person images (grouped by person, then label), with its truth."""
    import cv2

    from device.crop import load_image_rgb, resize_to_input
    from train.splits import read_splits_csv

    rows = [r for r in read_splits_csv(run_dir / "splits.csv") if r.split == "unseen_persons"]
    if not rows:
        raise FaceedgeError(f"{run_dir / 'splits.csv'}: no unseen_persons images to make a video of")
    rows.sort(key=lambda r: (r.person or "", r.label, r.path))
    out_dir.mkdir(parents=True, exist_ok=True)
    video = out_dir / VIDEO_NAME
    tmp = out_dir / f".{VIDEO_NAME}.{os.getpid()}.avi"
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
    if not writer.isOpened():
        raise FaceedgeError(f"{video}: OpenCV cannot write an MJPG video here")
    truth = []
    try:
        for r in rows:
            bgr = cv2.cvtColor(resize_to_input(load_image_rgb(r.path), (size, size)), cv2.COLOR_RGB2BGR)
            for _ in range(frames_per_image):
                writer.write(bgr)
                truth.append({"frame": len(truth) + 1, "path": r.path, "label": r.label, "person": r.person or ""})
    finally:
        writer.release()
    os.replace(tmp, video)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["frame", "path", "label", "person"], lineterminator="\n")
    w.writeheader()
    w.writerows(truth)
    atomic_write_bytes(out_dir / TRUTH_NAME, buf.getvalue().encode())
    return video, truth


def read_truth(out_dir: Path) -> list[dict]:
    path = out_dir / TRUTH_NAME
    if not path.is_file():
        raise FaceedgeError(f"{path}: no video ground truth (run the video stage first: make video RUN=...)")
    return [{**r, "frame": int(r["frame"])} for r in csv.DictReader(open(path, newline=""))]


def write_device_config(out_dir: Path, video: Path, results: Path) -> Path:
    """The daemon config for the demo: the video, every frame classified, results to a JSONL file."""
    import yaml

    cfg = {
        "source": {"type": "opencv", "device": str(video), "realtime": False},
        "crop": {"mode": "full"},
        "model": {"variant": "int8"},
        "outputs": {"jsonl": {"path": str(results)}},
        "log_level": "INFO",
    }
    path = out_dir / "device.yaml"
    atomic_write_bytes(path, ("# written by `make demo`\n" + yaml.safe_dump(cfg, sort_keys=False)).encode())
    return path


def score_results(results: Path, truth: list[dict]) -> dict:
    """The daemon's labels against the video's ground truth: per frame, and per image (its frames'
    majority; the frames of one image are the same picture, so the interval counts images), and its
    frame rate."""
    if not results.is_file():
        raise FaceedgeError(f"{results}: no daemon results (run the device stage first)")
    recs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    if not recs:
        raise FaceedgeError(f"{results}: the daemon published no results")
    by_frame = {t["frame"]: t for t in truth}
    scored = [(r["label"], by_frame[r["frame_id"]]["label"]) for r in recs if r["frame_id"] in by_frame]
    per_image: dict[str, list[bool]] = {}
    for r in recs:
        t = by_frame.get(r["frame_id"])
        if t is not None:
            per_image.setdefault(t["path"], []).append(r["label"] == t["label"])
    image_right = sum(sum(v) * 2 > len(v) for v in per_image.values())
    ts = sorted(r["timestamp"] for r in recs)
    smoothed = [
        (r["smoothed_label"], by_frame[r["frame_id"]]["label"])
        for r in recs
        if r.get("smoothed_label") is not None and r["frame_id"] in by_frame
    ]
    return {
        "frames": len(truth),
        "results": len(recs),
        "frames_correct": sum(a == b for a, b in scored),
        "accuracy": float(np.mean([a == b for a, b in scored])) if scored else float("nan"),
        "images": len(per_image),
        "images_correct": image_right,
        "image_accuracy": image_right / len(per_image) if per_image else float("nan"),
        "image_accuracy_ci95": stats.wilson_interval(image_right, len(per_image)),
        "smoothed_accuracy": float(np.mean([a == b for a, b in smoothed])) if smoothed else float("nan"),
        "events": sum(bool(r.get("event")) for r in recs),
        "fps": (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else float("nan"),
        "invoke_ms_median": float(np.median([r["stages_ms"].get("invoke", np.nan) for r in recs])),
    }


def _bench_pipeline_fps(bench_json: Path) -> dict:
    b = json.loads(bench_json.read_text())
    eff = b.get("efficiency", {}).get("int8", {})
    threads = eff.get("default_threads")
    rows = [p for p in b.get("pipeline", []) if p.get("variant") == "int8"]
    at = [p for p in rows if p.get("threads") == threads] or rows
    if not at:
        return {}
    p = at[-1]
    return {
        "threads": p.get("threads"),
        "fps": p.get("fps"),
        "peak_rss_mb": p.get("peak_rss_mb"),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m convert.demo",
        description="The whole chain offline: sample data, training, int8 conversion (gated), a video of unseen "
        "persons through the device daemon, a short benchmark, then where everything is and the "
        "headline figures. Resumable: --from STAGE --run RUN.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", type=Path, default=Path("data/sample"), help="where the sample dataset is generated")
    p.add_argument("--config", type=Path, default=Path("configs/sample.yaml"), help="training config")
    p.add_argument("--seed", type=int, default=0, help="sample data seed")
    p.add_argument(
        "--from",
        dest="from_stage",
        choices=STAGES,
        default=STAGES[0],
        help="first stage to run; convert and later work on --run",
    )
    p.add_argument(
        "--to",
        dest="to_stage",
        choices=STAGES,
        default=STAGES[-1],
        help="last stage to run (the summary is printed when the chain reaches bench)",
    )
    p.add_argument("--run", type=Path, default=None, help="the run directory for --from convert|video|device|bench")
    p.add_argument(
        "--data_args",
        type=str,
        default="",
        help="extra arguments for `train data`, e.g. '--persons 6 --images_per_person 20'",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training config override, as `train fit --set` (repeatable)",
    )
    p.add_argument("--convert_args", type=str, default="", help="extra arguments for `python -m convert`")
    p.add_argument("--video_fps", type=float, default=10.0, help="frame rate written into the video")
    p.add_argument("--frames_per_image", type=int, default=3, help="frames each unseen-person image is shown")
    p.add_argument("--video_size", type=int, default=128, help="video frame side in pixels")
    p.add_argument("--bench_seconds", type=float, default=2.0, help="bench: seconds per pipeline measurement")
    return p


def _make_vars(args: argparse.Namespace) -> str:
    """DATA=/CONFIG=/SEED= and ARGS= for a `make demo` line that repeats this invocation's settings."""
    defaults = build_parser().parse_args([])
    out = []
    for var, key in (("DATA", "data"), ("CONFIG", "config"), ("SEED", "seed")):
        if getattr(args, key) != getattr(defaults, key):
            out.append(f"{var}={shlex.quote(str(getattr(args, key)))}")
    extra: list[str] = []
    for key, flag in (
        ("data_args", "--data_args"),
        ("convert_args", "--convert_args"),
        ("video_fps", "--video_fps"),
        ("frames_per_image", "--frames_per_image"),
        ("video_size", "--video_size"),
        ("bench_seconds", "--bench_seconds"),
    ):
        if getattr(args, key) != getattr(defaults, key):
            extra += [flag, str(getattr(args, key))]
    for o in args.overrides:
        extra += ["--set", o]
    if extra:
        out.append(f"ARGS={shlex.quote(shlex.join(extra))}")
    return (" " + " ".join(out)) if out else ""


def resume_command(args: argparse.Namespace, stage: str, run_dir: Path | None) -> str:
    run = f" RUN={shlex.quote(str(run_dir))}" if stage in NEEDS_RUN and run_dir is not None else ""
    return f"make demo FROM={stage}{run}{_make_vars(args)}"


def _resolve_run(run: Path | None, stage: str) -> Path:
    if run is None:
        raise FaceedgeError(
            f"--from {stage} works on an existing run: give --run RUN_DIR (make demo FROM={stage} "
            f"RUN=runs/<name>-<timestamp>)"
        )
    if not run.is_dir():
        raise FaceedgeError(f"{run}: run directory not found")
    run = run.resolve()  # runs/latest → the run it points at
    if not (run / "metrics.json").is_file():
        raise FaceedgeError(f"{run}: not a finished training run (no metrics.json)")
    return run


def run(args: argparse.Namespace) -> dict | None:
    """Run the stages from --from to --to; return the summary when the chain reaches its end."""
    py = sys.executable
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONUNBUFFERED"] = "1"
    t_all = time.perf_counter()
    total = len(STAGES)
    first, last = STAGES.index(args.from_stage), STAGES.index(args.to_stage)
    if first > last:
        raise FaceedgeError(f"--from {args.from_stage} comes after --to {args.to_stage}")
    todo = STAGES[first : last + 1]
    data, config = args.data, args.config
    run_dir = _resolve_run(args.run, args.from_stage) if args.from_stage in NEEDS_RUN else None
    if "train" in todo and not config.is_file():
        raise FaceedgeError(f"{config}: training config not found")
    number = {s: i + 1 for i, s in enumerate(STAGES)}

    if "data" in todo:
        extra_data = shlex.split(args.data_args)
        make_extra = f" ARGS={shlex.quote(args.data_args)}" if args.data_args else ""
        run_stage(
            number["data"],
            total,
            "data",
            [py, "-m", "train", "data", "--out", str(data), "--seed", str(args.seed), *extra_data],
            f"make data DATA={data} SEED={args.seed}{make_extra}",
            env=env,
            resume=resume_command(args, "data", None),
        )

    if "train" in todo:
        # One line per epoch (Keras verbose 2): a progress bar piped through the demo is ~17 lines an epoch.
        sets = [f"data.root={data}", "training.verbose=2", *args.overrides]
        set_args = [a for s in sets for a in ("--set", s)]
        lines = run_stage(
            number["train"],
            total,
            "train",
            [py, "-m", "train", "fit", "--config", str(config), *set_args],
            f"make train CONFIG={config} ARGS={shlex.quote(shlex.join(set_args))}",
            env=env,
            resume=resume_command(args, "train", None),
        )
        runs = [ln.split("run: ", 1)[1].strip() for ln in lines if ln.startswith("run: ")]
        if not runs:
            raise StageFailed("stage train printed no `run: <dir>` line")
        run_dir = Path(runs[-1]).resolve()

    assert run_dir is not None or not set(todo) & set(NEEDS_RUN)
    out = run_dir / DEMO_DIR if run_dir is not None else None
    if "convert" in todo:
        convert_extra = shlex.split(args.convert_args)
        run_stage(
            number["convert"],
            total,
            "convert",
            [py, "-m", "convert", "--run", str(run_dir), *convert_extra],
            f"make convert RUN={run_dir}" + (f" ARGS={shlex.quote(args.convert_args)}" if convert_extra else ""),
            env=env,
            resume=resume_command(args, "convert", run_dir),
        )

    if "video" in todo:
        _say(f"==> [{number['video']}/{total}] video: unseen persons' images → {out / VIDEO_NAME}")
        _say(f"    (re-run alone: make video RUN={run_dir})")
        video, truth = make_video(
            run_dir, out, fps=args.video_fps, frames_per_image=args.frames_per_image, size=args.video_size
        )
        _say(
            f"    {len(truth)} frames ({len(truth) // args.frames_per_image} images × {args.frames_per_image}) "
            f"at {args.video_fps:g} fps, MJPG"
        )

    results = out / "results.jsonl" if out is not None else None
    if "device" in todo:
        video = out / VIDEO_NAME
        if not video.is_file():
            raise FaceedgeError(f"{video}: no video (run the video stage first: make video RUN={run_dir})")
        if results.exists():
            results.unlink()
        device_cfg = write_device_config(out, video, results)
        run_stage(
            number["device"],
            total,
            "device",
            [py, "-m", "device", "run", "--config", str(device_cfg), "--model-dir", str(run_dir)],
            f"make run-device DEVICE_CONFIG={device_cfg} RUN={run_dir}",
            env=env,
            resume=resume_command(args, "device", run_dir),
        )

    bench_out = run_dir / "bench" if run_dir is not None else None
    if "bench" in todo:
        bench_args = [
            "--variants",
            "int8",
            "--min_seconds",
            "1",
            "--pipeline_seconds",
            f"{args.bench_seconds:g}",
            "--out",
            str(bench_out),
        ]
        run_stage(
            number["bench"],
            total,
            "bench",
            [py, "-m", "device", "bench", "--model-dir", str(run_dir), *bench_args],
            f"make bench RUN={run_dir} ARGS={shlex.quote(shlex.join(bench_args))}",
            env=env,
            resume=resume_command(args, "bench", run_dir),
        )

    if args.to_stage != STAGES[-1]:
        return None
    summary = build_summary(run_dir, seconds=time.perf_counter() - t_all, from_stage=args.from_stage)
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    _print_summary(summary)
    return summary


def _split_figures(m: dict, n_key: str) -> dict:
    return {
        "n": m[n_key],
        "correct": m.get("correct"),
        "accuracy": m["accuracy"],
        "accuracy_ci95": m.get("accuracy_ci95"),
    }


def build_summary(run_dir: Path, *, seconds: float, from_stage: str) -> dict:
    """The headline figures, each with its n and 95 % interval, read from the stages' files."""
    conv = json.loads((run_dir / "convert.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    out = run_dir / DEMO_DIR
    results = out / "results.jsonl"
    int8 = conv["variants"]["int8"]
    keras = {
        s: {**_split_figures(metrics[s], "count"), "persons": metrics.get("persons", {}).get(s)}
        for s in ("valid", "seen_holdout", "unseen_persons")
        if metrics.get(s, {}).get("count")
    }
    q = {
        s: {
            **_split_figures(m, "n"),
            "agree": m.get("agree"),
            "agreement": m["agreement"],
            "agreement_ci95": m.get("agreement_ci95"),
            "only_float_right": m.get("only_float_right"),
            "only_converted_right": m.get("only_converted_right"),
            "mcnemar_p": m.get("gate", {}).get("mcnemar_p"),
        }
        for s, m in int8["splits"].items()
    }
    lowest = min(q, key=lambda s: q[s]["agreement"])
    return {
        "run": str(run_dir),
        "seconds": round(seconds, 1),
        "from_stage": from_stage,
        "keras": keras,
        "int8": q,
        "int8_vs_float_agreement": {
            "split": lowest,
            "n": q[lowest]["n"],
            "agreement": q[lowest]["agreement"],
            "agreement_ci95": q[lowest]["agreement_ci95"],
        },
        "gate": {
            "passed": conv["gate"]["passed"],
            "notes": conv["gate"].get("notes", []),
            "failures": conv["gate"]["failures"],
        },
        "int8_size_ratio": int8["size_ratio_to_float32"],
        "int8_size_bytes": int8["size_bytes"],
        "daemon_on_video": score_results(results, read_truth(out)),
        "bench_pipeline": _bench_pipeline_fps(run_dir / "bench" / "bench.json"),
        "reproducibility": metrics.get("reproducibility", {}),
        "paths": {
            "report": str(run_dir / "report.md"),
            "models": str(run_dir / "export"),
            "convert": str(run_dir / "convert.json"),
            "daemon_results": str(results),
            "video": str(out / VIDEO_NAME),
            "bench": str(run_dir / "bench" / "bench.md"),
        },
    }


def _pct(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


def _ci(ci) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%]"


def _print_summary(s: dict) -> None:
    k, q, d, b = s["keras"], s["int8"], s["daemon_on_video"], s["bench_pipeline"]
    p = s["paths"]
    _say("")
    _say(
        f"==> demo done in {s['seconds']:.0f} s"
        + (f" (from {s['from_stage']})" if s["from_stage"] != STAGES[0] else "")
        + f" — run {s['run']}"
    )
    _say(f"    report          {p['report']}")
    _say(f"    models          {p['models']}/int8/ (+ float32), figures {p['convert']}")
    _say(f"    daemon results  {p['daemon_results']} (video {p['video']})")
    _say(f"    benchmark       {p['bench']}")
    _say(
        "    (95 % intervals, Wilson; images of one person are not independent, so with few persons the real "
        "uncertainty is larger)"
    )
    _say("")
    for split, title, what in (
        ("unseen_persons", "unseen-person accuracy", "images of unseen persons"),
        ("seen_holdout", "seen-person accuracy  ", "new images of seen persons"),
    ):
        if split not in q:
            continue
        kk = k.get(split, {})
        persons = kk.get("persons")
        _say(
            f"    {title}  {_pct(q[split]['accuracy'])}{_ci(q[split]['accuracy_ci95'])} int8 on the device runtime, "
            f"{q[split]['correct']} of {q[split]['n']} {what}"
            + (f" ({persons} persons)" if persons is not None else "")
            + f"; Keras {_pct(kk.get('accuracy'))}{_ci(kk.get('accuracy_ci95'))}"
        )
    a = s["int8_vs_float_agreement"]
    _say(
        f"    int8 vs float agreement {_pct(a['agreement'])}{_ci(a['agreement_ci95'])} on {a['split']} (n {a['n']}, "
        f"the lowest split); gate {'passed' if s['gate']['passed'] else 'FAILED'}"
    )
    _say(f"    int8 size               {s['int8_size_bytes'] / 1024:.0f} KiB = {s['int8_size_ratio']:.3f} of float32")
    fps = f"{b['fps']:.1f} fps at {b['threads']} threads (bench, synthetic 640x480 frames)" if b.get("fps") else "n/a"
    _say(f"    pipeline fps            {fps}")
    _say(
        f"    daemon on the video     {d['results']} frames, per frame {_pct(d['accuracy'])}, per image "
        f"{_pct(d['image_accuracy'])}{_ci(d['image_accuracy_ci95'])} ({d['images_correct']} of {d['images']}), "
        f"smoothed {_pct(d['smoothed_accuracy'])}, {d['events']} events, {d['fps']:.1f} fps"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="demo: %(message)s")
    try:
        run(args)
    except FaceedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
