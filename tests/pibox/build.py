"""Build, once, what the emulated Pi needs; everything lands in a cache directory outside the repo.

    <cache>/proot/proot                       proot >= 5.2, built from Debian sid's source package
    <cache>/rootfs-<suite>-arm64.tar.zst      the arm64 userland (unpacked by each test run in seconds)
    <cache>/rootfs-<suite>-arm64.json         what it holds and how long it took
    <cache>/wheels-<suite>/                   aarch64 wheels for the device extra (the box's offline PyPI)

The cache is ``$FACEEDGE_PIBOX_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/faceedge/pibox``.
Network: Debian's mirror (debootstrap, apt inside the rootfs, proot's source) and PyPI (``pip
download``), at build time only. Tests later use nothing but loopback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.pibox.box import CPUS, SUITES, Pibox, PiboxError, tar_rootfs

log = logging.getLogger(__name__)

HOST_APT = ("qemu-user-static", "debootstrap", "libtalloc-dev", "gcc", "make", "dpkg-dev", "zstd")
PROOT_MIN = (5, 2)
MIRROR = os.environ.get("FACEEDGE_PIBOX_MIRROR", "http://deb.debian.org/debian")
# debootstrap's own set (measured to work), then apt inside: sshd and rsync for deploy, and
# python3-pywt: a small Debian C extension built with Cython against Debian's numpy C API, the
# stand-in for Raspberry Pi OS's python3-simplejpeg/picamera2 (not reachable from here).
DEBOOTSTRAP_INCLUDE = "python3,python3-venv,python3-pip,ca-certificates"
APT_INSIDE = ("openssh-server", "rsync", "python3-numpy", "python3-pywt", "procps")
# trixie's openssh-server needs `systemd | systemd-standalone-sysusers`; systemd's own postinst
# (systemd-tmpfiles) trips a proot 5.4.0 assertion (path.c compare_paths2), and systemd cannot be
# PID 1 here anyway: the standalone sysusers satisfies the dependency.
APT_EXTRA = {"trixie": ("systemd-standalone-sysusers",)}
BUILD_CPU = "cortex-a76"
WHEEL_DIR_GUEST = "/opt/pibox-wheels"
PIP_CONF = f"""\
# tests/pibox: this emulated Pi reaches no index; pip finds the device extra's aarch64 wheels
# (downloaded by `make pibox` from PyPI) in a local directory bound here at run time.
[global]
no-index = true
find-links = {WHEEL_DIR_GUEST}
disable-pip-version-check = true
"""


def cache_dir() -> Path:
    env = os.environ.get("FACEEDGE_PIBOX_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faceedge" / "pibox"


def rootfs_tarball(suite: str, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / f"rootfs-{suite}-arm64.tar.zst"


def wheel_dir(suite: str, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / f"wheels-{suite}"


def proot_path(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "proot" / "proot"


def _run(argv: list[str], *, what: str, cwd: Path | None = None, timeout: float = 1800, env: dict | None = None) -> str:
    log.debug("$ %s", " ".join(argv))
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if p.returncode != 0:
        raise PiboxError(
            f"{what} failed (exit {p.returncode}): {' '.join(argv[:6])}...\n{(p.stdout + p.stderr).strip()[-2500:]}"
        )
    return p.stdout


# ------------------------------------------------------------------------------------ host tools


def ensure_host_tools() -> None:
    """apt-get install what is missing of HOST_APT on this machine (as `make setup` does for its own)."""
    missing = [
        p for p in HOST_APT if subprocess.run(["dpkg", "-s", p], capture_output=True, check=False).returncode != 0
    ]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    log.info("apt: installing %s", " ".join(missing))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run([*sudo, "apt-get", "update", "-q"], what="apt-get update", env=env)
    _run(
        [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], what="apt-get install", env=env
    )


def proot_version(proot: Path) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run([str(proot), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else None  # type: ignore[return-value]


def _proot_source(apt: list[str], where: Path) -> Path:
    """Fetch and unpack sid's proot source. `apt-get source --download-only` fetches the tarballs
    (apt checks them against the signed Sources index; we check again below); the .dsc may be
    unreachable through a filtering mirror proxy, so the tree is unpacked and patched here rather
    than by dpkg-source."""
    stanza = _run(["apt-cache", *apt[1:], "showsrc", "--only-source", "proot"], what="apt-cache showsrc proot").split(
        "\n\n"
    )[0]
    version = re.search(r"^Version: (\S+)$", stanza, re.M)
    m = re.search(r"^Checksums-Sha256:\n((?: .+\n?)+)", stanza, re.M)
    if not version or not m:
        raise PiboxError("sid's Sources index has no proot entry with checksums")
    sums = {name: sha for sha, _size, name in (ln.split() for ln in m.group(1).strip().splitlines())}
    subprocess.run([*apt, "source", "--download-only", "proot"], cwd=where, capture_output=True, check=False)
    tars = {n: where / n for n in sums if not n.endswith(".dsc")}
    for name, path in tars.items():
        if not path.is_file():
            raise PiboxError(f"apt-get source --download-only proot did not fetch {name}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != sums[name]:
            raise PiboxError(f"{path}: sha256 differs from sid's Sources index")
    upstream = version.group(1).split(":")[-1].rsplit("-", 1)[0]
    tree = where / f"proot-{upstream}"
    tree.mkdir()
    orig = [p for n, p in tars.items() if ".orig." in n]
    deb = [p for n, p in tars.items() if ".debian." in n]
    if len(orig) != 1 or len(deb) != 1:
        raise PiboxError(f"unexpected proot source files: {sorted(tars)}")
    _run(["tar", "-xf", str(orig[0]), "-C", str(tree), "--strip-components=1"], what="unpacking proot")
    _run(["tar", "-xf", str(deb[0]), "-C", str(tree)], what="unpacking proot's debian/")
    series = tree / "debian" / "patches" / "series"
    for patch in series.read_text().split("\n") if series.is_file() else []:
        patch = patch.split("#")[0].strip()
        if patch:
            _run(
                ["patch", "-p1", "-N", "-i", str(tree / "debian" / "patches" / patch.split()[0])],
                what=f"applying {patch}",
                cwd=tree,
            )
    return tree


def build_proot(cache: Path) -> Path:
    """proot >= 5.2 from Debian sid's source package (Debian 12's and 13's 5.1.0 do not translate
    faccessat2: os.access() inside the rootfs sees host paths, trap 1). A private apt config with a
    deb-src line for sid; the host's apt sources are not touched."""
    dest = proot_path(cache)
    v = proot_version(dest) if dest.exists() else None
    if v and v[:2] >= PROOT_MIN:
        return dest
    work = cache / "proot" / "build"
    shutil.rmtree(work, ignore_errors=True)
    for d in ("lists/partial", "cache/archives/partial", "sources.list.d", "src"):
        (work / d).mkdir(parents=True, exist_ok=True)
    (work / "sources.list").write_text(
        f"deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {MIRROR} sid main\n"
    )
    apt = [
        "apt-get",
        "-q",
        "-o",
        f"Dir::Etc::SourceList={work / 'sources.list'}",
        "-o",
        f"Dir::Etc::SourceParts={work / 'sources.list.d'}",
        "-o",
        f"Dir::State::Lists={work / 'lists'}",
        "-o",
        f"Dir::Cache={work / 'cache'}",
        "-o",
        "APT::Sandbox::User=root",
    ]
    t0 = time.monotonic()
    _run([*apt, "update"], what="apt-get update (sid deb-src, private config)")
    srcdir = _proot_source(apt, work / "src")
    src = srcdir / "src"
    _run(
        [
            "make",
            "-C",
            str(src),
            f"VERSION={srcdir.name.split('-', 1)[1]}",
            "loader.elf",
            "loader-m32.elf",
            "build.h",
            "proot",
        ],
        what="building proot",
    )
    tmp = dest.with_name("proot.part")
    shutil.copy2(src / "proot", tmp)
    os.replace(tmp, dest)
    v = proot_version(dest)
    if not v or v[:2] < PROOT_MIN:
        raise PiboxError(f"{dest}: built proot reports version {v}, need >= {PROOT_MIN}")
    log.info("proot %s built from %s in %.0f s", ".".join(map(str, v)), srcdir.name, time.monotonic() - t0)
    shutil.rmtree(work, ignore_errors=True)
    return dest


# ---------------------------------------------------------------------------------------- rootfs


def _apt_inside(box: Pibox, packages: tuple[str, ...]) -> None:
    env = ["env", "DEBIAN_FRONTEND=noninteractive"]
    box.run([*env, "apt-get", "update", "-q"], timeout=1200)
    argv = [*env, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    for attempt in range(3):  # a dpkg-deb segfault under qemu was seen once; -f install then goes on
        p = box.run(argv, timeout=3600, check=False)
        if p.returncode == 0:
            return
        log.warning("apt-get install inside failed (attempt %d): %s", attempt + 1, p.stdout[-500:] + p.stderr[-500:])
        box.run([*env, "dpkg", "--configure", "-a"], timeout=3600, check=False)
        box.run([*env, "apt-get", "-f", "install", "-y", "-q"], timeout=3600, check=False)
    raise PiboxError(f"apt-get install {' '.join(packages)} inside the {box.suite} rootfs failed 3 times")


def build_rootfs(suite: str, cache: Path, proot: Path, *, force: bool = False) -> Path:
    """debootstrap --foreign on the host, second stage and apt inside through proot + qemu, tarball."""
    if suite not in SUITES:
        raise PiboxError(f"suite {suite!r}: choose one of {', '.join(SUITES)}")
    out = rootfs_tarball(suite, cache)
    recipe = {"include": DEBOOTSTRAP_INCLUDE, "apt_inside": list(APT_INSIDE + APT_EXTRA.get(suite, ()))}
    if out.exists() and not force:
        try:
            if {k: rootfs_facts(suite, cache).get(k) for k in recipe} == recipe:
                return out
        except PiboxError:
            pass
        log.info("%s: built from another package list; building again", out.name)
    work = cache / "work" / suite
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    root = work / "root"
    times: dict[str, float] = {}
    t0 = time.monotonic()
    _run(
        [
            "debootstrap",
            "--foreign",
            "--arch=arm64",
            "--variant=minbase",
            f"--include={DEBOOTSTRAP_INCLUDE}",
            suite,
            str(root),
            MIRROR,
        ],
        what=f"debootstrap --foreign {suite}",
        timeout=3600,
    )
    times["first_stage_s"] = time.monotonic() - t0
    proc = root / "proc"
    if proc.is_symlink():  # debootstrap points it at the host's /proc; proot binds over a directory
        proc.unlink()
    proc.mkdir(exist_ok=True)
    # no service starts at package install time (sshd is started by the tests, on loopback)
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
    box = Pibox(root=root, cpu=BUILD_CPU, proot=proot, state=work / "state", suite=suite)
    t1 = time.monotonic()
    box.run(
        ["/usr/bin/env", "DEBOOTSTRAP_DIR=/debootstrap", "/debootstrap/debootstrap", "--second-stage"],
        cwd="/",
        timeout=5400,
    )
    times["second_stage_s"] = time.monotonic() - t1
    shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
    t2 = time.monotonic()
    _apt_inside(box, APT_INSIDE + APT_EXTRA.get(suite, ()))
    times["apt_inside_s"] = time.monotonic() - t2
    box.run(["apt-get", "clean"])
    for junk in (
        "var/lib/apt/lists",
        "etc/ssh/ssh_host_rsa_key",
        "etc/ssh/ssh_host_ecdsa_key",
        "etc/ssh/ssh_host_ed25519_key",
    ):
        p = root / junk
        if p.is_dir():
            shutil.rmtree(p)
            p.mkdir()
        else:
            for f in root.glob(junk + "*"):
                f.unlink()  # per-run host keys are made by box.start_sshd; no shared private key in the cache
    (root / "etc/pip.conf").write_text(PIP_CONF)
    (root / WHEEL_DIR_GUEST.lstrip("/")).mkdir(parents=True, exist_ok=True)
    facts = json.loads(
        box.python(
            "import json, platform, sys, numpy; print(json.dumps({'python': platform.python_version(), "
            "'machine': platform.machine(), 'numpy': numpy.__version__, "
            "'debian': open('/etc/debian_version').read().strip()}))"
        ).stdout
    )
    t3 = time.monotonic()
    tar_rootfs(root, out)
    times["tar_s"] = time.monotonic() - t3
    times["total_s"] = time.monotonic() - t0
    meta = {
        "suite": suite,
        "arch": "arm64",
        "mirror": MIRROR,
        **recipe,
        **facts,
        "size_bytes": out.stat().st_size,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "proot": str(proot_version(proot)),
        "timings": {k: round(v, 1) for k, v in times.items()},
    }
    out.with_suffix("").with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(work)
    try:
        work.parent.rmdir()  # cache/work, when no other suite is being built
    except OSError:
        pass
    log.info(
        "%s rootfs: %s (%.0f MB) in %.1f min (second stage %.1f min)",
        suite,
        out,
        out.stat().st_size / 1e6,
        times["total_s"] / 60,
        times["second_stage_s"] / 60,
    )
    return out


def rootfs_facts(suite: str, cache: Path | None = None) -> dict:
    p = rootfs_tarball(suite, cache).with_suffix("").with_suffix(".json")
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        raise PiboxError(f"{p}: missing or unreadable; run `make pibox`") from None


# ------------------------------------------------------------------------------------ wheelhouse


def _aarch64_platforms(glibc_minor: int) -> list[str]:
    plats = [f"manylinux_2_{m}_aarch64" for m in range(glibc_minor, 16, -1)]
    return plats + ["manylinux2014_aarch64"]


def wheel_sets(facts: dict) -> list[list[str]]:
    """What the box's offline index must hold: the device requirements as they are (the venv's own
    numpy: the failure case, and what a Pi without apt's numpy gets), and as deploy installs them
    where the system has numpy (its numpy_constraint)."""
    from device.deploy.remote import numpy_constraint
    from device.deploy.wheel import device_requirements

    reqs = device_requirements()
    return [reqs, [*reqs, numpy_constraint(facts["numpy"])]]


def build_wheelhouse(suite: str, cache: Path, *, force: bool = False) -> Path:
    """`pip download` the aarch64 wheels of the device extra for the suite's Python into the box's
    offline index. Keyed by the requirement sets: a changed pyproject fetches again."""
    facts = rootfs_facts(suite, cache)
    sets = wheel_sets(facts)
    key = hashlib.sha256(json.dumps([facts["python"], sets]).encode()).hexdigest()[:16]
    dest = wheel_dir(suite, cache)
    stamp = dest / ".key"
    if not force and stamp.is_file() and stamp.read_text().strip() == key:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    py = "".join(facts["python"].split(".")[:2])
    glibc = {"bookworm": 36, "trixie": 41}[suite]
    plat = [a for p in _aarch64_platforms(glibc) for a in ("--platform", p)]
    t0 = time.monotonic()
    for reqs in sets:
        pins = [r for r in reqs if r.startswith("numpy") and ("<" in r)]
        argv = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            *plat,
            "--python-version",
            py,
            "--implementation",
            "cp",
            "--abi",
            f"cp{py}",
            "--abi",
            "abi3",
            "--abi",
            "none",
            "-d",
            str(dest),
            *reqs,
        ]
        _run(argv, what=f"pip download for {suite} (cp{py}, aarch64{', ' + pins[0] if pins else ''})")
    stamp.write_text(key + "\n")
    log.info("%s wheelhouse: %d wheels in %.0f s", suite, len(list(dest.glob("*.whl"))), time.monotonic() - t0)
    return dest


def build_all(suites: list[str], *, force: bool = False) -> dict[str, Path]:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    ensure_host_tools()
    proot = build_proot(cache)
    out = {}
    for s in suites:
        out[s] = build_rootfs(s, cache, proot, force=force)
        build_wheelhouse(s, cache, force=force)
    return out


__all__ = [
    "CPUS",
    "SUITES",
    "build_all",
    "build_proot",
    "build_rootfs",
    "build_wheelhouse",
    "cache_dir",
    "rootfs_facts",
    "rootfs_tarball",
    "wheel_dir",
    "proot_path",
]
