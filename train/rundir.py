"""The run directory: its name, its state file, resuming it, and publishing it.

A run is built in ``runs/<name>-<YYYYmmdd-HHMMSS>.incomplete/`` and renamed to its final name only
when everything is written, so a run directory without that suffix is always complete. While it is
incomplete, ``state.json`` records what a resume needs (labels, data, which phases are done) beside
``config.yaml`` and ``splits.csv``; ``runs/latest`` points at the newest published run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from device.errors import FaceedgeError
from device.files import atomic_write_bytes, require_writable_dir
from train.config import TrainConfig, dump_config, load_raw, validate
from train.data import write_skipped_csv
from train.splits import SplitRecord, read_splits_csv, write_splits_csv

log = logging.getLogger(__name__)

INCOMPLETE = ".incomplete"
STATE_FILE = "state.json"
# What only an unfinished run needs; removed before the run is published.
SCRATCH_DIRS = ("backup", "cache", "features")
SCRATCH_GLOBS = ("best_*.weights.h5", "phase_*.weights.h5")


@dataclass
class Plan:
    """Everything a run needs, validated before anything is written."""

    cfg: TrainConfig
    final: Path  # runs/<name>-<ts>
    work: Path  # runs/<name>-<ts>.incomplete
    splits: list[SplitRecord]
    labels: list[str]
    data_root: str
    index_info: dict
    resumed: bool = False
    attempt: int = 0
    extra: dict = field(default_factory=dict)

    def split(self, name: str) -> list[SplitRecord]:
        return [s for s in self.splits if s.split == name]


def new_run_path(cfg: TrainConfig, timestamp: str | None = None) -> Path:
    runs = Path(cfg.run.runs_dir)
    stamp = timestamp or datetime.now().strftime("%Y%m%d-%H%M%S")
    final = runs / f"{cfg.run.name}-{stamp}"
    for path in (final, final.with_name(final.name + INCOMPLETE)):
        if path.exists() or path.is_symlink():
            raise FaceedgeError(f"run directory {path} already exists (choose another run.name)")
    return final


def update_latest(final: Path) -> None:
    """runs/latest → final, replaced atomically (symlink to a temp name, then os.replace)."""
    link = final.parent / "latest"
    tmp = final.parent / f".latest.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(final.name, tmp)
    os.replace(tmp, link)


def save_state(plan: Plan, phases_done: list[str]) -> None:
    """Write state.json (what a resume needs) and keep `plan.extra` in step with it."""
    state = {
        "labels": plan.labels,
        "data_root": plan.data_root,
        "index_info": plan.index_info,
        "attempt": plan.attempt,
        "phases_done": phases_done,
    }
    state.update({k: v for k, v in plan.extra.items() if k not in state})
    plan.extra.update(state)
    atomic_write_bytes(plan.work / STATE_FILE, json.dumps(state, indent=2).encode())


def create(plan: Plan, index) -> None:
    """Make the .incomplete directory with config.yaml, splits.csv, skipped.csv and state.json;
    on any failure nothing is left behind."""
    work = plan.work
    try:
        work.mkdir(parents=True)
    except FileExistsError:  # another run of the same name started in the same second
        raise FaceedgeError(f"run directory {work} already exists (choose another run.name)") from None
    try:
        atomic_write_bytes(work / "config.yaml", dump_config(plan.cfg).encode())
        write_splits_csv(plan.splits, work / "splits.csv")
        write_skipped_csv(index, work / "skipped.csv")
        save_state(plan, phases_done=[])
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def reopen(plan: Plan) -> None:
    """Continue an interrupted run: drop its file cache (a killed run may leave a half-written one)
    and count the attempt."""
    shutil.rmtree(plan.work / "cache", ignore_errors=True)
    save_state(plan, phases_done=plan.extra.get("phases_done", []))
    log.info("resuming %s (attempt %d)", plan.work, plan.attempt)


def prepare_resume(run_dir: str | Path) -> Plan:
    """The plan of an interrupted run, read back from its directory (config.yaml, splits.csv, state.json)."""
    work = Path(run_dir)
    if not work.is_dir():
        raise FaceedgeError(f"--resume {work}: no such run directory")
    require_writable_dir(work, "--resume")
    if not work.name.endswith(INCOMPLETE):
        if (work / "metrics.json").is_file():
            raise FaceedgeError(f"--resume {work}: this run is complete (nothing to resume)")
        raise FaceedgeError(f"--resume {work}: not an interrupted run (expected a *{INCOMPLETE} directory)")
    for name in ("config.yaml", "splits.csv", STATE_FILE):
        if not (work / name).is_file():
            raise FaceedgeError(
                f"--resume {work}: {name} is missing; the run was killed before training started "
                f"(delete it and start again)"
            )
    cfg = validate(load_raw(work / "config.yaml"), str(work / "config.yaml"))
    state = json.loads((work / STATE_FILE).read_text())
    splits = read_splits_csv(work / "splits.csv")
    final = work.with_name(work.name[: -len(INCOMPLETE)])
    if final.exists():
        raise FaceedgeError(f"--resume {work}: {final} already exists")
    return Plan(
        cfg=cfg,
        final=final,
        work=work,
        splits=splits,
        labels=state["labels"],
        data_root=state["data_root"],
        index_info=state["index_info"],
        resumed=True,
        attempt=int(state.get("attempt", 0)) + 1,
        extra=state,
    )


def discard(plan: Plan) -> None:
    shutil.rmtree(plan.work, ignore_errors=True)


def publish(plan: Plan) -> Path:
    """Remove the scratch files, rename the .incomplete directory to its final name, point
    runs/latest at it; returns the final path."""
    work = plan.work
    scratch = [work / name for name in (*SCRATCH_DIRS, STATE_FILE)]
    scratch += [path for pattern in SCRATCH_GLOBS for path in work.glob(pattern)]
    for path in scratch:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    os.rename(work, plan.final)
    update_latest(plan.final)
    return plan.final
