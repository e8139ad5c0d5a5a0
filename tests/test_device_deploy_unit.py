"""Fast tests of the deploy pieces: ssh/rsync argv (security options), host parsing, the device
wheel, the bundle, and the device-side layout (atomic flip, rollback target, prune, verify).
The end-to-end runs against a real sshd are in test_device_deploy.py."""

from __future__ import annotations

import json
import os
import shlex
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from device.deploy import remote
from device.deploy.bundle import build_bundle, read_bundle
from device.deploy.ship import release_name
from device.deploy.wheel import wheel_files
from device.errors import FaceedgeError
from device.ssh import Host, Ssh, parse_hosts
from tests.helpers import ROOT
from tests.helpers.deploy import make_run, unit_file

# ============================================================================ hosts and ssh


@pytest.mark.parametrize(
    "spec, user, host, port",
    [
        ("pi@raspberrypi.local", "pi", "raspberrypi.local", None),
        ("pi@10.0.0.7:2222", "pi", "10.0.0.7", 2222),
        ("cam1", None, "cam1", None),
        ("pi@[fe80::1%eth0]:22", "pi", "fe80::1%eth0", 22),
    ],
)
def test_host_parse(spec, user, host, port):
    h = Host.parse(spec)
    assert (h.user, h.host, h.port) == (user, host, port)


@pytest.mark.parametrize("spec", ["pi@-oProxyCommand=sh", "pi@", "p i@host", "pi@host:99999", "pi@a;b"])
def test_host_parse_rejects(spec):
    with pytest.raises(FaceedgeError, match="--hosts"):
        Host.parse(spec)


def test_parse_hosts_list():
    assert [h.host for h in parse_hosts("pi@a, pi@b")] == ["a", "b"]
    with pytest.raises(FaceedgeError, match="twice"):
        parse_hosts("pi@a,pi@a")
    with pytest.raises(FaceedgeError, match="at least one"):
        parse_hosts(" , ")


def _opts(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")


def test_ssh_is_key_only_and_checks_host_keys():
    ssh = Ssh(port=2222, key=Path("/k/id"), known_hosts=Path("/k/kh"))
    argv = ssh.ssh_argv(Host.parse("pi@cam"), ["python3", "-", '{"a": "x y", "b": "it\'s"}'])
    o = _opts(argv)
    assert o["BatchMode"] == "yes" and o["PasswordAuthentication"] == "no"
    assert o["KbdInteractiveAuthentication"] == "no"
    assert o["StrictHostKeyChecking"] == "yes" and o["UserKnownHostsFile"] == "/k/kh"
    assert o["IdentitiesOnly"] == "yes" and argv[argv.index("-i") + 1] == "/k/id"
    assert argv[argv.index("-p") + 1] == "2222"
    # the remote shell gets one string that splits back into exactly our argv
    assert argv[-2] == "pi@cam" and argv[-3] == "--"
    assert shlex.split(argv[-1]) == ["python3", "-", '{"a": "x y", "b": "it\'s"}']
    # a host's own port wins over --port
    argv = ssh.ssh_argv(Host.parse("pi@cam:2200"), ["true"])
    assert argv[argv.index("-p") + 1] == "2200"


def test_rsync_uses_the_same_ssh_options():
    ssh = Ssh(key=Path("/k/id"), known_hosts=Path("/k/kh"))
    argv = ssh.rsync_argv(Host.parse("pi@[::1]:22"), Path("/b"), "/home/pi/faceedge/releases/r1", "../r0")
    e = shlex.split(argv[argv.index("-e") + 1])
    assert e[0] == "ssh" and _opts(e)["StrictHostKeyChecking"] == "yes" and _opts(e)["BatchMode"] == "yes"
    assert "--link-dest=../r0" in argv
    assert argv[-2:] == ["/b/", "pi@[::1]:/home/pi/faceedge/releases/r1/"]
    # release files are the owner's alone: the model and config are nobody else's business on the Pi
    (chmod,) = [a.split("=", 1)[1] for a in argv if a.startswith("--chmod=")]
    assert sorted(chmod.split(",")) == ["D700", "F600"]


def test_release_names_sort_by_time():
    a, b = release_name("ab" * 32, 1_700_000_000), release_name("00" * 32, 1_700_000_001)
    assert a == "20231114T221320Z-abababab" and a < b


# ============================================================================ wheel and bundle


def test_device_wheel_holds_the_device_package_only(wheel):
    names = wheel_files(wheel)
    assert "device/daemon.py" in names and "device/deploy/remote.py" in names
    assert not [n for n in names if n.startswith(("train/", "convert/", "tests/"))]
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [ln.split(":", 1)[1].strip() for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    assert any(r.startswith("ai-edge-litert") for r in requires)
    assert not any(r.startswith(("tensorflow", "keras", "matplotlib")) for r in requires)


def _run_dir(tmp: Path, model_dir: Path) -> Path:
    return make_run(tmp / "run", model_dir)


def _config(tmp: Path, http: bool = True) -> Path:
    p = tmp / "device.yaml"
    p.write_text("source: {type: synthetic}\n" + ("outputs: {http: {port: 8123}}\n" if http else ""))
    return p


def test_bundle_lists_every_file_with_sha256_and_ships_the_model_dir_as_is(tiny_models, tmp_path, wheel):
    run = _run_dir(tmp_path, tiny_models["int8"])
    model_dir = run / "export" / "int8"
    (model_dir / "labels.txt").write_text("closed\nopen\n")  # whatever convert put there travels too
    meta = build_bundle(tmp_path / "b", run=run, config=_config(tmp_path), wheel=wheel, unit=unit_file(tmp_path))
    assert set(meta["files"]) == {
        "model/model.tflite",
        "model/manifest.json",
        "model/labels.txt",
        "model/selftest.png",
        "model/selftest.json",
        "device.yaml",
        "faceedge.service",
        f"wheels/{wheel.name}",
    }
    for name in ("model.tflite", "manifest.json", "labels.txt", "selftest.png", "selftest.json"):
        assert (tmp_path / "b" / "model" / name).read_bytes() == (model_dir / name).read_bytes()
    assert meta["health"]["url"] == "http://127.0.0.1:8123/healthz"
    # nothing is classified here: the Pi's `device check` uses the model dir's own self-test
    own = json.loads((model_dir / "selftest.json").read_text())
    assert meta["selftest"] is None
    assert meta["model"]["selftest"] == {"expect": own["expect"], "score": own["score"], "tolerance": own["tolerance"]}
    assert read_bundle(tmp_path / "b")["digest"] == meta["digest"]
    # a changed file is caught before anything is shipped
    (tmp_path / "b" / "device.yaml").write_text("source: {type: synthetic}\n# edited\n")
    with pytest.raises(FaceedgeError, match="changed since the bundle was built"):
        read_bundle(tmp_path / "b")


def test_bundle_with_the_users_own_selftest_image(tiny_models, tmp_path, wheel):
    from device.crop import save_image_rgb

    run = _run_dir(tmp_path, tiny_models["int8"])
    image = tmp_path / "mine.jpg"
    save_image_rgb(image, np.full((40, 30, 3), 90, np.uint8))
    meta = build_bundle(
        tmp_path / "b",
        run=run,
        config=_config(tmp_path),
        wheel=wheel,
        unit=unit_file(tmp_path),
        selftest_image=image,
        selftest_expect="open",
        model_only=True,
    )
    assert meta["selftest"] == {"image": "selftest/selftest.jpg", "expect": "open", "from": str(image)}
    assert (tmp_path / "b" / "selftest" / "selftest.jpg").read_bytes() == image.read_bytes()
    for bad, why in (("ajar", "--selftest-expect 'ajar': not one of the model's labels"),):
        with pytest.raises(FaceedgeError, match=why):
            build_bundle(tmp_path / "c", run=run, config=_config(tmp_path), selftest_image=image, selftest_expect=bad)
    with pytest.raises(FaceedgeError, match="--selftest-image .*nope.png: no such file"):
        build_bundle(tmp_path / "c", run=run, config=_config(tmp_path), selftest_image=tmp_path / "nope.png")
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_bundle_needs_the_http_health_endpoint(tiny_models, tmp_path, wheel):
    with pytest.raises(FaceedgeError, match="key 'outputs.http'"):
        build_bundle(
            tmp_path / "b",
            run=tiny_models["int8"],
            config=_config(tmp_path, http=False),
            wheel=wheel,
            unit=unit_file(tmp_path),
        )
    assert not (tmp_path / "b" / "BUNDLE.json").exists()


def test_cli_errors_are_one_line(capsys):
    from device.cli import main

    assert main(["deploy", "--hosts", "pi@-x", "--bundle", "/nonexistent"]) == 2
    assert capsys.readouterr().err.startswith("error: --hosts 'pi@-x'")
    assert main(["rollback", "--hosts", "pi@cam", "--service-manager", "command"]) == 2
    assert "needs --restart-cmd" in capsys.readouterr().err
    assert main(["rollback", "--hosts", "pi@cam", "--remote-dir", "a b"]) == 2
    assert "--remote-dir 'a b'" in capsys.readouterr().err


# ============================================================================ the device-side layout


def _release(lay: remote.Layout, name: str, *, ready: bool = True, failed: bool = False) -> Path:
    d = Path(lay.release(name))
    (d / "model").mkdir(parents=True)
    (d / "model" / "model.tflite").write_bytes(name.encode())
    files = {"model/model.tflite": {"sha256": remote.sha256_file(str(d / "model" / "model.tflite"))}}
    (d / "BUNDLE.json").write_text(json.dumps({"files": files}))
    if ready:
        (d / ".ready").write_text("{}")
    if failed:
        (d / ".failed").write_text("why\n")
    return d


def test_flip_is_atomic_for_readers(tmp_path):
    lay = remote.Layout(str(tmp_path))
    for n in ("r1", "r2"):
        _release(lay, n)
    lay.flip("r1")
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            seen.add(os.readlink(lay.current))  # FileNotFoundError here would fail the test

    th = threading.Thread(target=reader)
    th.start()
    for i in range(300):
        lay.flip("r2" if i % 2 == 0 else "r1")
    stop.set()
    th.join()
    assert seen == {"releases/r1", "releases/r2"}
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".current.tmp")]


def test_rollback_target_skips_failed_and_unready(tmp_path):
    lay = remote.Layout(str(tmp_path))
    r1, r2, r3, r4 = (release_name("%064x" % i, 1_700_000_000 + 60 * i) for i in range(1, 5))
    _release(lay, r1)
    _release(lay, r2, failed=True)
    _release(lay, r3, ready=False)
    _release(lay, r4)
    _release(lay, "r3-my-own-folder")  # .ready and all, but not named like a release: never a target
    assert lay.previous_ready(r4) == r1
    assert lay.previous_ready(r1) is None


def test_prune_keeps_current_previous_newest_and_fresh_incomplete(tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "log", lambda msg: None)
    lay = remote.Layout(str(tmp_path))
    t0 = 1_700_000_000
    r = {i: release_name("%064x" % i, t0 + 60 * i) for i in range(9)}
    for i in range(1, 7):
        _release(lay, r[i])
    _release(lay, r[7], failed=True)
    old_incomplete = _release(lay, r[0], ready=False)
    os.utime(old_incomplete, (time.time() - 3600, time.time() - 3600))
    _release(lay, r[8], ready=False)  # maybe another deploy's rsync in progress: kept
    lay.flip(r[2])  # rolled back far: r2 current, r1 its previous
    remote.prune(lay, keep=2, protect=set())
    assert lay.names() == [r[1], r[2], r[5], r[6], r[8]]


def test_verify_catches_changed_missing_and_escaping_files(tmp_path):
    lay = remote.Layout(str(tmp_path))
    d = _release(lay, "r1")
    remote.verify(str(d))
    (d / "model" / "model.tflite").write_bytes(b"tampered")
    with pytest.raises(remote.DeployError, match="corrupt copy"):
        remote.verify(str(d))
    (d / "model" / "model.tflite").unlink()
    with pytest.raises(remote.DeployError, match="missing"):
        remote.verify(str(d))
    (d / "BUNDLE.json").write_text(json.dumps({"files": {"../../etc/passwd": {"sha256": "0" * 64}}}))
    with pytest.raises(remote.DeployError, match="outside the release"):
        remote.verify(str(d))


def test_unit_rendered_for_the_remote_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    lay = remote.Layout(str(tmp_path / "srv" / "cam"))
    d = _release(lay, "r1")
    (d / "faceedge.service").write_text(
        "[Service]\nExecStart=%h/faceedge/current/venv/bin/python -m device run\n[Install]\nWantedBy=default.target\n"
    )
    user = remote.Service({"service": {"manager": "systemd-user"}}, lay).render_unit("r1")
    assert f"ExecStart={lay.root}/current/venv/bin/python" in user
    system = remote.Service({"service": {"manager": "systemd-system"}}, lay).render_unit("r1")
    assert "\nUser=" in system and "WantedBy=multi-user.target" in system and "%h" not in system


def test_real_unit_rendered_as_system_unit_verifies(tmp_path, monkeypatch):
    """`--service-manager systemd-system` renders the shipped unit (absolute paths, User=,
    multi-user.target); systemd-analyze accepts the result."""
    import shutil
    import subprocess
    import sys

    from tests.helpers import tools

    analyze = tools.require("systemd-analyze")["systemd-analyze"]
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    lay = remote.Layout(str(tmp_path / "home" / "faceedge"))
    d = _release(lay, "r1")
    shutil.copy(ROOT / "device" / "faceedge.service", d / "faceedge.service")
    (d / "venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, d / "venv" / "bin" / "python")
    lay.flip("r1")
    text = remote.Service({"service": {"manager": "systemd-system"}}, lay).render_unit("r1")
    assert "%h" not in text and f"ExecStart={lay.root}/current/venv/bin/python -m device run" in text
    unit = tmp_path / "faceedge.service"
    unit.write_text(text)
    p = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_share_identical_links_only_byte_identical_files(tmp_path):
    old, new = tmp_path / "old" / "venv", tmp_path / "new" / "venv"
    for root in (old, new):
        (root / "lib").mkdir(parents=True)
        (root / "lib" / "same.so").write_bytes(b"x" * 20000)
        (root / "lib" / "small.py").write_bytes(b"y" * 100)
    (old / "lib" / "changed.so").write_bytes(b"a" * 20000)
    (new / "lib" / "changed.so").write_bytes(b"a" * 19999 + b"b")  # same size, other content
    (new / "lib" / "only_new.so").write_bytes(b"z" * 20000)
    os.symlink("same.so", new / "lib" / "link.so")
    files, size = remote.share_identical(str(new), str(old))
    assert (files, size) == (1, 20000)
    ino = lambda p: os.stat(p).st_ino  # noqa: E731
    assert ino(new / "lib" / "same.so") == ino(old / "lib" / "same.so")
    assert ino(new / "lib" / "changed.so") != ino(old / "lib" / "changed.so")
    assert ino(new / "lib" / "small.py") != ino(old / "lib" / "small.py")
    assert (new / "lib" / "changed.so").read_bytes().endswith(b"b") and os.path.islink(new / "lib" / "link.so")
    assert remote.share_identical(str(new), str(old)) == (0, 0)  # already shared: nothing to do


def test_bundle_refuses_a_model_the_conversion_gate_rejected(tiny_models, tmp_path, wheel):
    import shutil

    mdir = tmp_path / "rejected"
    shutil.copytree(tiny_models["int8"], mdir)
    man = json.loads((mdir / "manifest.json").read_text())
    man.update(status="rejected", notes="int8 agreement 81% < 97%")
    (mdir / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(FaceedgeError, match="rejected by the conversion gate"):
        build_bundle(tmp_path / "b", run=mdir, config=_config(tmp_path), wheel=wheel, unit=unit_file(tmp_path))
    assert not (tmp_path / "b").exists()


# ============================================================================ prune and remote_dir safety


def _real_release(lay: remote.Layout, when: float, *, ready: bool = True, age_s: float = 3600) -> str:
    """A release as deploy makes it: <UTC time>-<digest> with a BUNDLE.json, older than the prune grace."""
    name = release_name(("%064x" % int(when)), when)
    d = _release(lay, name, ready=ready)
    os.utime(d, (time.time() - age_s, time.time() - age_s))
    return name


def test_prune_removes_only_releases_never_a_users_folder(tmp_path, monkeypatch):
    """The reproduction: `--remote-dir .` made ~/releases/ the release folder, and prune deleted a
    user's `releases/my-photos-2024` because it was older than 10 minutes."""
    monkeypatch.setattr(remote, "log", lambda msg: None)
    lay = remote.Layout(str(tmp_path))
    t0 = 1_700_000_000
    names = [_real_release(lay, t0 + i) for i in range(6)]
    photos = Path(lay.releases) / "my-photos-2024"
    (photos / "2024-07").mkdir(parents=True)
    (photos / "2024-07" / "beach.jpg").write_bytes(b"precious")
    fake = Path(lay.releases) / release_name("ff" * 32, t0 - 10)  # release-like name, but not a release
    fake.mkdir()
    (fake / "notes.txt").write_bytes(b"precious")
    garbage = Path(lay.releases) / release_name("ee" * 32, t0 - 20)
    garbage.mkdir()
    (garbage / "BUNDLE.json").write_text("not json")
    for d in (photos, fake, garbage):
        os.utime(d, (time.time() - 86400 * 30, time.time() - 86400 * 30))
    lay.flip(names[-1])
    remote.prune(lay, keep=2, protect=set())
    assert (photos / "2024-07" / "beach.jpg").read_bytes() == b"precious"
    assert (fake / "notes.txt").read_bytes() == b"precious" and (garbage / "BUNDLE.json").exists()
    left = set(lay.names())
    assert set(names[:4]).isdisjoint(left) and set(names[4:]) <= left  # the newest 2 (current, previous)


@pytest.mark.parametrize("bad", [".", "./", "/", "~", "~/", "", "/etc/..", "a/../..", "faceedge/.."])
def test_remote_dir_that_is_home_or_root_is_refused_before_any_connection(bad, capsys):
    from device.cli import main
    from tests.helpers.sshd import free_port

    closed = free_port()  # nothing listens there: a connection attempt would say "cannot reach"
    code = main(
        [
            "rollback",
            "--hosts",
            f"pi@127.0.0.1:{closed}",
            "--service-manager",
            "command",
            "--restart-cmd",
            "true",
            "--remote-dir",
            bad,
        ]
    )
    err = capsys.readouterr()
    assert code == 2, err
    assert err.err.startswith(f"error: --remote-dir {bad!r}") and err.err.count("\n") == 1
    assert "cannot reach" not in err.out


@pytest.mark.parametrize("where", ["home", "outside"])
def test_device_side_refuses_a_remote_dir_outside_the_home(tmp_path, monkeypatch, capsys, where):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    target = {"home": home, "outside": tmp_path / "srv" / "faceedge"}[where]
    code = remote.main([json.dumps({"action": "status", "remote_dir": str(target)})])
    out = capsys.readouterr()
    assert code == 2 and "must be a folder inside your home" in out.err, out
    assert not (home / "releases").exists() and not (tmp_path / "srv").exists()
    # inside the home it works (and creates the layout)
    assert remote.main([json.dumps({"action": "status", "remote_dir": str(home / "faceedge")})]) == 0
    assert (home / "faceedge" / "releases").is_dir()


def test_failed_make_deploy_leaves_no_bundle_dir(tmp_path, tiny_models):
    """Every failed `make deploy` used to leave an empty /tmp/faceedge-bundle-* behind."""
    import subprocess

    from tests.helpers.sshd import free_port

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    closed = free_port()
    bad_config = tmp_path / "device.yaml"
    bad_config.write_text("source: {type: synthetic}\n")  # no outputs.http: the bundle build refuses it
    for run, config in (
        (tmp_path / "no-such-run", ROOT / "configs" / "device.yaml"),
        (tiny_models["int8"], bad_config),
    ):
        p = subprocess.run(
            [
                "make",
                "--no-print-directory",
                "deploy",
                f"PI=pi@127.0.0.1:{closed}",
                f"RUN={run}",
                f"DEVICE_CONFIG={config}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "TMPDIR": str(tmpdir)},
        )
        assert p.returncode != 0 and "error:" in p.stderr, p.stdout + p.stderr
        assert list(tmpdir.iterdir()) == [], p.stderr


def test_status_table_says_what_each_host_runs():
    from device.deploy.status import print_status, table

    sha_a, sha_b = "a" * 64, "b" * 64
    reports = {
        "pi@cam1": {
            "current": "20261201T100000Z-1234",
            "previous": "20261130T090000Z-abcd",
            "model_sha256": sha_b,
            "previous_model_sha256": sha_a,
            "interrupted": None,
            "health": {"status": "ok", "model_sha256": sha_a, "uptime_s": 93784.0},
        },
        "pi@cam2": {"current": None, "previous": None, "health": None, "interrupted": None},
        "pi@cam3": {"error": "ssh: connect to host cam3 port 22: Connection refused\nmore"},
    }
    lines = table(reports).splitlines()
    assert lines[0].split()[:3] == ["host", "current", "model"]
    cam1, cam2, cam3 = lines[1:]
    # the daemon still serves the old model: the table says so
    assert "ok (serving aaaaaaaaaaaa)" in cam1 and "1d 2h" in cam1 and cam1.split()[2] == "b" * 12
    assert cam2.split()[:2] == ["pi@cam2", "(none)"]
    assert cam3.endswith("error: ssh: connect to host cam3 port 22: Connection refused")
    assert print_status({"pi@cam1": reports["pi@cam1"]}, as_json=True) == 0
    assert print_status(reports, as_json=False) == 1
