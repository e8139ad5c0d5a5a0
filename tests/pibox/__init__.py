"""An emulated Raspberry Pi for the test suite: arm64 Debian (bookworm, trixie) userlands run with
qemu-user through proot, as Cortex-A72 (Pi 4) or Cortex-A76 (Pi 5). No kernel, no binfmt_misc.

build.py makes the cached rootfs tarballs, proot and the offline wheelhouse (`make pibox`);
box.py unpacks one and runs commands or an sshd on 127.0.0.1 inside (`make test-pi`).
Facts and traps: docs/platforms.md.
"""
