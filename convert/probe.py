"""Load a `.tflite` with the device runtime in a child process, before its manifest is written.

An op the runtime lacks, a flatbuffer it rejects, or a crash (segfault, abort) inside
`allocate_tensors` then becomes a one-line error in the parent instead of a dead converter.
The child runs ``python -m convert.probe MODEL``: it imports only `device` (no TensorFlow),
loads the model with `device.runtime.Classifier`, classifies one mid-grey image and prints one
JSON line: the runtime and the input/output tensors as the device sees them (dtype, shape,
scale, zero-point), which is what the manifest then records.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from device.errors import FaceedgeError

DEFAULT_TIMEOUT_S = 120.0


def _tensor(detail: dict) -> dict:
    import numpy as np

    scale, zero = detail["quantization"]
    return {
        "dtype": np.dtype(detail["dtype"]).name,
        "shape": [int(d) for d in detail["shape"]],
        "scale": float(scale),
        "zero_point": int(zero),
    }


def probe(model_path: str) -> dict:
    """In the child: load, allocate, invoke once; return what the device runtime sees."""
    import numpy as np

    from device.runtime import Classifier

    clf = Classifier(model_path, num_threads=1)
    grey = np.full((clf.input_height, clf.input_width, 3), 128, np.uint8)
    scores = clf.classify(grey)
    if not np.all(np.isfinite(scores)):
        raise FaceedgeError(f"{model_path}: the model outputs non-finite values {scores.tolist()}")
    return {
        "runtime": clf.runtime.name,
        "runtime_version": clf.runtime.version,
        "input": _tensor(clf.input_details),
        "output": _tensor(clf.output_details),
        "scores": [float(s) for s in scores],
    }


def probe_in_child(model_path: str | os.PathLike, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
    """Run `probe` in a fresh interpreter; raise FaceedgeError naming the file on any failure."""
    path = Path(model_path)
    repo_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "convert.probe", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise FaceedgeError(f"{path}: loading the model with the device runtime took over {timeout_s:g} s") from None
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        raise FaceedgeError(f"{path}: the device runtime crashed ({name}) while loading the model")
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        errs = [ln for ln in lines if ln.startswith("error: ")]
        last = (errs or lines or [f"exit status {proc.returncode}"])[-1].removeprefix("error: ")
        last = last.removeprefix(f"{path}: ")  # the child names the file too; say it once
        raise FaceedgeError(f"{path}: the device runtime cannot load it in a child process: {last}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise FaceedgeError(f"{path}: child-process load printed no result ({proc.stdout[-200:]!r})") from None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m convert.probe MODEL.tflite", file=sys.stderr)
        return 2
    try:
        result = probe(args[0])
    except FaceedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
