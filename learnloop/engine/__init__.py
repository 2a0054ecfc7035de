"""The training engine: `Learner` runs any `Task`; events and callbacks, optimizers and schedules,
checkpoints and run folders."""

from learnloop.engine.callbacks import (
    Callback, EarlyStopping, GradNormStats, ProgressBar, ReloadBest, SampleGrid, TensorBoardLogger, WeightClipping,
)
from learnloop.engine.checkpoint import load_state, load_weights, save_state, save_weights
from learnloop.engine.ema import EMA, ema_weights
from learnloop.engine.learner import Learner
from learnloop.engine.optim import (
    GradualUnfreezing, OptimConfig, build_optimizer, discriminative_param_groups, freeze, unfreeze,
)
from learnloop.engine.run import RunFolder
from learnloop.engine.schedules import Schedule, ScheduleConfig
from learnloop.engine.task import Task

__all__ = [
    "Callback", "EarlyStopping", "GradNormStats", "ProgressBar", "ReloadBest", "SampleGrid", "TensorBoardLogger",
    "WeightClipping", "load_state", "load_weights", "save_state", "save_weights", "EMA", "ema_weights", "Learner",
    "GradualUnfreezing", "OptimConfig", "build_optimizer", "discriminative_param_groups", "freeze", "unfreeze",
    "RunFolder", "Schedule", "ScheduleConfig", "Task",
]
