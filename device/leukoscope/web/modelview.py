"""The model page in plain words: what a bundle was trained on, how it did on held-out
photos (sensitivity and specificity with their 95% intervals), where it is known to fail,
and its full metrics as readable rows for whoever wants them.

Everything comes from the bundle's manifest (`metrics`, `training`, `thresholds`,
`sample`) and its model card's "Limits" section; nothing is made up here. A bundle whose
manifest lacks a number shows a dash, not a guess.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from leukoscope.web.display import label, value

#: At most this many rows of the full metrics (a manifest is data: keep the page bounded).
MAX_METRIC_ROWS = 400


@dataclass(frozen=True)
class Measure:
    """A rate with its 95% interval, as a percentage in words."""

    name: str
    text: str
    #: What it means, in one line.
    means: str


@dataclass(frozen=True)
class ModelSummary:
    """What the model page says about one bundle."""

    trained_on: str | None
    tested_on: str | None
    measures: list[Measure]
    #: Per photo source: (source, sensitivity text, specificity text, photos).
    by_source: list[tuple[str, str, str, str]]
    thresholds: str | None
    sample_rule: str | None
    limits: list[str]
    #: The full metrics as (path in words, value) rows.
    metric_rows: list[tuple[str, str]]
    #: The training settings as (label, value) rows.
    training_rows: list[tuple[str, str]]


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def rate_text(rate: Any, ci: Any = None) -> str:
    """0.8425 and [0.8096, 0.8706] -> "84% (95% interval 81–87%)"; "–" when missing."""
    r = _num(rate)
    if r is None:
        return "–"
    out = f"{100 * r:.0f}%"
    if isinstance(ci, list | tuple) and len(ci) == 2:
        lo, hi = _num(ci[0]), _num(ci[1])
        if lo is not None and hi is not None:
            out += f" (95% interval {100 * lo:.0f}–{100 * hi:.0f}%)"
    return out


def flatten(
    d: Any, prefix: str = "", out: list[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    """Nested metrics as ("Test › Overall › Sensitivity", "0.8425") rows, lists of numbers
    kept on one row, at most MAX_METRIC_ROWS."""
    out = [] if out is None else out
    if isinstance(d, dict):
        for k, v in d.items():
            if len(out) >= MAX_METRIC_ROWS:
                break
            name = label(str(k))
            flatten(v, f"{prefix} › {name}" if prefix else name, out)
    elif isinstance(d, list) and any(isinstance(x, dict | list) for x in d):
        for i, v in enumerate(d, 1):
            if len(out) >= MAX_METRIC_ROWS:
                break
            flatten(v, f"{prefix} › {i}", out)
    else:
        out.append((prefix or "–", value(d)))
    return out


def card_limits(card: str | None, max_items: int = 12) -> list[str]:
    """The bullets of the model card's "Limits" (or "Known failures") section, as plain text."""
    if not card:
        return []
    m = re.search(
        r"^#+\s*(Limits|Limitations|Known failures)[^\n]*\n(.*?)(?=^#+\s|\Z)", card, re.M | re.S
    )
    if not m:
        return []
    items: list[str] = []
    for line in m.group(2).splitlines():
        if re.match(r"\s*[-*]\s+", line):
            items.append(re.sub(r"^\s*[-*]\s+", "", line).strip())
        elif line.strip() and items:
            items[-1] += " " + line.strip()
    plain = [re.sub(r"[`*]", "", i) for i in items]
    return plain[:max_items]


def _cross_source(metrics: dict[str, Any]) -> list[str]:
    out: list[str] = []
    cross = metrics.get("cross_source")
    for name, entry in (cross if isinstance(cross, dict) else {}).items():
        if not isinstance(entry, dict):
            continue
        seeds = entry.get("seeds")
        auc = None
        if isinstance(seeds, dict):
            auc = _num(seeds.get("mean"))
        elif isinstance(entry.get("roc_auc"), int | float):
            auc = _num(entry.get("roc_auc"))
        if auc is None:
            continue
        trained, _, tested = str(name).partition(" -> ")
        out.append(
            f"Trained on {trained} only and tested on {tested}: ROC AUC {auc:.2f} (0.5 is chance)."
        )
    # True of every model, measured across sources or not.
    out.append(
        "Expect it to do worse on a microscope, camera or stain it has not seen: "
        "check it on your own rig's slides before relying on it."
    )
    return out


def summarise(bundle: dict[str, Any]) -> ModelSummary:
    """The plain-language summary of a bundle as `StatusSource.models()` describes it."""
    metrics = bundle.get("metrics") if isinstance(bundle.get("metrics"), dict) else {}
    training = bundle.get("training") if isinstance(bundle.get("training"), dict) else {}
    assert isinstance(metrics, dict) and isinstance(training, dict)
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else None
    overall: dict[str, Any] = metrics
    if isinstance(test, dict):
        o = test.get("overall")
        overall = o if isinstance(o, dict) else test
    measures = [
        Measure(
            "Sensitivity",
            rate_text(overall.get("sensitivity"), overall.get("sensitivity_ci")),
            "of photos with leukemia, the share it flagged",
        ),
        Measure(
            "Specificity",
            rate_text(overall.get("specificity"), overall.get("specificity_ci")),
            "of normal photos, the share it passed",
        ),
    ]
    auc = _num(overall.get("roc_auc"))
    if auc is not None:
        ci = overall.get("roc_auc_ci")
        extra = ""
        if isinstance(ci, list | tuple) and len(ci) == 2 and all(_num(x) is not None for x in ci):
            extra = f" (95% interval {float(ci[0]):.2f}–{float(ci[1]):.2f})"
        measures.append(
            Measure(
                "ROC AUC",
                f"{auc:.2f}{extra}",
                "how well the score ranks (1 is perfect, 0.5 chance)",
            )
        )
    band = overall.get("band")
    if isinstance(band, dict) and _num(band.get("indeterminate_rate")) is not None:
        measures.append(
            Measure(
                "Indeterminate",
                f"{100 * float(band['indeterminate_rate']):.0f}%",
                "of photos fell between the thresholds: refer or retake",
            )
        )
    tested_on = None
    n = _num(overall.get("n"))
    if n is not None:
        nl, nn = _num(overall.get("n_leukemia")), _num(overall.get("n_normal"))
        tested_on = f"{n:.0f} held-out photos"
        if nl is not None and nn is not None:
            tested_on += f" ({nl:.0f} with leukemia, {nn:.0f} normal)"
        tested_on += ", from slides never used in training"
    by_source = []
    if isinstance(test, dict):
        for name, m in test.items():
            if name == "overall" or not isinstance(m, dict):
                continue
            by_source.append(
                (
                    str(name),
                    rate_text(m.get("sensitivity"), m.get("sensitivity_ci")),
                    rate_text(m.get("specificity"), m.get("specificity_ci")),
                    value(m.get("n")),
                )
            )
    data = training.get("data")
    trained_on = str(data) if isinstance(data, str) else None
    th = bundle.get("thresholds")
    thresholds = None
    if isinstance(th, list | tuple) and len(th) == 2 and all(_num(t) is not None for t in th):
        lo, hi = float(th[0]), float(th[1])
        thresholds = (
            f"A photo scoring below {100 * lo:.0f}% is “no leukemia suspected”, at or above "
            f"{100 * hi:.0f}% “leukemia suspected: refer”, and in between “indeterminate”."
        )
    rule = bundle.get("sample")
    sample_rule = None
    if isinstance(rule, dict) and _num(rule.get("threshold")) is not None:
        share = 100 * float(rule["threshold"])
        sample_rule = f"A sample is referred when its blast share is surely above {share:g}%"
        sens, spec = _num(rule.get("sensitivity")), _num(rule.get("specificity"))
        if sens is not None and spec is not None:
            sample_rule += (
                f"; cells are called blasts with sensitivity {100 * sens:.0f}% and "
                f"specificity {100 * spec:.0f}%, and the count is corrected for that"
            )
        sample_rule += "."
    limits = card_limits(bundle.get("card") if isinstance(bundle.get("card"), str) else None)
    limits += _cross_source(metrics)
    training_rows = [
        (label(str(k)), value(v)) for k, v in training.items() if not isinstance(v, dict | list)
    ]
    return ModelSummary(
        trained_on=trained_on,
        tested_on=tested_on,
        measures=measures,
        by_source=by_source,
        thresholds=thresholds,
        sample_rule=sample_rule,
        limits=limits,
        metric_rows=flatten(metrics),
        training_rows=training_rows,
    )
