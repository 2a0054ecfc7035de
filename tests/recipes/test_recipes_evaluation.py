"""The evaluation recipes: pixel-vs-feature demonstration and the floor/ceiling table, on small subsets."""

import learnloop

FAST = {"progress": False, "quiet": True}


def test_pixel_vs_feature_shift_moves_pixels_noise_moves_features(tmp_path, needs_fashion):
    run = learnloop.run("pixel-vs-feature", out=tmp_path, data__subset=200, shifts=(0, 1, 2), noise=(0.0, 0.1),
                        **FAST)
    m = run.metrics
    assert m["pixel_rel_shift0"] == 0 and m["feature_rel_shift0"] == 0
    # an invisible 1-pixel shift: pixels move far more than features
    assert m["pixel_over_feature_shift1"] >= 2.2
    assert m["pixel_rel_shift2"] > m["pixel_rel_shift1"] > 0.3
    # visible noise: features move more than pixels, and FID rises with it
    assert m["feature_over_pixel_noise0.1"] >= 1.5
    assert m["fid_noise0.1"] > 5 * m["fid_noise0"]
    assert (run.folder / "plots" / "pixel_vs_feature.png").is_file()
    assert (run.folder / "samples" / "perturbations.png").is_file()


def test_gen_eval_floor_reports_floor_below_ceiling(tmp_path, needs_fashion):
    run = learnloop.run("gen-eval-floor", out=tmp_path, eval__samples=200, eval__splits=5, **FAST)
    m = run.metrics
    # at N = 200 the floor FID is biased up (~30; ~1.2 at N = 5000)
    assert m["ceiling_fid"] > 10 * m["floor_fid"] and m["ceiling_over_floor_fid"] > 10
    assert m["floor_recall"] > 0.8 and m["ceiling_recall"] < 0.05
    text = (run.folder / "report.txt").read_text()
    assert "floor (real)" in text and "ceiling (noise)" in text and "N fake 200" in text


def test_eval_of_a_finished_study_reproduces_its_metrics(tmp_path, needs_fashion):
    from learnloop.recipes import evaluate_run

    run = learnloop.run("pixel-vs-feature", out=tmp_path, data__subset=50, shifts=(0, 1), noise=(0.1,), **FAST)
    again = evaluate_run(run.folder, **FAST)              # data() again: same subset, same noise stream
    assert again == {k: v for k, v in run.metrics.items() if k not in ("status", "wall_time_s")}


def test_old_flat_keys_name_their_new_place(tmp_path):
    import pytest

    from learnloop.errors import UserError

    for name, old, new in (("pixel-vs-feature", "n", "data.subset"), ("gen-eval-floor", "n", "eval.samples"),
                           ("gen-eval-floor", "splits", "eval.splits"), ("gen-eval-floor", "reference",
                                                                         "eval.reference")):
        with pytest.raises(UserError, match=f"it is now '{new}'"):
            learnloop.run(name, out=tmp_path, set={old: "100"}, **FAST)
    with pytest.raises(UserError, match="unknown extractor 'nope'; known: .*fashion"):
        learnloop.run("gen-eval-floor", out=tmp_path, set={"eval.extractor": "nope", "eval.samples": 20}, **FAST)
