"""Named experiments and the API that runs them (`learnloop.run`, `learnloop.resume`)."""

from learnloop.recipes.runtime import (
    Run, evaluate_run, get_recipe, lr_find_recipe, recipes, resume_run, run_recipe,
)

__all__ = ["Run", "evaluate_run", "get_recipe", "lr_find_recipe", "recipes", "resume_run", "run_recipe"]
