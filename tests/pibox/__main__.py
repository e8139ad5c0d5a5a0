"""`python -m tests.pibox build|shell|sshd`: build the cached userlands, or step into one."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.pibox import build
from tests.pibox.box import CPUS, SUITES, Pibox, PiboxError, start_sshd


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.pibox", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build proot, the rootfs tarballs and wheelhouses (cached)")
    b.add_argument("--suites", default=",".join(SUITES), help="comma-separated Debian suites")
    b.add_argument("--force", action="store_true", help="rebuild the rootfs even if cached")
    for name in ("shell", "sshd"):
        s = sub.add_parser(
            name,
            help="unpack a fresh copy and open a shell in it"
            if name == "shell"
            else "unpack a fresh copy and run its sshd on 127.0.0.1 until Ctrl-C",
        )
        s.add_argument("--suite", choices=SUITES, default="bookworm")
        s.add_argument("--cpu", choices=list(CPUS), default="cortex-a76")
        s.add_argument("--dir", type=Path, default=None, help="where to unpack (default: a temp dir)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        if a.cmd == "build":
            t0 = time.monotonic()
            suites = [s for s in a.suites.split(",") if s]
            for s in suites:
                if s not in SUITES:
                    raise PiboxError(f"--suites: {s!r} is not one of {', '.join(SUITES)}")
            for s, tar in build.build_all(suites, force=a.force).items():
                f = build.rootfs_facts(s)
                print(
                    f"{s}: {tar} ({tar.stat().st_size / 1e6:.0f} MB; Python {f['python']}, numpy {f['numpy']}; "
                    f"built in {f['timings']['total_s'] / 60:.1f} min), wheels {build.wheel_dir(s)}"
                )
            print(f"pibox ready in {time.monotonic() - t0:.0f} s (cache {build.cache_dir()})")
            return 0
        dest = a.dir or Path(tempfile.mkdtemp(prefix=f"pibox-{a.suite}-"))
        try:
            box = Pibox.unpack(build.rootfs_tarball(a.suite), dest, cpu=a.cpu, proot=build.proot_path(), suite=a.suite)
            box.binds.append((str(build.wheel_dir(a.suite)), build.WHEEL_DIR_GUEST))
            if a.cmd == "shell":
                return subprocess.call(box.argv(["/bin/bash", "-l"]), env=box.env())
            ssh = start_sshd(box, dest / "keys")
            print(
                f"sshd ({a.suite}, {a.cpu}) on 127.0.0.1:{ssh.port}: ssh -p {ssh.port} -i {ssh.key} "
                f"-o UserKnownHostsFile={ssh.known_hosts} root@127.0.0.1",
                flush=True,
            )
            signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as Ctrl-C does
            try:
                ssh.proc.wait()
            except KeyboardInterrupt:
                ssh.stop()
            return 0
        finally:
            if a.dir is None:  # a temp copy: nothing of the user's
                shutil.rmtree(dest, ignore_errors=True)
    except PiboxError as e:
        print(f"pibox: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
