"""`leukoscope export`: what is new on this Pi since the last export, for the fleet's collect.

Reads the record database (no daemon, no web password needed) and writes a folder, or one
`.tar` file when `--out` ends in `.tar`:

    records.csv    every record with an id above --since-record
    labels.csv     every cell reviewed after --since-review: the reviewer's label beside the
                   model's call, the sample, the model that counted it and the crop's scale
    cells/*.png    each reviewed cell cut from its stored photo: a square of CROP_UM
                   micrometres around it at the photo's own resolution (none once retention
                   deleted the photo; its row then has an empty `file`)
    export.json    the cursors to pass next time (`last_record`, `last_review`) and the counts
    SHA256SUMS     `sha256sum -c` checks every file above

It prints one JSON line: the counts, the cursors and `out` (null when nothing is new, and
then nothing is written). Through sudo (the fleet's maintainers, see systemd/
leukoscope.sudoers) the config is the installed one and --out must be a new path in the
incoming folder, so the appliance's user writes nowhere else.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from leukoscope.analysis.detection import WhiteCell, crop_cells
from leukoscope.appliance.records import COLUMNS, Record, RecordReader
from leukoscope.appliance.samples import SampleCell, SampleReader, record_cells
from leukoscope.cli.args import add_config_argument
from leukoscope.config import DEFAULT_CONFIG_PATH, config_path, load_config
from leukoscope.core.errors import LeukoscopeError

#: The side of an exported cell crop in micrometres: more than a cells model's 24 um, so a
#: trainer can cut its own field of view (and shift it) from the same crop.
CROP_UM = 32.0
#: Where, through sudo, the export may write (systemd/leukoscope.tmpfiles).
INCOMING = Path("/var/lib/leukoscope-incoming")
#: records.csv: the record's columns less the per-cell list and the image's local path.
RECORD_COLUMNS = (
    *(c for c in COLUMNS if c not in ("cells", "image_path")),
    "n_found", "n_classified", "n_blasts", "score", "px_per_um",
)  # fmt: skip
LABEL_COLUMNS = (
    "file", "sample_id", "record_id", "cell_index", "label", "reviewer", "reviewed_at",
    "model_blast", "p_blast", "model_name", "model_version", "model_sha256",
    "image_sha256", "crop_um", "crop_px_per_um",
)  # fmt: skip


class ExportError(LeukoscopeError, ValueError):
    """An export that cannot be made (bad --out, unreadable records)."""


@dataclass
class Export:
    """What one export holds: CSV rows and the crops, named by their place in the folder."""

    records: list[list[str]] = field(default_factory=list)
    labels: list[list[str]] = field(default_factory=list)
    crops: dict[str, bytes] = field(default_factory=dict)
    last_record: int = 0
    last_review: str = ""
    missing_photos: int = 0


def _cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True)
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _record_row(rec: Record) -> list[str]:
    cells = rec.cells or {}
    row = {**rec.to_json(), **{k: cells.get(k) for k in RECORD_COLUMNS[-5:]}}
    return [_cell(row.get(c)) for c in RECORD_COLUMNS]


def new_records(reader: RecordReader, since: int) -> Iterator[Record]:
    """Records with an id above `since`, oldest first."""
    newer = []
    for rec in reader.export():  # newest first: stop at the first one already exported
        if rec.id <= since:
            break
        newer.append(rec)
    return reversed(newer)


def cell_crop(photo: np.ndarray, record: Record, cell: SampleCell) -> tuple[bytes, float] | None:
    """A square of CROP_UM around a cell at the photo's resolution, as PNG, and its pixels
    per micrometre; None when the record lacks the scale or the cell its centre."""
    cells = record.cells or {}
    data = record_cells(record)[cell.cell_index]
    size, scale = cells.get("image_size"), cells.get("px_per_um")
    x, y = data.get("x"), data.get("y")
    if not (isinstance(scale, int | float) and scale > 0 and isinstance(x, int | float)
            and isinstance(y, int | float)):  # fmt: skip
        return None
    # The boxes refer to the analysed image; the stored photo may be another size.
    s = photo.shape[1] / float(size[0]) if isinstance(size, list) and size and size[0] else 1.0
    px_per_um = float(scale) * s
    side = max(2, round(CROP_UM * px_per_um))
    nucleus = WhiteCell(float(x) * s, float(y) * s, 0.0, 0.0)
    crop = crop_cells(photo, [nucleus], px_per_um, size_um=CROP_UM, out_px=side)[0]
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, "PNG")
    return buf.getvalue(), px_per_um


def collect(reader: RecordReader, since_record: int, since_review: str) -> Export:
    """Everything new since the two cursors (record id, review time)."""
    out = Export(last_record=since_record, last_review=since_review)
    for rec in new_records(reader, since_record):
        out.records.append(_record_row(rec))
        out.last_record = rec.id
    photos: dict[Path, np.ndarray | None] = {}
    for sample, cell, path in SampleReader(reader).reviewed():
        review = cell.review
        if review is None or review.reviewed_at <= since_review:
            continue
        record = reader.get(cell.record_id)
        if record is None:
            continue
        name, crop_px = "", None
        if path is not None and path not in photos:
            photos.clear()  # one photo in memory at a time: a Pi's memory is small
            try:
                with Image.open(path) as im:
                    photos[path] = np.asarray(im.convert("RGB"))
            except (OSError, ValueError):
                photos[path] = None
        photo = None if path is None else photos.get(path)
        got = None if photo is None else cell_crop(photo, record, cell)
        if got is None:
            out.missing_photos += 1
        else:
            name = f"cells/r{cell.record_id}_c{cell.cell_index}.png"
            out.crops[name], crop_px = got
        out.labels.append(
            [_cell(v) for v in (
                name, sample.id, cell.record_id, cell.cell_index, review.label.value,
                review.reviewer, review.reviewed_at, int(review.model_blast), review.p_blast,
                sample.model_name, sample.model_version, sample.model_sha256,
                record.image_sha256, CROP_UM if name else None,
                None if crop_px is None else round(crop_px, 4),
            )]
        )  # fmt: skip
        out.last_review = max(out.last_review, review.reviewed_at)
    return out


def _csv(header: tuple[str, ...], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def files_of(export: Export, meta: dict[str, Any]) -> dict[str, bytes]:
    """The export's files by relative path, SHA256SUMS last."""
    files = {
        "records.csv": _csv(RECORD_COLUMNS, export.records),
        "labels.csv": _csv(LABEL_COLUMNS, export.labels),
        **export.crops,
        "export.json": (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(),
    }
    sums = "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in sorted(files.items()))
    files["SHA256SUMS"] = sums.encode()
    return files


def write(out: Path, files: dict[str, bytes]) -> None:
    """Write the files to a folder, or a tar when `out` ends in .tar; renamed into place
    when complete, so a cut export never looks like a whole one."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if out.suffix == ".tar":
            part = tmp / out.name
            now = int(datetime.now(UTC).timestamp())
            with tarfile.open(part, "w") as tar:
                for name, data in files.items():
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = len(data), 0o644, now
                    tar.addfile(info, io.BytesIO(data))
            part.chmod(0o644)
            os.replace(part, out)
        else:
            for name, data in files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
            tmp.chmod(0o755)
            os.rename(tmp, out)
            return
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_out(out: Path) -> Path:
    out = out.absolute()
    if out.exists() or out.is_symlink():
        raise ExportError(f"--out {out} exists: give a new path")
    if not out.parent.is_dir():
        raise ExportError(f"--out {out}: no folder {out.parent}")
    # Through the maintainers' sudo rule this runs as the appliance's user, who owns the
    # records and models: it may only add new paths in the incoming folder.
    sudo = "SUDO_USER" in os.environ and os.geteuid() != 0
    if sudo and out.parent.resolve() != INCOMING.resolve():
        raise ExportError(f"through sudo, --out must be a new path in {INCOMING}")
    return out


def cmd_export(args: argparse.Namespace) -> int:
    """Export what is new since the cursors; print one JSON line."""
    if (
        args.config is not None
        and Path(args.config).absolute() != DEFAULT_CONFIG_PATH
        and "SUDO_USER" in os.environ
        and os.geteuid() != 0
    ):
        raise ExportError(f"--config other than {DEFAULT_CONFIG_PATH} is not allowed through sudo")
    out = _check_out(args.out)
    cfg = load_config(config_path(args.config))
    summary: dict[str, Any] = {"out": None}
    if cfg.paths.database.is_file():
        reader = RecordReader(cfg.paths.database, cfg.paths.images_dir)
        try:
            export = collect(reader, args.since_record, args.since_review)
        finally:
            reader.close()
    else:  # no record yet: nothing is new
        export = Export(last_record=args.since_record, last_review=args.since_review)
    summary.update(
        host=socket.gethostname(),
        exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
        since_record=args.since_record,
        since_review=args.since_review,
        last_record=export.last_record,
        last_review=export.last_review,
        records=len(export.records),
        reviews=len(export.labels),
        crops=len(export.crops),
        missing_photos=export.missing_photos,
    )
    if export.records or export.labels:
        write(out, files_of(export, {k: v for k, v in summary.items() if k != "out"}))
        summary["out"] = str(out)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


def add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `export` to the `leukoscope` parser."""
    p = sub.add_parser(
        "export", help="write new records and reviewed cells (CSV, PNG crops, SHA256SUMS)"
    )
    add_config_argument(p)
    p.add_argument("--out", type=Path, required=True, help="a new folder, or FILE.tar")
    p.add_argument(
        "--since-record",
        type=int,
        default=0,
        metavar="ID",
        help="only records with a larger id (the last export's last_record)",
    )
    p.add_argument(
        "--since-review",
        default="",
        metavar="TIME",
        help="only reviews made after this (the last export's last_review)",
    )
    p.set_defaults(func=cmd_export)  # fmt: skip
