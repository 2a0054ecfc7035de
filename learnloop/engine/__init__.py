"""The training engine: `Learner` runs any `Task`; callbacks, schedules, checkpoints and run folders."""

from learnloop.engine.callbacks import Callback, EarlyStopping, GradNormStats, ProgressBar, TensorBoardLogger
from learnloop.engine.checkpoint import load_state, load_weights, save_state, save_weights
from learnloop.engine.learner import Learner
from learnloop.engine.run import RunFolder
from learnloop.engine.schedules import Schedule, ScheduleConfig
from learnloop.engine.task import Task

__all__ = [
    "Callback", "EarlyStopping", "GradNormStats", "ProgressBar", "TensorBoardLogger", "load_state",
    "load_weights", "save_state", "save_weights", "Learner", "RunFolder", "Schedule", "ScheduleConfig", "Task",
]
