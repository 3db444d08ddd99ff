"""The Leukoscope test suite (pytest)."""
