"""`device deploy`, `device rollback`, `device deploy-model`: put the daemon and a model on one or
more Raspberry Pis over ssh — atomic, verified, reversible. Runs on the developer's machine.

Host side (this module)::

    bundle (device-only wheel, model + manifest, device.yaml, systemd unit, self-test image,
            BUNDLE.json with every file's sha256)
      ─► per host, in parallel: probe over ssh ─► rsync into <remote_dir>/releases/<name>/
      ─► run device/deploy_remote.py there with the Pi's python3 (sent over stdin)

Device side (`device/deploy_remote.py`, stdlib only, under a lock): verify sha256 ─► venv
(--system-site-packages) + pip install the wheel ─► `device check` in the new release ─► flip
`current` (rename of a symlink) ─► restart ─► health gate on /healthz ─► keep, or flip back and
restart the previous release ─► prune to the last N.

Security: ssh is key-only (BatchMode, no password or keyboard-interactive auth) and host keys are
always checked (StrictHostKeyChecking=yes, never turned off; `--known_hosts FILE` for a file you
filled after checking the fingerprint). Remote commands are argv lists quoted with shlex.quote;
nothing is run through a local shell. sudo is used only for `systemctl`, and only with
`--service_manager systemd-system`.

Never imports TensorFlow, `train` or `convert`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import hashlib
import json
import logging
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from device import __version__
from device.errors import FaceedgeError
from device.files import sha256_file
from device.manifest import load_manifest, resolve_model_dir

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
REMOTE_SCRIPT = PACKAGE_DIR / "deploy_remote.py"
DEFAULT_UNIT = PACKAGE_DIR / "faceedge.service"
BUNDLE_FILE = "BUNDLE.json"
BUNDLE_FORMAT = 1
WHEEL_NAME = "faceedge-device"
SERVICE_MANAGERS = ("systemd-user", "systemd-system", "command")
# Holdout splits, best first: a self-test image the model never trained on.
SELFTEST_SPLITS = ("unseen_persons", "seen_holdout", "valid")
SELFTEST_CANDIDATES = 48
# `device check --expect_score` tolerance on the device: the host's score for the self-test image
# may differ on the Pi's CPU/runtime build by a few int8 output steps (1/256 each), not more.
SELFTEST_TOLERANCE = 0.05
# What may be in the device wheel: the device package only (a test checks the built wheel too).
FORBIDDEN_IN_WHEEL = ("train/", "convert/", "tests/")
_SAFE_REMOTE_DIR = re.compile(r"^[A-Za-z0-9._/+-]+$")
_SAFE_HOST = re.compile(r"^[A-Za-z0-9._%:-]+$")
_SAFE_USER = re.compile(r"^[A-Za-z0-9._-]+$")


# ============================================================================ hosts and ssh


@dataclass(frozen=True)
class Host:
    """One target: `[user@]host[:port]` (IPv6: `[user@][addr]:port`)."""

    spec: str
    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, spec: str) -> "Host":
        s = spec.strip()
        user = None
        if "@" in s:
            user, s = s.rsplit("@", 1)
            if not _SAFE_USER.match(user):
                raise FaceedgeError(f"--hosts {spec!r}: bad user name {user!r}")
        port = None
        m = re.fullmatch(r"\[([0-9A-Za-z:.%]+)\](?::(\d+))?", s)
        if m:
            host, port_s = m.group(1), m.group(2)
        elif s.count(":") == 1:
            host, port_s = s.split(":")
        else:
            host, port_s = s, None
        if port_s is not None:
            port = int(port_s)
            if not 0 < port < 65536:
                raise FaceedgeError(f"--hosts {spec!r}: port {port} out of range")
        if not host or host.startswith("-") or not _SAFE_HOST.match(host):
            raise FaceedgeError(f"--hosts {spec!r}: not a host name or address")
        return cls(spec=spec.strip(), host=host, user=user, port=port)

    @property
    def dest(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def rsync_dest(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{h}" if self.user else h


def parse_hosts(text: str) -> list[Host]:
    hosts = [Host.parse(h) for h in text.split(",") if h.strip()]
    if not hosts:
        raise FaceedgeError("--hosts: give at least one user@host")
    if len({h.spec for h in hosts}) != len(hosts):
        raise FaceedgeError(f"--hosts {text!r}: a host is listed twice")
    return hosts


@dataclass(frozen=True)
class Ssh:
    """ssh/rsync argv builder. Key-only, host keys always checked."""

    port: int = 22
    key: Path | None = None
    known_hosts: Path | None = None
    connect_timeout: int = 10

    def options(self, host: Host) -> list[str]:
        opts = [
            "-p",
            str(host.port or self.port),
            "-o",
            "BatchMode=yes",  # never prompt: no passwords, no passphrases typed here
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=no",
            "-o",
            "PubkeyAuthentication=yes",
            "-o",
            "StrictHostKeyChecking=yes",  # unknown or changed host key: refuse
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
        ]
        if self.key is not None:
            opts += ["-i", str(self.key), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts is not None:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        return opts

    def ssh_argv(self, host: Host, remote_argv: list[str]) -> list[str]:
        # ssh hands the remote login shell one string: quote every word.
        return ["ssh", *self.options(host), "--", host.dest, shlex.join(remote_argv)]

    def rsync_shell(self, host: Host) -> str:
        """rsync's `-e` value: rsync splits it itself (quotes allowed, no shell)."""
        return shlex.join(["ssh", *self.options(host)])

    def rsync_argv(self, host: Host, src: Path, remote_path: str, link_dest: str | None) -> list[str]:
        # paths were checked to hold no quotes.
        e = self.rsync_shell(host)
        # --checksum: link-dest matches by content, not by size+mtime. --whole-file: no delta transfer
        # (rsync 3.2.7 discards delta-built files whose basis came from --link-dest: "failed
        # verification"); bundles are a few MB and unchanged files are not sent at all.
        # --chmod: the release (model, config, self-test image) is the deploying user's alone on the
        # device; the daemon runs as that user.
        argv = ["rsync", "-a", "--checksum", "--whole-file", "--timeout=120", "--chmod=D700,F600", "-e", e]
        if link_dest:
            argv.append(f"--link-dest={link_dest}")  # unchanged files become hard links: less to send
        return argv + ["--", f"{src}/", f"{host.rsync_dest}:{remote_path}/"]


def explain_ssh_failure(host: Host, ssh: Ssh, stderr: str) -> str:
    s = stderr.strip()
    if "Host key verification failed" in s or "REMOTE HOST IDENTIFICATION HAS CHANGED" in s:
        kh = ssh.known_hosts or Path("~/.ssh/known_hosts")
        return (
            f"host key verification failed for {host.host}: its key is not in {kh} or has CHANGED. "
            "Nothing was copied. Check the fingerprint on the Pi "
            "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) "
            f"and add it, e.g. `ssh-keyscan -p {host.port or ssh.port} {host.host} >> {kh}` after comparing"
        )
    if "Permission denied" in s:
        return (
            f"ssh key refused by {host.dest}: copy your public key there first "
            f"(ssh-copy-id {'-i ' + str(ssh.key) + ' ' if ssh.key else ''}-p {host.port or ssh.port} {host.dest})"
        )
    if "Connection refused" in s or "timed out" in s or "No route" in s or "Could not resolve" in s:
        return f"cannot reach {host.host}:{host.port or ssh.port} ({s.splitlines()[-1]})"
    return f"ssh to {host.dest} failed: {s.splitlines()[-1] if s else 'no message'}"


# ============================================================================ the device wheel


def device_requirements(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> list[str]:
    """The base dependencies plus the `device` extra, read from the project's pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise FaceedgeError("building the device wheel needs Python >= 3.11 here (or pip install tomli)") from None

    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise FaceedgeError(f"{pyproject}: cannot read the device dependencies ({e})") from None
    proj = data.get("project", {})
    return list(proj.get("dependencies", [])) + list(proj.get("optional-dependencies", {}).get("device", []))


def build_device_wheel(out_dir: Path, *, python: str = sys.executable) -> Path:
    """A wheel of the `device` package alone, built from a generated minimal pyproject in a temp dir.

    `pip wheel --no-deps --no-build-isolation`: nothing is downloaded (setuptools comes from the
    venv). The result is checked to hold no `train/` or `convert/` file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    reqs = device_requirements()
    with tempfile.TemporaryDirectory(prefix="faceedge-wheel-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(
            PACKAGE_DIR, src / "device", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*")
        )
        (src / "pyproject.toml").write_text(
            "[build-system]\n"
            'requires = ["setuptools>=61", "wheel"]\n'
            'build-backend = "setuptools.build_meta"\n\n'
            "[project]\n"
            f'name = "{WHEEL_NAME}"\n'
            f'version = "{__version__}"\n'
            'description = "faceedge device daemon (no TensorFlow)"\n'
            'requires-python = ">=3.10"\n'
            f"dependencies = {json.dumps(reqs)}\n\n"
            "[project.scripts]\n"
            'faceedge-device = "device.cli:main"\n\n'
            "[tool.setuptools.packages.find]\n"
            'include = ["device*"]\n\n'
            "[tool.setuptools.package-data]\n"
            'device = ["*.service", "*.yaml", "assets/*"]\n'
        )
        argv = [
            python,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(Path(tmp) / "dist"),
            str(src),
        ]
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise FaceedgeError(f"building the device wheel failed: {(p.stderr or p.stdout).strip()[-800:]}")
        wheels = sorted((Path(tmp) / "dist").glob("*.whl"))
        if len(wheels) != 1:
            raise FaceedgeError(f"building the device wheel gave {len(wheels)} wheels")
        check_wheel(wheels[0])
        dest = out_dir / wheels[0].name
        shutil.copy2(wheels[0], dest)
    return dest


def wheel_files(wheel: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def check_wheel(wheel: Path) -> None:
    names = wheel_files(wheel)
    bad = [n for n in names if n.startswith(FORBIDDEN_IN_WHEEL)]
    if bad:
        raise FaceedgeError(f"{wheel.name}: holds files outside the device package: {bad[:5]}")
    if "device/runtime.py" not in names or "device/deploy_remote.py" not in names:
        raise FaceedgeError(f"{wheel.name}: the device package is incomplete")


# ============================================================================ the bundle


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


# ============================================================================ talking to hosts


@dataclass
class Options:
    ssh: Ssh
    remote_dir: str = "faceedge"
    remote_python: str = "python3"
    service: dict = field(default_factory=lambda: {"manager": "systemd-user"})
    health_timeout_s: float = 60.0
    check_timeout_s: float = 180.0
    install_deps: bool = True
    venv_pip: str = "seed"  # "seed": pip inside each release venv; "system": the device's python3-pip
    pip_args: list[str] = field(default_factory=list)
    keep: int = 3
    lock_wait_s: float = 60.0
    to: str | None = None  # rollback target


class HostFailed(Exception):
    pass


class Printer:
    """Line output prefixed by host, safe across threads."""

    def __init__(self, stream=None, prefix_hosts: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()
        self.prefix_hosts = prefix_hosts

    def __call__(self, host: Host, msg: str) -> None:
        with self.lock:
            for line in msg.splitlines() or [""]:
                self.stream.write(f"[{host.spec}] {line}\n" if self.prefix_hosts else f"{line}\n")
            self.stream.flush()


def _check_remote_dir(remote_dir: str) -> str:
    """A relative path under the device user's home (or an absolute one, checked there to be inside it).

    Refused here: the home itself (`.`, `~`, empty), `/`, `..` anywhere, odd characters. The device
    side checks again against its real $HOME (`deploy_remote.check_root`), before creating anything.
    """
    d = remote_dir.strip()
    if d.startswith("~/"):
        d = d[2:]
    if not d or not _SAFE_REMOTE_DIR.match(d) or ".." in d.split("/"):
        raise FaceedgeError(f"--remote_dir {remote_dir!r}: use letters, digits and ._/+- only (relative = under ~)")
    d = posixpath.normpath(d)
    if d in (".", "/"):
        raise FaceedgeError(
            f"--remote_dir {remote_dir!r}: give a folder inside the home on the device "
            "(default faceedge), not the home itself or /"
        )
    return d


PROBE = r"""
set -e
umask 077
cd
case "$1" in
  /*) case "$1" in "${HOME%/}"/?*) ;; *) echo "error: --remote_dir $1 is not inside the home $HOME" >&2; exit 3;; esac;;
esac
mkdir -p -- "$1/releases" "$1/data"
cd -- "$1"
echo "dir=$(pwd -L)"
echo "current=$(readlink current 2>/dev/null || true)"
if command -v "$2" >/dev/null 2>&1; then
  echo "python=$("$2" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
else
  echo "python="
fi
"""


def probe(host: Host, opts: Options) -> dict:
    """Resolve remote_dir (relative = under $HOME) and read `current`; proves ssh and host key work."""
    argv = opts.ssh.ssh_argv(host, ["sh", "-c", PROBE, "probe", opts.remote_dir, opts.remote_python])
    p = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=opts.ssh.connect_timeout + 60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if p.returncode != 0:
        if p.returncode == 255:
            raise HostFailed(explain_ssh_failure(host, opts.ssh, p.stderr))
        raise HostFailed(f"cannot prepare {opts.remote_dir} on {host.dest}: {p.stderr.strip()[-300:]}")
    info = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    if not info.get("python"):
        raise HostFailed(
            f"{opts.remote_python} not found on {host.dest} (Raspberry Pi OS has python3; or set --remote_python)"
        )
    major, minor = (int(x) for x in info["python"].split("."))
    if (major, minor) < (3, 10):
        raise HostFailed(
            f"{opts.remote_python} on {host.dest} is {info['python']}; the daemon needs Python >= 3.10 "
            "(Raspberry Pi OS Bookworm has 3.11)"
        )
    info["current"] = os.path.basename(info.get("current", "").rstrip("/"))
    return info


def remote_script(host: Host, opts: Options, plan: dict, out: Callable[[str], None]) -> int:
    """Run deploy_remote.py on the host (sent over stdin) with `plan`; stream its lines.

    A script cut short (the laptop dies mid-send) never runs anything: python compiles the whole
    of stdin before running it, and the only statement with an effect is the last line's main().
    """
    argv = opts.ssh.ssh_argv(host, [opts.remote_python, "-", json.dumps(plan, separators=(",", ":"))])
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(REMOTE_SCRIPT.read_text())
    proc.stdin.close()
    lines = []
    for line in proc.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        out(line)
    code = proc.wait()
    if code == 255:
        raise HostFailed(explain_ssh_failure(host, opts.ssh, "\n".join(lines)))
    return code


def base_plan(opts: Options, action: str, remote_dir: str) -> dict:
    return {
        "action": action,
        "remote_dir": remote_dir,
        "python": opts.remote_python,
        "install": {"deps": opts.install_deps, "pip_args": opts.pip_args, "venv_pip": opts.venv_pip},
        "service": opts.service,
        "health": {"timeout_s": opts.health_timeout_s},
        "check_timeout_s": opts.check_timeout_s,
        "keep": opts.keep,
        "lock_wait_s": opts.lock_wait_s,
    }


def ship(host: Host, opts: Options, bundle_dir: Path, release: str, action: str, out: Callable[[str], None]) -> str:
    info = probe(host, opts)
    remote_dir = info["dir"]
    cur = info["current"] or None
    out(f"{remote_dir} on {host.dest}: current {cur or '(none)'}; copying release {release}")
    t0 = time.monotonic()
    argv = opts.ssh.rsync_argv(host, bundle_dir, f"{remote_dir}/releases/{release}", f"../{cur}" if cur else None)
    p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if p.returncode != 0:
        if "Host key verification failed" in p.stderr:
            raise HostFailed(explain_ssh_failure(host, opts.ssh, p.stderr))
        hint = " (install it on the device: sudo apt install rsync)" if "command not found" in p.stderr else ""
        raise HostFailed(f"rsync to {host.dest} failed (exit {p.returncode}){hint}: {p.stderr.strip()[-400:]}")
    out(f"copied in {time.monotonic() - t0:.1f} s")
    plan = base_plan(opts, action, remote_dir)
    plan["release"] = release
    code = remote_script(host, opts, plan, out)
    if code != 0:
        raise HostFailed(f"{action} of {release} failed on {host.dest} (see above); exit {code}")
    return release


def release_name(digest: str, when: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when)) + "-" + digest[:8]


def for_each_host(
    hosts: list[Host], fn: Callable[[Host, Callable[[str], None]], str], printer: Printer
) -> dict[str, str | None]:
    """Run fn on every host in parallel; {spec: result or None}; one failure never stops the others."""
    results: dict[str, str | None] = {}

    def one(h: Host) -> None:
        say = lambda msg: printer(h, msg)  # noqa: E731
        try:
            results[h.spec] = fn(h, say)
        except HostFailed as e:
            say(f"FAILED: {e}")
            results[h.spec] = None
        except (OSError, subprocess.SubprocessError, FaceedgeError) as e:
            say(f"FAILED: {e}")
            results[h.spec] = None
        except Exception as e:  # noqa: BLE001 - one host's surprise must not hide the others' results
            log.exception("unexpected failure on %s", h.spec)
            say(f"FAILED: {type(e).__name__}: {e}")
            results[h.spec] = None

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts)) as ex:
        list(ex.map(one, hosts))
    return results


def _summary(results: dict[str, str | None], what: str, stream) -> int:
    bad = [h for h, r in results.items() if r is None]
    good = [h for h, r in results.items() if r is not None]
    if good:
        stream.write(f"{what}: ok on {', '.join(good)}\n")
    if bad:
        stream.write(f"{what}: FAILED on {', '.join(bad)}\n")
    stream.flush()
    return 1 if bad else 0


# ============================================================================ entry points


def deploy(
    hosts: list[Host], opts: Options, bundle_dir: Path, *, action: str = "deploy", printer: Printer | None = None
) -> int:
    """Ship a built bundle to every host in parallel; 0 when all succeeded."""
    printer = printer or Printer(prefix_hosts=len(hosts) > 1)
    meta = read_bundle(bundle_dir)
    if action == "deploy" and meta.get("model_only"):
        raise FaceedgeError(f"{bundle_dir}: a model-only bundle; use deploy-model")
    if action == "deploy-model" and not meta.get("model_only"):
        raise FaceedgeError(f"{bundle_dir}: a full bundle; deploy-model takes a model-only bundle")
    release = release_name(meta["digest"])
    results = for_each_host(hosts, lambda h, say: ship(h, opts, bundle_dir, release, action, say), printer)
    return _summary(results, f"{action} {release}", printer.stream)


def rollback(hosts: list[Host], opts: Options, *, printer: Printer | None = None) -> int:
    printer = printer or Printer(prefix_hosts=len(hosts) > 1)

    def one(h: Host, say: Callable[[str], None]) -> str:
        info = probe(h, opts)
        if not info["current"]:
            raise HostFailed(f"nothing deployed in {info['dir']} on {h.dest}")
        plan = base_plan(opts, "rollback", info["dir"])
        if opts.to:
            plan["to"] = opts.to
        code = remote_script(h, opts, plan, say)
        if code != 0:
            raise HostFailed(f"rollback failed on {h.dest}; exit {code}")
        return "ok"

    return _summary(for_each_host(hosts, one, printer), "rollback", printer.stream)


def status(hosts: list[Host], opts: Options) -> dict[str, dict]:
    """{host spec: {"current", "previous", "releases": [{"name", "state"}]}} (used by tests and `--status`)."""
    out = {}
    for h in hosts:
        info = probe(h, opts)
        plan = base_plan(opts, "status", info["dir"])
        lines: list[str] = []
        if remote_script(h, opts, plan, lines.append) != 0:
            raise HostFailed(f"status failed on {h.dest}")
        out[h.spec] = json.loads(lines[-1])
    return out


def _add_ssh_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hosts", required=True, help="comma-separated user@host[:port] (done in parallel)")
    p.add_argument("--port", type=int, default=22, help="ssh port (a host's own :port wins)")
    p.add_argument(
        "--ssh_key",
        "--ssh-key",
        type=Path,
        default=None,
        help="private key for ssh (none: what ssh picks itself, e.g. ~/.ssh/id_ed25519 or the agent)",
    )
    p.add_argument(
        "--known_hosts",
        "--known-hosts",
        type=Path,
        default=None,
        help="known_hosts file to check host keys against (none: ~/.ssh/known_hosts); checking is never turned off",
    )
    p.add_argument("--connect_timeout", type=int, default=10, help="ssh connect timeout, seconds")
    p.add_argument(
        "--remote_dir",
        "--remote-dir",
        default="faceedge",
        help="where releases live on the device (relative = under the user's home)",
    )
    p.add_argument("--remote_python", default="python3", help="the device's python (creates the venvs)")
    p.add_argument(
        "--service_manager",
        choices=SERVICE_MANAGERS,
        default="systemd-user",
        help="how the service is restarted: systemctl --user (no sudo), sudo systemctl, or "
        "your own commands (--restart_cmd/--stop_cmd/--reload_cmd, run on the device)",
    )
    p.add_argument("--restart_cmd", default=None, help="service_manager command: restart the daemon")
    p.add_argument("--stop_cmd", default=None, help="service_manager command: stop the daemon")
    p.add_argument("--reload_cmd", default=None, help="service_manager command: send the daemon SIGHUP")
    p.add_argument(
        "--health_timeout",
        type=float,
        default=60.0,
        help="seconds for /healthz to say ok after a restart before rolling back",
    )
    p.add_argument(
        "--lock_wait", type=float, default=60.0, help="seconds to wait for another deploy on the same device to finish"
    )


def _add_bundle_args(p: argparse.ArgumentParser, *, full: bool) -> None:
    p.add_argument(
        "--run",
        type=Path,
        default=Path("runs/latest"),
        help="run dir (uses export/<variant>/) or a model dir with manifest.json",
    )
    p.add_argument(
        "--variant",
        choices=["int8", "float32", "float16", "imx500"],
        default="int8",
        help="which exported model of the run (imx500: packaged into network.rpk on the Pi)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=Path("configs/device.yaml"),
        help="device config shipped with the release (its outputs.http is the health gate)",
    )
    p.add_argument(
        "--selftest_image",
        type=Path,
        default=None,
        help="self-test image (default: a holdout image from the run's splits.csv)",
    )
    p.add_argument("--selftest_expect", default=None, help="label --selftest_image must get")
    p.add_argument("--bundle", type=Path, default=None, help="ship this already built bundle instead")
    p.add_argument("--bundle_out", type=Path, default=None, help="build the bundle here (kept)")
    p.add_argument("--build_only", action="store_true", help="build the bundle (--bundle_out) and stop")
    p.add_argument("--check_timeout", type=float, default=180.0, help="seconds for `device check` on the device")
    if full:
        p.add_argument("--unit", type=Path, default=DEFAULT_UNIT, help="systemd unit shipped with the release")
        p.add_argument("--keep", type=int, default=3, help="ready releases kept on the device (plus current/previous)")
        p.add_argument(
            "--no_deps",
            action="store_true",
            help="pip install the wheel without its dependencies (they come from the system "
            "site-packages, e.g. apt's python3-opencv, or a wheelhouse via --pip_args)",
        )
        p.add_argument(
            "--venv_without_pip",
            action="store_true",
            help="make release venvs without their own pip and install with the device's "
            "system pip (apt install python3-pip): faster, ~15 MB less per release",
        )
        p.add_argument(
            "--pip_args",
            default="",
            help="extra pip install arguments on the device, e.g. "
            '"--no-index --find-links /home/pi/wheels" (one string)',
        )


def add_parser(subparsers) -> None:
    d = subparsers.add_parser(
        "deploy",
        help="deploy daemon + model to Raspberry Pis over ssh",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__.split("\n\n")[0],
    )
    _add_ssh_args(d)
    _add_bundle_args(d, full=True)
    d.set_defaults(func=lambda a: run_cli("deploy", a))
    m = subparsers.add_parser(
        "deploy-model",
        help="ship a new model only and reload it with SIGHUP",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_ssh_args(m)
    _add_bundle_args(m, full=False)
    m.set_defaults(func=lambda a: run_cli("deploy-model", a))
    r = subparsers.add_parser(
        "rollback", help="go back one release on the device(s)", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    _add_ssh_args(r)
    r.add_argument(
        "--to", default=None, help="a release name to go back to (none: the newest ready release older than current)"
    )
    r.set_defaults(func=lambda a: run_cli("rollback", a))


def options_from_args(a: argparse.Namespace) -> Options:
    a.ssh_key = a.ssh_key.expanduser() if a.ssh_key is not None else None
    a.known_hosts = a.known_hosts.expanduser() if a.known_hosts is not None else None
    if a.ssh_key is not None and not a.ssh_key.is_file():
        raise FaceedgeError(f"--ssh_key {a.ssh_key}: no such file")
    if a.known_hosts is not None and not a.known_hosts.is_file():
        raise FaceedgeError(f"--known_hosts {a.known_hosts}: no such file")
    for p in (a.ssh_key, a.known_hosts):
        if p is not None and any(c in str(p) for c in "'\"\\ "):
            raise FaceedgeError(f"{p}: use a path without quotes, backslashes or spaces")
    service: dict = {"manager": a.service_manager}
    if a.service_manager == "command":
        if not a.restart_cmd:
            raise FaceedgeError("--service_manager command needs --restart_cmd")
        for key in ("restart", "stop", "reload"):
            val = getattr(a, f"{key}_cmd")
            if val:
                try:
                    service[key] = shlex.split(val)
                except ValueError as e:
                    raise FaceedgeError(f"--{key}_cmd {val!r}: {e}") from None
    if a.health_timeout <= 0:
        raise FaceedgeError(f"--health_timeout {a.health_timeout}: must be > 0")
    return Options(
        ssh=Ssh(port=a.port, key=a.ssh_key, known_hosts=a.known_hosts, connect_timeout=a.connect_timeout),
        remote_dir=_check_remote_dir(a.remote_dir),
        remote_python=a.remote_python,
        service=service,
        health_timeout_s=a.health_timeout,
        check_timeout_s=getattr(a, "check_timeout", 180.0),
        install_deps=not getattr(a, "no_deps", False),
        venv_pip="system" if getattr(a, "venv_without_pip", False) else "seed",
        pip_args=shlex.split(getattr(a, "pip_args", "") or ""),
        keep=max(1, getattr(a, "keep", 3)),
        lock_wait_s=a.lock_wait,
        to=getattr(a, "to", None),
    )


def run_cli(action: str, a: argparse.Namespace) -> int:
    hosts = parse_hosts(a.hosts)
    opts = options_from_args(a)
    if action == "rollback":
        return rollback(hosts, opts)
    if a.build_only and a.bundle_out is None:
        raise FaceedgeError("--build_only needs --bundle_out DIR")
    if a.bundle is not None:
        return deploy(hosts, opts, a.bundle, action=action)
    # A bundle built for this deploy only lives in a temp dir that is removed however it ends
    # (a failed build included); --bundle_out keeps it.
    with contextlib.ExitStack() as stack:
        bundle_dir = a.bundle_out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="faceedge-bundle-")))
        meta = build_bundle(
            bundle_dir,
            run=a.run,
            config=a.config,
            variant=a.variant,
            unit=getattr(a, "unit", DEFAULT_UNIT),
            selftest_image=a.selftest_image,
            selftest_expect=a.selftest_expect,
            model_only=(action == "deploy-model"),
        )
        st = meta["selftest"]
        print(
            f"bundle {bundle_dir}: {len(meta['files'])} files, model {meta['model']['sha256'][:12]} "
            f"({meta['model']['variant']}), self-test "
            + (
                f"{st['image']} ({st['split']} image {Path(st['from']).name}) must give {st['expect']!r} "
                f"({st['score']:.3f} ± {st['tolerance']})"
                if st
                else "(none: no splits.csv next to the model; device check uses its test pattern)"
            ),
            flush=True,
        )
        if a.build_only:
            return 0
        return deploy(hosts, opts, bundle_dir, action=action)


def main(argv: Iterable[str] | None = None) -> int:
    """Standalone entry (python -m device.deploy ...); `python -m device deploy` goes through device.cli."""
    from device.cli import standalone

    return standalone(add_parser, "python -m device.deploy", None if argv is None else list(argv))


if __name__ == "__main__":
    raise SystemExit(main())
