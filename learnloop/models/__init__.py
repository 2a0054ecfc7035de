"""Architectures assembled from blocks."""
