"""Facts about the machine for the health page: CPU temperature, uptime, disk, versions."""

from __future__ import annotations

import contextlib
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path

from leukoscope import __version__

THERMAL = Path("/sys/class/thermal")
#: Distributions whose versions the health page lists (missing ones are left out).
PACKAGES = (
    "numpy",
    "opencv-python-headless",
    "pillow",
    "ai-edge-litert",
    "tflite-runtime",
    "gpiozero",
    "picamera2",
    "flask",
    "waitress",
)


def cpu_temperature_c(thermal: Path = THERMAL) -> float | None:
    """The CPU's temperature in °C, None where the kernel does not report one."""
    zones = sorted(thermal.glob("thermal_zone*"))

    # Prefer the zone the Pi's kernel names cpu-thermal; else the first that reads.
    def kind(z: Path) -> str:
        with contextlib.suppress(OSError):
            return (z / "type").read_text().strip()
        return ""

    zones.sort(key=lambda z: 0 if "cpu" in kind(z) else 1)
    for zone in zones:
        try:
            milli = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        if -40_000 < milli < 150_000:
            return round(milli / 1000.0, 1)
    return None


def system_uptime_s(proc_uptime: Path = Path("/proc/uptime")) -> float | None:
    """Seconds since the machine booted, None if unknown."""
    try:
        return float(proc_uptime.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def disk(path: Path) -> tuple[int | None, int | None]:
    """(free, total) bytes of the file system holding `path`; (None, None) if unknown."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None, None
    return usage.free, usage.total


def os_name(os_release: Path = Path("/etc/os-release")) -> str:
    """The distribution's PRETTY_NAME, or the platform string."""
    with contextlib.suppress(OSError):
        for line in os_release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def versions() -> dict[str, str]:
    """Versions of the software that matters for a bug report."""
    out = {
        "leukoscope": __version__,
        "python": sys.version.split()[0],
        "os": os_name(),
        "kernel": platform.release(),
        "machine": platform.machine(),
    }
    for dist in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out
