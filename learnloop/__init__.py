"""Learning Loop: the classic techniques of deep learning, implemented readably, trained on real data,
evaluated with the right metrics and checked against reference implementations.

    >>> import learnloop
    >>> run = learnloop.run("mlp-digits", epochs=1)      # doctest: +SKIP
    >>> run.metrics["test_accuracy"], run.folder          # doctest: +SKIP
"""

__version__ = "0.1.0"


def run(recipe=None, **kwargs):
    """Run a recipe (see `learnloop list`); keyword arguments mirror `learnloop run` options."""
    from learnloop.recipes import run_recipe

    return run_recipe(recipe, **kwargs)


def resume(run_dir, **kwargs):
    """Continue a stopped run from its folder, exactly where its last checkpoint left it."""
    from learnloop.recipes import resume_run

    return resume_run(run_dir, **kwargs)


__all__ = ["run", "resume", "__version__"]
