"""Records and images: SQLite (WAL, synchronous=FULL) and atomically written image files.

A record is a `Record`; `to_json()` is its one plain form (the API, the pages, the control
socket). `Store` is the one writer; `RecordReader` holds every query that reads records
back (by id, listings, the CSV export, image paths, counts), for the daemon, the web
threads and the tests alike.

Order of writes keeps the invariant "no record points to a missing image" through power
cuts and SIGKILL: an image is written to `.tmp/`, fsynced, renamed into place and its
folder fsynced *before* its record is committed; retention marks a record image-deleted
and commits *before* it unlinks the file. `recover()` at start removes what a crash can
leave: temporary files, and images no record refers to.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

from leukoscope.core.clock import BUILD_EPOCH, FUTURE_SLACK_S
from leukoscope.core.errors import StoreError
from leukoscope.core.fsutil import fsync_dir, mkdir_durable
from leukoscope.model.manifest import sha256_bytes

logger = logging.getLogger(__name__)

#: 1: the first schema; 2: adds `cells` (the per-cell result of a `cells` bundle);
#: 3: adds samples, their fields and cell reviews (`appliance.samples`);
#: 4: adds `clock_trusted` (whether the clock was synchronised when the record was made).
SCHEMA_VERSION = 4
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at      TEXT NOT NULL,     -- UTC, ISO 8601
    created_unix    REAL NOT NULL,
    trigger         TEXT NOT NULL,     -- button, control, web, ...
    sample_id       TEXT,
    outcome         TEXT NOT NULL,     -- a verdict (incl. retake) or 'fault'
    p_leukemia      REAL,
    probabilities   TEXT,              -- JSON object
    retake_reasons  TEXT NOT NULL,     -- JSON list
    quality         TEXT,              -- JSON object of QualityMetrics
    timings_ms      TEXT NOT NULL,     -- JSON object, stage -> milliseconds
    error           TEXT,
    model_name      TEXT,
    model_version   TEXT,
    model_sha256    TEXT,
    image_path      TEXT,              -- relative to the images folder
    image_sha256    TEXT,
    image_bytes     INTEGER,
    image_deleted   INTEGER NOT NULL DEFAULT 0,
    image_deleted_at TEXT,
    cells           TEXT,              -- JSON object (CellReport), NULL in whole-field mode
    clock_trusted   INTEGER            -- 1: created_at from a synchronised clock; NULL: unknown
);
CREATE INDEX IF NOT EXISTS results_created ON results (created_unix);
CREATE INDEX IF NOT EXISTS results_image ON results (image_deleted, created_unix);
CREATE TABLE IF NOT EXISTS samples (
    id              TEXT PRIMARY KEY,  -- the sample id the technician gave
    started_at      TEXT NOT NULL,     -- UTC, ISO 8601
    started_unix    REAL NOT NULL,
    state           TEXT NOT NULL,     -- open, decided, closed
    verdict         TEXT,              -- once decided
    message         TEXT NOT NULL,     -- where it stands, in words
    closed_at       TEXT,
    rule            TEXT NOT NULL,     -- JSON: the rule and error rates it is judged by
    model_name      TEXT,
    model_version   TEXT,
    model_sha256    TEXT
);
CREATE INDEX IF NOT EXISTS samples_started ON samples (started_unix);
CREATE TABLE IF NOT EXISTS sample_fields (
    sample_id       TEXT NOT NULL REFERENCES samples (id),
    record_id       INTEGER NOT NULL UNIQUE REFERENCES results (id),
    position        INTEGER NOT NULL,  -- 1, 2, ... in the order taken
    status          TEXT NOT NULL,     -- counted, repeat, retake
    n_cells         INTEGER NOT NULL,
    n_blasts        INTEGER NOT NULL,
    repeats_record  INTEGER,           -- status repeat: the counted field it shows again
    shared          REAL,              -- and the share of the area they have in common
    fingerprint     BLOB,              -- uint8 grey thumbnail (analysis.overlap)
    fp_width        INTEGER,
    fp_height       INTEGER,
    PRIMARY KEY (sample_id, position)
);
CREATE TABLE IF NOT EXISTS cell_reviews (
    record_id       INTEGER NOT NULL REFERENCES results (id),
    cell_index      INTEGER NOT NULL,  -- index in the record's per-cell list
    sample_id       TEXT NOT NULL REFERENCES samples (id),
    label           TEXT NOT NULL,     -- blast, not-blast
    model_blast     INTEGER NOT NULL,  -- what the model called it
    p_blast         REAL,
    reviewer        TEXT NOT NULL,
    reviewed_at     TEXT NOT NULL,     -- UTC, ISO 8601
    PRIMARY KEY (record_id, cell_index)
);
"""
TMP_DIR = ".tmp"
#: More unreferenced (or missing) images than a few crashes can explain: touch nothing.
MAX_CRASH_ORPHANS = 5
#: The largest per-cell result kept with a record: 4,096 cells (a bundle's most) take
#: about 400 kB, and a record must still fit one control-socket reply (1 MiB). A larger
#: one keeps its counts and loses its per-cell list.
MAX_CELLS_JSON_BYTES = 512 * 1024
#: Outcomes a record can have: the four verdicts, or a fault.
OUTCOMES = ("no-leukemia-suspected", "leukemia-suspected", "indeterminate", "retake", "fault")
#: Images unlinked (then marked in one transaction) at a time by retention. No more than
#: recovery will mark after a crash: a power cut between a batch's unlinks and its marks
#: leaves at most this many records without their photo, which `recover()` then marks,
#: even when the batch held every photo left (more would look like an unmounted card).
RETENTION_BATCH = MAX_CRASH_ORPHANS
#: The emergency reserve: a file beside the database, released when the card is full.
RESERVE_FILE = ".leukoscope-reserve"
RESERVE_BYTES = 4 * 1024 * 1024
#: Records per query when the CSV export reads every matching record.
EXPORT_PAGE = 200


@dataclass
class NewRecord:
    """One analysis, as the daemon hands it to the store."""

    trigger: str
    outcome: str
    created_unix: float = field(default_factory=time.time)
    sample_id: str | None = None
    p_leukemia: float | None = None
    probabilities: dict[str, float] | None = None
    retake_reasons: list[str] = field(default_factory=list)
    quality: dict[str, float] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    #: The per-cell result (CellReport.to_json()), None in whole-field mode.
    cells: dict[str, Any] | None = None
    #: The clock was synchronised (or set by a person) when the record was made.
    clock_trusted: bool = False


@dataclass(frozen=True)
class Record:
    """One stored analysis, as read back: the table's columns, JSON columns decoded."""

    id: int
    created_at: str  # UTC, ISO 8601
    created_unix: float
    trigger: str
    sample_id: str | None
    outcome: str  # one of OUTCOMES
    p_leukemia: float | None
    probabilities: dict[str, float] | None
    retake_reasons: list[str]
    quality: dict[str, float] | None
    timings_ms: dict[str, float]
    error: str | None
    model_name: str | None
    model_version: str | None
    model_sha256: str | None
    image_path: str | None  # relative to the images folder
    image_sha256: str | None
    image_bytes: int | None
    image_deleted: bool
    image_deleted_at: str | None
    #: The per-cell result (CellReport JSON), None in whole-field mode. In a listing
    #: (`RecordReader.page`, `export`) it lacks its per-cell list, `cells["cells"]`.
    cells: dict[str, Any] | None
    #: The clock was trusted when the record was made (None: made before schema 4).
    #: The id, not the time, orders records: it only grows, whatever the clock said.
    clock_trusted: bool | None = None

    @property
    def has_image(self) -> bool:
        """A photo was kept and retention has not deleted it."""
        return bool(self.image_path) and not self.image_deleted

    def to_json(self) -> dict[str, Any]:
        """The record as plain data, keyed and ordered like the table's columns."""
        return {name: getattr(self, name) for name in COLUMNS}

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Record:
        """A row of the results table; a JSON column that does not decode reads as empty."""
        return cls(
            id=int(row["id"]),
            created_at=row["created_at"],
            created_unix=float(row["created_unix"]),
            trigger=row["trigger"],
            sample_id=row["sample_id"],
            outcome=row["outcome"],
            p_leukemia=row["p_leukemia"],
            probabilities=_decoded(row["probabilities"], dict),
            retake_reasons=_decoded(row["retake_reasons"], list) or [],
            quality=_decoded(row["quality"], dict),
            timings_ms=_decoded(row["timings_ms"], dict) or {},
            error=row["error"],
            model_name=row["model_name"],
            model_version=row["model_version"],
            model_sha256=row["model_sha256"],
            image_path=row["image_path"],
            image_sha256=row["image_sha256"],
            image_bytes=row["image_bytes"],
            image_deleted=bool(row["image_deleted"]),
            image_deleted_at=row["image_deleted_at"],
            cells=_decoded(row["cells"], dict),
            clock_trusted=None if row["clock_trusted"] is None else bool(row["clock_trusted"]),
        )


#: The table's columns, in the order a record's plain form lists them.
COLUMNS = tuple(f.name for f in fields(Record))


def _decoded(text: str | None, kind: type) -> Any:
    """A JSON column's value if it is a `kind`, else None (NULL, or not what was written)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        logger.warning("a record's JSON column does not decode; read as empty")
        return None
    return value if isinstance(value, kind) else None


@dataclass(frozen=True)
class RecordFilter:
    """Which records a listing wants: an outcome and a date range (UTC days, inclusive)."""

    outcome: str | None = None
    date_from: date | None = None
    date_to: date | None = None


@dataclass(frozen=True)
class RecordPage:
    """One page of records, newest first; `next_before` is the id to continue below
    (None: there is no older page)."""

    items: list[Record]
    next_before: int | None


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds")


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists (for json.dumps)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def cells_json(cells: Any) -> str | None:
    """The per-cell result as stored: a JSON object of finite numbers, size-capped.

    Not an object (or not JSON data at all) is dropped with a warning: the record itself
    must still be written. Over MAX_CELLS_JSON_BYTES, the per-cell list is left out (the
    counts stay) and `cells_omitted` says how many cells it held.
    """
    if cells is None:
        return None
    if not isinstance(cells, dict):
        logger.warning("per-cell result dropped: a %s, not an object", type(cells).__name__)
        return None
    try:
        clean = _finite(json.loads(json.dumps(cells, default=_plain)))
    except (TypeError, ValueError, RecursionError) as exc:
        logger.warning("per-cell result dropped: not JSON data (%s)", exc)
        return None
    text = json.dumps(clean, allow_nan=False, separators=(",", ":"))
    if len(text) > MAX_CELLS_JSON_BYTES:
        listed = clean.get("cells")
        logger.warning(
            "per-cell result of %d bytes is over %d: its per-cell list is not kept",
            len(text),
            MAX_CELLS_JSON_BYTES,
        )
        clean["cells"] = []
        clean["cells_omitted"] = len(listed) if isinstance(listed, list) else None
        text = json.dumps(clean, allow_nan=False, separators=(",", ":"))
        if len(text) > MAX_CELLS_JSON_BYTES:
            logger.warning("per-cell result dropped: still %d bytes without its list", len(text))
            return None
    return text


def free_bytes(path: Path) -> int:
    """Bytes free for an unprivileged writer on the file system holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class Store:
    """The record database and image folder. Thread-safe (one connection, one lock)."""

    def __init__(
        self, database: Path, images_dir: Path, *, reserve_bytes: int = RESERVE_BYTES
    ) -> None:
        """Open (creating if needed) the database and image folder, and keep the reserve.

        Raises:
            StoreError: the folder or database cannot be created or opened.
        """
        self.database = Path(database)
        self.images_dir = Path(images_dir)
        self._lock = threading.Lock()
        try:
            mkdir_durable(self.images_dir)  # (an image's folders must outlive a power cut)
            (self.images_dir / TMP_DIR).mkdir(exist_ok=True)
            mkdir_durable(self.database.parent)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.database, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self.database}: cannot use WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate(self._db)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the record store {self.database}: {exc}") from None
        #: Reads records back (the daemon's own reads: a record just written).
        self.reader = RecordReader(self.database, self.images_dir)
        #: Bytes of the last image a full disk refused, to judge when space is back.
        self.last_failed_bytes = 0
        self.reserve_bytes = reserve_bytes
        self.keep_reserve()

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Create the schema, or bring an older database up to SCHEMA_VERSION in place.

        Version 1 lacks `cells`: the column is added (NULL for the old records, which then
        show no overlay) in the same transaction that raises the version.
        """
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.database}: schema version {version}, this build knows {SCHEMA_VERSION}"
                " (a newer Leukoscope wrote it)"
            )
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(results)")}
        steps = [] if "cells" in columns else ["ALTER TABLE results ADD COLUMN cells TEXT;"]
        if "clock_trusted" not in columns:
            steps.append("ALTER TABLE results ADD COLUMN clock_trusted INTEGER;")
        if steps or version != SCHEMA_VERSION:
            db.executescript(
                "BEGIN IMMEDIATE;\n"
                + "\n".join(steps)
                + f"\nPRAGMA user_version={SCHEMA_VERSION};\nCOMMIT;"
            )
            if version:
                logger.info(
                    "record store %s: schema %d -> %d", self.database, version, SCHEMA_VERSION
                )

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection (StoreError once closed)."""
        if self._db is None:
            raise StoreError("the record store is closed")
        return self._db

    # --- writing -------------------------------------------------------------------------

    def _write_image(self, data: bytes, suffix: str, created_unix: float) -> Path:
        stamp = datetime.fromtimestamp(created_unix, UTC)
        rel = Path(stamp.strftime("%Y/%m/%d")) / (
            f"{stamp.strftime('%Y%m%dT%H%M%S.%f')[:-3]}Z-{uuid.uuid4().hex[:8]}{suffix}"
        )
        final = self.images_dir / rel
        tmp = self.images_dir / TMP_DIR / (final.name + ".part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            new_dirs = [p for p in reversed(rel.parents) if not (self.images_dir / p).exists()]
            final.parent.mkdir(parents=True, exist_ok=True)
            for d in new_dirs:  # a new day folder must survive a power cut too
                fsync_dir((self.images_dir / d).parent)
            os.rename(tmp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                self.last_failed_bytes = len(data)
            raise StoreError(f"cannot write image {rel}: {exc.strerror or exc}") from None
        return rel

    def add(
        self,
        rec: NewRecord,
        image: bytes | None = None,
        suffix: str = ".jpg",
        *,
        then: Callable[[sqlite3.Connection, int], None] | None = None,
    ) -> int:
        """Write the image (if any) durably, then the record; return the record's id.

        `then(db, record_id)` runs inside the record's transaction (a sample's field is
        written with its record, or neither is).

        Raises:
            StoreError: the disk is full or the database cannot be written; nothing of
                this record is left behind.
        """
        cells_text = cells_json(rec.cells)
        with self._lock:
            rel = self._write_image(image, suffix, rec.created_unix) if image else None
            try:
                self.db.execute("BEGIN IMMEDIATE")
                cur = self.db.execute(
                    """INSERT INTO results (created_at, created_unix, trigger, sample_id,
                    outcome, p_leukemia, probabilities, retake_reasons, quality, timings_ms,
                    error, model_name, model_version, model_sha256, image_path, image_sha256,
                    image_bytes, cells, clock_trusted)
                    VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                    (
                        _iso(rec.created_unix),
                        rec.created_unix,
                        rec.trigger,
                        rec.sample_id,
                        rec.outcome,
                        rec.p_leukemia,
                        None if rec.probabilities is None else json.dumps(rec.probabilities),
                        json.dumps(rec.retake_reasons),
                        None if rec.quality is None else json.dumps(rec.quality),
                        json.dumps(rec.timings_ms),
                        rec.error,
                        rec.model_name,
                        rec.model_version,
                        rec.model_sha256,
                        None if rel is None else rel.as_posix(),
                        None if image is None else sha256_bytes(image),
                        None if image is None else len(image),
                        cells_text,
                        int(rec.clock_trusted),
                    ),
                )
                record_id = int(cur.lastrowid or 0)
                if then is not None:
                    then(self.db, record_id)
                self.db.execute("COMMIT")
            except (sqlite3.Error, StoreError) as exc:
                self._rollback()
                if rel is not None:
                    (self.images_dir / rel).unlink(missing_ok=True)
                if isinstance(exc, StoreError):
                    raise
                raise StoreError(f"cannot write the record: {exc}") from None
            return record_id

    def _rollback(self) -> None:
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            logger.warning("rollback failed", exc_info=True)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the store's lock: committed whole or not at all.

        Raises:
            StoreError: the database cannot be written (nothing of it is kept).
        """
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                yield self.db
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"cannot write the record store: {exc}") from None
            except BaseException:
                self._rollback()
                raise

    # --- retention and recovery -----------------------------------------------------------

    def _delete_images(self, rows: list[sqlite3.Row]) -> int:
        """Unlink a batch of images, then mark their records in one transaction.

        Unlinking first means retention needs no free space to start: on a full card the
        unlinks make the room the database write needs. Their folders are fsynced before
        the marks commit, so a power cut never brings a deleted photo back. A crash in
        between leaves records whose image is gone; `recover()` marks them at the next
        start.
        """
        now = _iso(time.time())
        for start in range(0, len(rows), RETENTION_BATCH):
            batch = rows[start : start + RETENTION_BATCH]
            paths = [self.images_dir / row["image_path"] for row in batch]
            for path in paths:
                path.unlink(missing_ok=True)
            # The unlinks reach the disk before the marks: else a power cut brings the
            # photos back, more orphans than recovery dares remove, kept for good.
            for folder in {path.parent for path in paths}:
                with contextlib.suppress(FileNotFoundError):
                    fsync_dir(folder)
            marks = [(now, row["id"]) for row in batch]
            update = "UPDATE results SET image_deleted = 1, image_deleted_at = ? WHERE id = ?"
            for attempt in (1, 2):
                try:
                    self.db.execute("BEGIN IMMEDIATE")
                    self.db.executemany(update, marks)
                    self.db.execute("COMMIT")
                    break
                except sqlite3.OperationalError as exc:
                    self._rollback()
                    if attempt == 2 or not self.release_reserve(f"retention: {exc}"):
                        raise
        return len(rows)

    # --- the emergency reserve -------------------------------------------------------------

    @property
    def reserve_path(self) -> Path:
        """A file of zeros kept beside the database, deleted when the card is full."""
        return self.database.parent / RESERVE_FILE

    def keep_reserve(self) -> None:
        """Write the reserve file if it is missing and there is room for it (best effort)."""
        path = self.reserve_path
        if self.reserve_bytes <= 0 or path.exists():
            return
        try:
            if free_bytes(path.parent) < 4 * self.reserve_bytes:
                return
            with path.open("wb") as f:
                f.truncate(0)
                f.write(b"\0" * self.reserve_bytes)  # real blocks, not a sparse file
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(path.parent)
        except OSError as exc:
            logger.warning("cannot keep the %s reserve: %s", self.reserve_path, exc)
            path.unlink(missing_ok=True)

    def release_reserve(self, why: str) -> bool:
        """Delete the reserve file to make room in an emergency; False if there was none."""
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        logger.error("disk full: released the %d kB reserve (%s)", self.reserve_bytes // 1024, why)
        return True

    # --- retention -------------------------------------------------------------------------

    def enforce_retention(
        self,
        max_age_days: float,
        min_free_bytes: int,
        *,
        clock_trusted: bool,
        now: float | None = None,
        not_before: float = BUILD_EPOCH,
    ) -> int:
        """Delete images older than `max_age_days`, then the oldest while space is short.

        Age is judged by sequence, not by each record's own stamp: the newest record
        made under a trusted clock, stamped plausibly (not before `not_before`, not in the
        future) and older than the cutoff bounds every record before it by id, whatever
        those say. While the clock is untrusted nothing is deleted by age. Space is freed
        oldest first by id. Records stay, marked image-deleted. Returns how many images
        were deleted.
        """
        now = time.time() if now is None else now
        deleted = 0
        select = (
            "SELECT id, image_path FROM results WHERE image_deleted = 0 AND image_path "
            "IS NOT NULL {} ORDER BY id LIMIT ?"
        )
        try:
            with self._lock:
                if clock_trusted:
                    cutoff = min(now - max_age_days * 86400.0, now + FUTURE_SLACK_S)
                    bound = self.db.execute(
                        "SELECT MAX(id) FROM results WHERE clock_trusted = 1 "
                        "AND created_unix >= ? AND created_unix < ?",
                        (not_before, cutoff),
                    ).fetchone()[0]
                    if bound is not None:
                        old = self.db.execute(
                            select.format("AND id <= ?"), (bound, 10_000)
                        ).fetchall()
                        deleted += self._delete_images(old)
                while free_bytes(self.images_dir) < min_free_bytes:
                    batch = self.db.execute(select.format(""), (1,)).fetchall()
                    if not batch:
                        self.release_reserve("no image left to delete")
                        break
                    deleted += self._delete_images(batch)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"retention failed: {exc}") from None
        if free_bytes(self.images_dir) >= min_free_bytes + 4 * self.reserve_bytes:
            self.keep_reserve()
        if deleted:
            logger.info("retention deleted %d image(s); their records are kept", deleted)
        return deleted

    def recover(self) -> None:
        """Remove what a crash can leave: temporary files and unreferenced images;
        mark records whose image vanished (someone deleted it) as image-deleted.

        A crash leaves at most one unreferenced image, so many of them mean the database
        was replaced, and every image missing means the folder is not mounted: in both
        cases nothing is deleted or marked, and the error says why.
        """
        tmp_removed = 0
        for part in (self.images_dir / TMP_DIR).iterdir():
            part.unlink(missing_ok=True)
            tmp_removed += 1
        with self._lock:
            rows = self.db.execute(
                "SELECT id, image_path, image_deleted FROM results WHERE image_path IS NOT NULL"
            ).fetchall()
            live = {r["image_path"] for r in rows if not r["image_deleted"]}
            orphans: list[Path] = []
            for dirpath, dirnames, filenames in os.walk(self.images_dir):
                if Path(dirpath) == self.images_dir:
                    dirnames[:] = [d for d in dirnames if d != TMP_DIR]
                    filenames = [f for f in filenames if f != RESERVE_FILE]
                for name in filenames:
                    path = Path(dirpath) / name
                    if path.relative_to(self.images_dir).as_posix() not in live:
                        orphans.append(path)
            missing = [
                r
                for r in rows
                if not r["image_deleted"] and not (self.images_dir / r["image_path"]).exists()
            ]
            if len(orphans) > MAX_CRASH_ORPHANS:
                logger.error(
                    "store recovery: %d images in %s have no record (was the database "
                    "replaced?); leaving them alone",
                    len(orphans),
                    self.images_dir,
                )
                orphans = []
            if len(missing) > MAX_CRASH_ORPHANS and len(missing) == len(live):
                logger.error(
                    "store recovery: none of the %d recorded images is in %s (not mounted?); "
                    "leaving the records alone",
                    len(missing),
                    self.images_dir,
                )
                missing = []
            for path in orphans:
                path.unlink(missing_ok=True)
            self._delete_images(missing)
        if tmp_removed or orphans or missing:
            logger.warning(
                "store recovery: removed %d partial and %d unreferenced image(s); "
                "%d record(s) had lost their image",
                tmp_removed,
                len(orphans),
                len(missing),
            )

    def integrity_ok(self) -> bool:
        """PRAGMA integrity_check says ok."""
        with self._lock:
            return bool(self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the reader, then checkpoint and close the database (idempotent)."""
        self.reader.close()
        with self._lock:
            db, self._db = self._db, None
        if db is not None:
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                logger.warning("could not checkpoint the WAL on close", exc_info=True)
            db.close()


def _day_start(day: date) -> float:
    return datetime.combine(day, dtime.min, UTC).timestamp()


#: A listing's columns: `cells` without its per-cell list, which listings never show
#: (SQLite drops it, so Python never parses thousands of boxes only to drop them).
_LISTED = ", ".join(
    "CASE WHEN json_valid(cells) THEN json_remove(cells, '$.cells') END AS cells"
    if name == "cells"
    else name
    for name in COLUMNS
)


class RecordReader:
    """Reads records; every query that reads the results table is here. Thread-safe.

    Each thread gets its own read-only connection (WAL lets them read while the store
    writes), so a web page never waits on the writer's lock.
    """

    def __init__(self, database: Path, images_dir: Path) -> None:
        self.database = Path(database)
        self.images_dir = Path(images_dir)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False

    def _db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._conns_lock:
                if self._closed:
                    raise StoreError("the record store is closed")
                try:
                    conn = sqlite3.connect(self.database, timeout=5.0, check_same_thread=False)
                    conn.row_factory = sqlite3.Row
                    conn.execute("PRAGMA query_only = ON")
                except sqlite3.Error as exc:
                    raise StoreError(
                        f"cannot read the record store {self.database}: {exc}"
                    ) from None
                self._conns.append(conn)
            self._local.conn = conn
        elif self._closed:
            raise StoreError("the record store is closed")
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's read-only connection (for the readers of the other tables)."""
        return self._db()

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            return self._db().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the record store {self.database}: {exc}") from None

    def get(self, record_id: int) -> Record | None:
        """One record, its per-cell result whole; None if there is none with that id."""
        rows = self._query(f"SELECT {', '.join(COLUMNS)} FROM results WHERE id = ?", (record_id,))
        return Record.from_row(rows[0]) if rows else None

    def page(
        self, limit: int, before: int | None = None, flt: RecordFilter | None = None
    ) -> RecordPage:
        """Up to `limit` records matching `flt`, older than id `before` (None: from the
        newest), newest first; their `cells` without the per-cell list."""
        flt = flt or RecordFilter()
        where: list[str] = []
        args: list[Any] = []
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if flt.outcome:
            where.append("outcome = ?")
            args.append(flt.outcome)
        if flt.date_from:
            where.append("created_unix >= ?")
            args.append(_day_start(flt.date_from))
        if flt.date_to:
            where.append("created_unix < ?")  # (9999-12-31 has no next day)
            args.append(_day_start(flt.date_to) + 86400.0)
        condition = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self._query(
            f"SELECT {_LISTED} FROM results {condition}ORDER BY id DESC LIMIT ?",
            (*args, limit + 1),
        )
        items = [Record.from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return RecordPage(items, items[-1].id if more and items else None)

    def export(self, flt: RecordFilter | None = None) -> Iterator[Record]:
        """Every record matching `flt`, newest first, as listed (read a page at a time)."""
        before: int | None = None
        while True:
            page = self.page(EXPORT_PAGE, before, flt)
            yield from page.items
            if page.next_before is None:
                return
            before = page.next_before

    def image_file(self, record: Record) -> Path | None:
        """The absolute path of a record's image; None if it has none, retention deleted
        it, or its stored path leads outside the images folder."""
        if not record.has_image or record.image_path is None:
            return None
        root = self.images_dir.resolve()
        path = (root / record.image_path).resolve()
        if not path.is_relative_to(root):
            logger.warning("record %d names an image outside the images folder", record.id)
            return None
        return path

    def count(self) -> int:
        """How many records there are."""
        return int(self._query("SELECT COUNT(*) FROM results")[0][0])

    def counts_by_outcome(self) -> dict[str, int]:
        """How many records there are of each outcome."""
        rows = self._query("SELECT outcome, COUNT(*) FROM results GROUP BY outcome")
        return {r[0]: int(r[1]) for r in rows}

    def recent_timings(self, limit: int) -> list[dict[str, float]]:
        """The stage timings (ms) of the newest `limit` records, newest first."""
        rows = self._query("SELECT timings_ms FROM results ORDER BY id DESC LIMIT ?", (limit,))
        return [_decoded(r[0], dict) or {} for r in rows]

    def close(self) -> None:
        """Close every thread's connection (idempotent); reading after this is a StoreError."""
        with self._conns_lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                logger.debug("closing a reader connection failed", exc_info=True)
