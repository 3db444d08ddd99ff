"""`leukoscope classify-cells`: the cell classifier alone, on images of one white cell each.

A lab checks the model on its own labelled cells (cut by hand, or exported by a cell
analyser): each image holds one white cell near its centre. The cell is cropped as the
appliance crops a field's cells (`analysis.single_cell`), classified by the bundle's cell
model, and called a blast at the bundle's `cell_cut`. The scale: `--px-per-um`, else the
red cells around the cell, else the image is taken as the bundle's `crop_um` wide (the
output says so: a crop at the wrong scale shows the cell too big or too small).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from leukoscope.analysis.analysers import CellAnalyser
from leukoscope.analysis.cells import normalise
from leukoscope.analysis.single_cell import centre_cell
from leukoscope.cli.args import add_image_arguments, file_error_line, one_line
from leukoscope.core.errors import LeukoscopeError
from leukoscope.core.imageio import iter_image_paths
from leukoscope.model.bundle import load_bundle

#: What each scale source means, for the text output.
SCALE_NOTES = {
    "given": "scale given",
    "red-cells": "scale from red cells",
    "image-width": "no red cells measured: image taken as {crop_um:g} um wide",
}


def cmd_classify_cells(args: argparse.Namespace) -> int:
    """Classify single-cell images; one bad file does not stop the others."""
    bundle = load_bundle(args.bundle, num_threads=args.threads)
    m = bundle.manifest
    analyser = bundle.analyser
    if not isinstance(analyser, CellAnalyser):
        print(
            f"error: classify-cells needs a cells bundle ({bundle.label} is {m.analysis_mode})",
            file=sys.stderr,
        )
        return 2
    paths = iter_image_paths(args.paths)
    if not paths:
        print("error: no image files found in the given paths", file=sys.stderr)
        return 2
    settings = analyser.settings
    failures = 0
    for path in paths:
        try:
            rgb = analyser.decode(path)
            cc = centre_cell(rgb, settings, analyser.params, px_per_um=args.px_per_um)
            p = float(analyser.blast_probabilities(normalise(cc.crop[None], analyser.params))[0])
        except LeukoscopeError as exc:
            failures += 1
            if args.json:
                print(json.dumps({"file": str(path), "error": str(exc)}), flush=True)
            else:
                print(file_error_line(path, exc), flush=True)
            continue
        blast = p >= settings.cell_cut
        if args.json:
            row: dict[str, Any] = {
                "file": str(path),
                "p_blast": round(p, 4),
                "blast": blast,
                "model": m.name,
                "model_version": m.version,
                "px_per_um": round(cc.px_per_um, 3),
                "scale_source": cc.scale_source,
                "nucleus_found": cc.detected,
            }
            print(json.dumps(row), flush=True)
        else:
            note = SCALE_NOTES.get(cc.scale_source, cc.scale_source).format(
                crop_um=settings.crop_um
            )
            if not cc.detected:
                note += "; no nucleus found near the centre: cropped at the centre"
            call = "blast" if blast else "not blast"
            print(
                one_line(
                    f"{path}: {call} (p_blast {p:.3f}, cut {settings.cell_cut:.3f}; "
                    f"{note}) [{m.name} {m.version}]"
                ),
                flush=True,
            )
    if failures:
        print(f"{failures} of {len(paths)} file(s) could not be classified", file=sys.stderr)
        return 1
    return 0


def add_subcommands(sub: Any) -> None:
    """Register `classify-cells` on the `leukoscope` command's subparsers."""
    p = sub.add_parser("classify-cells", help="classify images of one white cell each")
    p.add_argument("paths", nargs="+", type=Path, metavar="FILE|DIR")
    add_image_arguments(
        p,
        bundle_help="a cells bundle folder",
        scale_help="the images' scale in pixels per micrometre (default: measured from the "
        "red cells, else the image taken as the bundle's crop_um wide)",
    )
    p.set_defaults(func=cmd_classify_cells)
