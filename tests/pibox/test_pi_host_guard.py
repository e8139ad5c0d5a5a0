"""The box cannot touch the host's mounts: proot's root is fake, its privileges are not, and a
`debootstrap --second-stage` run inside once unmounted the host's /dev/pts and /dev/shm."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.pi, pytest.mark.slow, pytest.mark.timeout(600)]


def _mounts() -> list[str]:
    """The host's mount points, as this (host) process sees them."""
    return sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can mount; as another user the kernel refuses")
def test_mount_and_umount_inside_leave_the_host_alone(box, cpu, tmp_path):
    before = _mounts()
    assert "/dev/pts" in before  # the mount the second stage used to take away
    b = box.with_cpu(cpu)
    p = b.run(["sh", "-c", "mount -t tmpfs none /dev/shm; m=$?; umount /dev/pts; u=$?; echo $m $u"], check=False)
    assert p.stdout.split()[-2:] == ["0", "0"], p.stdout + p.stderr  # the calls succeed... in the box's namespace
    assert _mounts() == before
