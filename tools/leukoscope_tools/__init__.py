"""Leukoscope host tools: dataset, training, quantization, evaluation and model push.

Runs on a maintainer's machine; imports the shared core from `leukoscope`, never
the other way round.
"""
