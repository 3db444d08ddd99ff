"""Benchmark cell analysis of a 5-megapixel still, stage by stage (prints figures; not a test).

    leukoscope bench-cells [--image PHOTO] [--bundle BUNDLE] [--threads 1] [--runs 15]

Stages: JPEG decode (full size for reference, and at half size, which is what the
pipeline uses: a 24 um crop still has more than 128 pixels across at 5 px/um), scale
from red cells, nucleus detection, crops, and, when a bundle is given, one inference per
crop with that bundle's model (a stand-in until the cell classifier ships).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from leukoscope.bench import still_jpeg
from leukoscope.cells import crop_cells, detect_white_cells, estimate_scale
from leukoscope.imageio import load_image

#: The issue's budget for the whole cell analysis of one still (ms, median).
BUDGET_MS = 300.0
#: Decode at least this size (JPEG draft mode picks 1/2 of a 2592x1944 still).
DECODE_MIN_SIZE = (1280, 960)


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run(
    jpeg: bytes, runs: int, bundle_dir: Path | None, threads: int = 1
) -> list[tuple[str, float]]:
    """Median milliseconds per stage, in pipeline order, then the total."""
    rgb = load_image(jpeg, min_size=DECODE_MIN_SIZE)
    scale = estimate_scale(rgb)
    det = detect_white_cells(rgb, px_per_um=scale.px_per_um)
    out_px = 128
    infer: Callable[[np.ndarray], object] | None = None
    if bundle_dir is not None:
        from leukoscope.bundle import load_bundle

        clf = load_bundle(bundle_dir, num_threads=threads).classifier
        out_px = clf.input_shape[1]
        if clf.input_shape[1] != clf.input_shape[2]:
            raise SystemExit(f"bundle input {clf.input_shape} is not square")

        def infer(batch: np.ndarray) -> object:
            return [clf.predict(c.astype(np.float32) / 255.0) for c in batch]

    stages = [
        ("decode, full size (reference, not in total)", lambda: load_image(jpeg)),
        ("decode, half size", lambda: load_image(jpeg, min_size=DECODE_MIN_SIZE)),
        ("scale from red cells", lambda: estimate_scale(rgb)),
        ("detect nuclei", lambda: detect_white_cells(rgb, px_per_um=scale.px_per_um)),
        (
            f"crop {len(det.cells)} cells to {out_px}x{out_px}",
            lambda: crop_cells(
                rgb, det.cells, scale.px_per_um, out_px=out_px, background=det.background_rgb
            ),
        ),
    ]
    crops = crop_cells(rgb, det.cells, scale.px_per_um, out_px=out_px)
    if infer is not None:
        stages.append(
            (f"inference, {len(crops)} crops one by one, {threads} thread(s)", lambda: infer(crops))
        )

    def total() -> object:
        img = load_image(jpeg, min_size=DECODE_MIN_SIZE)
        d = detect_white_cells(img)
        c = crop_cells(img, d.cells, d.scale.px_per_um, out_px=out_px, background=d.background_rgb)
        return infer(c) if infer is not None else c

    out = [(name, _median_ms(fn, runs)) for name, fn in stages]
    out.append(("total (decode half size .. last stage)", _median_ms(total, runs)))
    return out


def print_bench(image: Path | None, bundle: Path | None, threads: int, runs: int) -> int:
    """Run the stages and print the figures as Markdown."""
    if image is not None:
        full = load_image(image)  # refused by name: missing, empty, a pipe, not an image
        jpeg = image.read_bytes()
    else:
        jpeg = still_jpeg()
        full = load_image(jpeg)
    rgb = load_image(jpeg, min_size=DECODE_MIN_SIZE)
    det = detect_white_cells(rgb)
    rows = run(jpeg, runs, bundle, threads)
    print("# leukoscope cell analysis bench\n")
    print(f"- image: {image or 'synthetic still'}, {full.shape[1]}x{full.shape[0]},")
    print(f"  analysed at {rgb.shape[1]}x{rgb.shape[0]}; {det.scale.px_per_um:.2f} px/um there;")
    print(f"  {len(det.cells)} white cells found")
    if bundle:
        print(f"- model: {bundle} (a stand-in for the cell classifier)")
    print(
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}; "
        f"load average {os.getloadavg()[0]:.2f}; median of {runs} runs\n"
    )
    print("| stage | median ms |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")
    total = rows[-1][1]
    verdict = "within" if total < BUDGET_MS else "OVER"
    print(f"\n{verdict} the {BUDGET_MS:.0f} ms budget (the decision step is not built yet)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line (also `leukoscope bench-cells`)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, default=None, help="a photo (default: synthetic 5 MP)")
    p.add_argument("--bundle", type=Path, default=None, help="time inference on each crop")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads")
    p.add_argument("--runs", type=int, default=15)
    args = p.parse_args(argv)
    return print_bench(args.image, args.bundle, args.threads, args.runs)


if __name__ == "__main__":
    sys.exit(main())
