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

Why it lives in `convert/`: the stages depend one way only. `device` imports neither `train` nor
`convert`; `train` may import `device`; `convert` imports `train` and `device`. The demo drives all
three stages (and reads their files with their own code: the run's splits, the device's image
loading), so it sits in the highest stage, the only one allowed to depend on the other two.
The video and scoring are in `convert.demo_video`, the summary in `convert.demo_summary`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from convert.demo_summary import build_summary, summary_lines
from convert.demo_video import DEMO_DIR, VIDEO_NAME, make_video, write_device_config
from device.errors import FaceedgeError
from device.files import atomic_write_bytes
from device.flags import add_option

log = logging.getLogger(__name__)

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m convert.demo",
        description="The whole chain offline: sample data, training, int8 conversion (gated), a video of unseen "
        "persons through the device daemon, a short benchmark, then where everything is and the "
        "headline figures. Resumable: --from STAGE --run RUN.",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=Path("data/sample"),
        help="where the sample dataset is generated (default: %(default)s)",
    )
    p.add_argument(
        "--config", type=Path, default=Path("configs/sample.yaml"), help="training config (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="sample data seed (default: %(default)s)")
    p.add_argument(
        "--from",
        dest="from_stage",
        choices=STAGES,
        default=STAGES[0],
        help="first stage to run; convert and later work on --run (default: %(default)s)",
    )
    p.add_argument(
        "--to",
        dest="to_stage",
        choices=STAGES,
        default=STAGES[-1],
        help="last stage to run; the summary is printed when the chain reaches bench (default: %(default)s)",
    )
    p.add_argument("--run", type=Path, default=None, help="the run directory for --from convert|video|device|bench")
    add_option(
        p,
        "--data-args",
        type=str,
        default="",
        help="extra arguments for `train data`, e.g. '--persons 6 --images-per-person 20'",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training config override, as `train fit --set` (repeatable)",
    )
    add_option(p, "--convert-args", type=str, default="", help="extra arguments for `python -m convert`")
    add_option(
        p, "--video-fps", type=float, default=10.0, help="frame rate written into the video (default: %(default)s)"
    )
    add_option(
        p,
        "--frames-per-image",
        type=int,
        default=3,
        help="frames each unseen-person image is shown (default: %(default)s)",
    )
    add_option(p, "--video-size", type=int, default=128, help="video frame side in pixels (default: %(default)s)")
    add_option(
        p,
        "--bench-seconds",
        type=float,
        default=2.0,
        help="bench: seconds per pipeline measurement (default: %(default)s)",
    )
    return p


def _make_vars(args: argparse.Namespace) -> str:
    """DATA=/CONFIG=/SEED= and ARGS= for a `make demo` line that repeats this invocation's settings."""
    defaults = build_parser().parse_args([])
    parts = []
    for var, key in (("DATA", "data"), ("CONFIG", "config"), ("SEED", "seed")):
        if getattr(args, key) != getattr(defaults, key):
            parts.append(f"{var}={shlex.quote(str(getattr(args, key)))}")
    extra: list[str] = []
    for key, flag in (
        ("data_args", "--data-args"),
        ("convert_args", "--convert-args"),
        ("video_fps", "--video-fps"),
        ("frames_per_image", "--frames-per-image"),
        ("video_size", "--video-size"),
        ("bench_seconds", "--bench-seconds"),
    ):
        if getattr(args, key) != getattr(defaults, key):
            extra += [flag, str(getattr(args, key))]
    for override in args.overrides:
        extra += ["--set", override]
    if extra:
        parts.append(f"ARGS={shlex.quote(shlex.join(extra))}")
    return (" " + " ".join(parts)) if parts else ""


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
    python = sys.executable
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONUNBUFFERED"] = "1"
    started = time.perf_counter()
    total = len(STAGES)
    first, last = STAGES.index(args.from_stage), STAGES.index(args.to_stage)
    if first > last:
        raise FaceedgeError(f"--from {args.from_stage} comes after --to {args.to_stage}")
    todo = STAGES[first : last + 1]
    data, config = args.data, args.config
    run_dir = _resolve_run(args.run, args.from_stage) if args.from_stage in NEEDS_RUN else None
    if "train" in todo and not config.is_file():
        raise FaceedgeError(f"{config}: training config not found")
    stage_number = {stage: i + 1 for i, stage in enumerate(STAGES)}

    if "data" in todo:
        extra_data = shlex.split(args.data_args)
        make_extra = f" ARGS={shlex.quote(args.data_args)}" if args.data_args else ""
        run_stage(
            stage_number["data"],
            total,
            "data",
            [python, "-m", "train", "data", "--out", str(data), "--seed", str(args.seed), *extra_data],
            f"make data DATA={data} SEED={args.seed}{make_extra}",
            env=env,
            resume=resume_command(args, "data", None),
        )

    if "train" in todo:
        # One line per epoch (Keras verbose 2): a progress bar piped through the demo is ~17 lines an epoch.
        sets = [f"data.root={data}", "training.verbose=2", *args.overrides]
        set_args = [arg for override in sets for arg in ("--set", override)]
        lines = run_stage(
            stage_number["train"],
            total,
            "train",
            [python, "-m", "train", "fit", "--config", str(config), *set_args],
            f"make train CONFIG={config} ARGS={shlex.quote(shlex.join(set_args))}",
            env=env,
            resume=resume_command(args, "train", None),
        )
        runs = [line.split("run: ", 1)[1].strip() for line in lines if line.startswith("run: ")]
        if not runs:
            raise StageFailed("stage train printed no `run: <dir>` line")
        run_dir = Path(runs[-1]).resolve()

    assert run_dir is not None or not set(todo) & set(NEEDS_RUN)
    demo_dir = run_dir / DEMO_DIR if run_dir is not None else None
    if "convert" in todo:
        convert_extra = shlex.split(args.convert_args)
        run_stage(
            stage_number["convert"],
            total,
            "convert",
            [python, "-m", "convert", "--run", str(run_dir), *convert_extra],
            f"make convert RUN={run_dir}" + (f" ARGS={shlex.quote(args.convert_args)}" if convert_extra else ""),
            env=env,
            resume=resume_command(args, "convert", run_dir),
        )

    if "video" in todo:
        _say(f"==> [{stage_number['video']}/{total}] video: unseen persons' images → {demo_dir / VIDEO_NAME}")
        _say(f"    (re-run alone: make video RUN={run_dir})")
        video, truth = make_video(
            run_dir, demo_dir, fps=args.video_fps, frames_per_image=args.frames_per_image, size=args.video_size
        )
        _say(
            f"    {len(truth)} frames ({len(truth) // args.frames_per_image} images × {args.frames_per_image}) "
            f"at {args.video_fps:g} fps, MJPG"
        )

    results = demo_dir / "results.jsonl" if demo_dir is not None else None
    if "device" in todo:
        video = demo_dir / VIDEO_NAME
        if not video.is_file():
            raise FaceedgeError(f"{video}: no video (run the video stage first: make video RUN={run_dir})")
        if results.exists():
            results.unlink()
        device_cfg = write_device_config(demo_dir, video, results)
        run_stage(
            stage_number["device"],
            total,
            "device",
            [python, "-m", "device", "run", "--config", str(device_cfg), "--model-dir", str(run_dir)],
            f"make run-device DEVICE_CONFIG={device_cfg} RUN={run_dir}",
            env=env,
            resume=resume_command(args, "device", run_dir),
        )

    bench_out = run_dir / "bench" if run_dir is not None else None
    if "bench" in todo:
        bench_args = [
            "--variants",
            "int8",
            "--min-seconds",
            "1",
            "--pipeline-seconds",
            f"{args.bench_seconds:g}",
            "--out",
            str(bench_out),
        ]
        run_stage(
            stage_number["bench"],
            total,
            "bench",
            [python, "-m", "device", "bench", "--model-dir", str(run_dir), *bench_args],
            f"make bench RUN={run_dir} ARGS={shlex.quote(shlex.join(bench_args))}",
            env=env,
            resume=resume_command(args, "bench", run_dir),
        )

    if args.to_stage != STAGES[-1]:
        return None
    summary = build_summary(run_dir, seconds=time.perf_counter() - started, from_stage=args.from_stage)
    atomic_write_bytes(demo_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    for line in summary_lines(summary, chain_start=STAGES[0]):
        _say(line)
    return summary


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
