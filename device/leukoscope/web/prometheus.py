"""The /metrics page in Prometheus's text exposition format (no client library needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _label(value: object) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Mapping[str, object] | None = None) -> None:
        if labels:
            inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{inner}}} {_num(value)}")
        else:
            self.lines.append(f"{name} {_num(value)}")


def render_metrics(m: Mapping[str, Any]) -> str:
    """The text for /metrics from a StatusSource's `metrics()` figures."""
    w = _Writer()
    w.family("leukoscope_up", "gauge", "1 while the appliance is ready to capture")
    w.sample("leukoscope_up", 1.0 if m.get("ready") else 0.0)

    w.family("leukoscope_captures_total", "counter", "Analyses recorded, by outcome")
    for outcome, n in sorted((m.get("captures") or {}).items()):
        w.sample("leukoscope_captures_total", float(n), {"outcome": outcome})

    stages = m.get("stage_seconds") or {}
    w.family(
        "leukoscope_stage_seconds",
        "summary",
        f"Stage durations over the last {int(m.get('stage_window', 0))} analyses",
    )
    for stage, q in sorted(stages.items()):
        for quantile in ("0.5", "0.95"):
            if quantile in q:
                labels = {"stage": stage, "quantile": quantile}
                w.sample("leukoscope_stage_seconds", float(q[quantile]), labels)
        w.sample("leukoscope_stage_seconds_sum", float(q.get("sum", 0.0)), {"stage": stage})
        w.sample("leukoscope_stage_seconds_count", float(q.get("count", 0)), {"stage": stage})

    w.family("leukoscope_fault", "gauge", "1 for each part with an active fault")
    for part in ("camera", "model", "storage"):
        active = part in (m.get("faults") or {})
        w.sample("leukoscope_fault", 1.0 if active else 0.0, {"part": part})
    w.family("leukoscope_faults_total", "counter", "Captures that ended in a fault record")
    w.sample("leukoscope_faults_total", float((m.get("captures") or {}).get("fault", 0)))

    if m.get("disk_free_bytes") is not None:
        w.family("leukoscope_disk_free_bytes", "gauge", "Free space where images are kept")
        w.sample("leukoscope_disk_free_bytes", float(m["disk_free_bytes"]))

    model = m.get("model") or {}
    w.family("leukoscope_model_info", "gauge", "The model bundle in use (value is always 1)")
    if model:
        labels = {k: model.get(k, "") for k in ("name", "version", "sha256")}
        w.sample("leukoscope_model_info", 1.0, labels)
    w.family("leukoscope_model_reloads_total", "counter", "Successful model reloads")
    w.sample("leukoscope_model_reloads_total", float(m.get("reloads", 0)))

    if m.get("uptime_s") is not None:
        w.family("leukoscope_uptime_seconds", "gauge", "Seconds since the daemon started")
        w.sample("leukoscope_uptime_seconds", float(m["uptime_s"]))
    return "\n".join(w.lines) + "\n"
