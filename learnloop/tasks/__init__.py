"""Tasks: the step logic of each kind of learning, plugged into `learnloop.engine.Learner`."""

from learnloop.tasks.classification import Classification

__all__ = ["Classification"]
