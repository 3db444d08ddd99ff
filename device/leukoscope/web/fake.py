"""A StatusSource that behaves like the appliance, for tests: captures take time, produce
records with real JPEG photos, a busy appliance refuses a second capture, faults block.

With `cells_mode`, records carry a per-cell result (CellReport JSON) whose boxes sit on the
white cells drawn in their photo, as a `cells` bundle's would. Samples live in memory
(`leukoscope.web.fake_samples`); in cells mode a capture naming a sample is its field.
`python -m leukoscope.web.fake` serves the pages over such records and samples, to look
at them in development.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image

from leukoscope import __version__
from leukoscope.appliance.records import Record, RecordFilter, RecordPage
from leukoscope.appliance.samples import CellReview, Sample, SampleCell
from leukoscope.config import WebConfig
from leukoscope.core.synthetic import SyntheticSmear, make_smear
from leukoscope.web import create_app
from leukoscope.web.auth import write_password_file
from leukoscope.web.fake_samples import FakeSamples
from leukoscope.web.server import WebServer
from leukoscope.web.source import CaptureLog, CaptureRefusedError, Preview, SamplePage

MODEL = {"name": "fake-model", "version": "1.2.3", "sha256": "ab" * 32}
#: The outcomes fake captures cycle through.
CYCLE = ("no-leukemia-suspected", "leukemia-suspected", "retake", "indeterminate")
#: The leukemia score a fake capture gives each outcome (on the right side of its thresholds).
FAKE_SCORES = {"no-leukemia-suspected": 0.1, "leukemia-suspected": 0.8, "indeterminate": 0.5}
#: The fake photos: their size and scale.
PHOTO_SIZE = (320, 240)
PHOTO_PX_PER_UM = 2.0
#: The side of a cell's box in micrometres (a `cells` bundle's crop_um).
CROP_UM = 24.0


@functools.lru_cache(maxsize=8)
def _smear(
    seed: int, size: tuple[int, int] = PHOTO_SIZE, wbc: int = 2, blasts: int | None = None
) -> SyntheticSmear:
    return make_smear(
        size[0], size[1], n_wbc=wbc, n_blasts=seed % 2 * 2 if blasts is None else blasts,
        px_per_um=PHOTO_PX_PER_UM, seed=seed,
    )  # fmt: skip


@functools.lru_cache(maxsize=8)
def _jpeg(
    seed: int, size: tuple[int, int] = PHOTO_SIZE, wbc: int = 2, blasts: int | None = None
) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_smear(seed, size, wbc, blasts).image).save(buf, "JPEG", quality=85)
    return buf.getvalue()


@dataclass(frozen=True)
class FakePhoto:
    """A fake photo: `wbc` white cells and `blasts` blasts (None: two on odd seeds)."""

    seed: int
    size: tuple[int, int] = PHOTO_SIZE
    wbc: int = 2
    blasts: int | None = None

    def jpeg(self) -> bytes:
        """The photo as JPEG."""
        return _jpeg(self.seed, self.size, self.wbc, self.blasts)

    def cells(self) -> dict[str, Any]:
        """Its per-cell result (`fake_cells`)."""
        return fake_cells(self.seed, self.size, self.wbc, self.blasts)


def fake_cells(
    seed: int, size: tuple[int, int] = PHOTO_SIZE, wbc: int = 2, blasts: int | None = None
) -> dict[str, Any]:
    """A CellReport-shaped result for the fake photo `seed`: a box on each white cell drawn.

    Drawn blasts get a high blast probability and other white cells a low one, so the
    overlay shows both classes.
    """
    smear = _smear(seed, size, wbc, blasts)
    half = CROP_UM * smear.px_per_um / 2
    cells: list[dict[str, Any]] = []
    for i, c in enumerate(c for c in smear.cells if c.kind in ("wbc", "blast")):
        p = (0.82 + 0.03 * i % 0.17) if c.kind == "blast" else (0.04 + 0.05 * i % 0.4)
        box = [
            max(0, round(c.x - half)),
            max(0, round(c.y - half)),
            min(size[0], round(c.x + half)),
            min(size[1], round(c.y + half)),
        ]
        cells.append(
            {
                "x": round(c.x, 1),
                "y": round(c.y, 1),
                "box": box,
                "p_blast": round(min(p, 0.99), 3),
                "blast": p >= 0.5,
                "clump": False,
            }
        )
    n_blasts = sum(1 for c in cells if c["blast"])
    top = sorted((float(c["p_blast"]) for c in cells), reverse=True)[:3]
    return {
        "px_per_um": smear.px_per_um,
        "scale_source": "red-cells",
        "image_size": list(size),
        "n_found": len(cells),
        "n_classified": len(cells),
        "n_blasts": n_blasts,
        "top_k_mean": round(sum(top) / len(top), 3) if top else 0.0,
        "density": round(len(cells) / (size[0] * size[1] / smear.px_per_um**2) * 1e4, 3),
        "blast_fraction": round(n_blasts / len(cells), 3) if cells else 0.0,
        "score": 0.9 if n_blasts else 0.1,
        "cell_cut": 0.5,
        "cells": cells,
    }


def no_cells(size: tuple[int, int] = PHOTO_SIZE) -> dict[str, Any]:
    """The result of a field without white cells (a "no-white-cells" retake carries it)."""
    return {
        "px_per_um": PHOTO_PX_PER_UM,
        "scale_source": "red-cells",
        "image_size": list(size),
        "n_found": 0,
        "n_classified": 0,
        "n_blasts": 0,
        "top_k_mean": 0.0,
        "density": 0.0,
        "blast_fraction": 0.0,
        "score": None,
        "cell_cut": 0.5,
        "cells": [],
    }


class FakeSource:
    """An in-memory appliance with a folder of real images (thread-safe)."""

    def __init__(
        self, images_dir: Path, *, capture_s: float = 0.05, cells_mode: bool = False
    ) -> None:
        self.images_dir = Path(images_dir)
        #: Captures started from the page, to follow each to its record.
        self.captures = CaptureLog()
        #: Captures give per-cell results, as with a `cells` bundle.
        self.cells_mode = cells_mode
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.capture_s = capture_s
        self._lock = threading.Lock()
        self._records: dict[int, Record] = {}
        self._next_id = 1
        self.phase = "ready"
        self.faults: dict[str, str] = {}
        #: The fake clock is trusted unless a test says otherwise (issue 17 clock warning).
        self.clock_trusted = True
        self.result_seq = 0
        self.captures_requested: list[str | None] = []
        self._preview = _jpeg(999, (160, 120))
        self.started = time.time()
        self.samples = FakeSamples(
            self.get_result, (MODEL["name"], MODEL["version"], MODEL["sha256"])
        )

    # --- test helpers ----------------------------------------------------------------------

    def add_record(
        self,
        outcome: str,
        *,
        created: datetime | None = None,
        sample_id: str | None = None,
        p: float | None = 0.5,
        image: bool = True,
        image_deleted: bool = False,
        cells: dict[str, Any] | bool | None = None,
        retake_reasons: list[str] | None = None,
        error: str | None = None,
        photo: FakePhoto | None = None,
    ) -> Record:
        """Store one record (as the daemon would) and return it.

        Args:
            cells: its per-cell result; True: `fake_cells()` of its own photo; None: a
                whole-field record.
            retake_reasons: for a retake (default ["out-of-focus"]).
            error: its error (default: a camera time-out for a fault, else None).
            photo: its photo (default: the small fake photo `id % 4`); `cells=True` then
                gives that photo's cells.
        """
        with self._lock:
            rid = self._next_id
            self._next_id += 1
        created = created or datetime.now(UTC)
        rel = f"{created:%Y/%m/%d}/{rid:06d}.jpg"
        data = _jpeg(rid % 4) if photo is None else photo.jpeg()
        if cells is True:
            cells = fake_cells(rid % 4) if photo is None else photo.cells()
        if image and not image_deleted:
            path = self.images_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        judged = outcome not in ("retake", "fault")
        rec = Record(
            id=rid,
            created_at=created.isoformat(timespec="milliseconds"),
            created_unix=created.timestamp(),
            trigger="button",
            sample_id=sample_id,
            outcome=outcome,
            p_leukemia=p if judged else None,
            probabilities={"normal": round(1 - (p or 0), 4), "leukemia": p or 0.0}
            if judged
            else None,
            retake_reasons=(retake_reasons or ["out-of-focus"]) if outcome == "retake" else [],
            quality={"mean_luma": 180.0, "focus": 55.0, "stain": 0.2},
            timings_ms={"capture": 10.0, "decode": 20.0, "quality": 5.0, "inference": 30.0},
            error=error or ("camera: timed out" if outcome == "fault" else None),
            model_name=MODEL["name"],
            model_version=MODEL["version"],
            model_sha256=MODEL["sha256"],
            image_path=rel if image else None,
            image_sha256="cd" * 32 if image else None,
            image_bytes=len(data) if image else None,
            image_deleted=image_deleted,
            image_deleted_at=None,
            cells=cells if isinstance(cells, dict) else None,
        )
        with self._lock:
            self._records[rid] = rec
            self.result_seq += 1
        return rec

    # --- StatusSource ----------------------------------------------------------------------

    def confirm_clock(self, browser_unix: float) -> dict[str, Any]:
        """See StatusSource: the fake's clock is trusted once a browser agrees with it."""
        offset = time.time() - browser_unix
        ok = abs(offset) <= 5.0
        if ok:
            self.clock_trusted = True
        reply: dict[str, Any] = {"ok": ok, "trusted": self.clock_trusted, "offset_s": offset}
        if not ok:
            reply["error"] = f"this appliance's clock is {offset:+.0f} s off your browser's"
        return reply

    def status(self) -> dict[str, Any]:
        """See StatusSource."""
        with self._lock:
            last = self._records[max(self._records)] if self._records else None
            counts: dict[str, int] = {}
            for r in self._records.values():
                counts[r.outcome] = counts.get(r.outcome, 0) + 1
            return {
                "phase": "fault" if self.faults else self.phase,
                "ready": not self.faults and self.phase in ("ready", "busy"),
                "faults": dict(self.faults),
                "indicator": "ready",
                "leds": {},
                "camera": "fake",
                "model": dict(MODEL),
                "model_error": None,
                "reloads": 0,
                "last_result": None if last is None else last.to_json(),
                "result_seq": self.result_seq,
                "counts": counts,
                "uptime_s": round(time.time() - self.started, 1),
                "clock": {
                    "trusted": self.clock_trusted,
                    "reason": "synchronised" if self.clock_trusted else "not synchronised",
                    "now_unix": round(time.time(), 3),
                },
            }

    def _matching(self, flt: RecordFilter) -> list[Record]:
        """The records `flt` selects, newest first, as a listing has them (no per-cell list)."""
        out = []
        with self._lock:
            records = list(self._records.values())
        for r in records:
            day = datetime.fromtimestamp(r.created_unix, UTC).date()
            if flt.outcome and r.outcome != flt.outcome:
                continue
            if flt.date_from and day < flt.date_from:
                continue
            if flt.date_to and day > flt.date_to:
                continue
            cells = None if r.cells is None else {k: v for k, v in r.cells.items() if k != "cells"}
            out.append(replace(r, cells=cells))
        return sorted(out, key=lambda r: -r.id)

    def list_results(self, limit: int, before: int | None, flt: RecordFilter) -> RecordPage:
        """See StatusSource."""
        rows = [r for r in self._matching(flt) if before is None or r.id < before]
        page = rows[:limit]
        return RecordPage(page, page[-1].id if len(rows) > limit and page else None)

    def export(self, flt: RecordFilter) -> Iterator[Record]:
        """See StatusSource."""
        return iter(self._matching(flt))

    def get_result(self, record_id: int) -> Record | None:
        """See StatusSource."""
        with self._lock:
            return self._records.get(record_id)

    def image_file(self, record: Record) -> Path | None:
        """See StatusSource."""
        if not record.has_image or record.image_path is None:
            return None
        return self.images_dir / record.image_path

    def request_capture(self, sample_id: str | None) -> dict[str, Any]:
        """See StatusSource: refuses while busy (409) or faulty (503); in cells mode a
        sample id makes the photo that sample's field (a new id starts it; a decided or
        closed sample is refused with 409), as on the daemon."""
        with self._lock:
            if self.faults:
                raise CaptureRefusedError("not ready: " + "; ".join(self.faults.values()), 503)
            if self.phase == "busy":
                raise CaptureRefusedError("busy: a capture is already running", 409)
            in_sample = self.cells_mode and sample_id is not None
            if in_sample and self.samples.get(sample_id or "") is None:
                self.samples.start(sample_id or "")  # a new id starts it, as on the daemon
            if in_sample and not self.samples.takes_fields(sample_id):
                raise CaptureRefusedError(
                    f"sample {sample_id!r} takes no more fields: start a new sample", 409
                )
            self.phase = "busy"
            seq = self.result_seq
            self.captures_requested.append(sample_id)
            outcome = CYCLE[len(self.captures_requested) % len(CYCLE) - 1]

        def work() -> None:
            time.sleep(self.capture_s)  # the fake camera's exposure
            cells: dict[str, Any] | bool | None = None
            reasons = None
            if self.cells_mode:
                cells = no_cells() if outcome == "retake" else True
                reasons = ["no-white-cells"]
            rec = self.add_record(
                outcome,
                sample_id=sample_id,
                p=FAKE_SCORES.get(outcome, 0.1),
                cells=cells,
                retake_reasons=reasons,
            )
            if in_sample and self.samples.takes_fields(sample_id):
                self.samples.add_field(sample_id or "", rec)
            with self._lock:
                self.phase = "ready"
            made.append(rec.to_json())

        made: list[dict[str, Any]] = []
        capture_id = self.captures.add(lambda: made[0] if made else None)
        threading.Thread(target=work, name="fake-capture", daemon=True).start()
        return {"result_seq": seq, "capture_id": capture_id}

    def capture_result(self, capture_id: int) -> dict[str, Any] | None:
        """See StatusSource."""
        return self.captures.get(capture_id)

    def add_field(
        self,
        sample_id: str,
        photo: FakePhoto,
        *,
        outcome: str | None = None,
        repeats: int | None = None,
    ) -> Record:
        """A capture of `photo` for a started sample, counted as the daemon would (test
        helper); `repeats`: the counted record it shows again."""
        cells = photo.cells()
        if outcome is None:
            outcome = "leukemia-suspected" if cells["n_blasts"] else "no-leukemia-suspected"
        rec = self.add_record(
            outcome,
            sample_id=sample_id,
            p=float(cells["score"]),
            cells=no_cells(photo.size) if outcome == "retake" else cells,
            retake_reasons=["no-white-cells"] if outcome == "retake" else None,
            photo=photo,
        )
        self.samples.add_field(sample_id, rec, repeats=repeats)
        return rec

    # --- samples (StatusSource) -----------------------------------------------------------

    def list_samples(self, limit: int, before: float | None) -> SamplePage:
        """See StatusSource."""
        return self.samples.page(limit, before)

    def get_sample(self, sample_id: str) -> Sample | None:
        """See StatusSource."""
        return self.samples.get(sample_id)

    def sample_cells(self, sample: Sample) -> list[SampleCell]:
        """See StatusSource."""
        return self.samples.cells(sample)

    def reviewed_cells(self) -> Iterator[tuple[Sample, SampleCell, Path | None]]:
        """See StatusSource."""
        return self.samples.reviewed(self.image_file)

    def active_sample(self) -> str | None:
        """See StatusSource."""
        return self.samples.active

    def start_sample(self, sample_id: str) -> Sample:
        """See StatusSource."""
        return self.samples.start(sample_id)

    def close_sample(self, sample_id: str) -> Sample:
        """See StatusSource."""
        return self.samples.close(sample_id)

    def review_cell(
        self, sample_id: str, record_id: int, cell_index: int, label: str, reviewer: str
    ) -> CellReview:
        """See StatusSource."""
        return self.samples.review(sample_id, record_id, cell_index, label, reviewer)

    def preview(self) -> Preview:
        """See StatusSource."""
        if "camera" in self.faults:
            raise CaptureRefusedError("no live view: " + self.faults["camera"], 503)
        return Preview(self._preview, 42.0, True, self.phase == "busy", time.time())

    def health(self) -> dict[str, Any]:
        """See StatusSource."""
        snap = self.status()
        return {
            "ready": snap["ready"],
            "phase": snap["phase"],
            "faults": snap["faults"],
            "camera": {
                "name": "fake",
                "ok": "camera" not in self.faults,
                "error": self.faults.get("camera"),
            },
            "model": snap["model"],
            "model_error": None,
            "disk_free_bytes": 10 * 2**30,
            "disk_total_bytes": 32 * 2**30,
            "cpu_temp_c": 48.3,
            "uptime_s": snap["uptime_s"],
            "system_uptime_s": 3600.0,
            "records": len(self._records),
            "versions": {"leukoscope": __version__, "python": "3.x"},
            "calibration": {
                "px_per_um": PHOTO_PX_PER_UM,
                "px_per_um_spread": 0.04,
                "scale_tolerance": 0.15,
                "blank_field": None,
                "blank_field_present": False,
            },
        }

    def models(self) -> list[dict[str, Any]]:
        """See StatusSource."""
        current = {
            "role": "current",
            **MODEL,
            "architecture": "tiny-cnn",
            "created": "2026-11-01",
            "labels": ["normal", "leukemia"],
            "thresholds": [0.4, 0.6],
            "input": [64, 64],
            "metrics": {"sensitivity": 0.95, "specificity": 0.9},
            "training": {"seed": 0},
            "description": "A fake model for tests.",
            "path": "/fake/models/current",
        }
        previous = dict(
            current,
            role="previous",
            version="1.2.2",
            sha256="ef" * 32,
            path="/fake/models/previous",
        )
        return [current, previous]

    def metrics(self) -> dict[str, Any]:
        """See StatusSource."""
        snap = self.status()
        with self._lock:
            recent = sorted(self._records.values(), key=lambda r: -r.id)[:100]
        stages: dict[str, list[float]] = {}
        for r in recent:
            for k, v in r.timings_ms.items():
                stages.setdefault(k, []).append(v / 1000.0)
        return {
            "ready": snap["ready"],
            "captures": snap["counts"],
            "faults": snap["faults"],
            "stage_window": len(recent),
            "stage_seconds": {
                k: {"0.5": statistics.median(v), "sum": sum(v), "count": len(v)}
                for k, v in stages.items()
            },
            "disk_free_bytes": 10 * 2**30,
            "model": snap["model"],
            "reloads": 0,
            "uptime_s": snap["uptime_s"],
        }


def utc_days_ago(days: int) -> datetime:
    """A UTC datetime `days` ago (test helper)."""
    return datetime.now(UTC) - timedelta(days=days)


def main(argv: list[str] | None = None) -> int:
    """Serve the status page over fake records (whole-field and cells) until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m leukoscope.web.fake", description=main.__doc__)
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--password", default="fake-password", help="the page's password (default: fake-password)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="leukoscope-fake-") as tmp:
        source = FakeSource(Path(tmp) / "images", cells_mode=True)
        seed_records(source)
        seed_samples(source)
        write_password_file(Path(tmp) / "pw", args.password)
        app = create_app(source, WebConfig(password_file=Path(tmp) / "pw"))
        with WebServer(app, "127.0.0.1", args.port) as server:
            server.start()
            print(f"fake status page at {server.url} (password {args.password!r}); Ctrl-C stops")
            # SIGTERM ends it like Ctrl-C: the server stops and the temporary folder goes
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
    return 0


def seed_records(source: FakeSource) -> None:
    """A few records of each kind: whole-field, cells, a cells retake, a deleted photo."""
    source.add_record("no-leukemia-suspected", p=0.12, sample_id="WF-1")
    source.add_record("no-leukemia-suspected", p=0.1, cells=True)  # photo 2: no blasts
    source.add_record("leukemia-suspected", p=0.9, cells=True)  # photo 3: two blasts
    source.add_record("retake", cells=no_cells(), retake_reasons=["no-white-cells"])
    source.add_record("retake", retake_reasons=["no-scale"])
    source.add_record("leukemia-suspected", p=0.9, cells=fake_cells(1), image_deleted=True)


#: The photos of the made-up samples: a dozen white cells each, as at 40x on a good smear.
SAMPLE_PHOTO = (480, 360)


def seed_samples(source: FakeSource) -> None:
    """Four made-up samples: closed by hand, decided negative (with a retake and a repeat),
    decided positive (with reviews), and one still counting (the active sample)."""
    now = time.time()
    source.samples.start("P-2026-0040", now=now - 4 * 86400)
    for i in range(2):
        source.add_field("P-2026-0040", FakePhoto(200 + i, SAMPLE_PHOTO, wbc=12, blasts=0))
    source.samples.close("P-2026-0040", now=now - 4 * 86400 + 600)

    source.samples.start("P-2026-0041", now=now - 2 * 86400)
    first = source.add_field("P-2026-0041", FakePhoto(300, SAMPLE_PHOTO, wbc=12, blasts=1))
    source.add_field("P-2026-0041", FakePhoto(301, SAMPLE_PHOTO, wbc=0, blasts=0), outcome="retake")
    source.add_field(
        "P-2026-0041", FakePhoto(300, SAMPLE_PHOTO, wbc=12, blasts=1), repeats=first.id
    )
    i = 0
    while source.samples.takes_fields("P-2026-0041"):  # until the rule decides
        source.add_field("P-2026-0041", FakePhoto(310 + i, SAMPLE_PHOTO, wbc=12, blasts=0))
        i += 1

    source.samples.start("P-2026-0042", now=now - 3600)
    fields: list[Record] = []
    while source.samples.takes_fields("P-2026-0042"):
        photo = FakePhoto(400 + len(fields), SAMPLE_PHOTO, wbc=9, blasts=3)
        fields.append(source.add_field("P-2026-0042", photo))
    source.samples.review("P-2026-0042", fields[0].id, 0, "blast", "Dr. A. Okafor")
    source.samples.review("P-2026-0042", fields[0].id, 1, "not-blast", "Dr. A. Okafor")
    source.samples.review("P-2026-0042", fields[1].id, 5, "blast", "Dr. A. Okafor")

    source.samples.start("P-2026-0043", now=now - 300)
    for i in range(3):
        source.add_field("P-2026-0043", FakePhoto(500 + i, SAMPLE_PHOTO, wbc=11, blasts=1))


if __name__ == "__main__":
    raise SystemExit(main())
