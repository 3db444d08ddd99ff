"""Benchmark the cell analysis of a 5-megapixel still, stage by stage (prints figures; not a test).

    leukoscope bench-cells --bundle CELLS_BUNDLE [--image PHOTO] [--threads 1]
        [--runs 15] [--px-per-um SCALE] [--report report.md]

The stages are the device's own, as `pipeline.analyse` runs them: the field of view (and
flat field when the photo needs it), the scale from the red cells, the quality gate,
white-cell detection, the crops (cut, white-balanced, filtered, normalised), one batched
int8 inference of all crops, and the decision (slide features, score, boxes). The
budget (issue 14), 120 ms median, is for all of them with the JPEG's decode (at full
size, as cells mode does; at half size where the calibration allows, as the daemon does).

Inference grows with the number of white cells, and so do the crops; the rest hardly
does. So the bench also prints the analysis without inference (decode included),
inference and crops per cell at the bench's thread count, and so the most white cells
a field may have and still meet the budget (`cells_within`).

`--px-per-um` is the rig's calibration, used as the daemon uses it (`pipeline.Rig`): the
analysis runs at that scale and the red cells only check it; where half of it still fills
the crops (`pipeline.decode_reduction`) the still is decoded and analysed at half size.

Without --image the still is synthetic: 2592x1944 at 6 px/um (the scale of an ALL-IDB1
photo) with about 50 white cells, a busy field.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from leukoscope.analysis.analysers import CellAnalyser
from leukoscope.analysis.detection import estimate_scale
from leukoscope.analysis.field_of_view import prepare_field
from leukoscope.bench.whole_field import jpeg_bytes, publish
from leukoscope.core.errors import BundleError, ImageError
from leukoscope.core.imageio import load_image
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import Bundle, load_bundle
from leukoscope.pipeline import Rig, analyse, decode_reduction

#: The issue's budget for the whole analysis of one still with its decode (ms, median).
BUDGET_MS = 120.0
#: The analysis stages, as `pipeline.analyse` times them.
STAGES = ("field", "scale", "quality", "detect", "crops", "inference", "decision")
STAGE_NAMES = {
    "field": "field of view (and flat field when needed)",
    "scale": "scale from the red cells",
    "quality": "quality gate",
    "detect": "white-cell detection",
    "crops": "crops (cut, white balance, filters, normalise)",
    "inference": "inference, all crops in one batch",
    "decision": "decision (features, score, boxes)",
}


def busy_still_jpeg(width: int = 2592, height: int = 1944, quality: int = 92) -> bytes:
    """A synthetic 5 MP smear with many white cells (36 mature, 16 blasts), as JPEG bytes."""
    img = make_smear(width, height, n_wbc=36, n_blasts=16, px_per_um=6.0, seed=5).image
    return jpeg_bytes(img, quality)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def cells_within(budget_ms: float, fixed_ms: float, per_cell_ms: float) -> int:
    """The most white cells whose inference still fits in `budget_ms` after `fixed_ms`
    (the stages that do not grow with the cells), at `per_cell_ms` each; 0 when none do."""
    if per_cell_ms <= 0 or fixed_ms >= budget_ms:
        return 0
    return int((budget_ms - fixed_ms) // per_cell_ms)


def run_bench(
    jpeg: bytes,
    bundle: Bundle,
    runs: int,
    *,
    px_per_um: float | None = None,
) -> dict[str, Any]:
    """Time the gated cell analysis `runs` times (after one warm-up); medians per stage."""
    analyser = bundle.analyser
    if not isinstance(analyser, CellAnalyser):
        raise BundleError("bench-cells needs a cells bundle")
    rgb = load_image(jpeg)
    # As the daemon does: a calibrated rig may decode at half size, analysed at half scale.
    reduction = decode_reduction(bundle, Rig(px_per_um=px_per_um))
    rig = Rig(px_per_um=px_per_um).reduced(reduction)
    first = analyse(load_image(jpeg, reduce=reduction), bundle, None, rig=rig)  # warm-up
    if first.cells is None or first.verdict.value == "retake":
        reasons = ", ".join(first.retake_reasons)
        raise ImageError(f"the bench photo is a retake ({reasons}): nothing to time")
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    totals, decodes, decodes_other, with_decode, without_inference = [], [], [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        image = load_image(jpeg, reduce=reduction)
        t1 = time.perf_counter()
        result = analyse(image, bundle, None, rig=rig)
        t2 = time.perf_counter()
        decodes.append((t1 - t0) * 1000)
        totals.append((t2 - t1) * 1000)
        with_decode.append((t2 - t0) * 1000)
        without_inference.append((t2 - t0) * 1000 - result.timings_ms.get("inference", 0.0))
        for s in STAGES:
            per_stage[s].append(result.timings_ms.get(s, 0.0))
        t0 = time.perf_counter()
        load_image(jpeg, reduce=3 - reduction)  # the other size, for comparison
        decodes_other.append((time.perf_counter() - t0) * 1000)
    scale_ms = []
    if px_per_um is None:
        for _ in range(runs):
            t0 = time.perf_counter()
            estimate_scale(prepare_field(rgb).rgb)
            scale_ms.append((time.perf_counter() - t0) * 1000)
    report = first.cells
    total = _median(totals)
    fixed = _median(without_inference)
    # Per cell: the whole inference (its small fixed cost included), and the crops'.
    n = max(1, report.n_classified)
    per_cell = round(statistics.median(per_stage["inference"]) / n, 3)
    crops = statistics.median(per_stage["crops"])
    crops_per_cell = round(crops / n, 3)
    return {
        "input": list(analyser.params.input_size),
        "still_size": [rgb.shape[1], rgb.shape[0]],
        "decoded_at": "half size" if reduction == 2 else "full size",
        "image_size": list(report.image_size),
        "px_per_um": round(report.px_per_um, 3),
        "scale_source": report.scale_source,
        "n_found": report.n_found,
        "n_classified": report.n_classified,
        "runs": runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, numpy {np.__version__}",
        "load_average": round(os.getloadavg()[0], 2),
        "stages_ms": {s: _median(per_stage[s]) for s in STAGES},
        "of_which_scale_ms": _median(scale_ms) if scale_ms else None,
        "total_ms": total,
        "decode_full_ms": _median(decodes if reduction == 1 else decodes_other),
        "decode_half_ms": _median(decodes if reduction == 2 else decodes_other),
        "decode_ms": _median(decodes),
        "total_with_decode_ms": _median(with_decode),
        "without_inference_ms": fixed,
        "inference_per_cell_ms": per_cell,
        "crops_per_cell_ms": crops_per_cell,
        "cells_within_budget": cells_within(BUDGET_MS, fixed - crops, per_cell + crops_per_cell),
        "budget_ms": BUDGET_MS,
        "within_budget": _median(with_decode) < BUDGET_MS,
    }


def format_report(r: dict[str, Any], image: str) -> str:
    """The figures as Markdown."""
    w, h = r["still_size"]
    source = r["scale_source"]
    if source == "given":
        source = "calibrated, checked by the red cells"
    decoded = r["decoded_at"]
    if r["image_size"] != r["still_size"]:
        decoded += f", {r['image_size'][0]}x{r['image_size'][1]}, as the calibration allows"
    lines = [
        "# leukoscope cell analysis bench",
        "",
        f"- image: {image}, {w}x{h} (decoded at {decoded}); {r['px_per_um']} px/um "
        f"({source}); {r['n_found']} white cells found, {r['n_classified']} classified",
        f"- model: {r['bundle']}, input {r['input'][0]}x{r['input'][1]}, on {r['runtime']}, "
        f"{r['threads']} thread(s)",
        f"- machine: {r['machine']}; load average {r['load_average']} (other work skews "
        f"timings); median of {r['runs']} runs",
        "",
        "| stage | median ms |",
        "|---|---:|",
    ]
    for s in STAGES:
        name = STAGE_NAMES[s]
        if s == "inference":
            name = f"inference, {r['n_classified']} crops in one batch, {r['threads']} thread(s)"
        lines.append(f"| {name} | {r['stages_ms'][s]:.1f} |")
    lines.append(f"| **total: cell analysis** | **{r['total_ms']:.1f}** |")
    lines.append(
        f"| **total with the decode ({r['decoded_at']})** | **{r['total_with_decode_ms']:.1f}** |"
    )
    if r["of_which_scale_ms"] is not None:
        lines.append(
            f"| (of the first stage: scale from red cells) | {r['of_which_scale_ms']:.1f} |"
        )
    lines += [
        f"| JPEG decode, {r['decoded_at']} | {r['decode_ms']:.1f} |",
        _other_decode(r),
        f"| **without inference: decode and every other stage** | "
        f"**{r['without_inference_ms']:.1f}** |",
        f"| inference per white cell, {r['threads']} thread(s) | "
        f"{r['inference_per_cell_ms']:.2f} |",
        f"| crops per white cell | {r['crops_per_cell_ms']:.2f} |",
        "",
        f"{'within' if r['within_budget'] else 'OVER'} the {r['budget_ms']:.0f} ms budget "
        "(decode, field, scale, quality, detection, crops, batched int8 inference, decision)",
        "",
        _cells_sentence(r),
    ]
    return "\n".join(lines) + "\n"


def _other_decode(r: dict[str, Any]) -> str:
    if r["decoded_at"] == "full size":
        return f"| (JPEG decode at half size, for comparison) | {r['decode_half_ms']:.1f} |"
    return f"| (JPEG decode at full size, for comparison) | {r['decode_full_ms']:.1f} |"


def _cells_sentence(r: dict[str, Any]) -> str:
    budget, fixed = r["budget_ms"], r["without_inference_ms"]
    if r["cells_within_budget"] == 0:
        return (
            f"no field meets the {budget:.0f} ms budget at {r['threads']} thread(s): the stages "
            f"without inference alone take {fixed:.1f} ms"
        )
    per_cell = r["inference_per_cell_ms"] + r["crops_per_cell_ms"]
    return (
        f"a field with at most {r['cells_within_budget']} white cells meets the {budget:.0f} ms "
        f"budget at {r['threads']} thread(s) ({fixed:.1f} ms without inference; crops and "
        f"inference {per_cell:.2f} ms per cell)"
    )


def print_bench(
    image: Path | None,
    bundle_dir: Path,
    threads: int,
    runs: int,
    *,
    report: Path | None = None,
    px_per_um: float | None = None,
) -> int:
    """Run the bench, print the figures as Markdown, and write them to `report` if given."""
    jpeg: bytes | None = None
    if image is not None:
        load_image(image)  # refused by name: missing, empty, a pipe, not an image
        jpeg = image.read_bytes()
    if report is not None:  # an unusable --report path fails now, not after the runs
        report.parent.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(bundle_dir, num_threads=threads)
    if not isinstance(bundle.analyser, CellAnalyser):
        raise BundleError(
            f"{bundle_dir}: a {bundle.manifest.analysis_mode} bundle; bench-cells needs a "
            "cells bundle"
        )
    if jpeg is None:
        jpeg = busy_still_jpeg()
    result = {
        "bundle": bundle.label,
        "runtime": bundle.classifier.runtime,
        "threads": bundle.classifier.num_threads,
        **run_bench(jpeg, bundle, runs, px_per_um=px_per_um),
    }
    publish(format_report(result, str(image) if image else "synthetic still"), result, report)
    return 0
