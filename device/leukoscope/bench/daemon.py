"""`leukoscope bench-daemon`: trigger-to-indicator time by stage and peak RSS of the real daemon.

Runs `leukoscope run` as a child process on replay stills (synthetic smears, JPEG,
2592x1944 like ALL-IDB1 and the Pi camera v1 by default; `--size 4056x3040` for the HQ
camera's 12 MP, at the same 12 px/um), with mock GPIO and no status page,
triggers captures through the control socket one after another, and prints the median
and 95th percentile of each stage as the daemon recorded them, and its peak RSS (VmHWM).
The replay camera has no exposure, so the figures exclude the camera's own exposure.
As `bench-cells` does, it also prints trigger to indicator without inference, inference
per white cell, and so the most white cells a field may have and still meet the target.
Figures, not a test: nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

from leukoscope.appliance.control import ControlError, request
from leukoscope.bench.cells import cells_within
from leukoscope.core.synthetic import make_smear

STILL_SIZE = (2592, 1944)
STAGES = (
    "capture",
    "decode",
    "field",
    "scale",
    "quality",
    "detect",
    "crops",
    "inference",
    "decision",
    "indicate",
    "trigger_to_indicator",
)
TARGET_MEDIAN_MS = 150.0
TARGET_RSS_MB = 250.0


def _stills(folder: Path, size: tuple[int, int] = STILL_SIZE, n: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("still-*.jpg"):
        if not old.name.startswith(f"still-{size[0]}x{size[1]}-"):
            old.unlink()  # a workdir reused at another size
    for i in range(n):
        path = folder / f"still-{size[0]}x{size[1]}-{i}.jpg"
        if not path.exists():
            img = make_smear(*size, n_wbc=6, n_blasts=6 * (i % 2), px_per_um=12.0, seed=i)
            bgr = cv2.cvtColor(img.image, cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])


def _config(work: Path, bundle: Path, px_per_um: float | None = None) -> Path:
    cfg = work / "bench.toml"
    calibration = "" if px_per_um is None else f"px_per_um = {px_per_um}\n"
    cfg.write_text(
        f'[paths]\nstate_dir = "{work / "state"}"\nbundle = "{bundle.absolute()}"\n'
        f'[camera]\nbackend = "replay"\n{calibration}'
        f'[camera.replay]\nfolder = "{work / "stills"}"\n'
        '[gpio]\npin_factory = "mock"\n[indicator]\nbeep = false\n'
        '[retention]\nmin_free_mb = 10\n[daemon]\nlog_level = "warning"\n'
        "[web]\nenabled = false\n"
    )
    return cfg


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def parse_size(text: str) -> tuple[int, int]:
    """ "WIDTHxHEIGHT" -> (width, height), each 64..8192 px."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must be WIDTHxHEIGHT, e.g. 4056x3040, got {text!r}") from None
    if not (64 <= w <= 8192 and 64 <= h <= 8192):
        raise ValueError(f"size must be 64..8192 px each way, got {text!r}")
    return w, h


def bench_daemon(
    bundle: Path,
    *,
    captures: int = 40,
    workdir: Path | None = None,
    size: tuple[int, int] = STILL_SIZE,
    px_per_um: float | None = None,
) -> int:
    """Run the benchmark on stills of `size` (width, height); print its figures; exit code.
    `px_per_um`: the rig's calibration in the daemon's config (the stills are 12 px/um)."""
    with tempfile.TemporaryDirectory(prefix="leukoscope-bench-") as tmp:
        work = Path(workdir or tmp)
        print(f"generating {size[0]}x{size[1]} replay stills in {work / 'stills'}")
        _stills(work / "stills", size)
        cfg = _config(work, bundle, px_per_um)
        sock = work / "state" / "control.sock"
        proc = subprocess.Popen(
            [sys.executable, "-m", "leukoscope.cli.main", "run", "--config", str(cfg)]
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if request(sock, {"cmd": "status"}, 2)["state"]["phase"] == "ready":
                        break
                except ControlError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    print("error: the daemon did not become ready", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            rows = []
            load_start = os.getloadavg()[0]
            for i in range(captures + 3):
                reply = request(sock, {"cmd": "capture"}, 60)
                if not reply.get("ok"):
                    print(f"error: capture failed: {reply}", file=sys.stderr)
                    return 1
                if i >= 3:  # the first captures warm caches up
                    rows.append(reply["result"])
            rss = _peak_rss_mb(proc.pid)
            load_end = os.getloadavg()[0]
        finally:
            proc.terminate()
            proc.wait(30)
    outcomes = sorted({r["outcome"] for r in rows})
    print(
        f"\n{len(rows)} captures of {size[0]}x{size[1]} JPEG stills, outcomes "
        f"{outcomes}, model {rows[0]['model_name']} {rows[0]['model_version']}"
    )
    print(_decoded(rows, size, px_per_um))
    print(f"{'stage':24s}{'median ms':>12s}{'p95 ms':>10s}")
    for stage in (*STAGES, "encode"):
        vals = [float(r["timings_ms"].get(stage, 0.0)) for r in rows]
        print(f"{stage:24s}{statistics.median(vals):12.1f}{_pct(vals, 0.95):10.1f}")
    store = [float(r["store_ms"]) for r in rows]
    print(
        f"{'store (after indicator)':24s}{statistics.median(store):12.1f}{_pct(store, 0.95):10.1f}"
    )
    total = [float(r["timings_ms"]["trigger_to_indicator"]) for r in rows]
    median = statistics.median(total)
    fixed, per_cell = without_inference(rows)
    print(
        f"\nload average (1 min) {load_start:.2f} at the start, {load_end:.2f} at the end "
        f"({os.cpu_count()} CPUs): other work on the machine skews these times"
    )
    print(
        f"trigger to indicator: median {median:.1f} ms (target < {TARGET_MEDIAN_MS:.0f}), "
        f"p95 {_pct(total, 0.95):.1f} ms; peak RSS {rss:.0f} MB (target < {TARGET_RSS_MB:.0f})"
    )
    crops_per_cell = _per_cell(rows, "crops")
    crops = statistics.median(float(r["timings_ms"].get("crops", 0)) for r in rows)
    within = cells_within(TARGET_MEDIAN_MS, fixed - crops, per_cell + crops_per_cell)
    print(
        f"without inference: median {fixed:.1f} ms; per white cell: inference {per_cell:.2f} ms, "
        f"crops {crops_per_cell:.2f} ms; "
        + (
            f"a field with at most {within} white cells meets the {TARGET_MEDIAN_MS:.0f} ms target"
            if within > 0
            else f"no field meets the {TARGET_MEDIAN_MS:.0f} ms target"
        )
    )
    return 0


def _decoded(rows: list[dict[str, Any]], size: tuple[int, int], px_per_um: float | None) -> str:
    """The size the daemon decoded the stills at, as its records say (cells mode)."""
    calibration = "no calibration" if px_per_um is None else f"calibrated {px_per_um} px/um"
    sizes = {tuple((r.get("cells") or {}).get("image_size") or ()) for r in rows} - {()}
    if len(sizes) != 1:
        return f"{calibration}; decoded size not recorded"
    w, h = sizes.pop()
    at = "full size" if (w, h) == size else f"{w}x{h}, reduced"
    return f"{calibration}; stills decoded at {at}"


def without_inference(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Median trigger to indicator less inference, and median inference per classified cell
    (ms), from the daemon's capture results."""
    fixed = [
        float(r["timings_ms"]["trigger_to_indicator"]) - float(r["timings_ms"].get("inference", 0))
        for r in rows
    ]
    return statistics.median(fixed), _per_cell(rows, "inference")


def _per_cell(rows: list[dict[str, Any]], stage: str) -> float:
    """Median time of `stage` per classified cell over the captures that classified any."""
    per_cell = [
        float(r["timings_ms"].get(stage, 0)) / n
        for r in rows
        if (n := int((r.get("cells") or {}).get("n_classified", 0))) > 0
    ]
    return statistics.median(per_cell) if per_cell else 0.0
