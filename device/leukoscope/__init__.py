"""Leukoscope: screens blood-smear photos for leukemia on a Raspberry Pi.

This package is what runs on the device; host tools import its pure core
(image loading, preprocessing, bundles) and never the other way round.
"""

__version__ = "0.1.0"
