"""`python -m device status` (`make status PI=...`): what each Pi runs, in one table or as JSON.

Per host: the current release and its model's sha256, the previous ready release (what `rollback`
goes back to) and its model, the running daemon's health as /healthz says it now (status, the
model it serves, uptime), and an interrupted deploy if one is pending. Read-only on the Pi: one ssh
session per host, the deploy's own remote script (`remote.py`, action "status").
"""

from __future__ import annotations

import json
from typing import Any

from device.deploy.ship import HostFailed, Options, status
from device.errors import FaceedgeError
from device.ssh import Host

COLUMNS = ("host", "current", "model", "health", "uptime", "previous", "previous model")


def host_status(hosts: list[Host], opts: Options) -> dict[str, dict[str, Any]]:
    """{host spec: what remote.py reports}, or {"error": why} for a host that could not be asked."""
    out: dict[str, dict[str, Any]] = {}
    for host in hosts:
        try:
            out.update(status([host], opts))
        except (HostFailed, FaceedgeError, OSError, ValueError) as e:
            out[host.spec] = {"error": str(e) or type(e).__name__}
    return out


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if days else f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _health(report: dict[str, Any]) -> str:
    health = report.get("health")
    if not health:
        return "-"
    text = str(health.get("status"))
    served = health.get("model_sha256")
    if served and report.get("model_sha256") and served != report["model_sha256"]:
        text += f" (serving {served[:12]})"  # the daemon was not restarted onto `current`
    return text


def rows(reports: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One row per host, in COLUMNS order."""
    out = []
    for host, report in reports.items():
        if "error" in report:
            out.append([host, "error: " + report["error"].splitlines()[0], "", "", "", "", ""])
            continue
        health = report.get("health") or {}
        current = report.get("current") or "(none)"
        if report.get("interrupted"):
            current += " (deploy interrupted)"
        out.append(
            [
                host,
                current,
                (report.get("model_sha256") or "-")[:12],
                _health(report),
                _uptime(health.get("uptime_s")),
                report.get("previous") or "-",
                (report.get("previous_model_sha256") or "-")[:12],
            ]
        )
    return out


def table(reports: dict[str, dict[str, Any]]) -> str:
    """The reports as an aligned text table."""
    body = rows(reports)
    widths = [max(len(str(r[i])) for r in [list(COLUMNS), *body]) for i in range(len(COLUMNS))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [list(COLUMNS), *body]]
    return "\n".join(lines)


def print_status(reports: dict[str, dict[str, Any]], *, as_json: bool) -> int:
    """Print a table (or JSON); exit status 1 when a host could not be asked."""
    print(json.dumps(reports, indent=2, sort_keys=True) if as_json else table(reports))
    return 1 if any("error" in r for r in reports.values()) else 0
