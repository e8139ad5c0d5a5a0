"""The device side of `device deploy` / `rollback` / `deploy-model`: runs ON the Raspberry Pi.

The host (`device/deploy/ship.py`) copies a release into ``<remote_dir>/releases/<name>/`` with rsync and
then runs this file with the Pi's own ``python3`` (stdlib only: it runs before any venv exists, and
Raspberry Pi OS's python3 may be as old as 3.9)::

    ssh pi@host python3 - '<plan json>' < device/deploy/remote.py

Everything that must be atomic happens here, on the device, under one lock
(``<remote_dir>/.deploy.lock``), so a laptop that disconnects halfway cannot leave a half-made state:
this process ignores SIGHUP and a broken stdout and finishes (or rolls back) on its own; its log is
also appended to ``<remote_dir>/deploy.log``.

Layout on the device::

    <remote_dir>/releases/<UTC timestamp>-<bundle digest>/   one release, never modified once ready
        BUNDLE.json  wheels/*.whl  model/{model.tflite,manifest.json}  device.yaml  faceedge.service
        selftest/<image>  venv/  .ready  (.failed: why it was refused or rolled back)
    <remote_dir>/current -> releases/<name>    flipped with rename(2): always a whole release
    <remote_dir>/.deploy.pending               the flip in progress: {release, previous}
    <remote_dir>/deploy.log

A release is *ready* (``.ready``) once it has served as ``current`` and passed the health gate: its
files matched BUNDLE.json, its venv was built, `device check` passed inside it, the service restarted
on it and /healthz said ok with its model. Only ready releases are rollback targets. The steps:
verify → venv → check → write .deploy.pending → install unit → flip ``current`` → restart → health
gate → .ready → remove .deploy.pending → prune; on a failed gate: flip back → restart the previous
release → mark the new one failed → exit 1 saying why.

A deploy killed between the flip and the end of its health gate (power cut, OOM killer) leaves
``.deploy.pending``; the next deploy or rollback (they take the lock first) finishes that
transaction before anything else: the release that never passed its gate is marked failed and the
previous one is installed and restarted again.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

BUNDLE_FILE = "BUNDLE.json"
READY = ".ready"
FAILED = ".failed"
LOCK = ".deploy.lock"
PENDING = ".deploy.pending"
LOG = "deploy.log"
LOG_MAX_BYTES = 1 << 20  # then deploy.log moves to deploy.log.1
UNIT_PLACEHOLDER = "%h/faceedge"  # the shipped unit's paths assume remote_dir = ~/faceedge
DEDUP_MIN_BYTES = 16 * 1024  # smaller files are not worth a compare (and .pyc differ anyway)
STALE_INCOMPLETE_S = 600  # an unready release younger than this may still be receiving rsync
# What `device/deploy/ship.py` names a release: <UTC time>-<first 8 hex digits of the bundle digest>.
# Prune only ever touches folders with such a name AND a readable BUNDLE.json.
RELEASE_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")


class DeployError(Exception):
    """A failed step; the message is the one line the developer sees."""


# ----------------------------------------------------------------------------------------- logging


class Log:
    def __init__(self, path: str) -> None:
        self.path = path
        self.stdout_ok = True

    def __call__(self, msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {msg}"
        if self.stdout_ok:
            try:
                print(msg, flush=True)
            except (BrokenPipeError, OSError):  # the host went away: keep going, log to the file only
                self.stdout_ok = False
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError:
            pass


log = Log(os.devnull)


# ------------------------------------------------------------------------------------------ helpers


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def run(argv: list, *, timeout: float, cwd: str | None = None, env: dict | None = None) -> tuple[int, str]:
    """Run argv (never through a shell); return (exit code, combined output)."""
    try:
        p = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return 127, f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired as e:
        out = e.output.decode("utf-8", "replace") if e.output else ""
        return 124, out + f"\n(timed out after {timeout:.0f} s)"
    return p.returncode, p.stdout.decode("utf-8", "replace")


def tail(text: str, n: int = 15) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join("    " + ln for ln in lines[-n:])


def check_root(remote_dir: str, home: str | None = None) -> str:
    """The absolute remote_dir, which must be a folder strictly inside the user's home.

    Lexical (no symlinks resolved): `~/faceedge` may itself be a link to another disk. Refused:
    the home itself (then `releases/` would be a folder of the user's), `/`, and anything outside.
    """
    home = os.path.normpath(home or os.path.expanduser("~"))
    root = os.path.normpath(os.path.join(home, os.path.expanduser(remote_dir)))
    if root == home or not root.startswith(home.rstrip("/") + "/"):
        raise DeployError(
            f"remote_dir {remote_dir!r} ({root}) must be a folder inside your home ({home}), "
            "not the home itself, / or anything outside it"
        )
    return root


# --------------------------------------------------------------------------------------- the layout


class Layout:
    def __init__(self, remote_dir: str) -> None:
        self.root = os.path.abspath(remote_dir)
        self.releases = os.path.join(self.root, "releases")
        self.current = os.path.join(self.root, "current")

    def release(self, name: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise DeployError(f"bad release name {name!r}")
        return os.path.join(self.releases, name)

    def current_name(self) -> str | None:
        try:
            target = os.readlink(self.current)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.EINVAL:
                raise DeployError(f"{self.current} exists but is not a symlink; move it away") from None
            raise
        return os.path.basename(target.rstrip("/"))

    def names(self) -> list:
        """Folders in releases/ named like a release (anything else there is left alone)."""
        try:
            return sorted(n for n in os.listdir(self.releases) if RELEASE_NAME.match(n))
        except FileNotFoundError:
            return []

    def is_release(self, name: str) -> bool:
        """A folder deploy made: a release name and a BUNDLE.json that parses and lists files.
        Anything else in releases/ is someone's and is never pruned."""
        if not RELEASE_NAME.match(name):
            return False
        d = self.release(name)
        if os.path.islink(d) or not os.path.isdir(d):
            return False
        try:
            with open(os.path.join(d, BUNDLE_FILE), encoding="utf-8") as f:
                bundle = json.load(f)
        except (OSError, ValueError):
            return False
        return isinstance(bundle, dict) and isinstance(bundle.get("files"), dict) and bool(bundle["files"])

    def is_ready(self, name: str) -> bool:
        d = self.release(name)
        return os.path.isfile(os.path.join(d, READY)) and not os.path.exists(os.path.join(d, FAILED))

    def previous_ready(self, before: str | None) -> str | None:
        """The newest ready release older than `before` (the rollback target)."""
        older = [n for n in self.names() if (before is None or n < before) and self.is_ready(n)]
        return older[-1] if older else None

    def flip(self, name: str) -> None:
        """Point `current` at releases/<name> with one rename(2): readers see the old or the new link."""
        tmp = os.path.join(self.root, f".current.tmp-{os.getpid()}")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(os.path.join("releases", name), tmp)
        os.replace(tmp, self.current)
        fsync_dir(self.root)

    def unflip(self) -> None:
        """No previous release to go back to: remove `current` (one unlink, also atomic)."""
        try:
            os.unlink(self.current)
        except FileNotFoundError:
            pass
        fsync_dir(self.root)

    def mark_failed(self, name: str, why: str) -> None:
        try:
            write_atomic(os.path.join(self.release(name), FAILED), why.strip() + "\n")
        except OSError as e:
            log(f"could not mark {name} failed: {e}")

    def remove(self, name: str) -> None:
        """Rename out of releases/ first (atomic), then delete: a half-deleted dir never looks like a release."""
        trash = os.path.join(self.releases, f".trash-{name}-{os.getpid()}")
        os.rename(self.release(name), trash)
        shutil.rmtree(trash, ignore_errors=True)

    def sweep_trash(self) -> None:
        for n in os.listdir(self.releases) if os.path.isdir(self.releases) else []:
            if n.startswith(".trash-"):
                shutil.rmtree(os.path.join(self.releases, n), ignore_errors=True)
        for n in os.listdir(self.root):
            if n.startswith(".current.tmp-"):
                try:
                    os.unlink(os.path.join(self.root, n))
                except OSError:
                    pass


class Lock:
    """flock on <remote_dir>/.deploy.lock; the kernel drops it if this process dies."""

    def __init__(self, path: str, wait_s: float) -> None:
        self.path, self.wait_s = path, wait_s
        self.fd = -1

    def __enter__(self) -> "Lock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        announced = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise DeployError(
                        f"another deploy is running on this device (pid {holder}, lock {self.path})"
                    ) from None
                if not announced:
                    log(f"waiting for another deploy to finish (lock {self.path})")
                    announced = True
                time.sleep(0.2)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


# ----------------------------------------------------------------------------- the flip in progress


def pending_path(lay: "Layout") -> str:
    return os.path.join(lay.root, PENDING)


def read_pending(lay: "Layout") -> dict | None:
    try:
        with open(pending_path(lay), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"release": None, "previous": None, "action": "?", "unreadable": True}


def begin_flip(lay: "Layout", action: str, release: str, previous: str | None, *, mark_failed: bool) -> None:
    """Record, durably, what to go back to should this process die before the health gate passed."""
    write_atomic(
        pending_path(lay),
        json.dumps(
            {
                "action": action,
                "release": release,
                "previous": previous,
                "mark_failed": mark_failed,
                "pid": os.getpid(),
                "time": time.time(),
            }
        )
        + "\n",
    )


def end_flip(lay: "Layout") -> None:
    try:
        os.unlink(pending_path(lay))
    except FileNotFoundError:
        return
    fsync_dir(lay.root)


# ------------------------------------------------------------------------------------------- steps


def verify(rel: str) -> dict:
    """Every file listed in BUNDLE.json is there with its sha256; returns the bundle manifest."""
    path = os.path.join(rel, BUNDLE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            bundle = json.load(f)
    except FileNotFoundError:
        raise DeployError(f"{path}: missing (incomplete copy)") from None
    except (OSError, ValueError) as e:
        raise DeployError(f"{path}: unreadable ({e})") from None
    files = bundle.get("files") or {}
    if not files:
        raise DeployError(f"{path}: lists no files")
    for relpath, meta in sorted(files.items()):
        full = os.path.normpath(os.path.join(rel, relpath))
        if not full.startswith(rel + os.sep):
            raise DeployError(f"{path}: file {relpath!r} points outside the release")
        try:
            digest = sha256_file(full)
        except FileNotFoundError:
            raise DeployError(f"{full}: listed in {BUNDLE_FILE} but missing") from None
        if digest != meta["sha256"]:
            raise DeployError(f"{full}: sha256 {digest[:12]}… != bundle {meta['sha256'][:12]}… (corrupt copy)")
    log(f"verified {len(files)} files against {BUNDLE_FILE} (sha256)")
    return bundle


def numpy_constraint(version: str) -> str:
    """The pip constraint that keeps the OS's numpy (apt's python3-numpy) in a release venv.

    apt's C extensions (Bookworm's simplejpeg under picamera2) are built against that numpy's C
    API; a numpy of another major in the venv shadows it and they fail ("numpy.dtype size
    changed"). Within a major numpy's ABI holds forward, so this version or a newer one of it."""
    return f"numpy>={version},<{int(version.split('.')[0]) + 1}"


def system_numpy(python: str) -> str | None:
    """The numpy version `python` (a --system-site-packages venv's) sees before pip runs; None if none."""
    code, out = run([python, "-c", "import importlib.metadata as m; print(m.version('numpy'))"], timeout=120)
    return out.strip().splitlines()[-1] if code == 0 and out.strip() else None


def build_venv(rel: str, bundle: dict, plan: dict) -> None:
    venv = os.path.join(rel, "venv")
    if os.path.exists(os.path.join(venv, "bin", "python")):
        shutil.rmtree(venv)  # a killed earlier attempt at this very release: start clean
    py = plan.get("python") or "python3"
    inst = plan.get("install") or {}
    t0 = time.monotonic()
    mk = [py, "-m", "venv", "--system-site-packages"]
    if inst.get("venv_pip") == "system":  # pip comes from the system site-packages (python3-pip)
        mk.append("--without-pip")
    code, out = run(mk + [venv], timeout=600, cwd=rel)
    if code != 0:
        raise DeployError(
            f"cannot create the venv with {py} -m venv (exit {code}); on Raspberry Pi OS: "
            f"sudo apt install python3-venv\n{tail(out)}"
        )
    argv = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    if not inst.get("deps", True):
        argv.append("--no-deps")
    argv += list(inst.get("pip_args") or [])
    os_numpy = system_numpy(argv[0])
    if os_numpy:  # keep it: the constraint makes pip pick an OpenCV built for it (numpy 1.x: 4.11)
        write_atomic(os.path.join(venv, "constraints.txt"), numpy_constraint(os_numpy) + "\n")
        argv += ["-c", os.path.join(venv, "constraints.txt")]
    log(
        f"system numpy {os_numpy}: the venv keeps it ({numpy_constraint(os_numpy)})"
        if os_numpy
        else "no system numpy: the venv gets its own (after `apt install python3-picamera2`, deploy again)"
    )
    argv.append(os.path.join(rel, bundle["wheel"]))
    code, out = run(argv, timeout=float(inst.get("timeout_s", 1800)), cwd=rel)
    if code != 0:
        raise DeployError(f"pip install of {bundle['wheel']} failed (exit {code})\n{tail(out)}")
    log(
        f"venv ready with {os.path.basename(bundle['wheel'])} ({time.monotonic() - t0:.1f} s, "
        f"{'with' if inst.get('deps', True) else 'without'} dependencies)"
    )


def share_identical(new_venv: str, old_venv: str, min_size: int = DEDUP_MIN_BYTES) -> tuple[int, int]:
    """Replace files of the new venv that are byte-identical to the same path in the previous
    release's venv with hard links to those (atomic rename of a link over each). Releases are never
    modified once ready, so sharing inodes is safe; it makes the per-release venv cost only what
    changed (the dependency tree is ~300 MB). Returns (files, bytes) shared."""
    import filecmp

    n = size = 0
    if not os.path.isdir(old_venv):
        return 0, 0
    for dirpath, _dirs, files in os.walk(new_venv):
        for fn in files:
            new = os.path.join(dirpath, fn)
            old = os.path.join(old_venv, os.path.relpath(new, new_venv))
            try:
                st_new, st_old = os.lstat(new), os.lstat(old)
            except FileNotFoundError:
                continue
            if (
                not os.path.isfile(new)
                or os.path.islink(new)
                or os.path.islink(old)
                or st_new.st_size < min_size
                or st_new.st_size != st_old.st_size
                or st_new.st_mode != st_old.st_mode
                or st_new.st_ino == st_old.st_ino
                or st_new.st_dev != st_old.st_dev
            ):
                continue
            if not filecmp.cmp(new, old, shallow=False):
                continue
            tmp = f"{new}.link-{os.getpid()}"
            os.link(old, tmp)
            os.replace(tmp, new)
            n += 1
            size += st_new.st_size
    return n, size


def device_cmd(rel_or_current: str, *args: str) -> list:
    return [os.path.join(rel_or_current, "venv", "bin", "python"), "-m", "device", *args]


def package_imx500(rel: str, bundle: dict) -> None:
    """An AI Camera model: make model/network.rpk from model/packerOut.zip with Raspberry Pi's
    imx500-package (apt: imx500-tools), which runs only on the Pi. Other models: nothing to do."""
    if (bundle.get("model") or {}).get("variant") != "imx500":
        return
    model = os.path.join(rel, "model")
    rpk = os.path.join(model, "network.rpk")
    if shutil.which("imx500-package") is None:
        raise DeployError(
            "imx500-package not found: an imx500 model is packaged on the Pi; sudo apt install imx500-tools"
        )
    code, out = run(["imx500-package", "-i", os.path.join(model, "packerOut.zip"), "-o", model], timeout=600, cwd=rel)
    if code != 0 or not os.path.isfile(rpk):
        raise DeployError(f"imx500-package failed (exit {code}), no network.rpk\n{tail(out)}")
    log(f"imx500-package: {rpk} ({os.path.getsize(rpk)} bytes)")


def check(rel: str, bundle: dict, plan: dict) -> None:
    argv = device_cmd(
        rel, "check", "--config", os.path.join(rel, "device.yaml"), "--model-dir", os.path.join(rel, "model"), "--json"
    )
    selftest = bundle.get("selftest")
    if selftest:
        argv += ["--image", os.path.join(rel, selftest["image"])]
        if selftest.get("expect") is not None:
            argv += ["--expect", selftest["expect"]]
        if selftest.get("score") is not None:  # the host's own answer for this image, within a tolerance
            argv += ["--expect_score", str(selftest["score"]), "--tolerance", str(selftest.get("tolerance", 0.05))]
    code, out = run(argv, timeout=float(plan.get("check_timeout_s", 180)), cwd=rel)
    if code != 0:
        raise DeployError(f"`device check` failed in the new release (exit {code})\n{tail(out)}")
    log(f"device check passed: {check_summary(out)}")


def check_summary(out: str) -> str:
    """One line from `device check --json`'s report."""
    try:
        report = json.loads(out.strip().splitlines()[-1])
        got = f"{report['label']!r} ({report['score']:.3f})"
        want = f" as expected from {os.path.basename(str(report.get('image', '')))}" if report.get("expected") else ""
        return (
            f"{got}{want}; model load {report['load_ms']:.0f} ms, inference {report['mean_inference_ms']:.2f} ms mean "
            f"({report['runtime']} {report['runtime_version']}, {report['threads']} threads)"
        )
    except (ValueError, KeyError, IndexError, TypeError):
        return out.strip()[-300:]


# ------------------------------------------------------------------------------- service managers


class Service:
    def __init__(self, plan: dict, lay: Layout) -> None:
        self.cfg = plan.get("service") or {}
        self.kind = self.cfg.get("manager", "systemd-user")
        self.unit = self.cfg.get("unit_name", "faceedge.service")
        self.lay = lay

    def _systemctl(self) -> list:
        if self.kind == "systemd-user":
            return ["systemctl", "--user"]
        return ["sudo", "-n", "systemctl"]

    def _do(self, argv: list, what: str, timeout: float = 120) -> None:
        code, out = run(argv, timeout=timeout)
        if code != 0:
            hint = ""
            if self.kind == "systemd-system" and "password" in out.lower():
                hint = " (sudo wants a password: allow systemctl for this user in sudoers, or use systemd-user)"
            if self.kind == "systemd-user" and ("bus" in out.lower() or "xdg_runtime_dir" in out.lower()):
                hint = " (no user systemd session: run `sudo loginctl enable-linger $USER` on the device)"
            raise DeployError(f"{what}: {' '.join(argv)} exited {code}{hint}\n{tail(out)}")

    def render_unit(self, name: str) -> str | None:
        src = os.path.join(self.lay.release(name), "faceedge.service")
        if not os.path.isfile(src):
            return None
        with open(src, encoding="utf-8") as f:
            text = f.read()
        home = os.path.expanduser("~")
        if self.lay.root != os.path.join(home, "faceedge"):
            text = text.replace(UNIT_PLACEHOLDER, self.lay.root)
        if self.kind == "systemd-system":
            # %h is /root for the system manager whatever User= says: write absolute paths.
            import pwd

            user = pwd.getpwuid(os.getuid()).pw_name
            text = text.replace("%h", home).replace("WantedBy=default.target", "WantedBy=multi-user.target")
            if "\nUser=" not in text:
                text = text.replace("[Service]\n", f"[Service]\nUser={user}\n", 1)
        return text

    def install(self, name: str) -> None:
        """Install the release's unit (rendered for remote_dir) and reload the manager."""
        if self.kind == "command":
            return
        text = self.render_unit(name)
        if text is None:
            raise DeployError(f"release {name} has no faceedge.service")
        if self.kind == "systemd-user":
            udir = os.path.expanduser("~/.config/systemd/user")
            os.makedirs(udir, exist_ok=True)
            write_atomic(os.path.join(udir, self.unit), text)
            self._do(self._systemctl() + ["daemon-reload"], "reload systemd")
            self._do(self._systemctl() + ["enable", self.unit], "enable the unit")
        else:  # systemd-system: the rendered unit lives in remote_dir; sudo is only ever systemctl
            path = os.path.join(self.lay.root, self.unit)
            write_atomic(path, text)
            self._do(self._systemctl() + ["link", path], "link the unit")
            self._do(self._systemctl() + ["daemon-reload"], "reload systemd")
            self._do(self._systemctl() + ["enable", self.unit], "enable the unit")

    def restart(self) -> None:
        if self.kind == "command":
            self._do(list(self.cfg["restart"]), "restart command")
        else:
            self._do(self._systemctl() + ["restart", self.unit], "restart the service")

    def stop(self) -> None:
        if self.kind == "command":
            if self.cfg.get("stop"):
                self._do(list(self.cfg["stop"]), "stop command")
        else:
            self._do(self._systemctl() + ["stop", self.unit], "stop the service")

    def reload(self) -> None:
        """SIGHUP to the daemon: it re-reads config and model (validating the model in a child first)."""
        if self.kind == "command":
            self._do(list(self.cfg["reload"]), "reload command")
        else:
            self._do(self._systemctl() + ["reload", self.unit], "reload (ExecReload sends SIGHUP)")

    def logs(self) -> str:
        if self.kind == "command":
            return ""
        argv = (["journalctl", "--user"] if self.kind == "systemd-user" else ["journalctl"]) + [
            "-u",
            self.unit,
            "-n",
            "15",
            "--no-pager",
            "-o",
            "cat",
        ]
        code, out = run(argv, timeout=20)
        return f"\n  last log lines ({' '.join(argv)}):\n{tail(out)}" if code == 0 and out.strip() else ""


# ------------------------------------------------------------------------------------ health gate


def health_target(rel: str) -> dict:
    """The release's health gate (BUNDLE.json "health": url, token_file, token_env from its config)."""
    try:
        with open(os.path.join(rel, BUNDLE_FILE), encoding="utf-8") as f:
            return json.load(f).get("health") or {}
    except (OSError, ValueError):
        return {}


def health_request(target: dict, url: str | None = None) -> urllib.request.Request:
    """A GET of the release's /healthz (`target`: BUNDLE.json "health"), with its bearer token if any."""
    headers = {}
    token = None
    if target.get("token_file"):
        try:
            with open(os.path.expanduser(target["token_file"]), encoding="utf-8") as f:
                token = (f.readline() or "").strip()
        except OSError as e:
            log(f"cannot read the HTTP token file {target['token_file']}: {e}")
    elif target.get("token_env"):
        token = os.environ.get(target["token_env"])
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return urllib.request.Request(url or target.get("url") or "http://127.0.0.1:8088/healthz", headers=headers)


def ask_health(req: urllib.request.Request) -> tuple[dict | None, str]:
    """One /healthz answer: (its JSON, "") or (None, why there is none). Never via a proxy (loopback)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=3) as r:
            return json.loads(r.read().decode() or "{}"), ""
    except urllib.error.HTTPError as e:  # 503 while starting/stalled still carries the JSON
        try:
            return json.loads(e.read().decode() or "{}"), ""
        except ValueError:
            return {"status": f"HTTP {e.code}"}, ""
    except (OSError, ValueError) as e:
        return None, f"no answer ({getattr(e, 'reason', e)})"


def health(plan: dict, rel: str) -> tuple[bool, str]:
    """Poll the release's /healthz until status ok while serving the release's model, or time out.

    Returns (ok, last state seen). Checking model_sha256 as well as status makes sure the answer
    comes from a daemon running this release's model, not from one that was never restarted.
    """
    req = health_request(health_target(rel), (plan.get("health") or {}).get("url"))
    timeout = float((plan.get("health") or {}).get("timeout_s", 60))
    want_sha = model_sha(rel)
    deadline = time.monotonic() + timeout
    while True:
        body, last = ask_health(req)
        if body is not None:
            status = body.get("status")
            sha = body.get("model_sha256") or ""
            last = (
                f"status {status!r}, model {sha[:12] or '?'}"
                f"{'' if not want_sha or sha == want_sha else ' (not ' + want_sha[:12] + ')'}, "
                f"last_frame_age_s {body.get('last_frame_age_s')}"
            )
            if status == "ok" and (not want_sha or sha == want_sha):
                return True, last
        if time.monotonic() >= deadline:
            return False, f"{req.full_url} after {timeout:.0f} s: {last}"
        time.sleep(0.5)


def model_sha(rel: str) -> str | None:
    try:
        with open(os.path.join(rel, "model", "manifest.json"), encoding="utf-8") as f:
            return json.load(f).get("sha256")
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------ actions


def prune(lay: Layout, keep: int, protect: set) -> None:
    cur = lay.current_name()
    protect = set(protect) | {cur, lay.previous_ready(cur)}
    names = lay.names()
    ready = [n for n in names if lay.is_ready(n)]
    keep_set = set(ready[-keep:]) if keep > 0 else set()
    now = time.time()
    removed = []
    for n in names:
        if n in protect or n in keep_set:
            continue
        if not lay.is_release(n):
            continue  # not made by deploy (or not complete enough to tell): never ours to delete
        d = lay.release(n)
        finished = os.path.exists(os.path.join(d, READY)) or os.path.exists(os.path.join(d, FAILED))
        if not finished and now - os.path.getmtime(d) < STALE_INCOMPLETE_S:
            continue  # maybe another deploy's rsync in progress
        lay.remove(n)
        removed.append(n)
    if removed:
        log(f"pruned {len(removed)} old release(s): {', '.join(removed)}")


def activate(lay: Layout, svc: Service, name: str | None) -> None:
    if name is None:
        lay.unflip()
        try:
            svc.stop()
        except DeployError as e:
            log(f"stopping the service failed: {e}")
        return
    svc.install(name)
    lay.flip(name)
    log(f"current -> releases/{name}")
    svc.restart()


def go_back(lay: Layout, svc: Service, plan: dict, bad: str, prev: str | None, why: str, *, reload: bool) -> str:
    """The new release failed after the flip: mark it, return to `prev`, and say how that went."""
    lay.mark_failed(bad, why)
    if prev is None:
        activate(lay, svc, None)
        return "no previous release: service stopped, `current` removed"
    try:
        if reload:
            lay.flip(prev)
            log(f"current -> releases/{prev}; reloading the daemon (SIGHUP)")
            svc.reload()
        else:
            activate(lay, svc, prev)
    except DeployError as e:
        return f"`current` is {lay.current_name()}, but restarting it failed too: {e}"
    ok, state = health(plan, lay.release(prev))
    return f"rolled back to {prev} ({'healthy' if ok else 'NOT healthy either: ' + state})"


def do_deploy(plan: dict, lay: Layout, svc: Service, *, model_only: bool) -> None:
    name = plan["release"]
    rel = lay.release(name)
    if not os.path.isdir(rel):
        raise DeployError(f"{rel}: not found (the copy did not arrive)")
    if os.path.exists(os.path.join(rel, READY)):
        raise DeployError(f"{rel}: already deployed once; a deploy always makes a new release")
    try:
        os.unlink(os.path.join(rel, FAILED))  # a retry of this very release name (same bundle, same second)
    except FileNotFoundError:
        pass
    prev = lay.current_name()
    if prev is not None and not os.path.isdir(lay.release(prev)):
        log(f"warning: current points at missing release {prev}")
        prev = None
    try:
        bundle = verify(rel)
        if model_only:
            if prev is None:
                raise DeployError("deploy-model needs a running release: run `make deploy` first")
            bundle = graft_code(lay, prev, rel, bundle)
        else:
            build_venv(rel, bundle, plan)
            if prev is not None:
                files, size = share_identical(os.path.join(rel, "venv"), os.path.join(lay.release(prev), "venv"))
                if files:
                    log(f"venv: {files} files ({size / 1e6:.1f} MB) identical to {prev}'s, hard-linked")
        package_imx500(rel, bundle)
        check(rel, bundle, plan)
    except DeployError as e:
        lay.mark_failed(name, str(e))
        raise DeployError(f"{e}\n  `current` unchanged ({prev or 'none'}); release {name} marked failed") from None
    begin_flip(lay, "deploy-model" if model_only else "deploy", name, prev, mark_failed=True)
    try:
        if model_only:
            lay.flip(name)
            log(f"current -> releases/{name}; reloading the daemon (SIGHUP)")
            svc.reload()
        else:
            activate(lay, svc, name)
    except DeployError as e:
        logs = svc.logs()
        back = go_back(lay, svc, plan, name, prev, str(e) + logs, reload=model_only)
        end_flip(lay)
        raise DeployError(f"{e}{logs}\n  {back}") from None
    ok, state = health(plan, rel)
    if not ok:
        why = f"health gate failed: {state}"
        if model_only:
            why += " (the daemon refused the new model and kept serving the old one?)"
        logs = svc.logs()
        back = go_back(lay, svc, plan, name, prev, why + logs, reload=model_only)
        end_flip(lay)
        raise DeployError(f"{why}{logs}\n  {back}")
    # Healthy while serving: only now is it a release to keep and to roll back to.
    write_atomic(os.path.join(rel, READY), json.dumps({"ready": time.time(), "health": state}) + "\n")
    end_flip(lay)
    log(f"healthy: {state}")
    prune(lay, int(plan.get("keep", 3)), {name})
    log(f"deployed {name}")


def graft_code(lay: Layout, prev: str, rel: str, bundle: dict) -> dict:
    """deploy-model: the new release takes code, venv, config and unit from `prev` (hard links: no
    copy, and nothing in a release is ever modified in place), its model and self-test from the copy."""
    src = lay.release(prev)
    with open(os.path.join(src, BUNDLE_FILE), encoding="utf-8") as f:
        old = json.load(f)
    new_files = dict(bundle["files"])
    for top in sorted(os.listdir(src)):
        if top in ("model", "selftest", BUNDLE_FILE, READY, FAILED) or top in os.listdir(rel):
            continue
        s, d = os.path.join(src, top), os.path.join(rel, top)
        if os.path.isdir(s) and not os.path.islink(s):
            shutil.copytree(s, d, symlinks=True, copy_function=os.link)
        elif os.path.islink(s):
            os.symlink(os.readlink(s), d)
        else:
            os.link(s, d)
    for relpath, meta in old["files"].items():
        if not relpath.startswith(("model/", "selftest/")):
            new_files[relpath] = meta
    merged = dict(old)
    merged.update({k: v for k, v in bundle.items() if k in ("model", "selftest", "created", "model_only")})
    merged["files"] = new_files
    merged["code_from"] = prev
    write_atomic(os.path.join(rel, BUNDLE_FILE), json.dumps(merged, indent=2, sort_keys=True) + "\n")
    log(f"took code, venv and config from {prev} (hard links)")
    return verify(rel)


def do_rollback(plan: dict, lay: Layout, svc: Service) -> None:
    cur = lay.current_name()
    if cur is None:
        raise DeployError(f"nothing deployed here ({lay.current} does not exist)")
    target = plan.get("to") or lay.previous_ready(cur)
    if target is None:
        raise DeployError(f"no ready release older than {cur} to roll back to")
    if not lay.is_ready(target):
        raise DeployError(f"release {target} is not a ready release (never passed its health gate, or failed)")
    begin_flip(lay, "rollback", target, cur, mark_failed=False)
    activate(lay, svc, target)
    ok, state = health(plan, lay.release(target))
    if not ok:
        back = go_back(lay, svc, plan, target, cur, f"health gate failed after rollback: {state}", reload=False)
        end_flip(lay)
        raise DeployError(f"rollback to {target}: health gate failed: {state}\n  {back}")
    end_flip(lay)
    log(f"rolled back {cur} -> {target}: {state}")


def recover(plan: dict, lay: Layout, svc: Service) -> str | None:
    """Finish a transaction a killed deploy/rollback left between its flip and its health gate.

    The release it was switching to never passed the gate: it is marked failed (a deploy's new
    release; a rollback's target keeps its state) and the release that was current before is
    installed and restarted again, whatever `current` and the running daemon were left at.
    Returns what was done, or None when there was nothing to finish.
    """
    p = read_pending(lay)
    if p is None:
        return None
    rel, prev = p.get("release"), p.get("previous")
    if p.get("unreadable"):  # cannot tell what it was doing: keep a ready current, else its previous
        cur = lay.current_name()
        rel = None if cur is None or lay.is_ready(cur) else cur
        prev = cur if rel is None else lay.previous_ready(cur)
    if (
        rel and p.get("action") in ("deploy", "deploy-model") and lay.current_name() == rel and lay.is_ready(rel)
    ):  # it passed its gate; only the cleanup was cut short
        end_flip(lay)
        log(f"the {p.get('action')} of {rel} had passed its health gate; finishing it")
        return None
    if prev is not None and not lay.is_ready(prev):
        log(f"warning: {prev}, current before the interrupted {p.get('action')}, is not a ready release")
        prev = lay.previous_ready(rel) if rel else None
    log(
        f"the {p.get('action')} of {rel} (pid {p.get('pid')}) was interrupted before its health gate passed; "
        f"going back to {prev or 'nothing'}"
    )
    if rel and p.get("mark_failed") and os.path.isdir(lay.release(rel)) and not lay.is_ready(rel):
        lay.mark_failed(rel, f"interrupted before its health gate passed ({p.get('action')} by pid {p.get('pid')})")
    if prev is None:
        activate(lay, svc, None)
        end_flip(lay)
        return f"interrupted {p.get('action')} of {rel} undone: no previous release, service stopped"
    activate(lay, svc, prev)
    ok, state = health(plan, lay.release(prev))
    end_flip(lay)
    msg = f"interrupted {p.get('action')} of {rel} undone: current is {prev} again " + (
        f"(healthy: {state})" if ok else f"(NOT healthy: {state})"
    )
    log(msg)
    return msg


def do_status(lay: Layout) -> None:
    cur = lay.current_name()
    out = {
        "remote_dir": lay.root,
        "current": cur,
        "previous": lay.previous_ready(cur) if cur else None,
        "interrupted": read_pending(lay),
        "releases": [],
    }
    for n in lay.names():
        d = lay.release(n)
        state = (
            "failed"
            if os.path.exists(os.path.join(d, FAILED))
            else ("ready" if os.path.exists(os.path.join(d, READY)) else "incomplete")
        )
        out["releases"].append({"name": n, "state": state})
    cur_dir = lay.release(cur) if cur else None
    out["model_sha256"] = model_sha(cur_dir) if cur_dir else None
    out["previous_model_sha256"] = model_sha(lay.release(out["previous"])) if out["previous"] else None
    out["health"] = None
    if cur_dir:  # one question to the running daemon, no waiting
        body, why = ask_health(health_request(health_target(cur_dir)))
        out["health"] = (
            {k: body.get(k) for k in ("status", "reason", "model_sha256", "uptime_s", "last_frame_age_s")}
            if body is not None
            else {"status": why}
        )
    print(json.dumps(out), flush=True)


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: remote.py '<plan json>'", file=sys.stderr)
        return 2
    plan = json.loads(argv[0])
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the ssh session may end; the transaction must not
    os.umask(0o077)  # venvs, marks, logs, the unit: the deploying user's alone
    try:
        root = check_root(plan["remote_dir"])
    except DeployError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    lay = Layout(root)
    os.makedirs(lay.releases, exist_ok=True)
    global log
    log_path = os.path.join(lay.root, LOG)
    try:
        if os.path.getsize(log_path) > LOG_MAX_BYTES:
            os.replace(log_path, log_path + ".1")
    except OSError:
        pass
    log = Log(log_path)
    action = plan["action"]
    if action == "status":
        do_status(lay)
        return 0
    svc = Service(plan, lay)
    try:
        with Lock(os.path.join(lay.root, LOCK), float(plan.get("lock_wait_s", 60))):
            lay.sweep_trash()
            log(f"{action} {plan.get('release') or ''} in {lay.root} (pid {os.getpid()})".replace("  ", " "))
            if recover(plan, lay, svc) is not None and action == "rollback":
                log(
                    "rollback: the interrupted transaction was rolled back instead; run rollback again to go "
                    "further back"
                )
                return 0
            if action == "deploy":
                do_deploy(plan, lay, svc, model_only=False)
            elif action == "deploy-model":
                do_deploy(plan, lay, svc, model_only=True)
            elif action == "rollback":
                do_rollback(plan, lay, svc)
            else:
                raise DeployError(f"unknown action {action!r}")
    except DeployError as e:
        log(f"FAILED: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
