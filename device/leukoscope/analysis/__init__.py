"""Pure image analysis: preprocessing, the quality gate, white-cell detection, cell scoring, the
per-mode analysers, field of view, overlap and the sample's differential count."""
