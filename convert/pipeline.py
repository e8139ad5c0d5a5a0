"""The conversion stage end to end: check inputs ─► export ─► convert each variant ─► load it in a
child process ─► verify on every split with the device's code ─► gate ─► publish atomically.

Nothing is written where the device looks until everything has been converted and verified: the
variants are built in a hidden staging folder inside `<out>/export/`, and each `export/<variant>/`
folder is then swapped in with a rename (model and manifest together). A variant the gate rejects
goes to `export/<variant>.rejected/` instead, so a published model is never replaced by a rejected
one; a passing conversion removes a stale `.rejected/` it supersedes. `convert.json` and the report
section are written last, each atomically. Any error on the way leaves the previous export
untouched and removes the staging folder.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from convert import data as cdata
from convert.inputs import (
    DEFAULT_PREPROCESSING,
    IMX500,
    ConvertOptions,
    gate_config,
    model_head,
    options_from,
    resolve_source,
)
from convert.publish import describe_published, publish_dir, rejected_dir
from convert.quantize import MIN_RECOMMENDED_CALIBRATION, QuantizationConfig
from device.errors import FaceedgeError
from device.files import atomic_write_bytes, require_writable_dir, sha256_file
from device.manifest import MODEL_NAME, Manifest, Preprocessing, TensorSpec, write_manifest

__all__ = ["ConvertOptions", "options_from", "run"]

log = logging.getLogger(__name__)

CONVERT_JSON = "convert.json"
REPORT_MD = "report.md"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def run(opts: ConvertOptions) -> dict:
    """Convert, verify, gate and publish; returns what is written to convert.json.

    Raises FaceedgeError on bad input (nothing written). A gate failure is not an exception: the
    result's ``gate.passed`` is False and the failing variants are written to
    ``export/<variant>.rejected/`` (status "rejected"); ``current`` says what ``export/<variant>/`` holds.
    """
    t_start = time.perf_counter()
    if importlib.util.find_spec("tensorflow") is None:  # a device-only install: say what to do, no traceback
        raise FaceedgeError("the conversion stage needs TensorFlow: pip install -e '.[train]' (or make setup)")
    src = resolve_source(opts)
    require_writable_dir(src.out, "--out" if opts.out is not None else "--run")  # before TensorFlow loads
    variants = list(opts.variants)
    gate = gate_config(opts, src.run_dir)

    # ---- calibration set (cheap checks first: no TensorFlow needed to reject an empty set)
    calib: list[cdata.Sample] = []
    if "int8" in variants or IMX500 in variants:
        split = src.data.calibration_split
        calib = cdata.choose_calibration(src.data.split(split), opts.calibration_images, opts.seed)
        if len(calib) < MIN_RECOMMENDED_CALIBRATION:
            log.warning(
                "only %d calibration images (from the %s split; %d recommended at least): int8 ranges "
                "may miss rare inputs",
                len(calib),
                split,
                MIN_RECOMMENDED_CALIBRATION,
            )
    verify_splits = src.data.verify_splits
    if not verify_splits:
        raise FaceedgeError(f"{src.data.source}: no images in {', '.join(cdata.VERIFY_SPLITS)} to verify with")

    import tensorflow as tf

    from convert import verify
    from convert.export import convert_saved_model, export_saved_model, load_float_model, tflite_metadata
    from convert.metadata import attach as attach_metadata
    from convert.probe import probe_in_child
    from convert.selftest import Candidates
    from convert.selftest import write_for_model as write_selftest
    from device.runtime import Classifier

    log.info("loading %s", src.model_path)
    fm = load_float_model(src.model_path)
    size_hw = (fm.input_height, fm.input_width)
    if src.info is not None and src.info.input_size is not None and tuple(src.info.input_size) != size_hw:
        raise FaceedgeError(
            f"{src.model_path}: input {size_hw} does not match model_info input_size {src.info.input_size}"
        )
    head = model_head(src.info, opts, src.data.labels, fm.output_units, src.model_path)
    info = src.info
    preprocessing = Preprocessing(
        in_model=opts.preprocessing or (info.preprocessing if info else DEFAULT_PREPROCESSING),
        resize_method=(info.resize_method if info and info.resize_method in ("bilinear", "area") else "bilinear"),
    )

    export_root = src.out / "export"
    made = [d for d in (src.out, export_root) if not d.exists()]  # removed again if we fail, when empty
    export_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=export_root))
    results: dict[str, dict] = {}
    published = False
    try:
        saved = export_saved_model(fm, staging / "saved_model")
        classifiers: dict[str, Classifier] = {}
        manifests: dict[str, Manifest] = {}
        for variant in variants:
            if variant == IMX500:
                continue  # below, in its own environment
            if variant == "int8":
                recipe = QuantizationConfig.for_int8(
                    cdata.representative_data(calib, size_hw), steps=len(calib), io_dtype=opts.io_dtype
                )
            elif variant == "float16":
                recipe = QuantizationConfig.for_float16()
            else:
                recipe = QuantizationConfig.for_float32()
            log.info("converting %s: %s", variant, recipe.describe())
            t0 = time.perf_counter()
            blob = convert_saved_model(saved, recipe)
            seconds = time.perf_counter() - t0
            vdir = staging / variant
            vdir.mkdir()
            model_file = vdir / MODEL_NAME
            atomic_write_bytes(model_file, blob)
            # TFLite metadata + labels.txt (convert/metadata.py): everything below is of the final file
            blob = attach_metadata(
                model_file, head, variant=variant, size_hw=size_hw, backbone=info.backbone if info else ""
            )
            probe = probe_in_child(model_file, opts.child_timeout)
            log.info(
                "%s: %d bytes in %.1fs; loads in the device runtime (%s %s), input %s, output %s",
                variant,
                len(blob),
                seconds,
                probe["runtime"],
                probe["runtime_version"],
                probe["input"]["dtype"],
                probe["output"]["dtype"],
            )
            notes = recipe.describe()
            if variant == "int8":
                notes += f" from the {src.data.calibration_split} split (seed {opts.seed}, {len(calib)} images)"
            man = Manifest(
                variant=variant,
                sha256=sha256_file(model_file),
                size_bytes=len(blob),
                **head,
                input_height=size_hw[0],
                input_width=size_hw[1],
                input=TensorSpec(**probe["input"]),
                output=TensorSpec(**probe["output"]),
                preprocessing=preprocessing,
                source_run=src.description,
                backbone=info.backbone if info else "",
                tensorflow_version=tf.__version__,
                converter=f"tf.lite.TFLiteConverter.from_saved_model (TensorFlow {tf.__version__})",
                min_runtime_version=tflite_metadata(blob).get("min_runtime_version", ""),
                created=_now(),
                notes=notes,
            )
            manifests[variant] = man
            classifiers[variant] = Classifier(model_file, man)
            results[variant] = {
                "status": "published",
                "recipe": recipe.describe(),
                "size_bytes": len(blob),
                "sha256": man.sha256,
                "conversion_seconds": round(seconds, 3),
                "input": probe["input"],
                "output": probe["output"],
                "min_runtime_version": man.min_runtime_version,
            }
        deciders = dict(classifiers)  # each variant's decision rule (the same threshold/argmax code)
        imx = None
        if IMX500 in variants:
            from convert.imx500.variant import build as build_imx500

            imx = build_imx500(
                fm.keras_model,
                model_path=src.model_path,
                out_dir=staging / IMX500,
                calibration=cdata.representative_data(calib, size_hw),
                calibration_count=len(calib),
                verify_paths={n: [s.path for s in src.data.split(n)] for n in verify_splits},
                float_predict=fm.predict,
                head=head,
                preprocessing=preprocessing,
                size_hw=size_hw,
                calibration_note=f"on {len(calib)} images of the {src.data.calibration_split} split (seed {opts.seed})",
                common={"source_run": src.description, "backbone": info.backbone if info else "", "created": _now()},
            )
            manifests[IMX500], results[IMX500], deciders[IMX500] = imx.manifest, imx.result, imx.classifier

        # ---- verification: each split's images read once, every model run on them
        t0 = time.perf_counter()
        split_counts = {}
        selftest_candidates: dict[str, dict[str, Candidates]] = {v: {} for v in classifiers}
        for name in verify_splits:
            samples = src.data.split(name)
            split_counts[name] = len(samples)
            log.info("verifying on %s (%d images): float model + %s", name, len(samples), ", ".join(variants))
            paths, labels = [s.path for s in samples], [s.label for s in samples]
            outs = verify.run_split(paths, labels, size_hw, fm.predict, classifiers)
            for v in classifiers:
                selftest_candidates[v][name] = Candidates(paths, labels, outs.probs(v))
            if imx is not None:  # the MCT simulation's outputs on these very images, in this order
                outs.variant_probs[IMX500] = [imx.probabilities[name]]
            for v in variants:
                results[v].setdefault("splits", {})[name] = verify.split_metrics(outs, v, deciders[v])
        verify_seconds = time.perf_counter() - t0
        float32_size = results.get("float32", {}).get("size_bytes")
        for v in variants:
            results[v]["size_ratio_to_float32"] = (results[v]["size_bytes"] / float32_size) if float32_size else None

        # ---- gate, then publish: a passing variant replaces export/<v>/, a rejected one goes to
        # export/<v>.rejected/ and the published export/<v>/ (if any) stays as it was
        all_failures: list[str] = []
        all_notes: list[str] = []
        for v in variants:
            verdict = gate.evaluate(v, results[v]["splits"])
            for name, chk in verdict.checks.items():
                results[v]["splits"][name]["gate"] = chk
            results[v]["gate_failures"] = verdict.failures
            results[v]["gate_notes"] = verdict.notes
            all_notes += verdict.notes
            if not verdict.passed:
                results[v]["status"] = "rejected"
                manifests[v] = manifests[v].model_copy(
                    update={
                        "status": "rejected",
                        "notes": "rejected by the conversion gate: " + "; ".join(verdict.failures),
                    }
                )
                all_failures += verdict.failures
            write_manifest(staging / v, manifests[v])
            if v in classifiers:  # the image `device check` classifies before the model is trusted on a Pi
                results[v]["selftest"] = write_selftest(staging / v, classifiers[v], selftest_candidates[v])
        for v in variants:
            if results[v]["status"] == "published":
                publish_dir(staging / v, export_root / v)
                stale = rejected_dir(export_root, v)
                if stale.exists():  # superseded by this passing conversion: it would only mislead
                    shutil.rmtree(stale)
                    log.info("%s: removed %s (an earlier rejected conversion, superseded)", v, stale)
                results[v]["path"] = str(export_root / v / manifests[v].model_file)
            else:
                publish_dir(staging / v, rejected_dir(export_root, v))
                results[v]["path"] = str(rejected_dir(export_root, v) / manifests[v].model_file)
            results[v]["current"] = describe_published(export_root / v)
        published = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not published:
            for d in reversed(made):
                try:
                    d.rmdir()  # only if empty
                except OSError:
                    pass

    summary = {
        "created": _now(),
        "source": {
            "run": str(src.run_dir) if src.run_dir else None,
            "model": str(src.model_path),
            "model_sha256": sha256_file(src.model_path) if src.model_path.is_file() else None,
            "float_model_kind": fm.kind,
            "data": src.data.source,
        },
        "versions": {
            "tensorflow": tf.__version__,
            "keras": _keras_version(),
            "device_runtime": f"{deciders[variants[0]].runtime.name} {deciders[variants[0]].runtime.version}",
        },
        "settings": {
            "variants": variants,
            "io_dtype": opts.io_dtype,
            "calibration_images": opts.calibration_images,
            "seed": opts.seed,
            "max_drop": gate.max_drop,
            "min_agreement": gate.min_agreement,
            "significance": gate.significance,
            "min_balanced_accuracy": gate.floor_of(len(head["labels"])),
        },
        "model": {**head, "input_size": list(size_hw), "preprocessing": preprocessing.in_model},
        "calibration": (
            {
                "split": src.data.calibration_split,
                "images": len(calib),
                "seed": opts.seed,
                "decode_resize": "train.pipeline.decode_and_resize",
            }
            if calib
            else None
        ),
        "verification": {
            "splits": split_counts,
            "preprocessing": "device.crop.load_image_rgb + Preparer (the whole image, resized)",
            "runtime": "device.runtime.Classifier",
            "seconds": round(verify_seconds, 3),
        },
        "variants": results,
        "gate": {
            "passed": not all_failures,
            "max_drop": gate.max_drop,
            "min_agreement": gate.min_agreement,
            "significance": gate.significance,
            "min_balanced_accuracy": gate.floor_of(len(head["labels"])),
            "failures": all_failures,
            "notes": all_notes,
        },
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    atomic_write_bytes(src.out / CONVERT_JSON, (json.dumps(summary, indent=2) + "\n").encode())
    from convert.report import upsert_section

    upsert_section(src.out / REPORT_MD, summary)
    from convert.model_card import write as write_model_card

    write_model_card(src.out, summary)  # MODEL_CARD.md: data, figures, intended use, limits, consent
    return summary


def _keras_version() -> str:
    try:
        import keras

        return keras.__version__
    except Exception:  # noqa: BLE001
        return "unknown"
