"""`device deploy`, `rollback`, `deploy-model` and `status`: put the daemon and a model on one or
more Raspberry Pis over ssh — atomic, verified, reversible. Runs on the developer's machine.

Host side (this package)::

    bundle (device-only wheel, model + manifest, device.yaml, systemd unit, self-test image,
            BUNDLE.json with every file's sha256)                        device/deploy/bundle.py
      ─► per host, in parallel: probe over ssh ─► rsync into <remote_dir>/releases/<name>/
      ─► run device/deploy/remote.py there with the Pi's python3 (sent over stdin)   .../ship.py

Device side (`device/deploy/remote.py`, stdlib only, under a lock): verify sha256 ─► venv
(--system-site-packages) + pip install the wheel ─► `device check` in the new release ─► flip
`current` (rename of a symlink) ─► restart ─► health gate on /healthz ─► keep, or flip back and
restart the previous release ─► prune to the last N.

Security: ssh is key-only and host keys are always checked (device/ssh.py). sudo is used only for
`systemctl`, and only with `--service-manager systemd-system`.

Never imports TensorFlow, `train` or `convert`.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import tempfile
from collections.abc import Iterable
from pathlib import Path

from device.deploy.bundle import DEFAULT_UNIT, build_bundle
from device.deploy.ship import SERVICE_MANAGERS, Options, deploy, rollback
from device.errors import FaceedgeError
from device.flags import add_option
from device.ssh import Ssh, check_remote_dir, parse_hosts


def _add_ssh_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hosts", required=True, help="comma-separated user@host[:port] (done in parallel)")
    p.add_argument("--port", type=int, default=22, help="ssh port (a host's own :port wins) (default: %(default)s)")
    add_option(
        p,
        "--ssh-key",
        type=Path,
        default=None,
        help="private key for ssh (none: what ssh picks itself, e.g. ~/.ssh/id_ed25519 or the agent)",
    )
    add_option(
        p,
        "--known-hosts",
        type=Path,
        default=None,
        help="known_hosts file to check host keys against (none: ~/.ssh/known_hosts); checking is never turned off",
    )
    add_option(p, "--connect-timeout", type=int, default=10, help="ssh connect timeout, seconds (default: %(default)s)")
    add_option(
        p,
        "--remote-dir",
        default="faceedge",
        help="where releases live on the device (relative = under the user's home) (default: %(default)s)",
    )
    add_option(
        p, "--remote-python", default="python3", help="the device's python (creates the venvs) (default: %(default)s)"
    )


SERVICE_DEFAULTS = {  # what a read-only command (status) has instead of the service options
    "service_manager": "systemd-user",
    "restart_cmd": None,
    "stop_cmd": None,
    "reload_cmd": None,
    "health_timeout": 60.0,
    "lock_wait": 60.0,
}


def _add_service_args(p: argparse.ArgumentParser) -> None:
    """How the service is restarted and how long deploy waits: for the commands that change a release."""
    add_option(
        p,
        "--service-manager",
        choices=SERVICE_MANAGERS,
        default=SERVICE_DEFAULTS["service_manager"],
        help="how the service is restarted: systemctl --user (no sudo), sudo systemctl, or "
        "your own commands (--restart-cmd/--stop-cmd/--reload-cmd, run on the device)"
        " (default: %(default)s)",
    )
    add_option(p, "--restart-cmd", default=None, help="service_manager command: restart the daemon")
    add_option(p, "--stop-cmd", default=None, help="service_manager command: stop the daemon")
    add_option(p, "--reload-cmd", default=None, help="service_manager command: send the daemon SIGHUP")
    add_option(
        p,
        "--health-timeout",
        type=float,
        default=SERVICE_DEFAULTS["health_timeout"],
        help="seconds for /healthz to say ok after a restart before rolling back (default: %(default)s)",
    )
    add_option(
        p,
        "--lock-wait",
        type=float,
        default=SERVICE_DEFAULTS["lock_wait"],
        help="seconds to wait for another deploy on the same device to finish (default: %(default)s)",
    )


def _add_bundle_args(p: argparse.ArgumentParser, *, full: bool) -> None:
    p.add_argument(
        "--run",
        type=Path,
        default=Path("runs/latest"),
        help="run dir (uses export/<variant>/) or a model dir with manifest.json (default: %(default)s)",
    )
    p.add_argument(
        "--variant",
        choices=["int8", "float32", "float16", "imx500"],
        default="int8",
        help="which exported model of the run (imx500: packaged into network.rpk on the Pi) (default: %(default)s)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=Path("configs/device.yaml"),
        help="device config shipped with the release (its outputs.http is the health gate) (default: %(default)s)",
    )
    add_option(
        p,
        "--selftest-image",
        type=Path,
        default=None,
        help="self-test image checked on the device (default: the model dir's selftest.png from the conversion)",
    )
    add_option(p, "--selftest-expect", default=None, help="label --selftest-image must get")
    p.add_argument("--bundle", type=Path, default=None, help="ship this already built bundle instead")
    add_option(p, "--bundle-out", type=Path, default=None, help="build the bundle here (kept)")
    add_option(p, "--build-only", action="store_true", help="build the bundle (--bundle-out) and stop")
    add_option(
        p,
        "--check-timeout",
        type=float,
        default=180.0,
        help="seconds for `device check` on the device (default: %(default)s)",
    )
    if full:
        p.add_argument("--unit", type=Path, default=DEFAULT_UNIT, help="systemd unit shipped with the release")
        p.add_argument(
            "--keep",
            type=int,
            default=3,
            help="ready releases kept on the device (plus current/previous) (default: %(default)s)",
        )
        add_option(
            p,
            "--no-deps",
            action="store_true",
            help="pip install the wheel without its dependencies (they come from the system "
            "site-packages, e.g. apt's python3-opencv, or a wheelhouse via --pip-args)",
        )
        add_option(
            p,
            "--venv-without-pip",
            action="store_true",
            help="make release venvs without their own pip and install with the device's "
            "system pip (apt install python3-pip): faster, ~15 MB less per release",
        )
        add_option(
            p,
            "--pip-args",
            default="",
            help="extra pip install arguments on the device, e.g. "
            '"--no-index --find-links /home/pi/wheels" (one string)',
        )


def add_parser(subparsers) -> None:
    deploy_parser = subparsers.add_parser(
        "deploy",
        help="deploy daemon + model to Raspberry Pis over ssh",
        description=__doc__.split("\n\n")[0],
    )
    _add_ssh_args(deploy_parser)
    _add_service_args(deploy_parser)
    _add_bundle_args(deploy_parser, full=True)
    deploy_parser.set_defaults(func=lambda a: run_cli("deploy", a))
    model_parser = subparsers.add_parser(
        "deploy-model",
        help="ship a new model only and reload it with SIGHUP",
    )
    _add_ssh_args(model_parser)
    _add_service_args(model_parser)
    _add_bundle_args(model_parser, full=False)
    model_parser.set_defaults(func=lambda a: run_cli("deploy-model", a))
    rollback_parser = subparsers.add_parser("rollback", help="go back one release on the device(s)")
    _add_ssh_args(rollback_parser)
    _add_service_args(rollback_parser)
    rollback_parser.add_argument(
        "--to", default=None, help="a release name to go back to (none: the newest ready release older than current)"
    )
    rollback_parser.set_defaults(func=lambda a: run_cli("rollback", a))
    status_parser = subparsers.add_parser(
        "status",
        help="what each Pi runs: current and previous release, model sha256, health, uptime",
        description="Ask each host (read-only) for its current and previous release, their models, and the "
        "running daemon's /healthz (status, model served, uptime).",
    )
    _add_ssh_args(status_parser)
    status_parser.set_defaults(**SERVICE_DEFAULTS)
    status_parser.add_argument("--json", action="store_true", help="print the reports as JSON instead of a table")
    status_parser.set_defaults(func=lambda a: run_cli("status", a))


def options_from_args(a: argparse.Namespace) -> Options:
    a.ssh_key = a.ssh_key.expanduser() if a.ssh_key is not None else None
    a.known_hosts = a.known_hosts.expanduser() if a.known_hosts is not None else None
    if a.ssh_key is not None and not a.ssh_key.is_file():
        raise FaceedgeError(f"--ssh-key {a.ssh_key}: no such file")
    if a.known_hosts is not None and not a.known_hosts.is_file():
        raise FaceedgeError(f"--known-hosts {a.known_hosts}: no such file")
    for p in (a.ssh_key, a.known_hosts):
        if p is not None and any(c in str(p) for c in "'\"\\ "):
            raise FaceedgeError(f"{p}: use a path without quotes, backslashes or spaces")
    service: dict = {"manager": a.service_manager}
    if a.service_manager == "command":
        if not a.restart_cmd:
            raise FaceedgeError("--service-manager command needs --restart-cmd")
        for key in ("restart", "stop", "reload"):
            val = getattr(a, f"{key}_cmd")
            if val:
                try:
                    service[key] = shlex.split(val)
                except ValueError as e:
                    raise FaceedgeError(f"--{key}-cmd {val!r}: {e}") from None
    if a.health_timeout <= 0:
        raise FaceedgeError(f"--health-timeout {a.health_timeout}: must be > 0")
    return Options(
        ssh=Ssh(port=a.port, key=a.ssh_key, known_hosts=a.known_hosts, connect_timeout=a.connect_timeout),
        remote_dir=check_remote_dir(a.remote_dir),
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
    if action == "status":
        from device.deploy.status import host_status, print_status

        return print_status(host_status(hosts, opts), as_json=a.json)
    if a.build_only and a.bundle_out is None:
        raise FaceedgeError("--build-only needs --bundle-out DIR")
    if a.bundle is not None:
        return deploy(hosts, opts, a.bundle, action=action)
    # A bundle built for this deploy only lives in a temp dir that is removed however it ends
    # (a failed build included); --bundle-out keeps it.
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
        print(f"bundle {bundle_dir}: {len(meta['files'])} files, {selftest_line(meta)}", flush=True)
        if a.build_only:
            return 0
        return deploy(hosts, opts, bundle_dir, action=action)


def main(argv: Iterable[str] | None = None) -> int:
    """Standalone entry (python -m device.deploy ...); `python -m device deploy` goes through device.cli."""
    from device.cli import standalone

    return standalone(add_parser, "python -m device.deploy", None if argv is None else list(argv))


if __name__ == "__main__":
    raise SystemExit(main())


def selftest_line(meta: dict) -> str:
    """The bundle's model and what `device check` will classify with it on the Pi, in words."""
    model, given = meta["model"], meta.get("selftest")
    own = model.get("selftest")
    if given:
        want = f" must give {given['expect']!r}" if given.get("expect") else " (any label: it must only classify)"
        test = f"{given['image']}{want}"
    elif own:
        score = f"{own['score']:.3f} ± {own['tolerance']}"
        test = f"model/selftest.png (from the conversion) must give {own['expect']!r} ({score})"
    else:
        test = "none in the model dir (convert writes one): device check uses its test pattern"
    return f"model {model['sha256'][:12]} ({model['variant']}), self-test {test}"
