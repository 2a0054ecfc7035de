"""Evaluation protocols that combine models (feature extractors) and metrics, below the recipes."""

from learnloop.evaluation.generative import evaluate_images, format_report

__all__ = ["evaluate_images", "format_report"]
