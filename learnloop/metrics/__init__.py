"""Metrics: pure functions of tensors (no training state, no file I/O)."""
