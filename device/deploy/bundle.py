"""The release bundle `device deploy` ships: device wheel, the model dir as the conversion stage wrote
it (model, manifest, labels, self-test image), device.yaml, systemd unit, and BUNDLE.json with every
file's sha256 (checked again before anything is sent). Nothing is classified here: the Pi's `device
check` classifies the model dir's self-test image (or ``--selftest-image``) in the new release."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

from device.deploy.wheel import PACKAGE_DIR, PROJECT_ROOT, build_device_wheel, check_wheel
from device.errors import FaceedgeError
from device.files import sha256_file
from device.manifest import load_manifest, resolve_model_dir
from device.selftest import load_selftest

DEFAULT_UNIT = PACKAGE_DIR / "faceedge.service"
BUNDLE_FILE = "BUNDLE.json"
BUNDLE_FORMAT = 1


def _load_config(config: Path):
    from device.config import load_config

    return load_config(config)


def health_spec(cfg, config_path: Path) -> dict:
    """Where the deploy health gate asks: the config's HTTP output, queried on loopback on the Pi."""
    http = cfg.outputs.http
    if http is None:
        raise FaceedgeError(
            f"{config_path}: key 'outputs.http': the deploy health gate needs the HTTP output "
            "(add `outputs: {http: {}}` for 127.0.0.1:8088)"
        )
    if http.port == 0:
        raise FaceedgeError(f"{config_path}: key 'outputs.http.port': deploy needs a fixed port, not 0")
    host = http.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    h = f"[{host}]" if ":" in host else host
    return {
        "url": f"http://{h}:{http.port}/healthz",
        "token_file": str(http.token_file) if http.token_file else None,
        "token_env": http.token_env,
    }


def _git_describe() -> dict:
    try:
        sha = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--", "device"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            != ""
        )
        return {"commit": sha, "device_dir_dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {}


def _add(files: dict, root: Path, rel: str) -> None:
    p = root / rel
    files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}


def write_bundle_manifest(root: Path, meta: dict) -> str:
    """Hash every file under root (but BUNDLE.json) into meta['files']; write BUNDLE.json; its digest."""
    files: dict = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != BUNDLE_FILE:
            _add(files, root, p.relative_to(root).as_posix())
    meta["files"] = files
    data = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    (root / BUNDLE_FILE).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def build_bundle(
    out: Path,
    *,
    run: Path,
    config: Path,
    variant: str = "int8",
    unit: Path = DEFAULT_UNIT,
    selftest_image: Path | None = None,
    selftest_expect: str | None = None,
    model_only: bool = False,
    wheel: Path | None = None,
) -> dict:
    """Write a bundle into `out` (created; must not exist or be empty); returns BUNDLE.json's content.

    model_only: model, manifest and self-test only (for deploy-model; code comes from the device's
    current release).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FaceedgeError(f"{out}: bundle directory exists and is not empty")
    model_dir = resolve_model_dir(run, variant)
    manifest, model_path = load_manifest(model_dir)
    cfg = _load_config(config)
    if manifest.variant == "imx500" and selftest_image is not None:  # the AI Camera classifies its own frames
        raise FaceedgeError(
            f"--selftest-image {selftest_image}: an imx500 model runs on the sensor; the Pi "
            "cannot classify an image with it (the health gate checks its first results)"
        )
    if selftest_image is not None and not Path(selftest_image).is_file():
        raise FaceedgeError(f"--selftest-image {selftest_image}: no such file")
    if selftest_expect is not None and selftest_expect not in manifest.labels:
        raise FaceedgeError(f"--selftest-expect {selftest_expect!r}: not one of the model's labels {manifest.labels}")
    out.mkdir(parents=True, exist_ok=True)
    # the model dir as the conversion stage wrote it: model, manifest, labels, its self-test image
    shutil.copytree(model_dir, out / "model", ignore=shutil.ignore_patterns(".*"))
    meta: dict = {
        "format": BUNDLE_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_only": model_only,
        "model": {
            "sha256": manifest.sha256,
            "variant": manifest.variant,
            "labels": manifest.labels,
            "source_run": manifest.source_run,
            "from": str(model_dir),
        },
        "selftest": None,  # None: `device check` uses the model dir's own selftest.json, if any
    }
    if selftest_image is not None:  # the user's own image (and label): checked on the Pi, not here
        image = Path(selftest_image)
        (out / "selftest").mkdir()
        dest = out / "selftest" / f"selftest{image.suffix.lower() or '.png'}"
        shutil.copy2(image, dest)
        meta["selftest"] = {"image": dest.relative_to(out).as_posix(), "expect": selftest_expect, "from": str(image)}
    elif (own := load_selftest(model_dir)) is not None:  # validated here: a bad file fails now, not on the Pi
        meta["model"]["selftest"] = {"expect": own.expect, "score": own.score, "tolerance": own.tolerance}
    if not model_only:
        if not Path(unit).is_file():
            raise FaceedgeError(f"{unit}: systemd unit not found")
        shutil.copy2(config, out / "device.yaml")
        shutil.copy2(unit, out / "faceedge.service")
        (out / "wheels").mkdir()
        if wheel is not None:
            check_wheel(Path(wheel))
            whl = Path(shutil.copy2(wheel, out / "wheels" / Path(wheel).name))
        else:
            whl = build_device_wheel(out / "wheels")
        meta["wheel"] = whl.relative_to(out).as_posix()
        meta["health"] = health_spec(cfg, Path(config))
        meta["git"] = _git_describe()
    digest = write_bundle_manifest(out, meta)
    meta["digest"] = digest
    return meta


def read_bundle(path: Path) -> dict:
    p = Path(path) / BUNDLE_FILE
    try:
        data = p.read_bytes()
        meta = json.loads(data)
    except FileNotFoundError:
        raise FaceedgeError(f"{path}: not a bundle (no {BUNDLE_FILE})") from None
    except (OSError, ValueError) as e:
        raise FaceedgeError(f"{p}: unreadable ({e})") from None
    for rel, m in meta.get("files", {}).items():
        f = Path(path) / rel
        if not f.is_file() or sha256_file(f) != m["sha256"]:
            raise FaceedgeError(f"{f}: missing or changed since the bundle was built")
    meta["digest"] = hashlib.sha256(data).hexdigest()
    return meta
