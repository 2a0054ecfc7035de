"""Losses: pure functions of tensors."""

from learnloop.losses.classification import classification_loss

__all__ = ["classification_loss"]
