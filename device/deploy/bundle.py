"""The release bundle `device deploy` ships: device wheel, model + manifest, device.yaml, systemd unit,
self-test image, and BUNDLE.json with every file's sha256 (checked again before anything is sent)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from device.deploy.wheel import PACKAGE_DIR, PROJECT_ROOT, build_device_wheel, check_wheel
from device.errors import FaceedgeError
from device.files import sha256_file
from device.manifest import load_manifest, resolve_model_dir

DEFAULT_UNIT = PACKAGE_DIR / "faceedge.service"
BUNDLE_FILE = "BUNDLE.json"
BUNDLE_FORMAT = 1
# Holdout splits, best first: a self-test image the model never trained on.
SELFTEST_SPLITS = ("unseen_persons", "seen_holdout", "valid")
SELFTEST_CANDIDATES = 48
# `device check --expect_score` tolerance on the device: the host's score for the self-test image
# may differ on the Pi's CPU/runtime build by a few int8 output steps (1/256 each), not more.
SELFTEST_TOLERANCE = 0.05


@dataclass
class SelfTest:
    image: Path
    expect: str
    score: float
    true_label: str | None = None
    split: str | None = None


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


def _classify_like_check(clf, cropper, rgb):
    """What `device check` computes for an image: its crop (`check.crop_for_check`), resize,
    classify. Returns (label, score, scores)."""
    from device.check import crop_for_check
    from device.crop import resize_to_input

    cut, _ = crop_for_check(cropper, rgb)
    scores = clf.classify(resize_to_input(cut.image, clf.input_size))
    label, score = clf.label_of(scores)
    return label, score, scores


def choose_selftest(run_dir: Path, model_dir: Path, cfg, *, limit: int = SELFTEST_CANDIDATES) -> SelfTest | None:
    """A holdout image from the run's splits.csv and this model's own answer for it on this machine.

    Prefers images the model gets right, then the widest margin from the decision boundary, so the
    device (another CPU, maybe another runtime build) gives the same label.
    """
    splits = run_dir / "splits.csv"
    if not splits.is_file():
        return None
    with open(splits, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("split") in SELFTEST_SPLITS]
    if not rows:
        return None
    order = {s: i for i, s in enumerate(SELFTEST_SPLITS)}
    best_split = min(order[r["split"]] for r in rows)
    rows = sorted((r for r in rows if order[r["split"]] == best_split), key=lambda r: r["path"])[:limit]
    from device.crop import Cropper, load_image_rgb
    from device.runtime import Classifier

    clf = Classifier.from_model_dir(model_dir, num_threads=1)
    cropper = Cropper(cfg.crop)
    best: tuple[tuple, SelfTest] | None = None
    for r in rows:
        p = Path(r["path"])
        if not p.is_absolute():
            p = run_dir / p
        try:
            rgb = load_image_rgb(p)
        except FaceedgeError:
            continue
        label, score, scores = _classify_like_check(clf, cropper, rgb)
        if scores.size == 1:
            margin = abs(float(scores[0]) - clf.manifest.threshold)
        else:
            top2 = sorted(scores.tolist())[-2:]
            margin = top2[1] - top2[0]
        key = (label == r.get("label"), margin)
        if best is None or key > best[0]:
            best = (key, SelfTest(image=p, expect=label, score=score, true_label=r.get("label"), split=r["split"]))
    return best[1] if best else None


def selftest_from_image(image: Path, expect: str | None, model_dir: Path, cfg) -> SelfTest:
    from device.crop import Cropper, load_image_rgb
    from device.runtime import Classifier

    clf = Classifier.from_model_dir(model_dir, num_threads=1)
    label, score, _ = _classify_like_check(clf, Cropper(cfg.crop), load_image_rgb(image))
    if expect is not None and expect != label:
        raise FaceedgeError(
            f"--selftest_image {image}: this model says {label!r} ({score:.3f}) here, "
            f"not --selftest_expect {expect!r}; the deploy would fail its own check"
        )
    return SelfTest(image=image, expect=label, score=score)


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
    run_dir = Path(run) if (Path(run) / "splits.csv").is_file() else model_dir.parent.parent
    if manifest.variant == "imx500":  # the AI Camera classifies its own frames: no image to self-test with
        if selftest_image is not None:
            raise FaceedgeError(
                f"--selftest_image {selftest_image}: an imx500 model runs on the sensor; the Pi "
                "cannot classify an image with it (the health gate checks its first results)"
            )
        st = None
    elif selftest_image is not None:
        st = selftest_from_image(Path(selftest_image), selftest_expect, model_dir, cfg)
    else:
        st = choose_selftest(run_dir, model_dir, cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model").mkdir()
    shutil.copy2(model_path, out / "model" / model_path.name)
    shutil.copy2(model_dir / "manifest.json", out / "model" / "manifest.json")
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
        "selftest": None,
    }
    if st is not None:
        (out / "selftest").mkdir()
        dest = out / "selftest" / f"selftest{st.image.suffix.lower() or '.png'}"
        shutil.copy2(st.image, dest)
        meta["selftest"] = {
            "image": dest.relative_to(out).as_posix(),
            "expect": st.expect,
            "score": round(st.score, 6),
            "tolerance": SELFTEST_TOLERANCE,
            "true_label": st.true_label,
            "split": st.split,
            "from": str(st.image),
        }
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
