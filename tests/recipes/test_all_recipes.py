"""Every registered recipe, with its declared tiny settings: run, eval, resume of the finished run, predict.

This is what keeps each new recipe honest: the runtime drives only the parts a recipe declares, so a recipe
that runs here also works with `learnloop run/resume/eval/predict` and later with tuning and serving.
"""

import json

import pytest

import learnloop
from learnloop.errors import DataMissingError
from learnloop.recipes import evaluate_run, load_run, predict_run, recipes, resume_run

ALL = sorted(recipes())
FAST = dict(progress=False, quiet=True)


def test_every_recipe_declares_smoke_settings():
    missing = [name for name in ALL if recipes()[name].smoke is None]
    assert not missing, f"recipes without smoke settings: {missing}"


@pytest.mark.parametrize("name", ALL)
def test_recipe_runs_evaluates_resumes_predicts(name, tmp_path, needs_fashion):
    recipe = recipes()[name]
    if recipe.smoke is None:
        pytest.fail(f"{name}: declare smoke settings in @recipe(..., smoke={{...}})")
    try:
        run = learnloop.run(name, out=tmp_path, set=dict(recipe.smoke), **FAST)
    except DataMissingError as e:          # an optional data or weights package is not installed
        pytest.skip(str(e))
    assert run.metrics["status"] == "finished"
    assert (run.folder / "data.json").is_file() and (run.folder / "metrics.json").is_file()
    rows = [json.loads(line) for line in (run.folder / "metrics.jsonl").read_text().splitlines()] \
        if (run.folder / "metrics.jsonl").exists() else []

    evaluated = evaluate_run(run.folder, **FAST)
    assert (run.folder / "eval.json").is_file() and isinstance(evaluated, dict)

    again = resume_run(run.folder, **FAST)              # finished: nothing is trained again
    assert again.metrics["status"] == "finished"
    after = [json.loads(line) for line in (run.folder / "metrics.jsonl").read_text().splitlines()] \
        if (run.folder / "metrics.jsonl").exists() else []
    assert after == rows

    loaded = load_run(run.folder)
    predictor = recipe.parts.predictor(loaded)
    if predictor is not None:
        examples = predictor.examples(tmp_path)
        outputs = predict_run(run.folder, examples)
        assert len(outputs) == len(examples)
        json.dumps(outputs)
