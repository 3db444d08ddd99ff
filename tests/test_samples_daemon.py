"""Samples in the real daemon: fields counted once, retakes and repeats not counted, the
rule's limits, refusals that take no photo, the indicator, and the button's long press.

In-process: the real Daemon, replay camera, MockFactory pins and record store, with a
cells bundle whose classifier is a stand-in (no TensorFlow; see test_cell_analysis).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pytest

from leukoscope.analysis.analysers import WholeFieldAnalyser
from leukoscope.analysis.decision import Verdict
from leukoscope.appliance.daemon import Daemon, NotReadyError
from leukoscope.appliance.gpio import CaptureButton
from leukoscope.appliance.indicator import IndicatorState
from leukoscope.appliance.samples import SampleError, SampleReader
from leukoscope.config import load_config
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import Bundle
from leukoscope.model.classifier import TFLiteClassifier
from leukoscope.model.manifest import parse_manifest
from tests.daemon_helpers import daemon_config, daemon_in_process, wait_until, write_rgb
from tests.test_cell_analysis import StainClassifier, cells_manifest

#: The bundle's sample rule (a `sample` object as a shipped cells bundle carries it).
SAMPLE = {
    "threshold": 0.05,
    "min_cells": 1000,
    "max_cells": 5000,
    "max_fields": 3,
    "sensitivity": 0.9,
    "specificity": 0.95,
    "measured_on": "synthetic test cells",
}


def smear(seed: int, **kw: Any) -> np.ndarray:
    return make_smear(400, 300, n_wbc=4, px_per_um=4.0, seed=seed, **kw).image


def sample_bundle(sample: dict[str, Any] | None = SAMPLE) -> Bundle:
    raw = cells_manifest()
    if sample is not None:
        raw["sample"] = sample
    manifest = parse_manifest(raw)
    return Bundle(Path("fake"), manifest, cast(TFLiteClassifier, StainClassifier()))


@contextmanager
def sample_daemon(
    tmp_path: Path, fields: list[np.ndarray], bundle: Bundle | None = None, **sample: Any
) -> Iterator[Daemon]:
    """A running Daemon whose replay camera serves `fields` in order."""
    for i, rgb in enumerate(fields):
        write_rgb(tmp_path / "replay" / f"{i:02d}.png", rgb)
    cfg = load_config(
        daemon_config(
            tmp_path,
            tmp_path / "unused-bundle",
            tmp_path / "replay",
            quality={"enabled": False},
            sample=sample,
        )
    )
    with daemon_in_process(cfg, bundle or sample_bundle()) as daemon:
        wait_until(lambda: daemon.state.phase == "ready", 10, "ready")
        yield daemon


def capture(daemon: Daemon, sample_id: str | None = None, trigger: str = "control") -> dict:
    """One capture through the daemon's own path, once it is ready for one."""
    ticket = None
    for _ in range(500):
        try:
            ticket = daemon.request_capture(trigger, sample_id)
        except NotReadyError:
            ticket = None
        if ticket is not None:
            break
        threading.Event().wait(0.02)
    assert ticket is not None and ticket.done.wait(60)
    assert ticket.result and ticket.result["saved"], ticket.result
    return dict(ticket.result)


def n_records(daemon: Daemon) -> int:
    return daemon.store.reader.count()


def test_a_sample_counts_fields_until_its_maximum(tmp_path: Path) -> None:
    with sample_daemon(tmp_path, [smear(s) for s in (1, 2, 3, 4)]) as daemon:
        first = capture(daemon, "P-1")  # a new id starts the sample
        assert first["sample_id"] == "P-1"
        assert first["field"]["status"] == "counted" and first["field"]["position"] == 1
        n1 = first["sample"]["n_cells"]
        assert n1 > 0 and first["sample"]["state"] == "open"
        assert f"{n1} white cells so far" in first["field"]["message"]
        assert "move to the next field" in first["field"]["message"]
        assert daemon.indicator.current is IndicatorState.FIELD_ADDED
        # The bundle's rule and rates, the model that started it.
        assert first["sample"]["rule"]["max_fields"] == 3
        assert first["sample"]["rates"] == {"sensitivity": 0.9, "specificity": 0.95}
        assert first["sample"]["model"]["sha256"] == daemon.bundle.manifest.model_sha256
        assert daemon.active_sample == "P-1"

        second = capture(daemon, "P-1")
        assert second["sample"]["n_cells"] > n1 and second["sample"]["n_fields"] == 2
        third = capture(daemon, "P-1")
        s = third["sample"]
        assert s["state"] == "decided" and s["verdict"] == "indeterminate"
        assert "3 fields read" in s["message"] and "indeterminate" in s["message"]
        assert daemon.indicator.current is IndicatorState.SAMPLE_INDETERMINATE
        assert daemon.active_sample is None

        # A decided sample takes no more fields: refused before a photo is taken.
        before = n_records(daemon)
        with pytest.raises(SampleError, match="decided"):
            daemon.request_capture("control", "P-1")
        reply = daemon.control({"cmd": "capture", "sample_id": "P-1"})
        assert reply["ok"] is False and "is decided" in reply["error"]
        assert n_records(daemon) == before
        assert daemon.state.phase != "busy"


def test_the_same_field_twice_is_not_counted_twice(tmp_path: Path) -> None:
    a = smear(5)
    shifted = np.roll(a, (12, 20), axis=(0, 1))  # the stage nudged: mostly the same cells
    with sample_daemon(tmp_path, [a, a, shifted, smear(6)]) as daemon:
        daemon.start_sample("P-2")
        one = capture(daemon, "P-2")
        again = capture(daemon, "P-2")
        assert again["field"]["status"] == "repeat"
        assert again["field"]["repeats_record"] == one["id"]
        assert again["field"]["repeats_position"] == 1
        assert "this field repeats field 1" in again["field"]["message"]
        assert "not counted again" in again["field"]["message"]
        assert again["sample"]["n_cells"] == one["sample"]["n_cells"]
        assert again["sample"]["n_fields"] == 1
        assert daemon.indicator.current is IndicatorState.RETAKE
        nudged = capture(daemon, "P-2")
        assert nudged["field"]["status"] == "repeat"
        other = capture(daemon, "P-2")
        assert other["field"]["status"] == "counted" and other["sample"]["n_fields"] == 2
        # Every photo is kept as a record and a field, in order.
        stored = SampleReader(daemon.store.reader).get("P-2")
        assert stored is not None
        assert [f.status.value for f in stored.fields] == ["counted", "repeat", "repeat", "counted"]


def test_a_retake_inside_a_sample_counts_nothing(tmp_path: Path) -> None:
    no_white = make_smear(400, 300, n_wbc=0, px_per_um=4.0, seed=7).image
    with sample_daemon(tmp_path, [smear(8), no_white, smear(9)]) as daemon:
        first = capture(daemon, "P-3")
        retake = capture(daemon, "P-3")
        assert retake["outcome"] == "retake" and retake["field"]["status"] == "retake"
        assert retake["sample"]["n_cells"] == first["sample"]["n_cells"]
        assert "retake it or move to another field" in retake["field"]["message"]
        assert daemon.indicator.current is IndicatorState.RETAKE
        last = capture(daemon, "P-3")
        assert last["field"]["position"] == 3 and last["sample"]["n_fields"] == 2


def test_a_sample_is_decided_when_the_interval_clears_the_threshold(tmp_path: Path) -> None:
    # Every stained nucleus reads as a blast with the stand-in classifier: far above 5%.
    rule = {**SAMPLE, "min_cells": 5, "max_fields": 20}
    with sample_daemon(tmp_path, [smear(s) for s in (10, 11, 12, 13)], sample_bundle(rule)) as d:
        res = capture(d, "P-4")
        while res["sample"]["state"] == "open":
            res = capture(d, "P-4")
        assert res["sample"]["verdict"] in ("leukemia-suspected", "no-leukemia-suspected")
        want = IndicatorState.for_sample(Verdict(res["sample"]["verdict"]))
        assert d.indicator.current is want


def test_config_overrides_the_bundles_rule_and_a_bundle_without_one_is_uncorrected(
    tmp_path: Path,
) -> None:
    with sample_daemon(tmp_path, [smear(1)], sample_bundle(None), max_fields=7) as daemon:
        spec = daemon.sample_spec()
        assert spec.rule.max_fields == 7 and spec.rule.min_cells == 100
        assert not spec.corrected
        s = daemon.start_sample("P-5")
        assert s.rates.sensitivity == 1.0 and s.rates.specificity == 1.0


@pytest.mark.parametrize("bad", ["x" * 10_000, "P<1>", "a\nb", " lead", "ab\u00e9", ""])
def test_bad_sample_ids_are_refused_and_store_nothing(tmp_path: Path, bad: str) -> None:
    with sample_daemon(tmp_path, [smear(1)]) as daemon:
        for call in (daemon.start_sample, daemon.close_sample, daemon.get_sample):
            with pytest.raises(SampleError, match="bad sample id"):
                call(bad)
        if bad:
            with pytest.raises(ValueError, match="sample id"):
                daemon.request_capture("control", bad)
            reply = daemon.control({"cmd": "sample-start", "sample_id": bad})
            assert reply["ok"] is False and "bad sample id" in reply["error"]
            assert len(reply["error"]) < 300  # a 10 kB id is not echoed back
        assert n_records(daemon) == 0
        assert SampleReader(daemon.store.reader).page(10) == []


def test_unknown_and_closed_samples(tmp_path: Path) -> None:
    with sample_daemon(tmp_path, [smear(1), smear(2)]) as daemon:
        for cmd in ("sample-close", "sample-show"):
            reply = daemon.control({"cmd": cmd, "sample_id": "NOPE"})
            assert reply == {"ok": False, "error": "no sample 'NOPE'"}
        with pytest.raises(SampleError, match="no sample"):
            daemon.review_cell("NOPE", 1, 0, "blast", "Dr A")
        started = daemon.control({"cmd": "sample-start", "sample_id": "P-6"})
        assert started["ok"] and started["sample"]["state"] == "open"
        again = daemon.control({"cmd": "sample-start", "sample_id": "P-6"})
        assert again["ok"] is False and "exists already" in again["error"]
        field = capture(daemon, "P-6")
        review = daemon.review_cell("P-6", field["id"], 0, "blast", "Dr A")
        assert review.reviewer == "Dr A"
        closed = daemon.control({"cmd": "sample-close", "sample_id": "P-6"})
        assert closed["ok"] and closed["sample"]["state"] == "closed"
        assert daemon.active_sample is None
        before = n_records(daemon)
        with pytest.raises(SampleError, match="closed"):
            daemon.request_capture("control", "P-6")
        assert n_records(daemon) == before
        shown = daemon.control({"cmd": "sample-show", "sample_id": "P-6"})
        assert shown["sample"]["n_fields"] == 1 and shown["sample"]["reviewed"]["n_reviews"] == 1


def test_a_whole_field_bundle_keeps_the_sample_id_as_a_label(tmp_path: Path) -> None:
    bundle = sample_bundle()
    m = bundle.manifest
    bundle.analyser = WholeFieldAnalyser(
        m.preprocess, m.thresholds, m.positive_label, lambda x: {"other": 0.9, "blast": 0.1}
    )
    with sample_daemon(tmp_path, [smear(1)], bundle) as daemon:
        assert not daemon.counts_samples
        with pytest.raises(SampleError, match="cells bundle"):
            daemon.start_sample("P-7")
        result = capture(daemon, "P-7")
        assert result["sample_id"] == "P-7" and "sample" not in result
        assert result["outcome"] == "no-leukemia-suspected"
        assert SampleReader(daemon.store.reader).page(10) == []


def test_long_press_starts_a_sample_and_short_presses_add_fields(tmp_path: Path) -> None:
    with sample_daemon(tmp_path, [smear(1), smear(2)], long_press_s=0.5) as daemon:
        factory = daemon.pin_factory
        button = CaptureButton(
            daemon.cfg.gpio.button,
            bounce_ms=0,
            pin_factory=factory,
            on_press=daemon.on_button,
            on_long_press=daemon.on_long_press,
            long_press_s=daemon.cfg.sample.long_press_s,
        )
        try:
            pin = factory.pin(daemon.cfg.gpio.button)
            pin.drive_low()
            wait_until(lambda: daemon.active_sample, 5, "a sample started by the long press")
            pin.drive_high()
            sample_id = daemon.active_sample
            assert sample_id is not None and sample_id.startswith("S-")
            assert daemon.indicator.current is IndicatorState.SAMPLE_STARTED
            assert n_records(daemon) == 0  # a long press takes no photo
            pin.drive_low()
            pin.drive_high()  # a short press: a photo, into the active sample
            wait_until(lambda: n_records(daemon) == 1, 30, "the field's record")
            stored = SampleReader(daemon.store.reader).get(sample_id)
            assert stored is not None and [f.position for f in stored.fields] == [1]
            assert stored.fields[0].status.value == "counted"
            wait_until(
                lambda: daemon.indicator.current is IndicatorState.FIELD_ADDED, 5, "field-added"
            )
        finally:
            button.close()


def test_a_repeat_is_found_on_a_jpeg_of_the_same_field(tmp_path: Path) -> None:
    """The replay camera hands over files as they are: a JPEG copy is still a repeat."""
    a = smear(21)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
    assert ok
    (tmp_path / "replay").mkdir(parents=True)
    (tmp_path / "replay" / "01.jpg").write_bytes(buf.tobytes())
    with sample_daemon(tmp_path, [a]) as daemon:
        capture(daemon, "P-8")
        again = capture(daemon, "P-8")
        assert again["field"]["status"] == "repeat"
