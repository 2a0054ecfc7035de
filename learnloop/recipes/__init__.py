"""Named experiments and the API that runs them (`learnloop.run`, `learnloop.resume`, `load_run`)."""

from learnloop.recipes.runs import LoadedRun, load_run
from learnloop.recipes.runtime import (
    Run, evaluate_run, generate_run, get_recipe, lr_find_recipe, predict_run, recipes, resume_run, run_recipe,
)

__all__ = ["LoadedRun", "Run", "evaluate_run", "generate_run", "get_recipe", "load_run", "lr_find_recipe",
           "predict_run", "recipes", "resume_run", "run_recipe"]
