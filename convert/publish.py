"""Publishing a converted model dir: swapped in whole with renames, or set aside as rejected; what
`export/<variant>/` holds now."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def publish_dir(staged: Path, final: Path) -> None:
    """Swap a fully written model dir into place (two renames; the old one is removed after)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


REJECTED_SUFFIX = ".rejected"


def rejected_dir(export_root: Path, variant: str) -> Path:
    """Where a variant the gate rejected is written: beside, never over, the published one."""
    return export_root / f"{variant}{REJECTED_SUFFIX}"


def describe_published(model_dir: Path) -> dict | None:
    """What `export/<variant>/` holds now (path, sha256, created, source run, status), or None."""
    mpath = model_dir / "manifest.json"
    if not mpath.is_file():
        return None
    try:
        raw = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"path": str(model_dir), "status": "unreadable manifest"}
    return {
        "path": str(model_dir),
        "sha256": raw.get("sha256"),
        "created": raw.get("created"),
        "source_run": raw.get("source_run"),
        "status": raw.get("status", "published"),
    }
