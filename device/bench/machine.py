"""The machine a benchmark ran on: board, CPU, cores, OS, runtime, temperature and throttling."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

BOARD_MODEL_FILE = Path("/proc/device-tree/model")


def board_model(path: Path = BOARD_MODEL_FILE) -> str | None:
    """'Raspberry Pi 4 Model B Rev 1.4' and the like, from the device tree; None elsewhere."""
    try:
        return path.read_bytes().rstrip(b"\x00\n ").decode(errors="replace") or None
    except OSError:
        return None


def board_key(model: str | None) -> str | None:
    """'pi4' / 'pi5' for the boards we hold published figures for."""
    if not model:
        return None
    m = re.search(r"Raspberry Pi (\d+)", model)
    if m and m.group(1) in ("4", "5"):
        return "pi" + m.group(1)
    if "Compute Module 4" in model:
        return "pi4"
    if "Compute Module 5" in model:
        return "pi5"
    return None


_ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1",
}


def cpu_model() -> str:
    """x86 'model name', or the ARM core name from the 'CPU part' field (Pi: Cortex-A72/A76)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    for key in ("model name", "Model name", "Processor"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.M)
        if m and m.group(1).strip():
            return m.group(1).strip()
    m = re.search(r"^CPU part\s*:\s*(0x[0-9a-f]+)", text, re.M)
    if m:
        return f"{_ARM_PARTS.get(m.group(1), 'ARM part ' + m.group(1))} ({platform.machine()})"
    return platform.processor() or platform.machine()


def _read_first(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_temperature_c() -> float | None:
    raw = _read_first("/sys/class/thermal/thermal_zone0/temp")
    try:
        return round(int(raw) / 1000.0, 1) if raw else None
    except ValueError:
        return None


def pi_throttled() -> str | None:
    """`vcgencmd get_throttled` on a Pi (0x0 = never throttled or under-volted), else None."""
    exe = shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"throttled=(0x[0-9a-fA-F]+)", out)
    return m.group(1) if m else None


def _os_name() -> str:
    try:
        rel = platform.freedesktop_os_release()
        return f"{rel.get('PRETTY_NAME', rel.get('NAME', 'Linux'))} (kernel {platform.release()})"
    except (OSError, AttributeError):
        return f"{platform.system()} {platform.release()}"


def _mem_total_mb() -> float | None:
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        return round(int(m.group(1)) / 1024, 1) if m else None
    except OSError:
        return None


def machine_info(runtime: Any | None = None) -> dict[str, Any]:
    """What a reader needs to compare two bench.json files: CPU, cores, OS, Python, runtime, board."""
    from device.runtime import available_cores  # the cores this process may run on (affinity mask)

    board = board_model()
    try:
        import cv2

        cv2_version = cv2.__version__
    except Exception:  # noqa: BLE001 - an absent OpenCV only loses the version string
        cv2_version = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 1,
        "cores_available": available_cores(),
        "arch": platform.machine(),
        "os": _os_name(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2_version,
        "runtime": getattr(runtime, "name", None),
        "runtime_version": getattr(runtime, "version", None),
        "board": board,
        "board_key": board_key(board),
        "memory_total_mb": _mem_total_mb(),
        "cpu_governor": _read_first("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_max_mhz": _mhz(_read_first("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")),
        "temperature_c_start": cpu_temperature_c(),
        "throttled_start": pi_throttled(),
        "load_avg_start": load,
    }


def _mhz(khz: str | None) -> float | None:
    try:
        return round(int(khz) / 1000.0, 0) if khz else None
    except ValueError:
        return None
