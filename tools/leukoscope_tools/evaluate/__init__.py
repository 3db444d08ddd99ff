"""Evaluation: per-source and cross-source results, detection, the comparison reports and their
figures."""
