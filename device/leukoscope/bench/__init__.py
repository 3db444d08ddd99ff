"""Benchmarks that print numbers and write reports (not tests): whole-field, cells, the daemon, the
web page."""
