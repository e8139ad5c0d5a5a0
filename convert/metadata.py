"""TFLite metadata and labels.txt for an exported model, so tools other than the daemon can open it.

Beside each exported ``model.tflite`` conversion writes ``labels.txt``: one line per output unit, in
output order (a binary model has one unit, P(positive label): one line, that label; a softmax model
one line per label). Into the model it writes TFLite metadata with MediaPipe's maintained writer
(`mediapipe.tasks.python.metadata.metadata_writers`, run in its own environment, convert/mediapipe/):

- general info: name and a description saying how to read the output (threshold, negative label);
- the image input: RGB, normalisation mean 0 and std 1 — the model takes raw 0..255 pixels, its
  scaling is a layer inside it, so a reader must not scale again;
- the classification output: what the score means, and ``labels.txt`` as its associated file (a zip
  appended to the flatbuffer; the model runs unchanged in any TFLite interpreter).

MediaPipe's ImageClassifier, the picamera2 examples and Frigate-style tools then find the labels
and the normalisation in the file itself. The manifest stays the device's source of truth, and its
sha256 is of this final file. Without the MediaPipe environment the model is exported without
metadata (labels.txt is still written) and one line says how to get it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from convert.mediapipe import env
from device.files import atomic_write_bytes

log = logging.getLogger(__name__)

LABELS_FILE = "labels.txt"
_noted = False


def output_labels(head: dict) -> list[str]:
    """The label each output unit is the probability of."""
    if head["output_kind"] == "sigmoid":
        return [head["positive_label"]]
    return list(head["labels"])


def descriptions(head: dict, *, variant: str, size_hw: tuple[int, int], backbone: str) -> dict[str, str]:
    h, w = size_hw
    if head["output_kind"] == "sigmoid":
        neg = next(lbl for lbl in head["labels"] if lbl != head["positive_label"])
        out = (
            f"P({head['positive_label']}): the probability of the positive label (sigmoid). "
            f"{head['positive_label']} when >= {head['threshold']:g}, else {neg}."
        )
    else:
        out = f"Softmax probabilities of the labels in labels.txt order ({', '.join(head['labels'])})."
    return {
        "name": f"faceedge {backbone or 'classifier'} {variant}".replace("  ", " "),
        "description": (
            f"faceedge face-crop classifier ({variant}). Input: one RGB face crop, {w}x{h}, raw pixel values "
            "0..255 (the scaling is inside the model: normalisation mean 0, std 1). " + out
        ),
        "output_description": out,
    }


def attach(model_file: Path, head: dict, *, variant: str, size_hw: tuple[int, int], backbone: str = "") -> bytes:
    """Write labels.txt beside `model_file` and the metadata into it; returns the final model bytes."""
    global _noted
    labels = output_labels(head)
    atomic_write_bytes(model_file.with_name(LABELS_FILE), ("\n".join(labels) + "\n").encode())
    if env.python_path() is None:
        if not _noted:
            log.warning("no TFLite metadata in the exported models: %s", env.missing_note())
            _noted = True
        return model_file.read_bytes()
    job = {
        "command": "write",
        "model": str(model_file),
        "out": str(model_file),
        "labels": labels,
        "mean": [0.0],
        "std": [1.0],
        **descriptions(head, variant=variant, size_hw=size_hw, backbone=backbone),
    }
    env.run_child(job)
    Path(str(model_file) + ".json").unlink(missing_ok=True)  # the child's JSON view of it: not shipped
    log.info("%s: TFLite metadata written (labels %s, normalisation mean 0 std 1)", variant, labels)
    return model_file.read_bytes()
