"""The demo's video stage and its scoring: an MJPG video of a run's unseen-person images with its
ground truth, the daemon config that classifies every frame of it, and the daemon's results scored
against that truth.

    runs/<run>/demo/unseen_persons.avi    MJPG video made from the unseen persons' images
    runs/<run>/demo/unseen_persons.csv    frame → image, label (the video's ground truth)
    runs/<run>/demo/device.yaml           the daemon config used (video source, JSONL output)
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from device.errors import FaceedgeError
from device.files import atomic_write_bytes
from train import stats

DEMO_DIR = "demo"
VIDEO_NAME = "unseen_persons.avi"
TRUTH_NAME = "unseen_persons.csv"


def make_video(
    run_dir: Path, out_dir: Path, *, fps: float, frames_per_image: int, size: int
) -> tuple[Path, list[dict]]:
    """An MJPG .avi of the run's unseen-person images (grouped by person, then label), with its truth."""
    import cv2

    from device.crop import load_image_rgb, resize_to_input
    from train.splits import read_splits_csv

    records = [r for r in read_splits_csv(run_dir / "splits.csv") if r.split == "unseen_persons"]
    if not records:
        raise FaceedgeError(f"{run_dir / 'splits.csv'}: no unseen_persons images to make a video of")
    records.sort(key=lambda r: (r.person or "", r.label, r.path))
    out_dir.mkdir(parents=True, exist_ok=True)
    video = out_dir / VIDEO_NAME
    tmp = out_dir / f".{VIDEO_NAME}.{os.getpid()}.avi"
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
    if not writer.isOpened():
        raise FaceedgeError(f"{video}: OpenCV cannot write an MJPG video here")
    truth = []
    try:
        for record in records:
            bgr = cv2.cvtColor(resize_to_input(load_image_rgb(record.path), (size, size)), cv2.COLOR_RGB2BGR)
            for _ in range(frames_per_image):
                writer.write(bgr)
                truth.append(
                    {"frame": len(truth) + 1, "path": record.path, "label": record.label, "person": record.person or ""}
                )
    finally:
        writer.release()
    os.replace(tmp, video)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["frame", "path", "label", "person"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(truth)
    atomic_write_bytes(out_dir / TRUTH_NAME, buf.getvalue().encode())
    return video, truth


def read_truth(out_dir: Path) -> list[dict]:
    path = out_dir / TRUTH_NAME
    if not path.is_file():
        raise FaceedgeError(f"{path}: no video ground truth (run the video stage first: make video RUN=...)")
    with open(path, newline="") as f:
        return [{**row, "frame": int(row["frame"])} for row in csv.DictReader(f)]


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
    published = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    if not published:
        raise FaceedgeError(f"{results}: the daemon published no results")
    by_frame = {row["frame"]: row for row in truth}
    scored = [(r["label"], by_frame[r["frame_id"]]["label"]) for r in published if r["frame_id"] in by_frame]
    per_image: dict[str, list[bool]] = {}
    for result in published:
        expected = by_frame.get(result["frame_id"])
        if expected is not None:
            per_image.setdefault(expected["path"], []).append(result["label"] == expected["label"])
    image_right = sum(sum(votes) * 2 > len(votes) for votes in per_image.values())
    timestamps = sorted(r["timestamp"] for r in published)
    smoothed = [
        (r["smoothed_label"], by_frame[r["frame_id"]]["label"])
        for r in published
        if r.get("smoothed_label") is not None and r["frame_id"] in by_frame
    ]
    elapsed = timestamps[-1] - timestamps[0] if timestamps else 0.0
    return {
        "frames": len(truth),
        "results": len(published),
        "frames_correct": sum(got == want for got, want in scored),
        "accuracy": float(np.mean([got == want for got, want in scored])) if scored else float("nan"),
        "images": len(per_image),
        "images_correct": image_right,
        "image_accuracy": image_right / len(per_image) if per_image else float("nan"),
        "image_accuracy_ci95": stats.wilson_interval(image_right, len(per_image)),
        "smoothed_accuracy": float(np.mean([got == want for got, want in smoothed])) if smoothed else float("nan"),
        "events": sum(bool(r.get("event")) for r in published),
        "fps": (len(timestamps) - 1) / elapsed if len(timestamps) > 1 and elapsed > 0 else float("nan"),
        "invoke_ms_median": float(np.median([r["stages_ms"].get("invoke", np.nan) for r in published])),
    }
