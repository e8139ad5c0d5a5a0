"""`python -m device check`: load the model as the daemon would, classify a self-test image, print
the result and timings. Deploy runs it on the Pi before switching releases; the daemon runs it in
a child process to validate a new model on SIGHUP before swapping it in.

    python -m device check --config C [--model-dir D] [--image PATH] [--expect LABEL] [--runs N] [--json]

Checks, in order (the first failure is the one reported):

1. the manifest validates and the model file's sha256 matches it (`device.manifest.load_manifest`);
2. the runtime loads the model and its input is (1, H, W, 3) matching the manifest;
3. the self-test image goes through the daemon's own crop and resize (`device.selftest.classify_image`)
   and the model's outputs are probabilities of the manifest's kind (one sigmoid unit, or a softmax
   over the labels);
4. with an expected label, the predicted label equals it; with an expected score, the score is
   within the tolerance.

The self-test image is ``--image`` (with ``--expect``, cropped as the config says), else the model
dir's ``selftest.png`` / ``selftest.json`` that the conversion stage writes (an image from the data
at the model's input size, with the label and score the converted model gave it: see
device/selftest.py), else a generated test pattern (no expectation: it only proves the model runs
and returns probabilities).

Exit status: 0 all checks passed, 1 the model loads but a check failed, 2 the model or the config
cannot be loaded (one ``error:`` line). ``--json`` prints one JSON object in every case.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from device.crop import CropConfig, load_image_rgb
from device.errors import FaceedgeError
from device.flags import add_option
from device.manifest import load_manifest, resolve_model_dir
from device.selftest import AS_IS, SELFTEST_JSON, SelfTest, classify_image, load_selftest

log = logging.getLogger(__name__)

DEFAULT_RUNS = 20
SOFTMAX_SUM_TOLERANCE = 0.05  # an int8 softmax output sums to 1 within a few quantization steps


def self_test_pattern(height: int = 480, width: int = 640) -> np.ndarray:
    """A deterministic, camera-sized RGB frame (gradients, a bright disc, stripes)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([x / width * 255, y / height * 255, 128 + 60 * np.sin(x / 9.0)], -1)
    disc = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(height, width) / 4) ** 2
    img[disc] = (235, 200, 170)
    return img.clip(0, 255).astype(np.uint8)


def _output_problem(scores: np.ndarray, manifest) -> str | None:
    """Why these outputs are not the probabilities the manifest promises (None = they are)."""
    want = 1 if manifest.output_kind == "sigmoid" else len(manifest.labels)
    if scores.size != want:
        return (
            f"model has {scores.size} output values, manifest ({manifest.output_kind}, "
            f"{len(manifest.labels)} labels) needs {want}"
        )
    if not np.all(np.isfinite(scores)):
        return f"model output is not finite: {scores.tolist()}"
    if scores.min() < -1e-6 or scores.max() > 1 + 1e-6:
        return f"model output {scores.round(4).tolist()} is not a probability in [0, 1]"
    if manifest.output_kind == "softmax" and abs(float(scores.sum()) - 1.0) > SOFTMAX_SUM_TOLERANCE:
        return f"softmax outputs sum to {scores.sum():.3f}, not 1"
    return None


def run(
    config: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    *,
    image: str | os.PathLike | None = None,
    expect: str | None = None,
    expect_score: float | None = None,
    tolerance: float = 0.02,
    runs: int = DEFAULT_RUNS,
    crop: CropConfig | None = None,
) -> dict[str, Any]:
    """Do the check; returns the report (``report["ok"]``). Raises FaceedgeError when the config or
    the model cannot be loaded (exit 2); a failed check is ``ok: False`` with ``failure`` (exit 1)."""
    from device.config import load_config  # the daemon's config model (sources, outputs, ...)
    from device.imx500 import bind_source
    from device.runtime import Classifier, load_runtime

    cfg = load_config(config)
    crop_cfg = crop or cfg.crop
    where = model_dir or cfg.model.dir
    if where is None:
        raise FaceedgeError("no model: pass --model-dir or set model.dir in the config")
    mdir = resolve_model_dir(where, cfg.model.variant)
    if runs < 1:
        raise FaceedgeError(f"--runs {runs}: must be >= 1")

    t0 = time.perf_counter()
    manifest, model_path = load_manifest(mdir)  # sha256 verified
    if manifest.variant == "imx500":
        return _check_on_sensor(cfg, mdir, manifest, model_path, given=(image, expect, expect_score))
    clf = Classifier(model_path, manifest, num_threads=cfg.model.num_threads, runtime=load_runtime(cfg.model.runtime))
    bind_source(clf, cfg)  # a CPU model on the AI Camera's source: the daemon would refuse it, so does check
    load_ms = (time.perf_counter() - t0) * 1e3

    report: dict[str, Any] = {
        "ok": False,
        "model_dir": str(mdir),
        "model_sha256": manifest.sha256,
        "variant": manifest.variant,
        "runtime": clf.runtime.name,
        "runtime_version": clf.runtime.version,
        "threads": clf.num_threads,
        "input": [clf.input_height, clf.input_width, 3],
        "input_dtype": clf.input_dtype.name,
        "labels": manifest.labels,
        "positive_label": manifest.positive_label,
        "threshold": manifest.threshold,
        "load_ms": round(load_ms, 3),
    }

    # -- the self-test image, through the daemon's crop and resize ---------------------------------
    selftest = SelfTest(Path(image), expect, expect_score, tolerance) if image is not None else load_selftest(mdir)
    if image is None and selftest is not None:  # the model dir's own: the model's input already
        crop_cfg = AS_IS
        if expect is not None:  # the command line's expectation wins
            selftest.expect = expect
        if expect_score is not None:
            selftest.score, selftest.tolerance = expect_score, tolerance
    if selftest is not None:
        rgb, source = load_image_rgb(selftest.image), str(selftest.image)
    else:
        rgb, source = self_test_pattern(), "generated test pattern"
    if expect is not None and expect not in manifest.labels:
        raise FaceedgeError(f"--expect {expect!r}: not one of the model's labels {manifest.labels}")
    if selftest is not None and selftest.expect not in (None, *manifest.labels):
        raise FaceedgeError(
            f"{mdir / SELFTEST_JSON}: key 'expect': {selftest.expect!r} is not one of the labels {manifest.labels}"
        )

    result = classify_image(clf, crop_cfg, rgb)  # the first inference
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        clf.invoke()
        times.append((time.perf_counter() - t) * 1e3)
    again = clf.scores()
    scores = result.scores

    report.update(
        {
            "image": source,
            "image_shape": list(rgb.shape),
            "crop": result.crop,
            "crop_box": list(result.box) if result.box else None,
            "preprocess_ms": round(result.preprocess_ms, 3),
            "first_inference_ms": round(result.inference_ms, 3),
            "runs": runs,
            "mean_inference_ms": round(float(np.mean(times)), 3),
            "p90_inference_ms": round(float(np.percentile(times, 90)), 3),
            "scores": [round(float(s), 6) for s in scores],
            "expected": selftest.expect if selftest else None,
            "expected_score": selftest.score if selftest else None,
        }
    )
    problem = _output_problem(scores, manifest)
    if problem is None and not np.array_equal(scores, again):
        problem = f"model is not deterministic: {scores.tolist()} then {again.tolist()}"
    if problem is not None:
        report["failure"] = problem
        return report
    report.update({"label": result.label, "score": round(result.score, 6)})
    failure = selftest.failure(result.label, result.score) if selftest else None
    if failure is not None:
        report["failure"] = failure
        return report
    report["ok"] = True
    return report


def _check_on_sensor(cfg, mdir: Path, manifest, model_path: Path, given: tuple) -> dict[str, Any]:
    """An imx500 model: the AI Camera runs it, so no image can be classified here. Checked: manifest
    and sha256 (done), the packaged network.rpk is there, and the config can run it (source imx500,
    a crop the sensor can do); the first results of the daemon (deploy's health gate) check the rest."""
    from device.imx500 import Imx500Classifier, bind_source

    clf = Imx500Classifier(model_path, manifest)
    bind_source(clf, cfg)  # FaceedgeError (exit 2): no network.rpk, or a source/crop it cannot run on
    report: dict[str, Any] = {
        "ok": True,
        "model_dir": str(mdir),
        "model_sha256": manifest.sha256,
        "variant": manifest.variant,
        "runtime": clf.runtime.name,
        "runtime_version": clf.runtime.version,
        "threads": 0,
        "input": [clf.input_height, clf.input_width, 3],
        "input_dtype": manifest.input.dtype,
        "labels": manifest.labels,
        "positive_label": manifest.positive_label,
        "threshold": manifest.threshold,
        "network_file": str(clf.network_file),
        "inference": "on the sensor (AI Camera)",
    }
    if any(g is not None for g in given):
        report.update(
            ok=False,
            failure="an imx500 model cannot classify a self-test image here: the AI Camera "
            "classifies its own frames (run the daemon on it)",
        )
    return report


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"model    {r['model_dir']} ({r['variant']}, sha256 {r['model_sha256'][:12]}…)",
        f"runtime  {r['runtime']} {r['runtime_version']}, {r['threads']} threads; input "
        f"{r['input'][0]}x{r['input'][1]} {r['input_dtype']}; labels {', '.join(r['labels'])}",
    ]
    if "network_file" in r:
        lines.append(f"network  {r['network_file']} (inference {r['inference']})")
    if "image" in r:
        lines.append(f"image    {r['image']} {r['image_shape'][1]}x{r['image_shape'][0]}, crop {r['crop']}")
    if "label" in r:
        exp = f"  (expected {r['expected']})" if r.get("expected") else ""
        lines.append(f"result   {r['label']} {r['score']:.4f}{exp}")
    if "first_inference_ms" in r:
        lines.append(
            f"timings  load {r['load_ms']:.1f} ms, preprocess {r['preprocess_ms']:.2f} ms, first inference "
            f"{r['first_inference_ms']:.2f} ms, mean {r['mean_inference_ms']:.3f} ms "
            f"(p90 {r['p90_inference_ms']:.3f}) over {r['runs']}"
        )
    lines.append("check OK" if r["ok"] else f"check FAILED: {r.get('failure', r.get('error', '?'))}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- SIGHUP helper


def validate_in_child(
    model_dir: str | os.PathLike,
    *,
    config: str | os.PathLike | None = None,
    timeout_s: float = 60.0,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Run this check on `model_dir` in a fresh Python process and return its JSON report.

    A truncated or malformed model can crash the interpreter (segfault), so the daemon validates a
    new model here before loading it in-process. Raises FaceedgeError with the reason when the
    child fails, crashes, times out or prints no report.
    """
    cmd = [python, "-m", "device.check", "--model-dir", str(model_dir), "--json", "--runs", "1"]
    if config is not None:
        cmd += ["--config", str(config)]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
        ),
    )
    import subprocess  # here: only a reload validates in a child (the daemon's RSS)

    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise FaceedgeError(f"{model_dir}: model validation did not finish within {timeout_s:g} s") from None
    report = None
    for line in reversed(proc.stdout.strip().splitlines()):
        try:
            report = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    if proc.returncode < 0:
        raise FaceedgeError(f"{model_dir}: model validation crashed (signal {-proc.returncode})")
    if not isinstance(report, dict):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise FaceedgeError(f"{model_dir}: model validation failed (exit {proc.returncode}): {tail}")
    if proc.returncode != 0 or not report.get("ok"):
        raise FaceedgeError(f"{model_dir}: model rejected: {report.get('error') or report.get('failure')}")
    return report


# ----------------------------------------------------------------------------- CLI


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check",
        help="load the model, classify a self-test image, print result and timings",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--config", type=Path, default=None, help="device config YAML (default: built-in defaults)")
    add_option(
        p,
        "--model-dir",
        type=Path,
        default=None,
        help="model dir (model.tflite + manifest.json) or run dir; overrides model.dir",
    )
    p.add_argument(
        "--image",
        type=Path,
        default=None,
        help=f"self-test image (default: the model dir's {SELFTEST_JSON}, else a generated pattern)",
    )
    p.add_argument("--expect", type=str, default=None, help="label the self-test image must get")
    add_option(p, "--expect-score", type=float, default=None, help="score the self-test image must get (± --tolerance)")
    p.add_argument(
        "--tolerance", type=float, default=0.02, help="allowed |score - expect_score| (default: %(default)s)"
    )
    p.add_argument(
        "--runs", type=int, default=DEFAULT_RUNS, help="timed invokes after the first (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=cli)
    return p


def cli(args: argparse.Namespace) -> int:
    try:
        report = run(
            args.config,
            args.model_dir,
            image=args.image,
            expect=args.expect,
            expect_score=args.expect_score,
            tolerance=args.tolerance,
            runs=args.runs,
        )
    except FaceedgeError as e:
        if args.json:
            print(json.dumps({"ok": False, "error": str(e)}))
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(report) if args.json else format_report(report))
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    """Standalone entry, `python -m device.check` (what validate_in_child runs)."""
    from device.cli import standalone

    return standalone(add_parser, "python -m device.check", argv, command="check", log_level="WARNING")


if __name__ == "__main__":
    raise SystemExit(main())
