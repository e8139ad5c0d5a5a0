"""`device pull` (`make pull PI=...`): bring the crops `device collect` saved on a Pi back into
``data/<name>/``, new files only. Runs on the developer's machine.

    python -m device pull --hosts pi@raspberrypi.local --remote-data faceedge/data/mine --out data/mine

1. rsync (over the deploy's ssh: key only, host key always checked, `device.ssh.Ssh`) copies the
   image files of the remote folder into a hidden cache, ``<out>/.pull/<host>/``, keeping their
   ``<label>/<person>/`` layout. Only files the cache lacks cross the network, so the next pull of a
   growing folder is quick; nothing is ever deleted on the Pi.
2. Each cached file is hashed (sha256) and compared with every image already under ``<out>`` — its
   label and person folders and ``.trash/`` too, so a crop you moved to another label or threw away
   with `make label` does not come back. A file whose content is there already is skipped.
3. A new file is hard-linked (or copied, where links cannot be made) to the same ``<label>/<person>/``
   path under ``<out>``; if that name is taken by another file, under the next free name
   (``name_2.png``, ...): nothing in ``<out>`` is ever overwritten.

Hidden folders (``.pull``, ``.trash``) are skipped by training's data loader.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from device.errors import FaceedgeError
from device.files import link_new, require_writable_dir, sha256_file
from device.flags import add_option
from device.ssh import Host, Ssh, explain_ssh_failure, parse_hosts

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
CACHE = ".pull"
TRASH = ".trash"
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._/+-]+$")
RSYNC_TIMEOUT_S = 120


@dataclass
class PullStats:
    fetched: int = 0  # image files in the cache after rsync (this host)
    new: int = 0
    duplicates: int = 0
    renamed: int = 0
    per_label: Counter = field(default_factory=Counter)

    def summary(self, out: Path) -> str:
        labels = ", ".join(f"{k} +{n}" for k, n in sorted(self.per_label.items())) or "none"
        return f"{self.new} new crops into {out} ({labels}); {self.duplicates} already there (same content)" + (
            f"; {self.renamed} under a new name (the name was taken)" if self.renamed else ""
        )


def check_remote_path(path: str) -> str:
    p = path.strip().rstrip("/")
    p = p.removeprefix("~/")
    if not p or not _SAFE_PATH.match(p) or ".." in p.split("/") or p in (".", "/"):
        raise FaceedgeError(
            f"--remote-data {path!r}: a folder on the Pi (relative = under the login's home), letters, "
            "digits and ._/+- only, no '..'"
        )
    return p


def images_under(root: Path, *, skip: tuple[str, ...] = ()) -> list[Path]:
    """Image files under `root`, sorted; top-level folders named in `skip` left out."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                out.append(Path(dirpath) / name)
    return out


def rsync_argv(ssh: Ssh, host: Host, remote: str, cache: Path) -> list[str]:
    filters = ["--include=*/"] + [f"--include=*{s}" for s in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES)]
    return [
        "rsync",
        "-rt",  # recursive, times; no owners or modes from the Pi
        "--chmod=D755,F644",
        "--ignore-existing",  # a crop is written once; the cache's copy is the one already indexed
        "--prune-empty-dirs",
        f"--timeout={RSYNC_TIMEOUT_S}",
        "--exclude=.*",  # first (the first matching rule wins): collect's .name.tmp files, hidden folders
        *filters,
        "--exclude=*",
        "-e",
        ssh.rsync_shell(host),
        "--",
        f"{host.rsync_dest}:{remote}/",
        f"{cache}/",
    ]


def pull(host: Host, ssh: Ssh, remote: str, out: Path) -> PullStats:
    """Fetch `remote` from `host` into `out` (see the module doc)."""
    remote = check_remote_path(remote)
    out = Path(out)
    require_writable_dir(out, "--out")
    cache = out / CACHE / re.sub(r"[^A-Za-z0-9._-]", "_", host.spec)
    cache.mkdir(parents=True, exist_ok=True)
    argv = rsync_argv(ssh, host, remote, cache)
    log.info("pull: %s:%s → %s", host.dest, remote, cache)
    p = subprocess.run(
        argv, capture_output=True, text=True, timeout=RSYNC_TIMEOUT_S * 10, stdin=subprocess.DEVNULL, check=False
    )
    if p.returncode != 0:
        if p.returncode == 255 or "ssh:" in p.stderr or "Host key" in p.stderr or "Permission denied" in p.stderr:
            raise FaceedgeError(explain_ssh_failure(host, ssh, p.stderr))
        if "No such file or directory" in p.stderr and "change_dir" in p.stderr:
            raise FaceedgeError(f"--remote-data {remote}: no such folder on {host.dest} (collect there first)")
        raise FaceedgeError(f"pull from {host.dest}: rsync exit {p.returncode}: {p.stderr.strip()[-300:]}")
    stats = PullStats()
    known = {sha256_file(f) for f in images_under(out, skip=(CACHE,))}  # labels, persons and .trash
    for f in images_under(cache):
        stats.fetched += 1
        digest = sha256_file(f)
        if digest in known:
            stats.duplicates += 1
            continue
        rel = f.relative_to(cache)
        placed = link_new(f, out / rel)
        known.add(digest)
        stats.new += 1
        stats.renamed += placed != out / rel
        stats.per_label[rel.parts[0] if len(rel.parts) > 1 else "(top level)"] += 1
    return stats


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "pull",
        help="copy crops collected on Pis into a local dataset folder (new files only, never overwriting)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--hosts", required=True, help="comma-separated user@host[:port]")
    p.add_argument("--port", type=int, default=22, help="ssh port (a host's own :port wins) (default: %(default)s)")
    add_option(p, "--ssh-key", type=Path, default=None, help="private key for ssh")
    add_option(
        p,
        "--known-hosts",
        type=Path,
        default=None,
        help="known_hosts file (host keys are always checked)",
    )
    add_option(
        p,
        "--remote-data",
        default="faceedge/data/mine",
        help="the collect --out folder on the Pi (relative = under the login's home) (default: %(default)s)",
    )
    p.add_argument("--out", type=Path, required=True, help="local dataset folder, e.g. data/mine")
    p.set_defaults(func=_cmd_pull)


def _cmd_pull(args) -> int:
    ssh = Ssh(port=args.port, key=args.ssh_key, known_hosts=args.known_hosts)
    for host in parse_hosts(args.hosts):
        stats = pull(host, ssh, args.remote_data, args.out)
        print(f"[{host.spec}] {stats.summary(args.out)}")
    return 0
