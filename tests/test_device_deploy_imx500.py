"""Deploying an AI Camera (imx500) model: the host bundle (no host-side self-test: the sensor
classifies) and the Pi-side packaging step (`imx500-package`, from Raspberry Pi's apt repo, which
cannot run here: a stand-in with its command line - `-i packerOut.zip -o DIR` → DIR/network.rpk -
is put on PATH; tests/test_device_imx500.py runs the daemon on the result)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from device import check
from device.deploy import remote
from device.deploy.bundle import build_bundle
from tests.helpers.deploy import unit_file
from tests.helpers.imx500 import make_imx500_dir

PACKAGER = """#!{python}
import sys, zipfile, pathlib
args = sys.argv[1:]
src, out = pathlib.Path(args[args.index("-i") + 1]), pathlib.Path(args[args.index("-o") + 1])
if not zipfile.is_zipfile(src):
    sys.exit(f"{{src}}: not a packerOut.zip")
(out / "network.rpk").write_bytes(b"rpk:" + src.read_bytes())
"""


def _config(tmp: Path) -> Path:
    p = tmp / "device.yaml"
    p.write_text("source: {type: imx500}\noutputs: {http: {port: 8123}}\n")
    return p


def test_bundle_of_an_imx500_model_ships_the_package_without_a_selftest(tmp_path, wheel):
    mdir = make_imx500_dir(tmp_path / "export", packaged=False)
    meta = build_bundle(tmp_path / "b", run=mdir, config=_config(tmp_path), wheel=wheel, unit=unit_file(tmp_path))
    assert {"model/packerOut.zip", "model/manifest.json"} <= set(meta["files"])
    assert meta["model"]["variant"] == "imx500" and meta["selftest"] is None
    from device.errors import FaceedgeError

    with pytest.raises(FaceedgeError, match="an imx500 model runs on the sensor"):
        build_bundle(
            tmp_path / "c",
            run=mdir,
            config=_config(tmp_path),
            wheel=wheel,
            unit=unit_file(tmp_path),
            selftest_image=tmp_path / "any.png",
        )


def test_the_pi_packages_packer_out_into_network_rpk_before_the_check(tmp_path, monkeypatch):
    import sys

    rel = tmp_path / "release"
    mdir = make_imx500_dir(rel, packaged=False)
    mdir.rename(rel / "model")
    bundle = {"model": {"variant": "imx500"}}
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))  # no imx500-package anywhere
    with pytest.raises(remote.DeployError, match="imx500-package not found: .* sudo apt install imx500-tools"):
        remote.package_imx500(str(rel), bundle)
    tool = bindir / "imx500-package"
    tool.write_text(PACKAGER.format(python=sys.executable))
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    remote.package_imx500(str(rel), bundle)
    rpk = rel / "model" / "network.rpk"
    assert rpk.read_bytes() == b"rpk:" + (rel / "model" / "packerOut.zip").read_bytes()
    cfg = _config(tmp_path)
    assert check.run(cfg, rel / "model")["ok"]  # what the deploy's `device check` step then runs
    # a TFLite model has nothing to package: the tool is not called
    rpk.unlink()
    remote.package_imx500(str(rel), {"model": {"variant": "int8"}})
    assert not rpk.exists()
    # a broken package is one error, not a release without network.rpk
    (rel / "model" / "packerOut.zip").write_bytes(b"not a zip")
    with pytest.raises(remote.DeployError, match="imx500-package failed"):
        remote.package_imx500(str(rel), bundle)
    assert not rpk.exists() and os.listdir(rel / "model")
