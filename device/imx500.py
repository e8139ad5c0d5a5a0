"""The Raspberry Pi AI Camera (Sony IMX500): the model runs on the sensor, the Pi only decides.

A model dir for it (``export/imx500/`` of a conversion)::

    packerOut.zip   what Sony's converter compiled (the manifest's model_file, sha256-checked)
    manifest.json   variant "imx500", labels, threshold, input/output quantization
    labels.txt      the labels, one per line, in output order
    network.rpk     made ON THE PI from packerOut.zip: `imx500-package -i packerOut.zip -o <dir>`
                    (apt: imx500-tools); `make deploy` runs it there, the sensor loads this file

The AI Camera produces, for each frame, the image and the network's output tensors: picamera2's
IMX500 helper reads them from the frame's metadata (`IMX500.get_outputs(metadata)`, libcamera's
``CnnOutputTensor``: floats, already dequantized with the output tensor's scale). So the classifier
here has nothing to run: `scores_from(outputs)` checks the tensor against the manifest and hands it
to the same decision rule (`LabelRule`) the CPU classifier uses; decision, smoothing, outputs,
telemetry and the service are the daemon's, shared.

`bind_source` is where the model and the source meet: the imx500 source needs the network file of
the loaded model (set on the camera before it opens), and only an imx500 model may run on it. The
crop happens on the sensor: its region of interest is set from the crop config (a centred square,
as the CPU path's ``full``/``center_crop`` and ``center`` modes; the whole sensor for ``stretch``).
Face mode cannot run there: the sensor classifies its own input, not a face found on the Pi.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import FaceedgeError
from device.manifest import Manifest, load_manifest
from device.runtime import LabelRule, Runtime

log = logging.getLogger(__name__)

VARIANT = "imx500"
PACKAGE_FILE = "packerOut.zip"
NETWORK_FILE = "network.rpk"
LABELS_FILE = "labels.txt"
SOURCE_TYPE = "imx500"
PACKAGE_HINT = "sudo apt install imx500-tools; imx500-package -i packerOut.zip -o <model dir> (make deploy does it)"


class Imx500Classifier(LabelRule):
    """An imx500 model dir on the device: the manifest's labels and rule, the network file for the
    camera. Same interface as `device.runtime.Classifier` where the daemon shares code (manifest,
    model_path, input_size, runtime, num_threads, label_of); `scores_from` takes the sensor's
    output tensor where the CPU classifier takes an image."""

    on_sensor = True

    def __init__(self, package_path: str | os.PathLike, manifest: Manifest) -> None:
        if manifest.variant != VARIANT:
            raise FaceedgeError(f"{package_path}: a {manifest.variant} model, not an imx500 one")
        self.model_path = Path(package_path)
        self.manifest = manifest
        self.network_file = self.model_path.parent / NETWORK_FILE
        self.input_height, self.input_width = manifest.input_height, manifest.input_width
        self.runtime = Runtime(name="imx500", version="on the sensor", interpreter_cls=None)
        self.num_threads = 0  # nothing runs on the Pi's cores
        self.outputs = 1 if manifest.output_kind == "sigmoid" else len(manifest.labels)

    @classmethod
    def from_model_dir(cls, path: str | os.PathLike) -> Imx500Classifier:
        manifest, package = load_manifest(path)
        return cls(package, manifest)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the sensor's input tensor (the sensor scales its region of interest to it)."""
        return self.input_height, self.input_width

    def require_network(self) -> Path:
        """The packaged network the camera loads; FaceedgeError saying how to make it when missing."""
        if not self.network_file.is_file():
            raise FaceedgeError(f"{self.network_file}: missing; package the model on the Pi: {PACKAGE_HINT}")
        return self.network_file

    def scores_from(self, outputs: np.ndarray) -> np.ndarray:
        """The sensor's first output tensor (as picamera2's get_outputs returns it) → (K,) float32
        probabilities; FaceedgeError when it is not this model's output (another network loaded)."""
        flat = np.asarray(outputs, np.float32).reshape(-1)
        if flat.size != self.outputs:
            raise FaceedgeError(
                f"the AI Camera returned {flat.size} output values, the model "
                f"{self.model_path} has {self.outputs}: is another network loaded on the sensor?"
            )
        return flat


def load_classifier(model_dir: str | os.PathLike, **cpu_kw: Any):
    """The classifier for a model dir: the AI Camera's for an imx500 manifest, else the CPU
    interpreter (`device.runtime.Classifier`, with `cpu_kw`: num_threads, runtime)."""
    from device.runtime import Classifier

    manifest, model_path = load_manifest(model_dir)
    if manifest.variant == VARIANT:
        return Imx500Classifier(model_path, manifest)
    return Classifier(model_path, manifest, **cpu_kw)


def sensor_roi_fraction(crop: Any) -> float | None:
    """The crop config as the sensor's region of interest: the side of a centred square as a
    fraction of the sensor's height, or None for the whole sensor. FaceedgeError for crops the
    sensor cannot do."""
    if crop.mode == "face":
        raise FaceedgeError(
            "crop.mode 'face' cannot run on the AI Camera: the sensor classifies its own input "
            "(a region of interest), not a face found on the Pi; use crop.mode full or center"
        )
    if crop.mode == "center":
        return float(crop.fraction)
    if crop.square == "center_crop":
        return 1.0
    if crop.square == "stretch":
        return None
    raise FaceedgeError(
        f"crop.square {crop.square!r} cannot run on the AI Camera (the sensor crops, it does not "
        "pad): use center_crop or stretch"
    )


def bind_source(classifier: Any, cfg: Any):
    """The source config the daemon opens for `classifier` under the daemon config `cfg`: an imx500
    model runs only on the imx500 source, which gets the model's network file and the crop as its
    region of interest; a CPU model runs on any other source, unchanged."""
    source = cfg.source
    if not classifier.on_sensor:
        if source.type == SOURCE_TYPE:
            raise FaceedgeError(
                f"source.type 'imx500' runs the network on the AI Camera's sensor: load an imx500 "
                f"model (convert --variants imx500), not the {classifier.manifest.variant} model "
                f"{classifier.model_path}"
            )
        return source
    if source.type != SOURCE_TYPE:
        raise FaceedgeError(
            f"{classifier.model_path}: an imx500 model runs on the AI Camera's sensor: set "
            f"source.type imx500 (not {source.type!r}), or use the int8 model on this source"
        )
    return source.model_copy(
        update={"network_file": str(classifier.require_network()), "roi_fraction": sensor_roi_fraction(cfg.crop)}
    )
