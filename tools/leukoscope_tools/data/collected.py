"""Reviewed cells brought home from the field (`tools/ansible/collect.yml`) as a training source.

`collect.yml` leaves one folder per Pi:

    collected/<host>/clinic.json               {"host": ..., "clinic": ...} from the inventory
    collected/<host>/batches/<stamp>/labels.csv   one row per reviewed cell (`leukoscope export`)
    collected/<host>/batches/<stamp>/cells/*.png  the cell cut from its photo (32 um square)

Each clinic is its own source, `clinic:<name>`, so a cross-source run can hold one clinic
out (leave-one-clinic-out). A cell reviewed twice keeps its latest reading (batches are
read oldest first). Every cell keeps where its label came from: the clinic and Pi, the
sample, the reviewer and when, and the model whose call the reviewer confirmed or
corrected. Groups are samples (one patient's smear), so a split never puts one patient's
cells on both sides.

`model_crop()` turns an exported crop into what the device feeds a cells model: the
centre `CellSettings.crop_um` at the model's input size, white-balanced by the crop's own
glass (the field's is not exported), then the paper's filters.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukoscope.analysis.cells import CellSettings, white_balance
from leukoscope.analysis.detection import WhiteCell, background_colour, crop_cells
from leukoscope.analysis.preprocess import PreprocessParams, filter_paper
from leukoscope.core.imageio import load_image

#: The label a reviewer gives, as the cell set's y_cell.
LABELS = {"blast": 1, "not-blast": 0}
#: A clinic's source name in the cell set.
SOURCE_PREFIX = "clinic:"
#: Split shares by sample group (as the public sets': 60/20/20), seeded by the group's name.
SPLITS = (("train", 0.6), ("val", 0.8), ("test", 1.0))


@dataclass(frozen=True)
class CollectedCell:
    """One reviewed cell with its crop and where its label came from."""

    crop: Path
    y_cell: int  # 1 blast, 0 other (the reviewer's reading)
    source: str  # clinic:<name>
    clinic: str
    host: str
    sample_id: str
    record_id: int
    cell_index: int
    reviewer: str
    reviewed_at: str
    model_blast: bool  # what the model called it
    model_name: str
    model_version: str
    model_sha256: str
    image_sha256: str
    crop_px_per_um: float

    @property
    def group(self) -> str:
        """The split group: one patient's sample at one clinic."""
        return f"{self.source}:{self.host}:{self.sample_id}"

    @property
    def split(self) -> str:
        """train, val or test, fixed by the group (the same on every run and machine)."""
        u = int(hashlib.sha256(self.group.encode()).hexdigest()[:8], 16) / 0x1_0000_0000
        return next(name for name, upto in SPLITS if u < upto)

    def provenance(self) -> dict[str, str]:
        """Where the label came from, for a training report's table."""
        return {
            "crop": str(self.crop), "source": self.source, "host": self.host,
            "sample_id": self.sample_id, "record_id": str(self.record_id),
            "cell_index": str(self.cell_index), "label": "blast" if self.y_cell else "not-blast",
            "reviewer": self.reviewer, "reviewed_at": self.reviewed_at,
            "model_blast": str(int(self.model_blast)), "model": f"{self.model_name} "
            f"{self.model_version} ({self.model_sha256[:12]})",
        }  # fmt: skip


def _host_cells(host_dir: Path) -> list[CollectedCell]:
    meta = json.loads((host_dir / "clinic.json").read_text())
    clinic, host = str(meta["clinic"]), str(meta.get("host", host_dir.name))
    latest: dict[tuple[int, int], CollectedCell] = {}
    for batch in sorted(p for p in (host_dir / "batches").iterdir() if p.is_dir()):
        with (batch / "labels.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                if not row["file"] or row["label"] not in LABELS:
                    continue  # the photo was gone when it was exported: no crop
                key = (int(row["record_id"]), int(row["cell_index"]))
                latest[key] = CollectedCell(
                    crop=batch / row["file"],
                    y_cell=LABELS[row["label"]],
                    source=SOURCE_PREFIX + clinic,
                    clinic=clinic,
                    host=host,
                    sample_id=row["sample_id"].removeprefix("'"),
                    record_id=key[0],
                    cell_index=key[1],
                    reviewer=row["reviewer"].removeprefix("'"),
                    reviewed_at=row["reviewed_at"],
                    model_blast=row["model_blast"] == "1",
                    model_name=row["model_name"],
                    model_version=row["model_version"],
                    model_sha256=row["model_sha256"],
                    image_sha256=row["image_sha256"],
                    crop_px_per_um=float(row["crop_px_per_um"]),
                )
    return [latest[k] for k in sorted(latest)]


def read_collected(root: Path) -> list[CollectedCell]:
    """Every reviewed cell with a crop under `root` (collect.yml's `collected/`), by Pi."""
    cells: list[CollectedCell] = []
    for host_dir in sorted(p for p in Path(root).iterdir() if (p / "clinic.json").is_file()):
        if (host_dir / "batches").is_dir():
            cells.extend(_host_cells(host_dir))
    return cells


def sources(cells: list[CollectedCell]) -> dict[str, int]:
    """Cells per clinic source: the folds of a leave-one-clinic-out evaluation."""
    out: dict[str, int] = {}
    for c in cells:
        out[c.source] = out.get(c.source, 0) + 1
    return dict(sorted(out.items()))


def model_crop(
    cell: CollectedCell, pre: PreprocessParams, settings: CellSettings | None = None
) -> np.ndarray:
    """The uint8 crop (h x w x 3) a cells model sees for this cell, before normalisation."""
    settings = settings or CellSettings()
    rgb = load_image(cell.crop)
    width = pre.input_size[0]
    bg = background_colour(rgb)
    centre = WhiteCell(rgb.shape[1] / 2.0 - 0.5, rgb.shape[0] / 2.0 - 0.5, 0.0, 0.0)
    background = (float(bg[0]), float(bg[1]), float(bg[2]))
    crop = crop_cells(rgb, [centre], cell.crop_px_per_um, size_um=settings.crop_um,
                      out_px=width, background=background)  # fmt: skip
    crop = white_balance(crop, background, settings.glass_level)[0]
    out: np.ndarray = filter_paper(crop, pre)
    return out
