"""Which models a benchmark measures: the variants of a run dir, or the one model dir given."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from device.bench.sensor import SENSOR_VARIANT
from device.errors import FaceedgeError
from device.manifest import MANIFEST_NAME, VARIANTS, load_manifest


def find_variants(path: str | os.PathLike, wanted: Iterable[str] | None = None) -> dict[str, Path]:
    """{variant: model dir} for the variants present in a run dir (``export/<variant>``), or the one
    model dir given. Raises FaceedgeError when none is there."""

    p = Path(path)
    if not p.exists():
        raise FaceedgeError(f"{p}: no such run or model directory")
    if p.is_file():
        p = p.parent
    # the AI Camera's model only when asked for: it runs on the camera, not with the others' sources
    wanted = list(wanted) if wanted else [v for v in VARIANTS if v != SENSOR_VARIANT]
    for v in wanted:
        if v not in VARIANTS:
            raise FaceedgeError(f"--variants: unknown variant {v!r}; choose from {list(VARIANTS)}")
    if (p / MANIFEST_NAME).is_file():  # a single model dir
        man, _ = load_manifest(p)
        if man.variant not in wanted:
            raise FaceedgeError(f"{p}: holds a {man.variant} model, not one of --variants {wanted}")
        return {man.variant: p}
    found = {v: p / "export" / v for v in wanted if (p / "export" / v / MANIFEST_NAME).is_file()}
    if not found:
        raise FaceedgeError(
            f"{p}: no model under export/{{{','.join(wanted)}}}/{MANIFEST_NAME} (run `make convert` first)"
        )
    return found


def model_summary(model_dir: Path) -> dict[str, Any]:

    man, model_path = load_manifest(model_dir)
    alpha = None
    info = model_dir.parent.parent / "model_info.json"  # <run>/export/<variant>/ → <run>/model_info.json
    if info.is_file():
        try:
            alpha = json.loads(info.read_text()).get("alpha")
        except (OSError, ValueError):
            alpha = None
    return {
        "model_dir": str(model_dir.resolve()),
        "model_path": str(model_path),
        "variant": man.variant,
        "sha256": man.sha256,
        "size_bytes": man.size_bytes,
        "input_size": [man.input_height, man.input_width],
        "input_dtype": man.input.dtype,
        "backbone": man.backbone,
        "alpha": alpha,
        "labels": man.labels,
    }
