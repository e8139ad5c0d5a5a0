"""Load the float model (checked first), export a SavedModel, convert it with a recipe.

Keras 3 `model.export(dir)` writes the inference-only SavedModel (serving signature, BatchNorm in
inference mode) and `tf.lite.TFLiteConverter.from_saved_model` converts that: the path the
TensorFlow docs recommend for Keras 3, where `from_keras_model` goes through a tracing shim.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import FaceedgeError

log = logging.getLogger(__name__)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
LFS_POINTER = b"version https://git-lfs"
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def check_model_path(path: str | os.PathLike) -> Path:
    """Reject what is obviously not a model before TensorFlow sees it; one-line errors.

    Accepts a `.keras` zip, a full-model HDF5 (`.h5`) or a SavedModel directory.
    """
    p = Path(path)
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise FaceedgeError(f"{p}: directory is not a SavedModel (no saved_model.pb)")
        return p
    if not p.exists():
        raise FaceedgeError(f"{p}: model file not found")
    if p.suffix.lower() not in MODEL_SUFFIXES:
        raise FaceedgeError(f"{p}: unknown model format (expected .keras, .h5 or a SavedModel directory)")
    size = p.stat().st_size
    if size == 0:
        raise FaceedgeError(f"{p}: model file is empty (0 bytes)")
    with open(p, "rb") as f:
        head = f.read(64)
    if head.startswith(LFS_POINTER):
        raise FaceedgeError(f"{p}: is a Git LFS pointer, not a model (run `git lfs pull`)")
    if p.suffix.lower() == ".keras":
        if not zipfile.is_zipfile(p):
            raise FaceedgeError(f"{p}: not a .keras archive (not a zip file: truncated or corrupt)")
        try:
            with zipfile.ZipFile(p) as archive:
                names = set(archive.namelist())
                corrupt_member = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise FaceedgeError(f"{p}: corrupt .keras archive ({e})") from None
        if corrupt_member is not None:
            raise FaceedgeError(f"{p}: corrupt .keras archive (CRC error in {corrupt_member})")
        if "config.json" not in names:
            raise FaceedgeError(f"{p}: .keras archive has no config.json")
    else:
        if not head.startswith(HDF5_SIGNATURE):
            raise FaceedgeError(f"{p}: not an HDF5 file (no HDF5 signature)")
        import h5py

        try:
            with h5py.File(p, "r") as h5:
                if "model_config" not in h5.attrs:
                    raise FaceedgeError(
                        f"{p}: HDF5 file holds weights only, not a full model (no model_config); "
                        "save it with model.save() or rebuild the model and load_weights()"
                    )
        except FaceedgeError:
            raise
        except Exception as e:  # noqa: BLE001 - h5py raises OSError/KeyError variously on truncation
            raise FaceedgeError(f"{p}: unreadable HDF5 file, truncated or corrupt ({_first_line(e)})") from None
    return p


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


@dataclass
class FloatModel:
    """The float reference: a Keras model, or a SavedModel's serving function."""

    path: Path
    keras_model: Any | None
    serving_fn: Any | None
    input_height: int
    input_width: int
    output_units: int

    @property
    def kind(self) -> str:
        return "keras" if self.keras_model is not None else "saved_model"

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities (N, K) for raw RGB images (N, H, W, 3), uint8 or float 0..255."""
        import tensorflow as tf

        out = []
        for i in range(0, len(images), batch_size):
            x = tf.convert_to_tensor(np.asarray(images[i : i + batch_size], dtype=np.float32))
            if self.keras_model is not None:
                y = self.keras_model(x, training=False)
            else:
                y = self.serving_fn(x)
                if isinstance(y, dict):
                    y = next(iter(y.values()))
            out.append(np.asarray(y, dtype=np.float32).reshape(len(x), -1))
        if not out:
            return np.zeros((0, self.output_units), np.float32)
        return np.concatenate(out)


def load_float_model(path: str | os.PathLike) -> FloatModel:
    """Load `.keras`, `.h5` or a SavedModel dir that `check_model_path` has passed (the pipeline checks
    it first, before TensorFlow is imported); errors are one line naming the file."""
    p = Path(path)
    import tensorflow as tf

    keras_model = serving_fn = None
    try:
        if p.is_dir():
            loaded = tf.saved_model.load(str(p))
            sigs = getattr(loaded, "signatures", {})
            if "serving_default" not in sigs:
                raise FaceedgeError(f"{p}: SavedModel has no serving_default signature")
            serving_fn = sigs["serving_default"]
            spec = next(iter(serving_fn.structured_input_signature[1].values()))
            in_shape = tuple(spec.shape)
            out_spec = next(iter(serving_fn.structured_outputs.values()))
            units = int(out_spec.shape[-1])
            serving_fn._faceedge_keepalive = loaded  # the function dies with its object otherwise
        else:
            import keras

            keras_model = keras.models.load_model(p, compile=False)
            in_shape = tuple(keras_model.input_shape)
            units = int(keras_model.output_shape[-1])
    except FaceedgeError:
        raise
    except Exception as e:  # noqa: BLE001 - Keras/h5py/TF raise many types for a bad file
        raise FaceedgeError(f"{p}: cannot load the model ({_first_line(e)})") from None
    if len(in_shape) != 4 or in_shape[3] != 3 or in_shape[1] is None or in_shape[2] is None:
        raise FaceedgeError(f"{p}: model input shape {in_shape} is not (batch, H, W, 3) with a fixed H and W")
    return FloatModel(p, keras_model, serving_fn, int(in_shape[1]), int(in_shape[2]), units)


def export_saved_model(model: FloatModel, out_dir: Path) -> Path:
    """A SavedModel the converter can read: Keras 3 `model.export`, or the SavedModel itself."""
    if model.keras_model is None:
        return model.path
    try:
        model.keras_model.export(str(out_dir), format="tf_saved_model", verbose=False)
    except Exception as e:  # noqa: BLE001
        raise FaceedgeError(f"{model.path}: Keras export to SavedModel failed ({_first_line(e)})") from None
    return out_dir


def convert_saved_model(saved_model_dir: Path, recipe: Any) -> bytes:
    """Run `TFLiteConverter.from_saved_model` with a `QuantizationConfig` recipe."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=["serving_default"])
    recipe.set_converter_options(converter)
    try:
        return bytes(converter.convert())
    except FaceedgeError:
        raise
    except Exception as e:  # noqa: BLE001 - ConverterError carries the MLIR diagnostics
        cause = e
        while cause.__context__ is not None and not isinstance(cause, FaceedgeError):
            cause = cause.__context__
        if isinstance(cause, FaceedgeError):
            raise cause from None
        raise FaceedgeError(f"{saved_model_dir}: {recipe.variant} conversion failed ({_first_line(e)})") from None


def tflite_metadata(data: bytes) -> dict[str, str]:
    """String metadata the converter wrote into the flatbuffer (e.g. min_runtime_version)."""
    from tensorflow.lite.tools import flatbuffer_utils

    out: dict[str, str] = {}
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    for md in model.metadata or []:
        name = md.name.decode() if isinstance(md.name, bytes) else str(md.name)
        if name == "min_runtime_version":
            buf = model.buffers[md.buffer].data
            raw = b"" if buf is None else bytes(bytearray(buf))
            out[name] = raw.split(b"\x00", 1)[0].decode("ascii", "replace")
    return out
