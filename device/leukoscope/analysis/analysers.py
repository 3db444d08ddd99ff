"""One analyser per analysis mode: how a photo is decoded and judged after the quality gate.

A bundle picks its analyser once, when it loads (`model.bundle.ANALYSERS`, keyed by the
manifest's analysis_mode); the pipeline, the CLI and the benches call it and never
compare mode names. Analysers are pure: the model reaches them as a function, so this
layer never imports the runtime.

- `WholeFieldAnalyser`: the model sees the photo, resized and filtered by `preprocess()`.
- `CellAnalyser`: every white cell is found, cropped and classified in one batched call,
  and the slide is scored (`cells.analyse_cells`).

Each answers the same three questions: the size to decode a photo at (`model_size` for
the model alone, `gated_size` for the quality gate and the model), the `Outcome` for a
decoded photo, and so the golden score a bundle must reproduce at load (the outcome's
`p_leukemia`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from leukoscope.analysis.cells import (
    CellAnalysis,
    CellReport,
    CellRetake,
    CellSettings,
    analyse_cells,
)
from leukoscope.analysis.decision import Thresholds, Verdict
from leukoscope.analysis.detection import ScaleEstimate
from leukoscope.analysis.field_of_view import FieldOfView
from leukoscope.analysis.preprocess import PreprocessParams, preprocess
from leukoscope.analysis.quality import WORKING_LONG_SIDE
from leukoscope.core.imageio import load_image


@dataclass(frozen=True)
class Outcome:
    """What an analyser answers for one decoded photo (the gate's verdict is the caller's)."""

    verdict: Verdict
    #: The number the thresholds judged (the slide score in cells mode); None for a retake.
    p_leukemia: float | None
    #: Whole-field mode: the model's probability of each label.
    probabilities: dict[str, float] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: Cells mode: what cell analysis found (None when no scale could be found).
    cells: CellReport | None = None
    #: Cells mode: why cell analysis asks for a retake.
    cell_retake: CellRetake | None = None


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one whole-field photo."""

    p_leukemia: float
    probabilities: dict[str, float]
    verdict: Verdict


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)


@dataclass(frozen=True)
class WholeFieldAnalyser:
    """Whole-field mode: one preprocessed input per photo, one probability per label."""

    params: PreprocessParams
    thresholds: Thresholds
    positive_label: str
    #: One preprocessed float input (`preprocess()`'s output) -> probability of each label.
    classify: Callable[[np.ndarray], dict[str, float]]
    #: Whether the model classifies many inputs in one call (it sees one photo at a time).
    batched: ClassVar[bool] = False
    #: Whether the analysis needs the photo's scale (pixels per micrometre).
    needs_scale: ClassVar[bool] = False

    @property
    def model_size(self) -> tuple[int, int]:
        """The smallest decode the model can use: the preprocessing's first resize."""
        return self.params.resize

    @property
    def gated_size(self) -> tuple[int, int]:
        """The smallest decode for the gate and the model: the larger of the resize and the
        gate's working size (a 5 MP JPEG then decodes at 1/4 or 1/8 scale)."""
        w, h = self.params.resize
        return (max(w, WORKING_LONG_SIDE), max(h, WORKING_LONG_SIDE))

    def decode(self, source: Path | bytes) -> np.ndarray:
        """Decode an image file at `model_size` or larger, as 8-bit RGB."""
        return load_image(source, min_size=self.model_size)

    def predict(self, rgb: np.ndarray) -> Prediction:
        """Classify an 8-bit RGB photo (no quality gate)."""
        probs = self.classify(preprocess(rgb, self.params))
        p = float(np.clip(probs[self.positive_label], 0.0, 1.0))
        return Prediction(p, probs, self.thresholds.decide(p))

    def analyse(
        self,
        rgb: np.ndarray,
        *,
        px_per_um: float | None = None,
        scale: ScaleEstimate | None = None,
        fov: FieldOfView | None = None,
    ) -> Outcome:
        """The outcome for an 8-bit RGB photo; scale and field are not used in this mode."""
        t0 = time.perf_counter()
        pred = self.predict(rgb)
        return Outcome(pred.verdict, pred.p_leukemia, pred.probabilities, {"inference": _ms(t0)})


@dataclass(frozen=True)
class CellAnalyser:
    """Cells mode: the crops of a photo's white cells, classified in batches, score the slide."""

    settings: CellSettings
    params: PreprocessParams
    thresholds: Thresholds
    #: N preprocessed crops (N x h x w x 3 float32) -> N probabilities of "blast".
    blast_probabilities: Callable[[np.ndarray], np.ndarray]
    #: Whether the model classifies many inputs in one call (all of a field's crops).
    batched: ClassVar[bool] = True
    #: Whether the analysis needs the photo's scale (pixels per micrometre).
    needs_scale: ClassVar[bool] = True

    #: The smallest decode the model can use: None, the full resolution. A nucleus is a
    #: few micrometres across and the crop of `crop_um` (24 um) must fill the model's
    #: 128 px (`min_px_per_um`): a crop upsampled to it has the chromatin detail the
    #: classifier reads interpolated away. A photo's measured scale is only known after
    #: decoding (red cells); a calibrated rig's is known before, and the pipeline decodes
    #: its stills at half size where that still fills the crops (`pipeline.decode_reduction`).
    model_size: ClassVar[None] = None
    #: The smallest decode for the gate and the model: the full resolution too.
    gated_size: ClassVar[None] = None

    def decode(self, source: Path | bytes) -> np.ndarray:
        """Decode an image file at full resolution, as 8-bit RGB."""
        return load_image(source)

    @property
    def min_px_per_um(self) -> float:
        """The coarsest scale whose crops of `crop_um` still fill the model's input."""
        return max(self.params.input_size) / self.settings.crop_um

    def analyse_cells(
        self,
        rgb: np.ndarray,
        *,
        px_per_um: float | None = None,
        scale: ScaleEstimate | None = None,
        fov: FieldOfView | None = None,
    ) -> CellAnalysis:
        """The cell analysis of an 8-bit RGB photo, stage by stage (no quality gate)."""
        return analyse_cells(
            rgb,
            self.settings,
            self.params,
            self.blast_probabilities,
            px_per_um=px_per_um,
            scale=scale,
            fov=fov,
        )

    def analyse(
        self,
        rgb: np.ndarray,
        *,
        px_per_um: float | None = None,
        scale: ScaleEstimate | None = None,
        fov: FieldOfView | None = None,
    ) -> Outcome:
        """The outcome for an 8-bit RGB photo at `px_per_um` or `scale` (neither: measured
        from the red cells), behind the field stop `fov` (None: the whole frame)."""
        result = self.analyse_cells(rgb, px_per_um=px_per_um, scale=scale, fov=fov)
        if result.retake is not None or result.report is None:
            return Outcome(
                Verdict.RETAKE,
                None,
                timings_ms=result.timings_ms,
                cells=result.report,
                cell_retake=result.retake,
            )
        score = result.report.score
        return Outcome(
            self.thresholds.decide(score),
            score,
            timings_ms=result.timings_ms,
            cells=result.report,
        )


#: Every analyser, for type annotations.
Analyser = WholeFieldAnalyser | CellAnalyser
