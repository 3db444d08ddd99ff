"""The workloads the power-cut test traces (`python -m tests.power_cut_workload ...`).

Each drives a store through the calls the daemon and the model commands make, and writes
`ACK ...` to stdout (one write, unbuffered) only after a call returned: what a user was
told had happened. A mutant breaks the store from here, never from the store's code, to
show the test catches a store that skips a step.

    records ROOT [MUTANT]   records with images, a sample's fields, retention, close
    models ROOT B1 B2 B3 [MUTANT]   install+activate B1, B2, roll back, install+activate B3
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from leukoscope.analysis.differential import ErrorRates, SampleRule
from leukoscope.appliance import records
from leukoscope.appliance.records import NewRecord, Store
from leukoscope.appliance.samples import Samples
from leukoscope.model import store as model_store
from leukoscope.model.store import ModelStore, StoreSettings

RULE = SampleRule(threshold=0.05, min_cells=100, max_cells=400, max_fields=30)
RATES = ErrorRates(sensitivity=0.9, specificity=0.97)
SAMPLE = "P-0042"
#: Records made; the first OLD, dated DAYS_OLD days ago, lose their images to retention
#: (more of them than `records.MAX_CRASH_ORPHANS`: recovery must not be left to clean up).
N_RECORDS = 10
OLD = 8
DAYS_OLD = 30
MAX_AGE_DAYS = 20
RESERVE_BYTES = 4096
RECORD_MUTANTS = ("image-not-fsynced", "no-folder-fsync", "sqlite-synchronous-off")
MODEL_MUTANTS = ("copy-not-fsynced", "link-not-fsynced")


def ack(text: str) -> None:
    os.write(1, f"ACK {text}\n".encode())


class _NoFsync(ModuleType):
    """The `os` module, but fsync does nothing (a store that forgets to flush)."""

    def __init__(self) -> None:
        super().__init__("os")

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def fsync(fd: int) -> None:
        pass


def _no_fsync_dir(path: Path) -> None:
    pass


def image(i: int) -> bytes:
    """A photo's bytes (distinct per record; the store does not decode them)."""
    return random.Random(i).randbytes(1500 + 300 * i)


def cells(n: int, blasts: int) -> dict[str, Any]:
    return {"n_found": n, "n_classified": n, "n_blasts": blasts, "score": 0.2, "cells": []}


def run_records(root: Path, mutant: str | None) -> None:
    if mutant == "image-not-fsynced":
        records.os = _NoFsync()
    elif mutant == "no-folder-fsync":
        records.fsync_dir = _no_fsync_dir
    state = root / "state"
    store = Store(state / "leukoscope.db", state / "images", reserve_bytes=RESERVE_BYTES)
    if mutant == "sqlite-synchronous-off":
        store.db.execute("PRAGMA synchronous=OFF")
    ack("open")
    samples = Samples(store)
    now = time.time()
    samples.start(SAMPLE, RULE, RATES, now=now)
    ack(f"sample {SAMPLE}")
    for i in range(N_RECORDS):
        created = now - DAYS_OLD * 86400 + i * 3600 if i < OLD else now - 60 * (N_RECORDS - i)
        rec = NewRecord(
            trigger="control",
            outcome="no-leukemia-suspected",
            created_unix=created,
            p_leukemia=0.1,
            clock_trusted=True,
        )
        data = None if i == 4 else image(i)  # a record without a photo
        if i in (3, 5):
            rec.cells = cells(20 + i, 1)
            rid = samples.add_field(SAMPLE, rec, data).record_id
            where = SAMPLE
        else:
            rid = store.add(rec, data)
            where = "-"
        digest = "-" if data is None else records.sha256_bytes(data)
        ack(f"record {rid} {digest} {where}")
    # (not_before=0: the photos dated a month ago are older than this build)
    deleted = store.enforce_retention(MAX_AGE_DAYS, 0, clock_trusted=True, now=now, not_before=0.0)
    gone = [r.id for r in store.reader.export() if r.image_deleted]
    ack(f"retention {deleted} {','.join(map(str, sorted(gone)))}")
    rec = NewRecord(trigger="button", outcome="retake", retake_reasons=["blur"])
    data = image(N_RECORDS)
    rid = store.add(rec, data)
    ack(f"record {rid} {records.sha256_bytes(data)} -")
    store.close()
    ack("close")


def run_models(root: Path, bundles: list[Path], mutant: str | None) -> None:
    if mutant == "copy-not-fsynced":
        model_store.os = _NoFsync()
    elif mutant == "link-not-fsynced":
        model_store.fsync_dir = _no_fsync_dir
    settings = StoreSettings(store_dir=root / "state" / "models", keep=2, reload="none")
    store = ModelStore(settings)

    def quiet(msg: str) -> None:
        pass

    first = store.install(bundles[0], activate=True, report=quiet)
    ack(f"active {first.id}")
    second = store.install(bundles[1], activate=True, report=quiet)
    ack(f"active {second.id}")
    back = store.rollback(report=quiet)
    ack(f"active {back.id}")
    third = store.install(bundles[2], activate=True, report=quiet)  # prunes the second
    ack(f"active {third.id}")


def main(argv: list[str]) -> None:
    kind, root = argv[0], Path(argv[1])
    if kind == "records":
        run_records(root, argv[2] if len(argv) > 2 else None)
    else:
        run_models(root, [Path(p) for p in argv[2:5]], argv[5] if len(argv) > 5 else None)


if __name__ == "__main__":
    main(sys.argv[1:])
