"""MediaPipe's side, run INSIDE the MediaPipe environment (`make setup-mediapipe` → .venv-mediapipe).

    .venv-mediapipe/bin/python -I convert/mediapipe/child.py JOB.json

A standalone script: that environment has MediaPipe and its dependencies only, not this project.
The host side (convert/mediapipe/env.py) writes JOB.json and reads what this writes. Commands:

- ``{"command": "write", "model": IN, "out": OUT, "labels": [...], "mean": [..], "std": [..],
  "name": ..., "description": ..., "output_description": ...}``: writes OUT, the model with TFLite
  metadata (general info, an image input with its normalisation, a classification output with the
  labels as an associated file ``labels.txt``), with MediaPipe's maintained metadata writer
  (`mediapipe.tasks.python.metadata.metadata_writers`), and OUT + ".json", the metadata as JSON.
- ``{"command": "classify", "model": M, "images": [...], "out": OUT}``: MediaPipe's ImageClassifier on
  each image (every category, no score threshold); OUT is JSON: one list of {"index", "label",
  "score"} per image, best first.

Exit 0, or 2 with one ``error: ...`` line on stderr.
"""

from __future__ import annotations

import json
import os
import sys


def _fixed_zip_times() -> None:
    """The writer appends labels.txt with zipfile's writestr(name, ...), which stamps the entry with
    the current time: two conversions of one model would differ in bytes (and sha256). Stamp every
    entry 1980-01-01 00:00 (ZipInfo's default) instead: the same model gives the same file."""
    import zipfile

    original = zipfile.ZipFile.writestr

    def writestr(self, zinfo_or_arcname, data, *args, **kwargs):
        if isinstance(zinfo_or_arcname, str):
            info = zipfile.ZipInfo(zinfo_or_arcname)
            info.external_attr = 0o600 << 16  # what writestr(name, ...) sets
            info.compress_type = self.compression
            zinfo_or_arcname = info
        return original(self, zinfo_or_arcname, data, *args, **kwargs)

    zipfile.ZipFile.writestr = writestr


def write(job: dict) -> None:
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    _fixed_zip_times()
    with open(job["model"], "rb") as f:
        buf = bytearray(f.read())
    w = metadata_writer.MetadataWriter.create(buf)
    w.add_general_info(job["name"], job["description"])
    w.add_image_input(job["mean"], job["std"])
    w.add_classification_output(
        metadata_writer.Labels().add(job["labels"]), name="score", description=job["output_description"]
    )
    model, meta_json = w.populate()
    tmp = job["out"] + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model)
    os.replace(tmp, job["out"])
    with open(job["out"] + ".json", "w") as f:
        f.write(meta_json)


def classify(job: dict) -> None:
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core import base_options

    opts = vision.ImageClassifierOptions(
        base_options=base_options.BaseOptions(model_asset_path=job["model"]), max_results=-1, score_threshold=0.0
    )
    out = []
    with vision.ImageClassifier.create_from_options(opts) as clf:
        for path in job["images"]:
            res = clf.classify(mp.Image.create_from_file(path))
            cats = res.classifications[0].categories
            out.append([{"index": c.index, "label": c.category_name, "score": float(c.score)} for c in cats])
    with open(job["out"], "w") as f:
        json.dump(out, f)


def main(argv: list[str]) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        with open(argv[1]) as f:
            job = json.load(f)
        {"write": write, "classify": classify}[job["command"]](job)
    except Exception as e:  # noqa: BLE001 - one line for the host, whatever it was
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
