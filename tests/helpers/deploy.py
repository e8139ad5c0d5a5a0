"""The deploy tests' run directory, service unit and test supervisor."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from tests.helpers import ROOT
from tests.helpers.models import tiny_images

# The service manager `command` of the deploy tests: what systemd does for faceedge.service, run on
# the "Pi" over ssh (systemd is not PID 1 here).
SUPERVISOR = r'''
"""Test supervisor for `--service-manager command`: what systemd does for faceedge.service."""
import os, shlex, signal, subprocess, sys, time

action, remote_dir, state = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(state, exist_ok=True)
pidfile = os.path.join(state, "daemon.pid")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def read_pid():
    try:
        return int(open(pidfile).read().strip())
    except (OSError, ValueError):
        return None


def stop():
    pid = read_pid()
    if pid and alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    try:
        os.unlink(pidfile)
    except FileNotFoundError:
        pass


def exec_start():
    """The unit's ExecStart, with the specifiers the deploy renders (%h/faceedge -> remote_dir)."""
    unit = open(os.path.join(remote_dir, "current", "faceedge.service")).read()
    lines, cont = [], ""
    for raw in unit.splitlines():
        line = cont + raw.strip()
        cont = ""
        if line.endswith("\\"):
            cont = line[:-1] + " "
            continue
        lines.append(line)
    line = [l for l in lines if l.startswith("ExecStart=")][0][len("ExecStart="):].lstrip("-@:+!")
    home = os.path.expanduser("~")
    line = line.replace("%h/faceedge", remote_dir).replace("%h", home).replace("%%", "%")
    return shlex.split(line)


if action in ("restart", "stop"):
    stop()
if action == "restart":
    log = open(os.path.join(state, "daemon.log"), "ab")
    p = subprocess.Popen(exec_start(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True, cwd="/")
    tmp = pidfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(p.pid))
    os.replace(tmp, pidfile)
elif action == "reload":
    os.kill(read_pid(), signal.SIGHUP)
'''


def supervisor_service_args(supervisor: list[str], remote_dir, state) -> list[str]:
    """Deploy options for `--service-manager command` driven by SUPERVISOR (run as `supervisor`)
    on `remote_dir`, keeping its state in `state`: restart, stop and reload."""

    def cmd(action: str) -> str:
        return " ".join([*supervisor, action, str(remote_dir), str(state)])

    return ["--service-manager", "command"] + [
        arg for action in ("restart", "stop", "reload") for arg in (f"--{action}-cmd", cmd(action))
    ]


def make_run(root: Path, model_dir: Path, *, seed: int = 0, n: int = 12) -> Path:
    """A run dir as train + convert write it: export/<variant>/ and splits.csv with holdout images."""
    run = root
    variant = json.loads((model_dir / "manifest.json").read_text())["variant"]
    shutil.copytree(model_dir, run / "export" / variant)
    from device.crop import save_image_rgb

    imgs, ys = tiny_images(n, 32, seed=seed + 100)
    rows = []
    for i, (img, y) in enumerate(zip(imgs, ys)):
        p = run / "images" / f"img{i:02d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        save_image_rgb(p, img)
        rows.append(
            {
                "path": str(p),
                "label": "open" if y else "closed",
                "person": f"p{i % 3}",
                "split": "unseen_persons" if i % 2 else "train",
            }
        )
    with open(run / "splits.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "person", "split"])
        w.writeheader()
        w.writerows(rows)
    write_model_selftest(run / "export" / variant, [r for r in rows if r["split"] == "unseen_persons"])
    return run


def write_model_selftest(model_dir: Path, holdout: list[dict]) -> None:
    """export/<variant>/selftest.{png,json} as the conversion stage writes them (convert/selftest.py)."""
    import numpy as np

    from convert.selftest import Candidates, write_for_model
    from convert.verify import load_model_images
    from device.runtime import Classifier

    clf = Classifier.from_model_dir(model_dir)
    paths, labels = [r["path"] for r in holdout], [r["label"] for r in holdout]
    probs = np.stack([clf.classify(x) for x in load_model_images(paths, clf.input_size)])
    write_for_model(model_dir, clf, {"unseen_persons": Candidates(paths, labels, probs)})


def unit_file(tmp: Path) -> Path:
    """The service unit a bundle ships: the real one, else a minimal stand-in written under `tmp`."""
    real = ROOT / "device" / "faceedge.service"
    if real.is_file():
        return real
    p = tmp / "faceedge.service"
    p.write_text("[Service]\nExecStart=%h/faceedge/current/venv/bin/python -m device run\n")
    return p
