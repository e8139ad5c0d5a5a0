"""The bare-loop reference: the floor the daemon is held against.

The same model and source in a bare sequential loop (numpy + OpenCV + the runtime, nothing else: no
pydantic, no threads, no outputs), run as its own process so that its peak RSS and start-up are
those of the loop alone::

    python -P device/bench/bareloop.py SPEC.json RESULT.json

It is run by path, not as a module of the package, so nothing of the project is imported: only the
standard library, numpy, OpenCV and the runtime module the spec names. The host side that writes the
spec and reads the result is `device.bench.pipeline.bench_bare_loop`.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import time


def _frame_reader(source: dict):
    """A function returning the next BGR frame: the video file looped, or a synthetic bar pattern
    that moves four pixels per frame."""
    import cv2
    import numpy as np

    if source["type"] == "opencv":
        cap = cv2.VideoCapture(source["device"])

        def read_video():
            ok, frame = cap.read()
            if not ok:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = cap.read()
            return frame

        return read_video
    width, height = source.get("width", 640), source.get("height", 480)
    pattern = (np.arange(width + 128)[None, :, None] * np.array([3, 5, 7]) % 256).astype(np.uint8)
    pattern = np.repeat(pattern, height, axis=0)
    count = [0]

    def read_pattern():
        count[0] += 1
        offset = (count[0] * 4) % 128
        return pattern[:, offset : offset + width].copy()

    return read_pattern


def run_loop(spec: dict) -> dict:
    """Read → BGR to RGB → centre square → resize → quantize → invoke, until `seconds` of results
    after `warmup_seconds`; the loop's fps, peak RSS and time to the first result."""
    import cv2
    import numpy as np

    interpreter_cls = importlib.import_module(spec["runtime_module"]).Interpreter
    t_start = time.monotonic()
    interpreter = interpreter_cls(model_path=spec["model_path"], num_threads=spec["threads"])
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    height, width = int(inp["shape"][1]), int(inp["shape"][2])
    dtype = np.dtype(inp["dtype"])
    scale, zero = inp["quantization"]
    read_bgr = _frame_reader(spec["source"])
    ends: list[float] = []
    first = None
    t_first = 0.0
    while True:
        rgb = cv2.cvtColor(read_bgr(), cv2.COLOR_BGR2RGB)
        frame_h, frame_w = rgb.shape[:2]
        side = min(frame_h, frame_w)
        top, left = (frame_h - side) // 2, (frame_w - side) // 2
        small = cv2.resize(rgb[top : top + side, left : left + side], (width, height), interpolation=cv2.INTER_LINEAR)
        if dtype == np.uint8 and (scale, zero) in ((0.0, 0), (1.0, 0)):
            tensor = small[None]
        elif np.issubdtype(dtype, np.floating):
            tensor = small[None].astype(dtype)
        else:
            info = np.iinfo(dtype)
            tensor = np.clip(np.round(small[None] / scale + zero), info.min, info.max).astype(dtype)
        interpreter.set_tensor(inp["index"], tensor)
        interpreter.invoke()
        interpreter.get_tensor(out["index"]).astype(np.float32)
        now = time.monotonic()
        if first is None:
            first = (now - t_start, time.time())
            t_first = now
        if now - t_first >= spec["warmup_seconds"]:
            ends.append(now)
            if now - ends[0] >= spec["seconds"]:
                break
    with open("/proc/self/status") as f:
        status = f.read()
    peak_mb, anon_mb, file_mb = (
        int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) / 1024.0 for key in ("VmHWM", "RssAnon", "RssFile")
    )
    intervals = np.diff(ends)
    return {
        "frames": len(ends),
        "seconds": ends[-1] - ends[0],
        "fps": 1000.0 / (float(np.median(intervals)) * 1e3),
        "throughput_fps": (len(ends) - 1) / (ends[-1] - ends[0]),
        "peak_rss_mb": peak_mb,
        "rss_anon_mb": anon_mb,  # now, anonymous (the program's own)
        "rss_file_mb": file_mb,  # now, file-backed (mapped libraries: depends on the page cache)
        "first_result_s": first[0],
        "first_result_from_exec_s": first[1] - spec["spawned_at"],
    }


def main(argv: list[str] | None = None) -> int:
    spec_path, out_path = sys.argv[1:3] if argv is None else argv[:2]
    with open(spec_path) as f:
        result = run_loop(json.load(f))
    with open(out_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
