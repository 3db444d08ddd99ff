"""`leukoscope bench`: how long one 5-megapixel still takes, stage by stage, and peak memory.

A benchmark prints numbers; it is not a timed test. Medians of repeated runs, measured
side by side in one process so ratios compare like with like.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from leukoscope.analysis.analysers import WholeFieldAnalyser
from leukoscope.analysis.preprocess import filter_paper, preprocess, resize
from leukoscope.core.errors import BundleError
from leukoscope.core.imageio import load_image
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import load_bundle

#: The issue's target for decode + preprocess + int8 inference, one thread (ms).
TARGET_TOTAL_MS = 40.0


def _median_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm-up: first calls pay for allocation and caches
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def jpeg_bytes(rgb: np.ndarray, quality: int = 92) -> bytes:
    """An RGB image as JPEG bytes, as a camera would hand it over."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def still_jpeg(width: int = 2592, height: int = 1944, quality: int = 92) -> bytes:
    """A synthetic 5-megapixel smear still as JPEG bytes (what a Pi camera produces)."""
    return jpeg_bytes(
        make_smear(width, height, n_wbc=6, n_blasts=4, px_per_um=9.0, seed=5).image, quality
    )


def _reset_peak_rss() -> bool:
    """Forget the peak so far (Linux), so generating the test image is not counted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux and never resets.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_bench(bundle_dir: Path, runs: int = 20) -> dict[str, Any]:
    """Measure every stage; return the figures as a dict."""
    jpeg = still_jpeg()
    _reset_peak_rss()
    load_1min = os.getloadavg()[0]
    b1 = load_bundle(bundle_dir, num_threads=1)
    analyser = b1.analyser
    if not isinstance(analyser, WholeFieldAnalyser):
        raise BundleError(
            f"{bundle_dir}: a {b1.manifest.analysis_mode!r} bundle; this bench times the "
            f"whole-field pipeline: use `leukoscope bench-cells --bundle {bundle_dir}`"
        )
    b2 = load_bundle(bundle_dir, num_threads=2)
    params = b1.manifest.preprocess
    reduced = load_image(jpeg, min_size=params.resize)
    full = load_image(jpeg)
    x = preprocess(reduced, params)

    def paper_order_full_decode() -> object:
        return resize(filter_paper(resize(full, params.resize), params), params.input_size)

    def filter_at_full_size() -> object:
        return resize(resize(filter_paper(full, params), params.resize), params.input_size)

    def total() -> object:
        return analyser.predict(analyser.decode(jpeg))

    stages: dict[str, tuple[float, float]] = {
        "decode (reduced JPEG decode)": _median_ms(
            lambda: load_image(jpeg, min_size=params.resize), runs
        ),
        "decode (full size, for reference)": _median_ms(lambda: load_image(jpeg), runs),
        "preprocess": _median_ms(lambda: preprocess(reduced, params), runs),
        "inference, 1 thread": _median_ms(lambda: b1.classifier.predict(x), runs),
        "inference, 2 threads": _median_ms(lambda: b2.classifier.predict(x), runs),
        "total: decode + preprocess + inference (1 thread)": _median_ms(total, runs),
        "paper order: resize to 256 then filter (from full decode)": _median_ms(
            paper_order_full_decode, runs
        ),
        "filter at full size then resize": _median_ms(filter_at_full_size, runs),
    }
    ratio = (
        stages["filter at full size then resize"][0]
        / stages["paper order: resize to 256 then filter (from full decode)"][0]
    )
    peak_mib = _peak_rss_mib()
    total_ms = stages["total: decode + preprocess + inference (1 thread)"][0]
    return {
        "bundle": f"{b1.manifest.name} {b1.manifest.version}",
        "runtime": b1.classifier.runtime,
        "image": f"{full.shape[1]}x{full.shape[0]} JPEG, {len(jpeg)} bytes (synthetic)",
        "runs": runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, numpy {np.__version__}",
        "load_average_at_start": round(load_1min, 2),
        "stages_ms": {
            k: {"median": round(v[0], 2), "p95": round(v[1], 2)} for k, v in stages.items()
        },
        "full_size_filter_over_paper_order": round(ratio, 2),
        "peak_rss_mib": round(peak_mib, 1),
        "target_total_ms": TARGET_TOTAL_MS,
        "meets_target": total_ms < TARGET_TOTAL_MS,
    }


def format_report(result: dict[str, Any]) -> str:
    """The figures as a Markdown report."""
    lines = [
        "# leukoscope bench",
        "",
        f"- bundle: {result['bundle']} on {result['runtime']}",
        f"- image: {result['image']}",
        f"- machine: {result['machine']}; {result['runs']} runs per stage; "
        f"load average {result['load_average_at_start']} at start (other work skews timings)",
        "",
        "| stage | median ms | p95 ms |",
        "|---|---:|---:|",
    ]
    for name, v in result["stages_ms"].items():
        lines.append(f"| {name} | {v['median']:.2f} | {v['p95']:.2f} |")
    lines += [
        "",
        f"- filtering at full size costs {result['full_size_filter_over_paper_order']}x "
        "the paper's order (resize to 256x256, then filter)",
        f"- peak RSS while measuring (both interpreters, a full-size decode): "
        f"{result['peak_rss_mib']} MiB",
        f"- target: total under {result['target_total_ms']} ms median with one thread: "
        + ("met" if result["meets_target"] else "NOT met"),
    ]
    return "\n".join(lines) + "\n"


def main(bundle_dir: Path, runs: int, report: Path | None) -> int:
    """Run, print, and optionally write the report (Markdown, with a JSON twin)."""
    if report is not None:  # an unusable --report path fails now, not after the runs
        report.parent.mkdir(parents=True, exist_ok=True)
    result = run_bench(bundle_dir, runs)
    publish(format_report(result), result, report)
    return 0


def publish(text: str, result: dict[str, Any], report: Path | None) -> None:
    """Print a bench's Markdown; with `report`, write it there and its figures beside as JSON."""
    print(text, end="")
    if report is not None:
        report.write_text(text, encoding="utf-8")
        report.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"report written to {report}")
