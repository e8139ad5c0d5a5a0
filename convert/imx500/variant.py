"""The imx500 variant, host side: hand the model over, run the conversion in the imx500
environment, check what comes back, and give the pipeline what it gives every variant.

    build(...) -> Imx500Build
        .manifest        the device's manifest (variant imx500, model_file packerOut.zip, the input and
                         output quantization from the converter's dnnParams.xml)
        .result          its entry in convert.json (sizes, timings, memory report, versions, checks)
        .probabilities   {split: (N, K)} the MCT simulation's outputs on exactly the device-preprocessed
                         images the other variants are verified on (`convert.verify.load_model_images`,
                         in the order given)
        .classifier      the device's `Imx500Classifier` for these files: the decision rule verification uses

and writes into `out_dir` what `export/imx500/` publishes: packerOut.zip and labels.txt (the
pipeline adds manifest.json).

Refused here, one line each (`FaceedgeError`, nothing written): a model with no Keras layer graph
(a SavedModel) or a layer tf.keras 2.15 cannot rebuild (handoff.py); a rebuilt model that does not
compute what the Keras model computes; a network that does not fit in the sensor's memory.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.imx500 import env, handoff
from device.errors import FaceedgeError
from device.files import sha256_file
from device.imx500 import LABELS_FILE, PACKAGE_FILE, Imx500Classifier
from device.manifest import Manifest, Preprocessing, TensorSpec

log = logging.getLogger(__name__)

# The rebuilt tf.keras 2.15 model must compute what the Keras 3 model computes (measured: 6e-8 for
# MobileNetV2; the 1x1 depthwise that replaces Rescaling adds float rounding only).
REBUILD_MAX_ABS_DIFF = 1e-4
CALIBRATION_BATCH = 16


@dataclass
class Imx500Build:
    manifest: Manifest
    result: dict[str, Any]
    probabilities: dict[str, np.ndarray]
    classifier: Imx500Classifier


def _spec(t: dict, batch_shape: list[int]) -> TensorSpec:
    """A dnnParams.xml tensor as the manifest's TensorSpec (the sensor's tensors are 8-bit,
    power-of-two scaled, zero point 0; "shift" is a bit shift the sensor applies, 0 for ours)."""
    if t["bits"] != 8 or t["format"] not in ("signed", "unsigned"):
        raise FaceedgeError(f"imx500: tensor {t['name']!r} is {t['bits']}-bit {t['format']}: expected 8-bit")
    return TensorSpec(
        dtype="uint8" if t["format"] == "unsigned" else "int8", shape=batch_shape, scale=t["scale"], zero_point=0
    )


def _memory(report: dict) -> dict[str, Any]:
    """The converter's memory report (sizes in bytes) as numbers, with the share of the chip."""

    def size(key: str) -> int | None:
        v = report.get(key)
        return int(str(v).rstrip("B")) if v is not None else None

    used, total = size("Memory Usage"), size("Total Memory Available On Chip")
    return {
        "fit_in_chip": bool(report.get("Fit In Chip")),
        "usage_bytes": used,
        "chip_bytes": total,
        "share_of_chip": (used / total) if used is not None and total else None,
        "runtime_bytes": size("Runtime Memory Physical Size"),
        "model_bytes": size("Model Memory Physical Size"),
        "input_persistent": report.get("Input Persistent"),
    }


def build(
    keras_model: Any,
    *,
    model_path: Path,
    out_dir: Path,
    calibration: Callable[[], Any],
    calibration_count: int,
    verify_paths: dict[str, list[str]],
    float_predict: Callable[[np.ndarray], np.ndarray],
    head: dict[str, Any],
    preprocessing: Preprocessing,
    size_hw: tuple[int, int],
    calibration_note: str,
    common: dict[str, Any],
) -> Imx500Build:
    """Convert for the IMX500 in its own environment; see the module docstring.

    `calibration()` yields the `calibration_count` float32 (H, W, 3) raw RGB images of the training
    split (the int8 recipe's representative data; written to disk one by one); `verify_paths` the
    images of each verification split, read and resized as the device does (chunk by chunk);
    `float_predict` the float Keras model (the rebuild is checked against it); `common` holds the
    manifest fields every variant shares (source_run, backbone, created)."""
    from convert.verify import CHUNK, load_model_images

    if keras_model is None:
        raise FaceedgeError(
            f"{model_path}: the imx500 variant needs a Keras model (.keras or .h5): a SavedModel "
            "has no layer graph to rebuild in tf.keras 2.15"
        )
    python = env.python_path()  # before any work: say `make setup-imx500` first
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="faceedge-imx500-") as tmp:
        job = Path(tmp)
        arch = handoff.write(keras_model, job)
        if calibration_count < 1:
            raise FaceedgeError("imx500: the calibration set is empty (no training images to quantize with)")
        calib = np.lib.format.open_memmap(
            job / "calibration.npy", mode="w+", dtype=np.float32, shape=(calibration_count, size_hw[0], size_hw[1], 3)
        )
        n = 0
        for image in calibration():
            if n == calibration_count:
                break
            calib[n] = image
            n += 1
        calib.flush()
        del calib
        float_probabilities: dict[str, np.ndarray] = {}
        (job / "verify").mkdir()
        for split, paths in verify_paths.items():
            arr = np.lib.format.open_memmap(
                job / "verify" / f"{split}.npy",
                mode="w+",
                dtype=np.uint8,
                shape=(len(paths), size_hw[0], size_hw[1], 3),
            )
            parts = []
            for i in range(0, len(paths), CHUNK):
                chunk = load_model_images(paths[i : i + CHUNK], size_hw)
                arr[i : i + len(chunk)] = chunk
                parts.append(np.asarray(float_predict(chunk), np.float32).reshape(len(chunk), -1))
            float_probabilities[split] = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
            arr.flush()
            del arr
        (job / "job.json").write_text(json.dumps({"calibration_batch": CALIBRATION_BATCH}) + "\n")
        log.info(
            "imx500: handing over %d layers and %d weight arrays (%s), %d calibration images",
            len(arch["layers"]),
            arch["weight_arrays"],
            python,
            n,
        )
        child = env.run_child(job)
        with np.load(job / "probabilities.npz") as p:
            probs = {k: p[k] for k in p.files}

        rebuilt_diff = max(
            (
                float(np.abs(probs[f"float/{s}"] - float_probabilities[s]).max())
                for s in verify_paths
                if len(verify_paths[s])
            ),
            default=0.0,
        )
        if rebuilt_diff > REBUILD_MAX_ABS_DIFF:
            raise FaceedgeError(
                f"{model_path}: the model rebuilt in tf.keras 2.15 is not the same model: its "
                f"outputs differ from the Keras model's by up to {rebuilt_diff:.3g} "
                f"(> {REBUILD_MAX_ABS_DIFF:g})"
            )
        memory = _memory(child["memory"])
        if not memory["fit_in_chip"]:
            raise FaceedgeError(
                f"{model_path}: the IMX500 network does not fit in the sensor's memory "
                f"({memory['usage_bytes']} of {memory['chip_bytes']} bytes; imxconv-tf memory report)"
            )

        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(job / "out" / PACKAGE_FILE, out_dir / PACKAGE_FILE)
        (out_dir / LABELS_FILE).write_text("".join(f"{label}\n" for label in head["labels"]))

    tensors = child["tensors"]
    units = int(next(iter(float_probabilities.values())).shape[1]) if float_probabilities else 1
    in_spec = _spec(tensors["input"], [1, size_hw[0], size_hw[1], 3])
    out_spec = _spec(tensors["output"], [1, units])
    package = out_dir / PACKAGE_FILE
    versions = child["versions"]
    converter = (
        f"MCT {versions['mct']} post-training quantization (imx500 TPC v1) + imxconv-tf "
        f"{versions['imx500_converter']} (TensorFlow {versions['tensorflow']})"
    )
    notes = (
        f"IMX500 (Raspberry Pi AI Camera); package on the Pi: imx500-package -i {PACKAGE_FILE} -o <dir> "
        f"→ network.rpk. Calibrated {calibration_note}. Memory {memory['usage_bytes']} of "
        f"{memory['chip_bytes']} bytes ({100 * memory['share_of_chip']:.1f}%, fits)."
    )
    manifest = Manifest(
        variant="imx500",
        model_file=PACKAGE_FILE,
        sha256=sha256_file(package),
        size_bytes=package.stat().st_size,
        **head,
        input_height=size_hw[0],
        input_width=size_hw[1],
        input=in_spec,
        output=out_spec,
        preprocessing=preprocessing,
        tensorflow_version=versions["tensorflow"],
        converter=converter,
        notes=notes,
        **common,
    )
    simulation = {s: probs[f"imx500/{s}"] for s in verify_paths}
    grid = max(
        (float(np.abs(v / out_spec.scale - np.rint(v / out_spec.scale)).max()) for v in simulation.values() if v.size),
        default=0.0,
    )
    seconds = time.perf_counter() - t_start
    result = {
        "status": "published",
        "recipe": converter,
        "size_bytes": manifest.size_bytes,
        "sha256": manifest.sha256,
        "conversion_seconds": round(seconds, 3),
        "input": in_spec.model_dump(),
        "output": out_spec.model_dump(),
        "min_runtime_version": "",
        "imx500": {
            "memory": memory,
            "dnn_params": tensors,
            "versions": versions,
            "timings_s": child["timings"],
            "calibration_images": child["calibration_images"],
            "weight_arrays": child["weight_arrays"],
            "rebuilt_max_abs_diff": rebuilt_diff,
            "simulation_off_output_grid_steps": grid,
            "verified_with": "MCT simulation (mct.keras_load_quantized_model of the exported model)",
        },
    }
    log.info(
        "imx500: %d bytes (%s) in %.1fs; memory %.1f%% of the chip; rebuilt model within %.2g of Keras",
        manifest.size_bytes,
        PACKAGE_FILE,
        seconds,
        100 * memory["share_of_chip"],
        rebuilt_diff,
    )
    return Imx500Build(manifest, result, simulation, Imx500Classifier(package, manifest))
